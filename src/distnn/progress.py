"""Rank 0's view of a run: a live status line when the user watches a terminal, plain log lines otherwise.

Ranks under ``mpiexec`` never see a terminal (Hydra pipes their output to the launcher), so
whether the user's output is one comes from ``DISTNN_TTY``: the ``--procs`` launcher sets it
to ``1`` or ``0`` from its own stderr, and a user starting ``mpiexec`` by hand may set it to
``1``. Without it, the stream itself decides. The live line is drawn by tqdm, which fits it
to the terminal's width (``COLUMNS`` where the stream cannot tell) so that redrawing with a
carriage return never wraps.
"""

import os
import sys
import threading
import time

from tqdm import tqdm

REFRESH_S = 0.2            # at most five redraws a second; at least two while steps are that quick
TTY_VAR = "DISTNN_TTY"     # "1": the user's output is a terminal; "0": it is not
DEFAULT_COLUMNS = 80       # a piped stream's width when COLUMNS is not set


def wants_live(stream) -> bool:
    """Whether ``stream`` reaches a terminal: ``DISTNN_TTY`` if set to 0 or 1, else ``isatty``."""
    said = os.environ.get(TTY_VAR)
    if said in ("0", "1"):
        return said == "1"
    return stream.isatty()


def _columns(stream) -> tuple[int | None, bool]:
    """``(ncols, dynamic)`` for tqdm: follow a real terminal as it resizes; a pipe to one
    (under mpiexec) has the width the launcher passed in ``COLUMNS``."""
    if stream.isatty():
        return None, True
    columns = os.environ.get("COLUMNS", "")
    return (int(columns) - 1 if columns.isdigit() and int(columns) > 1 else DEFAULT_COLUMNS - 1), False


class _Line(tqdm):
    """tqdm for one line that ``Progress`` redraws itself, with samples/s and a loss.

    No monitor thread (``Progress`` decides when to draw) and a thread lock instead of
    tqdm's default multiprocessing one, which would create a semaphore in every rank.
    """

    monitor_interval = 0

    def __init__(self, *args, samples_per_step: float, **kwargs):
        self.samples_per_step = samples_per_step
        self.step_rate: float | None = None
        self.loss_text = ""
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        """tqdm's fields, with ``Progress``'s rate (steps/s, from which tqdm's ETA follows)."""
        fields = super().format_dict
        rate = fields["rate"] = self.step_rate
        fields["samples_rate"] = self.format_sizeof(rate * self.samples_per_step) if rate else "?"
        fields["loss_text"] = self.loss_text
        return fields


_Line.set_lock(threading.RLock())


