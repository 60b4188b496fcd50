"""Doorbells: blocking wake-ups between ranks on one node, through named pipes.

Why they exist: MPICH and Open MPI busy-poll inside every blocking call (and in the
progress loop that completes a tested request), so a rank that waits burns a core;
polite polling (``comm.sleep_until``) gives the core back but adds up to ``MAX_SLEEP_S``
of latency to each wait. A read from an empty pipe sleeps in the kernel and returns the
moment another rank writes a byte: no core burnt and no latency beyond a context switch.
The data itself stays in MPI-3 shared memory; a doorbell only says "ready", and the
shared-memory fence is a barrier rung on doorbells (``barrier``). Each rank owns one
pipe, which any rank may ring; a ring carries a small integer (4 bytes, so a write is
atomic and rings never interleave), which tells a server which worker rang.

Every wait polls the pipe with the stall timeout (``stall.py``) before reading it: a
poll that returns at once costs one system call, and one that times out ends the job.

A rank that has a core to itself (no other rank of the job may run there: ``own_core``)
first polls without sleeping for up to ``SPIN_S``: its spinning takes nothing from
anyone, and it answers a ring without a wake-up, which on a virtual machine means without
the hypervisor rescheduling a halted core. Ranks that share a core never spin.

The pipes are created in a private temporary directory that is removed as soon as every
rank has opened them, so nothing is left behind, even if the job is killed.
"""

import os
import select
import shutil
import struct
import tempfile
import time
from pathlib import Path

from mpi4py import MPI

from distnn.errors import UsageError
from distnn.parallel.stall import watch_of

RING = struct.Struct("<i")
MOST_RINGS_READ = 1024
SPIN_S = 0.002      # a rank with its own core polls this long before it sleeps


def core_mates(comm: MPI.Comm) -> list[frozenset[int]]:
    """For each rank of ``comm`` (one node), the other ranks that may run on its cores
    (collective; the same list on every rank).

    Bound ranks (``-bind-to core``) have disjoint CPU sets except where ranks outnumber
    cores; unbound ones share every core, and then each has one to itself only when they
    are no more than the cores.
    """
    sets = [set(cpus) for cpus in comm.allgather(sorted(os.sched_getaffinity(0)))]
    mates = []
    for rank, mine in enumerate(sets):
        others = {other for other, theirs in enumerate(sets) if other != rank and mine & theirs}
        unbound = all(theirs == mine for theirs in sets)
        mates.append(frozenset() if unbound and len(sets) <= len(mine) else frozenset(others))
    return mates


def own_cores(comm: MPI.Comm) -> list[bool]:
    """For each rank of ``comm`` (one node), whether no other rank may run on its cores
    (collective; the same list on every rank)."""
    return [not mates for mates in core_mates(comm)]


def own_core(comm: MPI.Comm) -> bool:
    """Whether no other rank of ``comm`` may run on this rank's cores (collective)."""
    return own_cores(comm)[comm.Get_rank()]


