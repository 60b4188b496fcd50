"""Stopping a run cleanly on Ctrl-C, SIGTERM or SIGHUP, at a step boundary every rank agrees on.

A signal only sets a flag. The training loop asks ``should_stop`` before a step; every
``CHECK_EVERY`` global steps the ranks combine their flags (one tiny ``Allreduce``, or
what a strategy's steps already share: ``Strategy.stop_agreed``), so they stop together
after the same step, save a checkpoint and the model, and exit 130. Under ``mpiexec`` each
rank gets the signal from the launcher; a rank that gets it a little later than the others
still stops at the same step. A second signal means "now": serial runs raise
``KeyboardInterrupt`` at once, and under ``--procs`` the launcher's second SIGINT makes
Hydra kill the job. Once the run is ending on its own (``settle``), the signals are
ignored.
"""

import signal

import numpy as np

# SIGUSR1: what the --procs launcher forwards (MPI launchers pass it on without a word).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
CHECK_EVERY = 16      # global steps between agreements: one small Allreduce per 16 steps
EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """Every rank stopped at the same step boundary on a user's request."""

    def __init__(self, epoch: int, epoch_step: int):
        super().__init__(f"interrupted after {epoch} epoch{'s' if epoch != 1 else ''}"
                         + (f" and {epoch_step} steps of epoch {epoch + 1}" if epoch_step else ""))
        self.epoch, self.epoch_step = epoch, epoch_step


class StopRequest:
    """Catches the stop signals while installed; ``requested`` is this rank's flag."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}
        self._settled = False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def install(self) -> "StopRequest":
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):    # not the main thread: signals stay as they were
                pass
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self) -> None:
        """The run is ending on its own, alike on every rank (stopped, finished or failed):
        the stop signals are ignored from now on. A second Ctrl-C would otherwise break
        into ``MPI_Finalize`` with a traceback, or, once Python has put back the default
        handlers while it shuts down, kill the rank (the job then ends as a crash). The
        exit is bounded anyway (``cli.run.FINALIZE_TIMEOUT_S``)."""
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN)
        self._settled = True

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def agreed(self, comm, spin: bool = True) -> bool:
        """Collective: whether any rank has been asked to stop. ``spin``: whether this rank
        may wait for the others by spinning (it has a core to itself); otherwise it sleeps
        between tests, or a rank sharing its core would wait for its time slice to end."""
        if comm.Get_size() == 1:
            return self.requested
        from mpi4py import MPI  # not at import: the launcher imports this module, never MPI

        from distnn.parallel.comm import wait_politely, wait_spinning
        from distnn.parallel.stall import watch_of

        flag = np.array([1 if self.requested else 0], dtype=np.int32)
        wait = wait_spinning if spin else wait_politely
        wait(comm.Iallreduce(MPI.IN_PLACE, flag, op=MPI.MAX), watch_of(comm),
             "the agreement on stopping")
        return bool(flag[0])


class NoStop(StopRequest):
    """For library callers that handle signals themselves: never asks to stop."""

    def agreed(self, comm, spin: bool = True) -> bool:
        return False
