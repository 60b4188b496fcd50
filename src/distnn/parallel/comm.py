"""Small MPI helpers shared by the strategies.

Why polite waiting exists: MPICH busy-polls inside blocking calls. On a machine with
fewer cores than ranks (a parameter server plus workers on 2 cores) a rank that waits
in ``Recv`` or ``Wait`` keeps a core at 100% and steals it from the ranks computing.
``wait_politely`` and ``probe_politely`` test for completion, then sleep a short,
growing interval, so a waiting rank costs a few percent of a core, at the price of at
most ``MAX_SLEEP_S`` extra latency per wait.

Every wait here takes the rank's stall watch (``stall.py``) and what it waits for, and
ends the job when the wait outlives ``--stall-timeout``: no wait is unbounded. The clock
is read only after the first ``SPIN_TESTS`` tests have failed.
"""

import time
from enum import IntEnum

import numpy as np
from mpi4py import MPI

from distnn.parallel.stall import OFF, StallWatch

SPIN_TESTS = 50          # tests before the first sleep: cheap when the message is imminent
FIRST_SLEEP_S = 20e-6    # the first sleep; it doubles up to MAX_SLEEP_S
MAX_SLEEP_S = 200e-6     # bounds the latency added to a wait


class Tag(IntEnum):
    """Point-to-point message tags of the parameter-server protocols."""

    GRADIENT = 1
    PARAMS = 2


def mpi_type(dtype: np.dtype) -> MPI.Datatype:
    return {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[np.dtype(dtype)]


def sleep_until(ready, watch: StallWatch = OFF, what: str = "a peer") -> None:
    """Return once ``ready()`` is true, sleeping between tests; past the stall timeout,
    ``watch`` ends the job, saying the rank waited for ``what``."""
    for _ in range(SPIN_TESTS):
        if ready():
            return
    deadline = watch.deadline()
    pause = FIRST_SLEEP_S
    while not ready():
        if time.monotonic() > deadline:
            watch.stalled(what)
        time.sleep(pause)
        pause = min(2 * pause, MAX_SLEEP_S)


def spin_until(ready, watch: StallWatch = OFF, what: str = "a peer") -> None:
    """Return once ``ready()`` is true, testing without sleeping, as a blocking MPI call
    would (for ranks that have no idle core to give back); bounded like ``sleep_until``."""
    for _ in range(SPIN_TESTS):
        if ready():
            return
    deadline = watch.deadline()
    tests = 0
    while not ready():
        tests += 1
        if tests % SPIN_TESTS == 0 and time.monotonic() > deadline:
            watch.stalled(what)


def spin_for(ready, seconds: float) -> bool:
    """Test ``ready()`` without sleeping for up to ``seconds``; returns whether it was."""
    until = time.perf_counter() + seconds
    while not ready():
        if time.perf_counter() > until:
            return False
    return True


def wait_politely(request: MPI.Request, watch: StallWatch = OFF, what: str = "a peer") -> None:
    """Complete ``request`` without spinning a core while it is pending."""
    sleep_until(request.Test, watch, what)


def wait_spinning(request: MPI.Request, watch: StallWatch = OFF, what: str = "a peer") -> None:
    """Complete ``request`` as a blocking call would, but bounded by the stall timeout."""
    spin_until(request.Test, watch, what)


def probe_politely(comm: MPI.Comm, status: MPI.Status, source: int = MPI.ANY_SOURCE,
                   tag: int = MPI.ANY_TAG, watch: StallWatch = OFF,
                   what: str = "a message") -> MPI.Status:
    """Block, politely, until a matching message is ready; fills and returns ``status``."""
    sleep_until(lambda: comm.Iprobe(source=source, tag=tag, status=status), watch, what)
    return status


def allreduce_sum(comm: MPI.Comm, values, watch: StallWatch = OFF,
                  what: str = "the metrics") -> np.ndarray:
    """Sum a short float64 vector over ranks (metrics and timings; not a hot path)."""
    return _allreduce(comm, values, MPI.SUM, watch, what)


def allreduce_max(comm: MPI.Comm, values, watch: StallWatch = OFF,
                  what: str = "the metrics") -> np.ndarray:
    """The largest of each entry of a short float64 vector over ranks."""
    return _allreduce(comm, values, MPI.MAX, watch, what)


def _allreduce(comm: MPI.Comm, values, op: MPI.Op, watch: StallWatch, what: str) -> np.ndarray:
    """Non-blocking and waited for politely: a rank gone silent ends the job by the stall
    timeout (a blocking collective would spin here for ever)."""
    buffer = np.asarray(values, dtype=np.float64).copy()
    wait_politely(comm.Iallreduce(MPI.IN_PLACE, buffer, op=op), watch, what)
    return buffer

