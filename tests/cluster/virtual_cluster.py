"""A virtual cluster: hosts as Linux network namespaces, MPI between them over TCP.

Layout (everything inside namespaces this fixture creates; the machine's own interfaces
and routes are never touched):

    <prefix>-login   bridge br0, 10.200.0.254: runs mpiexec, like a login node
    <prefix>-node1   eth0 10.200.0.1  --veth--  br0
    <prefix>-node2   eth0 10.200.0.2  --veth--  br0
    <prefix>-node3   eth0 10.200.0.3  --veth--  br0

Hydra starts its proxies with ``-launcher ssh -launcher-exec netns_launcher.sh``, which
runs them in the host's namespace under its own hostname (``nodeN``), so MPI sees one
node per namespace. ``UCX_TLS=tcp,self`` keeps UCX off shared memory between them: ranks
on different hosts talk through TCP over the veth pairs.

Needs root and ``ip`` (iproute2) and ``unshare`` (util-linux); otherwise every test here
is skipped with the reason. Namespaces left by a crashed earlier session (same prefix) are
removed first; this session's are removed at its end, whatever happened.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import child_env, mpiexec

# Several checkouts may build clusters at once: each names its namespaces apart.
PREFIX = os.environ.get("DISTNN_VC_PREFIX", "distnn-vc")
SUBNET = "10.200.0"
LOGIN_ADDRESS = f"{SUBNET}.254"
NODES = ("node1", "node2", "node3")
LAUNCHER = Path(__file__).parent / "netns_launcher.sh"
CLUSTER_TIMEOUT_S = 120


def _ip(*args: str, namespace: str | None = None, check: bool = True):
    command = ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=check)


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def remove_namespaces(prefix: str = PREFIX) -> None:
    """Kill every process in, then delete, each namespace named ``prefix-*``."""
    for namespace in _namespaces():
        if not namespace.startswith(prefix + "-"):
            continue
        pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                              timeout=30).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _ip("netns", "del", namespace, check=False)


def why_no_cluster() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: apt-get install {package}"
    return None


class Cluster:
    """Hosts node1..node3; ``command`` runs an MPI program placed on them by a hostfile."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    @staticmethod
    def namespace(node: str) -> str:
        return f"{PREFIX}-{node}"

    @staticmethod
    def address(node: str) -> str:
        return f"{SUBNET}.{NODES.index(node) + 1}"

    def hostfile(self, placement: dict[str, int]) -> Path:
        """A Hydra hostfile: ranks fill hosts in the order given, ``count`` each."""
        path = self.workdir / ("hosts-" + "-".join(f"{n}x{c}" for n, c in placement.items()))
        path.write_text("".join(f"{self.address(node)}:{count}\n"
                                for node, count in placement.items()))
        return path

    def env(self) -> dict:
        env = child_env()
        env.update(UCX_TLS="tcp,self", DISTNN_VC_PREFIX=PREFIX)
        return env

    def command(self, placement: dict[str, int], program: list[str]) -> list[str]:
        """``program`` (an argv) on ``sum(placement)`` ranks, mpiexec on the login node."""
        return ["ip", "netns", "exec", f"{PREFIX}-login", mpiexec(),
                "-f", str(self.hostfile(placement)), "-launcher", "ssh",
                "-launcher-exec", str(LAUNCHER), "-localhost", LOGIN_ADDRESS,
                "-n", str(sum(placement.values())), *program]

    def run(self, placement: dict[str, int], program: list[str],
            timeout: float = CLUSTER_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(placement, program), capture_output=True, text=True,
                              timeout=timeout, env=self.env())

    def start(self, placement: dict[str, int], program: list[str]) -> subprocess.Popen:
        """In the background, in its own session, so that a test can always end it."""
        return subprocess.Popen(self.command(placement, program), env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    def pids(self, node: str, naming: str) -> list[int]:
        """Processes in ``node``'s namespace whose command line contains ``naming``."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace(node)], capture_output=True,
                                text=True, timeout=30).stdout.split()
        found = []
        for pid in listed:
            try:
                if naming.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                pass
        return found

    def link(self, node: str, state: str) -> None:
        """Plug (``up``) or cut (``down``) ``node``'s cable to the switch."""
        _ip("link", "set", "eth0", state, namespace=self.namespace(node))

    def end_all(self) -> None:
        """Kill whatever a test left running on the hosts (not the hosts themselves)."""
        for node in (*NODES, "login"):
            for pid in self.pids(node, ""):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def build() -> None:
    login = f"{PREFIX}-login"
    _ip("netns", "add", login)
    _ip("link", "add", "br0", "type", "bridge", namespace=login)
    _ip("addr", "add", f"{LOGIN_ADDRESS}/24", "dev", "br0", namespace=login)
    for device in ("br0", "lo"):
        _ip("link", "set", device, "up", namespace=login)
    for node in NODES:
        namespace = Cluster.namespace(node)
        _ip("netns", "add", namespace)
        _ip("link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", namespace,
            namespace=login)
        _ip("link", "set", node, "master", "br0", namespace=login)
        _ip("link", "set", node, "up", namespace=login)
        _ip("addr", "add", f"{Cluster.address(node)}/24", "dev", "eth0", namespace=namespace)
        for device in ("eth0", "lo"):
            _ip("link", "set", device, "up", namespace=namespace)


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
