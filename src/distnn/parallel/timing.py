"""Where a rank's training time goes: computing, communicating, or waiting for others.

A strategy calls ``timer.lap(phase)`` at the end of each phase of a step; the time since
the previous lap is charged to ``phase``. The phases are finer than the three categories
``result.json`` reports (``PHASES``): ``CATEGORY`` maps each phase to one of them, or to
none for the work outside the training time (evaluation, checkpoints).

``RecordingTimer`` (``--timeline``) also keeps every lap of a window of steps, for the
trace that ``distnn.timeline`` writes; the default ``PhaseTimer`` records nothing.
"""

import time

import numpy as np
from mpi4py import MPI

PHASES = ("compute", "comm", "wait")    # result.json's categories
CATEGORY = {
    "compute": "compute",     # a worker's gradient (and its share of the update), a local step
    "update": "compute",      # applying an update to the parameters this rank owns
    "comm": "comm",           # moving data: sends, receives, broadcasts, the allreduce
    "wait": "wait",           # waiting for another rank
    "evaluation": None,       # outside the training time, as result.json counts it
    "checkpoint": None,
}
FINE_PHASES = tuple(CATEGORY)
CODES = {phase: code for code, phase in enumerate(FINE_PHASES)}
# A recorded lap: [start, end] on this rank's clock (perf_counter seconds), phase code, step.
START, END, PHASE, STEP = range(4)
FIELDS = 4


class PhaseTimer:
    """Accumulates seconds per phase; ``lap(phase)`` charges the time since the last lap."""

    def __init__(self):
        self.seconds = dict.fromkeys(FINE_PHASES, 0.0)
        self._last = time.perf_counter()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now

    def category_seconds(self) -> dict:
        """Seconds per category of ``PHASES``, for the result record."""
        totals = dict.fromkeys(PHASES, 0.0)
        for phase, seconds in self.seconds.items():
            if CATEGORY[phase] is not None:
                totals[CATEGORY[phase]] += seconds
        return totals


class RecordingTimer(PhaseTimer):
    """A ``PhaseTimer`` that also keeps the laps of steps ``[first, stop)``.

    The step of a lap is the ``batch_number`` of the strategy it ``follow``s (the global
    step, counted from 0, that the strategy set before the step; a ps-async server sets
    the step of the gradient it applies). Laps go into a buffer allocated once by
    ``record``; when it is full, further laps are counted in ``dropped``, not kept.
    """

    def __init__(self):
        super().__init__()
        self.first = self.stop = 0
        self.events = np.zeros((0, FIELDS))
        self.recorded = self.dropped = 0
        self._source = None

    def follow(self, strategy) -> None:
        self._source = strategy

    def record(self, first: int, stop: int, capacity: int) -> None:
        """Keep the laps of steps ``[first, stop)``, at most ``capacity`` of them."""
        self.first, self.stop = first, stop
        self.events = np.zeros((capacity, FIELDS))
        self.recorded = self.dropped = 0

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        last = self._last
        self.seconds[phase] += now - last
        self._last = now
        step = self._source.batch_number
        if self.first <= step < self.stop:
            index, events = self.recorded, self.events
            if index == events.shape[0]:
                self.dropped += 1
                return
            events[index, START] = last
            events[index, END] = now
            events[index, PHASE] = CODES[phase]
            events[index, STEP] = step
            self.recorded = index + 1

    def gather(self, comm: MPI.Comm, root: int = 0):
        """Every rank's recorded laps on ``root`` (collective; one ``Gatherv``, no pickles):
        ``(events, counts, dropped)`` there, with ``events`` the ranks' rows in rank order
        and ``counts``/``dropped`` per rank; None elsewhere."""
        size = comm.Get_size()
        mine = np.array([self.recorded, self.dropped], dtype=np.int64)
        tallies = np.zeros((size, 2), dtype=np.int64) if comm.Get_rank() == root else None
        comm.Gather(mine, tallies, root=root)
        if comm.Get_rank() != root:
            comm.Gatherv(self.events[:self.recorded], None, root=root)
            return None
        counts = tallies[:, 0]
        events = np.empty((int(counts.sum()), FIELDS))
        sizes = counts * FIELDS
        displacements = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        comm.Gatherv(self.events[:self.recorded], [events, sizes, displacements, MPI.DOUBLE],
                     root=root)
        return events, counts, tallies[:, 1]
