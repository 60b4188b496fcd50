"""Where a rank's training time goes: computing, communicating, or waiting for others."""

import time

PHASES = ("compute", "comm", "wait")


class PhaseTimer:
    """Accumulates seconds per phase; ``lap(phase)`` charges the time since the last lap."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._last = time.perf_counter()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] += now - self._last
        self._last = now
