"""Small MPI helpers shared by the strategies.

Why polite waiting exists: MPICH busy-polls inside blocking calls. On a machine with
fewer cores than ranks (a parameter server plus workers on 2 cores) a rank that waits
in ``Recv`` or ``Wait`` keeps a core at 100% and steals it from the ranks computing.
``wait_politely`` and ``probe_politely`` test for completion, then sleep a short,
growing interval, so a waiting rank costs a few percent of a core, at the price of at
most ``MAX_SLEEP_S`` extra latency per wait.
"""

import time
from enum import IntEnum

import numpy as np
from mpi4py import MPI

SPIN_TESTS = 50          # tests before the first sleep: cheap when the message is imminent
FIRST_SLEEP_S = 20e-6    # the first sleep; it doubles up to MAX_SLEEP_S
MAX_SLEEP_S = 200e-6     # bounds the latency added to a wait


class Tag(IntEnum):
    """Point-to-point message tags of the parameter-server protocols."""

    GRADIENT = 1
    PARAMS = 2


def mpi_type(dtype: np.dtype) -> MPI.Datatype:
    return {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[np.dtype(dtype)]


def sleep_until(ready) -> None:
    for _ in range(SPIN_TESTS):
        if ready():
            return
    pause = FIRST_SLEEP_S
    while not ready():
        time.sleep(pause)
        pause = min(2 * pause, MAX_SLEEP_S)


def wait_politely(request: MPI.Request) -> None:
    """Complete ``request`` without spinning a core while it is pending."""
    sleep_until(request.Test)


def probe_politely(comm: MPI.Comm, status: MPI.Status, source: int = MPI.ANY_SOURCE,
                   tag: int = MPI.ANY_TAG) -> MPI.Status:
    """Block, politely, until a matching message is ready; fills and returns ``status``."""
    sleep_until(lambda: comm.Iprobe(source=source, tag=tag, status=status))
    return status


def allreduce_sum(comm: MPI.Comm, values) -> np.ndarray:
    """Sum a short float64 vector over ranks (metrics and timings; not a hot path)."""
    buffer = np.asarray(values, dtype=np.float64).copy()
    comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
    return buffer