class Progress:
    """Cheap to call every step: ``step`` redraws at most every ``REFRESH_S`` seconds.

    ``enabled`` (rank 0, not --quiet) turns output on; ``live`` is the redrawn line, on
    when the user's output is a terminal (see ``wants_live``). The live line shows the
    epoch, the step within it, the run's fraction done, samples/s (training only:
    evaluations are left out, as in the final summary), a loss and the time left. The loss
    is that of a recent batch when the caller reports one (``batch_loss``), else the last
    evaluation's, labelled as such. Plain output is one line per evaluation; it never
    holds a carriage return or an escape code. ``clock`` is for tests.
    """

    BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {samples_rate} samples/s eta {remaining}{loss_text}"

    def __init__(self, enabled: bool, stream=None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = enabled and wants_live(self.stream)
        self.total_epochs, self.steps_per_epoch, self.samples_per_epoch = 0, 1, 0
        self.wants_loss = False
        self._clock = clock
        self._next_draw = 0.0
        self._since = (0.0, 0)      # (time, global step) the rate is measured from
        self._bar: _Line | None = None
        self._eval_loss = ""
        self._batch_loss = ""

    def configure(self, total_epochs: int, steps_per_epoch: int, samples_per_epoch: int) -> None:
        self.total_epochs, self.steps_per_epoch = total_epochs, max(steps_per_epoch, 1)
        self.samples_per_epoch = samples_per_epoch

    def start(self, first_epoch: int, first_step: int) -> None:
        """Training begins (or resumes) before step ``first_step`` of ``first_epoch``."""
        if not self.live:
            return
        self.close()
        ncols, dynamic = _columns(self.stream)
        self._bar = _Line(
            total=self.total_epochs * self.steps_per_epoch,
            initial=first_epoch * self.steps_per_epoch + first_step,
            samples_per_step=self.samples_per_epoch / self.steps_per_epoch,
            file=self.stream, ncols=ncols, dynamic_ncols=dynamic, leave=False,
            mininterval=0, miniters=0, bar_format=self.BAR_FORMAT,
            desc=self._position(first_epoch, first_step))
        self._since = (self._clock(), first_epoch * self.steps_per_epoch + first_step)
        self._next_draw = self._since[0] + REFRESH_S

    def _position(self, epoch: int, step: int) -> str:
        width = len(str(self.steps_per_epoch))
        return f"epoch {epoch + 1}/{self.total_epochs} step {step:>{width}}/{self.steps_per_epoch}"

    def step(self, epoch: int, step: int) -> None:
        """Before step ``step`` of (0-based) ``epoch``. Off the redraw, one clock read."""
        if self._bar is None:
            return
        now = self._clock()
        if now < self._next_draw:
            return
        self._next_draw = now + REFRESH_S
        bar = self._bar
        done = epoch * self.steps_per_epoch + step
        since_s, since_step = self._since
        if done > since_step:
            bar.step_rate = (done - since_step) / (now - since_s)
        bar.desc = self._position(epoch, step)
        bar.loss_text = self._batch_loss or self._eval_loss
        bar.update(done - bar.n)
        self.wants_loss = True

    def batch_loss(self, loss: float) -> None:
        """The mean loss of a recent training batch (rank 0's share of it), for the live line.

        Training steps skip the loss for speed; a caller may compute it on the step after a
        redraw (``wants_loss``), where it costs one log per sample.
        """
        self.wants_loss = False
        self._batch_loss = f" batch loss {loss:.4f}"

    def epoch_done(self, epoch: int, samples_per_s: float) -> None:
        """After ``epoch`` (1-based) is complete, with the run's training throughput so far:
        the rate to show until steps since the last evaluation give a fresher one."""
        if self._bar is not None and samples_per_s > 0:
            self._bar.step_rate = samples_per_s * self.steps_per_epoch / self.samples_per_epoch

    def evaluation(self, record: dict) -> None:
        metrics = (f"loss {record['train_loss']:.4f} acc {record['train_accuracy']:.3f} "
                   f"test_acc {record['test_accuracy']:.3f}")
        self._eval_loss = f" eval loss {record['train_loss']:.4f}"
        self.message(f"epoch {record['epoch']:>6}  step {record['step']:>7}  "
                     f"lr {record['lr']:.5f}  {metrics}  {record['elapsed_s']:.2f}s")
        self._since = (self._clock(), record["epoch"] * self.steps_per_epoch)

    def message(self, line: str) -> None:
        """A line of its own (an evaluation, a note), above the live line."""
        if not self.enabled:
            return
        if self._bar is None:
            print(line, file=self.stream if self.live else sys.stdout, flush=True)
            return
        self._clear()
        self.stream.write(line + "\n")
        self.stream.flush()

    def _clear(self) -> None:
        """Clear the live line for a line of text; the next step draws it again, up to date."""
        self._bar.clear()
        self._next_draw = 0.0

    def warn(self, text: str) -> None:
        """A warning on stderr, shown even when progress is off (``--quiet``)."""
        if self._bar is not None:
            self._clear()
        sys.stderr.write(f"distnn: warning: {text}\n")
        sys.stderr.flush()

    def close(self) -> None:
        """Remove the live line (at the end, or before an interrupted run's last words)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self.stream.flush()
