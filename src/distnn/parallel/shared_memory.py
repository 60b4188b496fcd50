"""Flat buffers in MPI-3 shared memory, for ranks that share one node.

Ranks on one node can read each other's gradients and one copy of the parameters
directly, instead of copying them through messages. Synchronisation follows the MPI-3
shared-memory pattern: every window is locked once (``Lock_all``) and ``fence`` pairs a
memory sync with a barrier, so writes before it are seen by every rank after it.

The barrier is not MPI's: ranks that wait in ``MPI_Ibarrier`` spin in the library's
progress loop, and on a machine with other work a spinning rank takes CPU time the
computing ranks need (``benchmarks/idle_wait.py`` measures it). Doorbells sleep.
"""

import os

import numpy as np
from mpi4py import MPI

from distnn.parallel.doorbell import Doorbells


def on_one_node(comm: MPI.Comm) -> bool:
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size() == comm.Get_size()
    finally:
        node.Free()


def to_private_memory(model, optimizer, owned: slice = slice(None)) -> None:
    """Give a model and its optimizer (which updates the ``owned`` slice of the parameters)
    private copies of their buffers (which may live in shared memory), so that the shared
    memory can be freed and the results outlive it."""
    params = model.params.copy()
    model.rebind(params=params, grads=model.grads.copy())
    optimizer.relocate(params[owned],
                       {name: buffer.copy() for name, buffer in optimizer.state.items()})


class SharedBuffers:
    """Named arrays in shared memory, allocated collectively on ``comm`` (one node)."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self._windows: list[MPI.Win] = []
        self._bells = Doorbells(comm)

    def array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A zeroed array of ``shape`` every rank of ``comm`` sees (rank 0 owns the memory)."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize if self.comm.Get_rank() == 0 else 0
        window = MPI.Win.Allocate_shared(size, dtype.itemsize, comm=self.comm)
        window.Lock_all(MPI.MODE_NOCHECK)
        self._windows.append(window)
        memory, _ = window.Shared_query(0)
        array = np.ndarray(shape, dtype=dtype, buffer=memory)
        self.fence()
        if self.comm.Get_rank() == 0:
            array[...] = 0
        self.fence()
        return array

    def sync(self) -> None:
        """A memory barrier, no communication: this rank's writes so far become visible,
        and its later reads see what other ranks published before signalling it."""
        for window in self._windows:
            window.Sync()

    def fence(self, what: str = "the other ranks of this node") -> None:
        """Every rank's writes so far are visible to every rank afterwards. The barrier is
        rung on doorbells (``doorbell.py``): a rank that arrives first sleeps in the kernel
        instead of spinning in the MPI library's progress loop, and the stall timeout
        bounds its wait."""
        self.sync()
        self._bells.barrier(what)
        self.sync()

    def free(self) -> None:
        """Collective: once every rank is done with it, release the memory; arrays from
        ``array`` must not be used afterwards."""
        self.fence()
        for window in self._windows:
            window.Unlock_all()
            window.Free()
        self._windows = []
        self._bells.close()


SHM_DIR = "/dev/shm/"
# The files each library makes in MPI_Init: MPICH one per node, Open MPI's btl/sm one per
# rank, every one of them mapped by every rank of the node before MPI_Init returns.
SEGMENT_PREFIXES = {"MPICH": "mpich_shm_", "Open MPI": "sm_segment."}


def _mapped_segments(prefix: str) -> set[str]:
    """Paths of this process's live mappings of files in /dev/shm named ``prefix...``."""
    paths = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith(SHM_DIR + prefix):
                    path = fields[5].rstrip("\n")
                    if not path.endswith("(deleted)"):
                        paths.add(path)
    except OSError:
        pass
    return paths


def unlink_job_segments(comm: MPI.Comm) -> None:
    """Remove the names of the shared-memory files MPICH or Open MPI made for this job in
    MPI_Init.

    Every rank of a node maps the node's segments during MPI_Init (MPICH's one, Open MPI's
    one per rank), so once all ranks are past a barrier the files' names are no longer
    needed: the memory lives while any rank maps it. Without a name, no ending of the job
    (MPI_Abort, kill -9, a lost launcher) can leave it behind in /dev/shm, where it would
    hold its memory until reboot. Other MPI libraries may attach later, by name, so their
    files are left alone.
    """
    library = MPI.Get_library_version()
    prefixes = [prefix for name, prefix in SEGMENT_PREFIXES.items() if library.startswith(name)]
    if not prefixes:
        return
    comm.Barrier()
    for path in _mapped_segments(prefixes[0]):
        try:
            os.unlink(path)
        except OSError:
            pass