def own_core_on_node(comm: MPI.Comm) -> bool:
    """``own_core`` among the ranks of ``comm`` on this rank's node (collective)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return own_core(node)
    finally:
        node.Free()


class Doorbells:
    """One pipe per rank of ``comm`` (all on one node); collective to create."""

    def __init__(self, comm: MPI.Comm, spin_s: float = SPIN_S):
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.watch = watch_of(comm)
        directory = error = None
        if self.rank == 0:
            try:
                directory = tempfile.mkdtemp(prefix="distnn-doorbells-")
                for rank in range(comm.Get_size()):
                    os.mkfifo(Path(directory, str(rank)), 0o600)
            except OSError as exc:
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)
                    directory = None
                error = (f"cannot create the doorbell pipes in {tempfile.gettempdir()} "
                         f"({exc.strerror}); set TMPDIR to a writable local directory, or "
                         "pass --no-shared-memory")
        directory, error = comm.bcast((directory, error), root=0)
        if error:
            raise UsageError(error)
        # O_RDWR: opening never blocks waiting for the other end, and every rank can both
        # ring any pipe and read its own.
        self._pipes = [os.open(Path(directory, str(rank)), os.O_RDWR)
                       for rank in range(comm.Get_size())]
        comm.Barrier()
        if self.rank == 0:
            shutil.rmtree(directory, ignore_errors=True)
        self._poller = select.poll()
        self._poller.register(self._pipes[self.rank], select.POLLIN)
        self._timeout_ms = self.watch.poll_timeout_ms()
        self.mates = core_mates(comm)[self.rank]
        self.spin_s = spin_s if not self.mates else 0.0

    def ring(self, rank: int, message: int = 0) -> None:
        """Wake ``rank`` (or let its next ``wait`` return at once), telling it ``message``."""
        os.write(self._pipes[rank], RING.pack(message))

    def wait(self, rings: int = 1, what: str = "a doorbell", spin: bool = False) -> list[int]:
        """Sleep until this rank's bell has rung ``rings`` times; returns their messages.
        ``what`` names what the rings mean, for the stall message. ``spin``: poll first even
        on a shared core, for a caller that knows the ranks it shares it with are waiting."""
        return self._read(RING.size * rings, exact=True, what=what,
                          spin_s=SPIN_S if spin else self.spin_s)

    def signal(self, rank: int, kind: int = 0) -> None:
        """Ring ``rank`` with a message that says who rang and what (``kind``), for
        ``wait_from``."""
        self.ring(rank, kind * self.size + self.rank)

    def wait_from(self, ringers, what: str = "a doorbell", kind: int = 0,
                  heard=()) -> list[int]:
        """Sleep until every rank of ``ringers`` has signalled ``kind``; returns the messages
        of the other rings read meanwhile, which a later ``wait_from`` counts if given them
        as ``heard``. Once every ringer that shares this rank's core has signalled, poll
        without sleeping: the core is this rank's alone until the others ring, and a rank
        woken on an idle core waits for the core to wake too (on a virtual machine, for
        the hypervisor to run it again)."""
        base = kind * self.size
        waiting = {base + rank: rank for rank in ringers}
        others = []
        for message in heard:
            if waiting.pop(message, None) is None:
                others.append(message)
        while waiting:
            for message in self.wait(what=what, spin=self.mates.isdisjoint(waiting.values())):
                if waiting.pop(message, None) is None:
                    others.append(message)
        return others

    def wait_any(self, what: str = "a doorbell") -> list[int]:
        """Sleep until this rank's bell has rung; returns the messages of every ring so far."""
        return self._read(RING.size * MOST_RINGS_READ, exact=False, what=what)

    def _read(self, size: int, exact: bool, what: str, spin_s: float | None = None) -> list[int]:
        """Read rings; any ring restarts the stall timeout (the ringing peer is alive)."""
        pipe, poll = self._pipes[self.rank], self._poller.poll
        if spin_s is None:
            spin_s = self.spin_s
        spin_until = time.perf_counter() + spin_s if spin_s else 0.0
        data = b""
        while True:
            if spin_until:
                while not poll(0):
                    if time.perf_counter() > spin_until:
                        spin_until = 0.0
                        break
            if not spin_until and not poll(self._timeout_ms):
                self.watch.stalled(what)
            data += os.read(pipe, size - len(data))
            if data and not len(data) % RING.size and (len(data) == size or not exact):
                return [message for (message,) in RING.iter_unpack(data)]

    def barrier(self, what: str = "the other ranks of this node") -> None:
        """Return once every rank has called ``barrier``: each rings rank 0, which rings
        every rank back once it has heard them all. Every waiting rank sleeps."""
        if self.size == 1:
            return
        if self.rank == 0:
            self.wait(self.size - 1, what)
            for rank in range(1, self.size):
                self.ring(rank)
        else:
            self.ring(0)
            self.wait(what=what)

    def close(self) -> None:
        for pipe in self._pipes:
            os.close(pipe)
        self._pipes = []
