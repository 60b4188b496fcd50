"""The stall watchdog: no wait is unbounded (DESIGN §3, invariant 8).

A rank whose peer goes silent (a dead host, a cut cable, a stopped process) would wait
forever in MPI: nothing in MPI times out. So every wait in distnn has a deadline,
``--stall-timeout`` seconds after it started (doorbells poll their pipe with a timeout;
polite waits look at the clock between sleeps; collectives are non-blocking and tested).
A rank whose wait runs past its deadline calls ``StallWatch.stalled``:

1. it tells every other rank "I am waiting" (one small non-blocking message each, on a
   private duplicate of the communicator) and listens for the same notice from them for
   ``NOTICE_GRACE_S``: the ranks stuck in the same wait time out within that window, so
   the ranks it heard nothing from are the silent ones;
2. the lowest rank that is not silent prints one message naming the silent ranks, their
   hosts and what it was waiting for, then ends the whole job with ``MPI_Abort`` and exit
   status ``EXIT_STALLED``; the other waiting ranks exit quietly (behind a cut cable, the
   far side cannot reach the user anyway). The ``--procs`` launcher recognises the
   message in the output mpiexec relays (``STALLED_MARK``), from whichever host, and
   kills an mpiexec that then keeps waiting for a host it cannot reach.

Checkpoints are written atomically, so the last one stays usable. The clock is read only
once a wait's first fast tests have failed, so a step that does not wait pays nothing.
"""

import math
import os
import signal
import sys
import threading
import time

import numpy as np
from mpi4py import MPI

from distnn.launch import EXIT_STALLED, STALLED_MARK

DEFAULT_TIMEOUT_S = 120.0
NOTICE_GRACE_S = 3.0      # how long a stalled rank listens for the other waiting ranks
ABORT_GRACE_S = 0.5       # lets mpiexec forward the message before MPI_Abort
EXIT_FALLBACK_S = 5.0     # a rank whose MPI_Abort cannot reach mpiexec exits anyway
ABORT_STUCK_S = 2.0       # the reporter, if MPI_Abort has not ended it by then, by SIGALRM
NOTICE_TAG = 7


class StallWatch:
    """One rank's watchdog on ``comm``; ``timeout_s <= 0`` turns it off.

    ``epoch`` and ``step`` are set by the training loop, so that a message says where
    the run was. Collective to create (it duplicates ``comm`` and learns every rank's host).
    """

    def __init__(self, comm: MPI.Comm | None, timeout_s: float):
        self.timeout_s = timeout_s if timeout_s and timeout_s > 0 else math.inf
        self.epoch = self.step = 0
        self._comm = comm.Dup() if comm is not None else None
        self.hosts = comm.allgather(MPI.Get_processor_name()) if comm is not None else []

    @property
    def enabled(self) -> bool:
        return self._comm is not None and math.isfinite(self.timeout_s)

    def deadline(self) -> float:
        """The monotonic time a wait starting now gives up (infinity when off)."""
        return time.monotonic() + self.timeout_s

    def poll_timeout_ms(self) -> int:
        """For ``select.poll``: the timeout in milliseconds, -1 (forever) when off."""
        return -1 if not self.enabled else max(1, int(self.timeout_s * 1000))

    def stalled(self, what: str) -> None:
        """This rank waited ``timeout_s`` for ``what``: find the silent ranks, and end the
        job with one message (see the module docstring). Does not return."""
        comm, rank, size = self._comm, self._comm.Get_rank(), self._comm.Get_size()
        notice = np.array([self.epoch, self.step], dtype=np.int64)
        sends = [comm.Isend(notice, dest=other, tag=NOTICE_TAG)
                 for other in range(size) if other != rank]
        heard, status, received = {rank}, MPI.Status(), np.empty(2, dtype=np.int64)
        listen_until = time.monotonic() + NOTICE_GRACE_S
        while len(heard) < size and time.monotonic() < listen_until:
            if comm.Iprobe(source=MPI.ANY_SOURCE, tag=NOTICE_TAG, status=status):
                comm.Recv(received, source=status.Get_source(), tag=NOTICE_TAG)
                heard.add(status.Get_source())
            else:
                time.sleep(1e-3)
        fallback = threading.Timer(EXIT_FALLBACK_S, os._exit, args=(EXIT_STALLED,))
        fallback.daemon = True
        fallback.start()
        if rank == min(heard):
            silent = sorted(set(range(size)) - heard)
            sys.stderr.write(f"[rank {rank}/{size}] {STALLED_MARK}"
                             f"{self.describe(silent, rank, what)}\n")
            sys.stderr.flush()
            time.sleep(ABORT_GRACE_S)
            # MPICH's MPI_Abort can spin for ever, holding the GIL (so the fallback thread
            # never runs), when another rank of this node is stopped, and Hydra's proxy of
            # a remote node then waits for both: SIGALRM's default action ends this
            # process whatever it runs, and its proxy then ends the rest.
            signal.setitimer(signal.ITIMER_REAL, ABORT_STUCK_S)
            comm.Abort(EXIT_STALLED)
        del sends
        time.sleep(EXIT_FALLBACK_S + 1)    # the reporter's MPI_Abort ends this rank first

    def describe(self, silent: list[int], rank: int, what: str) -> str:
        """The one message: who is silent, where, and what was being waited for."""
        if silent:
            names = ", ".join(f"rank {r} on host {self.hosts[r]}" for r in silent)
            who = f"{names} {'has' if len(silent) == 1 else 'have'} gone silent"
        else:
            who = "every rank is waiting for another"
        return (f"{who}: rank {rank} waited {self.timeout_s:g} s for {what} "
                f"(epoch {self.epoch}, step {self.step}); ending the job (exit {EXIT_STALLED}). The last "
                "checkpoint is kept: continue with --resume once the hosts are healthy, or "
                "raise --stall-timeout if steps legitimately take longer")

    def free(self) -> None:
        if self._comm is not None:
            self._comm.Free()
            self._comm = None


OFF = StallWatch(None, 0)
_KEYVAL = MPI.Comm.Create_keyval()


def attach(comm: MPI.Comm, watch: StallWatch) -> None:
    """Make ``watch`` the watchdog of every wait on ``comm`` (MPI attribute caching: the
    watch travels with the communicator, which library code already takes). Collective:
    a watch left by an earlier run on ``comm`` is released first."""
    detach(comm)
    comm.Set_attr(_KEYVAL, watch)


def detach(comm: MPI.Comm) -> None:
    """Remove and release ``comm``'s watch, if it has one (collective)."""
    watch = comm.Get_attr(_KEYVAL)
    if watch is not None:
        comm.Delete_attr(_KEYVAL)
        watch.free()


def share_watch(parent: MPI.Comm, child: MPI.Comm) -> None:
    """Bound the waits on ``child`` (a communicator split from ``parent``) by ``parent``'s
    watch, which stays ``parent``'s to release: a stall on ``child`` still tells every rank
    of ``parent``."""
    watch = parent.Get_attr(_KEYVAL)
    if watch is not None:
        child.Set_attr(_KEYVAL, watch)


def watch_of(comm: MPI.Comm) -> StallWatch:
    """The watchdog attached to ``comm``, or one that is off."""
    watch = comm.Get_attr(_KEYVAL)
    return OFF if watch is None else watch
