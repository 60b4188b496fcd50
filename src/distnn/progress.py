"""Rank 0's view of a run: a live status line on a terminal, plain log lines otherwise."""

import sys
import time

REFRESH_S = 0.2


class Progress:
    """``update`` is cheap to call every epoch: it redraws at most every ``REFRESH_S``."""

    def __init__(self, total_epochs: int, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total = total_epochs
        self.live = enabled and self.stream.isatty()
        self.enabled = enabled
        self._drawn = 0.0
        self._started = time.monotonic()
        self._first_epoch = None
        self._metrics = ""

    def update(self, epoch: int, samples_per_s: float) -> None:
        if not self.live:
            return
        if self._first_epoch is None:
            self._first_epoch = epoch - 1
        now = time.monotonic()
        if now - self._drawn < REFRESH_S and epoch != self.total:
            return
        self._drawn = now
        width = 24
        filled = width * epoch // max(self.total, 1)
        bar = "#" * filled + "." * (width - filled)
        done = epoch - self._first_epoch
        eta = (now - self._started) / done * (self.total - epoch) if done else 0.0
        self.stream.write(
            f"\r[{bar}] epoch {epoch}/{self.total} {self._metrics} {samples_per_s:,.0f} samples/s"
            f" eta {eta:,.0f}s \033[K"
        )
        self.stream.flush()

    def evaluation(self, record: dict) -> None:
        self._metrics = (f"loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f} "
                         f"test_acc {record['test_accuracy']:.3f}")
        if not self.enabled:
            return
        line = (f"epoch {record['epoch']:>6}  step {record['step']:>7}  "
                f"lr {record['lr']:.5f}  {self._metrics}  {record['elapsed_s']:.2f}s")
        if self.live:
            self.stream.write("\r\033[K" + line + "\n")
            self.stream.flush()
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
