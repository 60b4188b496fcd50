"""``--hosts`` and ``--hostfile``: which hosts a ``--procs`` job runs on, and how many ranks each.

Both give hosts with a slot count (ranks the host takes before the next one is used), in
order; ranks beyond the slots start again at the first host. distnn reads them itself,
so that a mistake is reported with the file and line before any host is contacted, and
so that one spelling works with every launcher: the launcher gets how many ranks each
host runs, in its own syntax (``launchers.py``).

Accepted, one host per line of a hostfile (``#`` starts a comment) or comma-separated
in ``--hosts``: ``HOST`` (one slot), ``HOST:N`` (Hydra's spelling) or ``HOST slots=N``
(Open MPI's, hostfile only).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from distnn.errors import UsageError
from distnn.guards import regular_file

MAX_HOSTFILE_BYTES = 1 << 20
MAX_SLOTS = 4096
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,252}[A-Za-z0-9])?")
FORMS = "HOST, HOST:N or HOST slots=N"


@dataclass(frozen=True)
class Hosts:
    """Hosts in the order ranks fill them, each with its slot count; ``source`` names
    where they came from, for messages."""

    slots: tuple[tuple[str, int], ...]
    source: str

    @property
    def total(self) -> int:
        return sum(count for _, count in self.slots)

    def counts(self, procs: int) -> "Hosts":
        """How many of ``procs`` ranks each host runs: passes over the hosts in order, each
        pass giving every host up to its slots (Hydra's rule for more ranks than slots).
        Hosts left without a rank are dropped. Launchers are given these counts, so that
        every launcher places ranks alike."""
        counts = dict.fromkeys((host for host, _ in self.slots), 0)
        left = procs
        while left > 0:
            for host, slots in self.slots:
                take = min(slots, left)
                counts[host] += take
                left -= take
        return Hosts(tuple((host, count) for host, count in counts.items() if count),
                     self.source)

    def placement(self, procs: int) -> list[tuple[str, range]]:
        """Which ranks each host runs: consecutive ranks, hosts in order."""
        placed, first = [], 0
        for host, count in self.counts(procs).slots:
            placed.append((host, range(first, first + count)))
            first += count
        return placed

    def spelled(self, separator: str = ",") -> str:
        """``h1:2,h2:2``: the form both Hydra's ``-hosts`` and Open MPI's ``--host`` read."""
        return separator.join(f"{host}:{count}" for host, count in self.slots)


def _entry(text: str, where: str, hostfile: bool) -> tuple[str, int]:
    """One ``HOST``, ``HOST:N`` or (hostfile) ``HOST slots=N``; UsageError naming ``where``."""
    words = text.split()
    if hostfile and len(words) == 2 and words[1].startswith("slots="):
        host, count = words[0], words[1][len("slots="):]
    elif len(words) == 1:
        host, _, count = words[0].partition(":")
        count = count if ":" in words[0] else "1"
    else:
        forms = FORMS if hostfile else "HOST or HOST:N, comma-separated"
        raise UsageError(f"{where}: {text.strip()!r} is not a host entry; write {forms}")
    if not HOST_NAME.fullmatch(host):
        raise UsageError(f"{where}: {host!r} is not a host name (letters, digits, '.', '-' "
                         "and '_'; an IPv4 address is fine)")
    if not count.isdigit() or not 1 <= int(count) <= MAX_SLOTS:
        raise UsageError(f"{where}: the slot count of {host} must be an integer in "
                         f"[1, {MAX_SLOTS}], got {count!r}")
    return host, int(count)


def _collect(entries: list[tuple[str, int, str]], source: str) -> Hosts:
    seen: dict[str, str] = {}
    for host, _, label in entries:
        if host in seen:
            raise UsageError(f"{source}, {label}: {host} is listed already ({seen[host]}); give "
                             "each host once, with its slot count")
        seen[host] = label
    if not entries:
        raise UsageError(f"{source} lists no host; write one per line: {FORMS}")
    return Hosts(tuple((host, count) for host, count, _ in entries), source)


def parse_hosts(text: str) -> Hosts:
    """``--hosts h1:2,h2:2``."""
    entries = []
    for index, item in enumerate(text.split(","), start=1):
        if not item.strip():
            raise UsageError(f"--hosts {text!r}: entry {index} is empty; write HOST or HOST:N, "
                             "comma-separated, e.g. node1:2,node2:2")
        entries.append((*_entry(item, f"--hosts, entry {index}", hostfile=False),
                        f"entry {index}"))
    return _collect(entries, f"--hosts {text}")


def read_hostfile(path: str) -> Hosts:
    """``--hostfile FILE``: one host per line, ``#`` comments and blank lines ignored."""
    regular_file(path, "--hostfile")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_HOSTFILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--hostfile {path}: cannot read it ({exc.strerror})") from exc
    if len(data) > MAX_HOSTFILE_BYTES:
        raise UsageError(f"--hostfile {path}: over {MAX_HOSTFILE_BYTES:,} bytes, too large for "
                         f"a hostfile; give a file with one host per line: {FORMS}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--hostfile {path}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start}); give a file with one host per line: {FORMS}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0]
        if content.strip():
            entries.append((*_entry(content, f"--hostfile {path}, line {number}", hostfile=True),
                            f"line {number}"))
    return _collect(entries, f"--hostfile {Path(path)}")


def hosts_from(hosts: str | None, hostfile: str | None) -> Hosts | None:
    """The hosts the user gave with one of the two flags, or None for this machine alone."""
    if hosts is not None and hostfile is not None:
        raise UsageError("--hosts and --hostfile both name the hosts; give one of them")
    if hosts is not None:
        return parse_hosts(hosts)
    if hostfile is not None:
        return read_hostfile(hostfile)
    return None
