"""Doorbells: blocking wake-ups between ranks on one node, through named pipes.

Why they exist: MPICH busy-polls inside every blocking call, so a rank that waits burns
a core; polite polling (``comm.sleep_until``) gives the core back but adds up to
``MAX_SLEEP_S`` of latency to each wait. A read from an empty pipe sleeps in the kernel
and returns the moment another rank writes a byte: no core burnt and no latency beyond a
context switch. The data itself stays in MPI-3 shared memory; a doorbell only says
"ready". Each rank owns one pipe, which any rank may ring; a ring carries a small integer
(4 bytes, so a write is atomic and rings never interleave), which tells a server which
worker rang.

The pipes are created in a private temporary directory that is removed as soon as every
rank has opened them, so nothing is left behind, even if the job is killed.
"""

import os
import shutil
import struct
import tempfile
from pathlib import Path

from mpi4py import MPI

from distnn.errors import UsageError

RING = struct.Struct("<i")
MOST_RINGS_READ = 1024


class Doorbells:
    """One pipe per rank of ``comm`` (all on one node); collective to create."""

    def __init__(self, comm: MPI.Comm):
        self.rank = comm.Get_rank()
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

    def ring(self, rank: int, message: int = 0) -> None:
        """Wake ``rank`` (or let its next ``wait`` return at once), telling it ``message``."""
        os.write(self._pipes[rank], RING.pack(message))

    def wait(self, rings: int = 1) -> list[int]:
        """Sleep until this rank's bell has rung ``rings`` times; returns their messages."""
        return self._read(RING.size * rings, exact=True)

    def wait_any(self) -> list[int]:
        """Sleep until this rank's bell has rung; returns the messages of every ring so far."""
        return self._read(RING.size * MOST_RINGS_READ, exact=False)

    def _read(self, size: int, exact: bool) -> list[int]:
        pipe = self._pipes[self.rank]
        data = os.read(pipe, size)
        while len(data) % RING.size or (exact and len(data) < size):
            data += os.read(pipe, size - len(data))
        return [message for (message,) in RING.iter_unpack(data)]

    def close(self) -> None:
        for pipe in self._pipes:
            os.close(pipe)
        self._pipes = []
