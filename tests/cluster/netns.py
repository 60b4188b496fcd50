"""Hosts as Linux network namespaces on a bridge: the plumbing the virtual cluster
(``virtual_cluster.py``) and the emulated network (``benchmarks/emulated_network.py``)
share. Standard library only, so a benchmark can import it without the tests' helpers.
Everything lives inside namespaces named ``<prefix>-*``; the machine's own interfaces and
routes are never touched."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


def ip(*args: str, namespace: str | None = None, check: bool = True):
    command = ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=check)


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def remove_namespaces(prefix: str) -> None:
    """Kill every process in, then delete, each namespace named ``prefix-*``, and the
    hosts files made for them (``/etc/netns/<namespace>``)."""
    for folder in NETNS_ETC.glob(prefix + "-*"):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        NETNS_ETC.rmdir()                   # made for hosts files, unless another one uses it
    except OSError:
        pass
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
        ip("netns", "del", namespace, check=False)


def link_hosts(login: str, hosts: list[tuple[str, str, str]], login_address: str,
               each=None) -> None:
    """A bridge ``br0`` in namespace ``login`` (at ``login_address``) and, for each
    ``(node, namespace, address)``, that namespace joined to it by a veth pair: the host's
    end ``eth0`` at ``address``, the bridge's port named after the node. ``each(node,
    namespace)`` runs once a host's link is up (``benchmarks/emulated_network.py`` shapes
    it there)."""
    ip("netns", "add", login)
    ip("link", "add", "br0", "type", "bridge", namespace=login)
    ip("addr", "add", f"{login_address}/24", "dev", "br0", namespace=login)
    for device in ("br0", "lo"):
        ip("link", "set", device, "up", namespace=login)
    for node, namespace, address in hosts:
        ip("netns", "add", namespace)
        ip("link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", namespace,
           namespace=login)
        ip("link", "set", node, "master", "br0", namespace=login)
        ip("link", "set", node, "up", namespace=login)
        ip("addr", "add", f"{address}/24", "dev", "eth0", namespace=namespace)
        for device in ("eth0", "lo"):
            ip("link", "set", device, "up", namespace=namespace)
        if each is not None:
            each(node, namespace)
