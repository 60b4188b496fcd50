"""Rank 0's view of a run: a live status line on a terminal, plain log lines otherwise."""

import os
import sys
import time

REFRESH_S = 0.2
TTY_VAR = "DISTNN_TTY"     # set by the --procs launcher when its own output is a terminal


class Progress:
    """Cheap to call every step: ``step`` redraws at most every ``REFRESH_S`` seconds.

    ``enabled`` (rank 0, not --quiet) turns output on; ``live`` is a redrawn line, on when
    the stream is a terminal or the launcher says the user's is (``DISTNN_TTY``).
    """

    def __init__(self, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and (self.stream.isatty() or os.environ.get(TTY_VAR) == "1")
        self.total_epochs, self.steps_per_epoch, self.samples_per_epoch = 0, 1, 0
        self._drawn = 0.0
        self._started = time.monotonic()
        self._first = 0
        self._metrics = ""
        self._line_open = False

    def configure(self, total_epochs: int, steps_per_epoch: int, samples_per_epoch: int) -> None:
        self.total_epochs, self.steps_per_epoch = total_epochs, max(steps_per_epoch, 1)
        self.samples_per_epoch = samples_per_epoch

    def start(self, first_epoch: int, first_step: int) -> None:
        self._started = time.monotonic()
        self._first = first_epoch * self.steps_per_epoch + first_step

    def step(self, epoch: int, step: int) -> None:
        """Before step ``step`` of (0-based) ``epoch``."""
        if not self.live:
            return
        now = time.monotonic()
        if now - self._drawn < REFRESH_S:
            return
        self._drawn = now
        done = epoch * self.steps_per_epoch + step - self._first
        total = self.total_epochs * self.steps_per_epoch - self._first
        elapsed = now - self._started
        rate = done / elapsed * self.samples_per_epoch / self.steps_per_epoch if elapsed else 0.0
        eta = elapsed / done * (total - done) if done else 0.0
        width = 24
        filled = width * (epoch * self.steps_per_epoch + step) // max(
            self.total_epochs * self.steps_per_epoch, 1)
        bar = "#" * filled + "." * (width - filled)
        self._draw(f"[{bar}] epoch {epoch + 1}/{self.total_epochs} step {step}/"
                   f"{self.steps_per_epoch} {self._metrics} {rate:,.0f} samples/s eta {eta:,.0f}s")

    def epoch_done(self, epoch: int, samples_per_s: float) -> None:
        """After ``epoch`` (1-based) is complete."""

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text + " \033[K")
        self.stream.flush()
        self._line_open = True

    def _end_line(self) -> None:
        if self._line_open:
            self.stream.write("\r\033[K")
            self._line_open = False

    def evaluation(self, record: dict) -> None:
        self._metrics = (f"loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f} "
                         f"test_acc {record['test_accuracy']:.3f}")
        if not self.enabled:
            return
        self.message(f"epoch {record['epoch']:>6}  step {record['step']:>7}  "
                     f"lr {record['lr']:.5f}  {self._metrics}  {record['elapsed_s']:.2f}s")

    def message(self, line: str) -> None:
        """A line of its own (an evaluation, a warning), above the live line."""
        if not self.enabled:
            return
        if self.live:
            self._end_line()
            self.stream.write(line + "\n")
            self.stream.flush()
        else:
            print(line, flush=True)

    def warn(self, text: str) -> None:
        """A warning on stderr, shown even when progress is off (``--quiet``)."""
        if self.live:
            self._end_line()
        sys.stderr.write(f"distnn: warning: {text}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            self._end_line()
            self.stream.flush()
