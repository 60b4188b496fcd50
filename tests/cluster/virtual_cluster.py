"""A virtual cluster: hosts as Linux network namespaces, MPI between them over TCP.

Layout (everything inside namespaces this fixture creates; the machine's own interfaces
and routes are never touched):

    <prefix>-login   bridge br0, 10.200.0.254: runs mpiexec, like a login node
    <prefix>-node1   eth0 10.200.0.1  --veth--  br0
    <prefix>-node2   eth0 10.200.0.2  --veth--  br0
    <prefix>-node3   eth0 10.200.0.3  --veth--  br0

Inside the namespaces the hosts also have names, node1..node3 (``/etc/netns/<namespace>/hosts``,
which ``ip netns exec`` puts in place of ``/etc/hosts``), so that commands can name hosts
as a user names them.

Jobs are started the way ``distnn train --procs N --hostfile FILE`` starts them
(``distnn.launchers``), from the login namespace, with the remote shell replaced by
``netns_launcher.sh`` through ``DISTNN_MPIEXEC_ARGS`` (Hydra: ``-launcher ssh
-launcher-exec``; Open MPI: ``--mca plm_rsh_agent``): it runs the launcher's daemon in the
host's namespace under its own hostname (``nodeN``), so MPI sees one node per namespace.
``UCX_TLS=tcp,self`` keeps MPICH's UCX off shared memory between them: ranks on different
hosts talk through TCP over the veth pairs. Every namespace shares this machine's
filesystem (a shared home, as on most clusters).

Needs root and ``ip`` (iproute2) and ``unshare`` (util-linux); otherwise every test here
is skipped with the reason. Namespaces left by a crashed earlier session (same prefix) are
removed first; this session's are removed at its end, whatever happened.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from netns import NETNS_ETC, ip, link_hosts

from distnn.hosts import read_hostfile
from distnn.launch import forwarded
from distnn.launchers import EXTRA_ARGS_VAR, HYDRA
from helpers import child_env, launcher

# Several checkouts may build clusters at once: each names its namespaces apart.
PREFIX = os.environ.get("DISTNN_VC_PREFIX", "distnn-vc")
SUBNET = "10.200.0"
LOGIN_ADDRESS = f"{SUBNET}.254"
NODES = ("node1", "node2", "node3")
LAUNCHER = Path(__file__).parent / "netns_launcher.sh"
CLUSTER_TIMEOUT_S = 120


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
        """A hostfile for ``--hostfile``: ranks fill hosts in the order given, ``count`` each."""
        path = self.workdir / ("hosts-" + "-".join(f"{n}x{c}" for n, c in placement.items()))
        path.write_text("".join(f"{node}:{count}\n" for node, count in placement.items()))
        return path

    @staticmethod
    def launcher_args() -> str:
        """What replaces ssh for the installed launcher (``DISTNN_MPIEXEC_ARGS``)."""
        if launcher().kind == HYDRA:
            return f"-launcher ssh -launcher-exec {LAUNCHER} -localhost {LOGIN_ADDRESS}"
        return f"--mca plm_rsh_agent {LAUNCHER}"

    def env(self) -> dict:
        env = child_env()
        env.update(UCX_TLS="tcp,self", DISTNN_VC_PREFIX=PREFIX)
        env[EXTRA_ARGS_VAR] = self.launcher_args()
        return env

    def command(self, placement: dict[str, int], program: list[str]) -> list[str]:
        """``program`` (an argv) on ``sum(placement)`` ranks, mpiexec on the login node
        with the arguments ``--procs`` gives it."""
        env = self.env()
        hosts = read_hostfile(str(self.hostfile(placement)))
        launch = launcher().launch(hosts.total, hosts, self.workdir, forward=forwarded(env),
                                   environ=env)
        return ["ip", "netns", "exec", f"{PREFIX}-login", *launch.command, *program]

    def train_command(self, placement: dict[str, int], args: list[str],
                      hosts_flag: bool = False) -> list[str]:
        """``distnn train --procs N --hostfile FILE ARGS`` on the login node (with
        ``hosts_flag``, ``--hosts node1:1,...`` instead of the file)."""
        hosts = (["--hosts", ",".join(f"{node}:{count}" for node, count in placement.items())]
                 if hosts_flag else ["--hostfile", str(self.hostfile(placement))])
        return ["ip", "netns", "exec", f"{PREFIX}-login", sys.executable, "-m", "distnn", "train",
                "--procs", str(sum(placement.values())), *hosts, *args]

    def run(self, placement: dict[str, int], program: list[str],
            timeout: float = CLUSTER_TIMEOUT_S) -> subprocess.CompletedProcess:
        return self.run_command(self.command(placement, program), timeout)

    def run_command(self, command: list[str], timeout: float = CLUSTER_TIMEOUT_S):
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=self.env())

    def start(self, command: list[str]) -> subprocess.Popen:
        """``command`` in the background, in its own session, so that a test can always
        end it."""
        return subprocess.Popen(command, env=self.env(), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)

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

    def rank_pid(self, node: str, rank: int) -> int:
        """The process of MPI rank ``rank``, which must run on ``node`` (told by the rank
        variable its launcher gave it: Hydra's ``PMI_RANK``, Open MPI's ``OMPI_COMM_WORLD_RANK``)."""
        wanted = {f"{name}={rank}".encode() for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK")}
        for pid in self.pids(node, "mpi4py"):
            try:
                variables = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
            except OSError:
                continue
            if variables & wanted:
                return pid
        raise AssertionError(f"rank {rank} is not running on {node}")

    def link(self, node: str, state: str) -> None:
        """Plug (``up``) or cut (``down``) ``node``'s cable to the switch."""
        ip("link", "set", "eth0", state, namespace=self.namespace(node))

    def end_all(self) -> None:
        """Kill whatever a test left running on the hosts (not the hosts themselves)."""
        for node in (*NODES, "login"):
            for pid in self.pids(node, ""):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _hosts_file(namespace: str) -> None:
    folder = NETNS_ETC / namespace
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
        f"{Cluster.address(node)} {node}\n" for node in NODES)
        + f"{LOGIN_ADDRESS} login {socket.gethostname()}\n")


def build() -> None:
    login = f"{PREFIX}-login"
    for namespace in (login, *map(Cluster.namespace, NODES)):
        _hosts_file(namespace)
    link_hosts(login, [(node, Cluster.namespace(node), Cluster.address(node)) for node in NODES],
               LOGIN_ADDRESS)


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
