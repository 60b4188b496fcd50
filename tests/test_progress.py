"""Progress output: a live line refreshed within an epoch on a terminal, whole plain lines
elsewhere, and the --procs launcher telling the ranks which of the two the user has."""

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from distnn import launch
from distnn.launchers import OTHER, Launcher
from distnn.progress import REFRESH_S, TTY_VAR, Progress
from helpers import child_env, distnn

ESCAPE = re.compile(r"\x1b\[")
RECORD = {"epoch": 1, "step": 1000, "lr": 0.1, "train_loss": 0.6931, "train_accuracy": 0.5,
          "test_accuracy": 0.25, "elapsed_s": 1.0}


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frames(text: str) -> list[str]:
    """The live line's drawings: the pieces between carriage returns that show progress."""
    return [piece.strip() for piece in re.split(r"[\r\n]", text) if "samples/s" in piece]


def run_epochs(bar: Progress, clock: Clock, epochs: int, steps: int, step_s: float) -> None:
    bar.configure(epochs, steps, steps * 16)
    bar.start(0, 0)
    for epoch in range(epochs):
        for step in range(steps):
            bar.step(epoch, step)
            clock.now += step_s
        bar.evaluation({**RECORD, "epoch": epoch + 1, "step": (epoch + 1) * steps})
        bar.epoch_done(epoch + 1, steps * 16 / (steps * step_s))
    bar.close()


@pytest.fixture(autouse=True)
def no_user_setting(monkeypatch):
    monkeypatch.delenv(TTY_VAR, raising=False)


def test_live_line_redraws_within_an_epoch_at_least_twice_a_second():
    clock, stream = Clock(), Terminal()
    run_epochs(Progress(True, stream=stream, clock=clock), clock, epochs=2, steps=1000,
               step_s=0.002)                                          # 2 s per epoch
    first_epoch = [f for f in frames(stream.getvalue()) if f.startswith("epoch 1/2 step")]
    mid_epoch = [f for f in first_epoch if not re.match(r"epoch 1/2 step +0/", f)]
    assert len(mid_epoch) >= 2 * 2, first_epoch                      # >= 2 Hz over 2 s
    assert len(first_epoch) <= 2 / REFRESH_S + 2, first_epoch        # and no more than asked
    steps = [int(re.match(r"epoch 1/2 step +(\d+)/1000", f).group(1)) for f in mid_epoch]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all("samples/s" in f and "eta" in f for f in first_epoch)
    assert "8.00k samples/s" in stream.getvalue()                    # 16 samples every 2 ms
    assert any("epoch 2/2" in f and "eval loss 0.6931" in f for f in frames(stream.getvalue()))
    assert "epoch      1  step    1000" in stream.getvalue()         # the evaluation's own line


def test_live_line_shows_a_reported_batch_loss_instead_of_the_evaluation_loss():
    clock, stream = Clock(), Terminal()
    bar = Progress(True, stream=stream, clock=clock)
    bar.configure(1, 100, 1600)
    bar.start(0, 0)
    clock.now += 1.0
    bar.step(0, 10)
    assert bar.wants_loss
    bar.batch_loss(0.1234)
    assert not bar.wants_loss
    clock.now += 1.0
    bar.step(0, 20)
    bar.close()
    assert "batch loss 0.1234" in frames(stream.getvalue())[-1]


def test_the_no_redraw_path_reads_the_clock_once_and_draws_nothing():
    clock, stream = Clock(), Terminal()
    bar = Progress(True, stream=stream, clock=clock)
    bar.configure(1, 100, 1600)
    bar.start(0, 0)
    drawn = stream.getvalue()
    for step in range(50):
        bar.step(0, step)
    assert stream.getvalue() == drawn


@pytest.mark.parametrize("setting", [None, "0"])
def test_plain_output_is_whole_lines_without_carriage_returns_or_escapes(monkeypatch, capsys,
                                                                         setting):
    if setting is not None:
        monkeypatch.setenv(TTY_VAR, setting)
    clock = Clock()
    stream = Terminal() if setting == "0" else io.StringIO()        # "0" wins over isatty
    bar = Progress(True, stream=stream, clock=clock)
    assert not bar.live
    bar.message("recipe: something")
    run_epochs(bar, clock, epochs=2, steps=500, step_s=0.002)
    bar.warn("not learning")
    captured = capsys.readouterr()
    for text in (stream.getvalue(), captured.out, captured.err):
        assert "\r" not in text and not ESCAPE.search(text)
        assert text == "" or text.endswith("\n")
    assert captured.out.splitlines()[0] == "recipe: something"
    assert [line.split()[:2] for line in captured.out.splitlines()[1:]] == [["epoch", "1"],
                                                                          ["epoch", "2"]]
    assert captured.err == "distnn: warning: not learning\n"


def test_launcher_setting_makes_a_piped_rank_live(monkeypatch):
    monkeypatch.setenv(TTY_VAR, "1")
    assert Progress(True, stream=io.StringIO()).live
    assert not Progress(False, stream=io.StringIO()).live            # --quiet or rank > 0


def test_piped_live_line_fits_the_width_the_launcher_passed(monkeypatch):
    monkeypatch.setenv(TTY_VAR, "1")
    monkeypatch.setenv("COLUMNS", "60")
    clock, stream = Clock(), io.StringIO()
    run_epochs(Progress(True, stream=stream, clock=clock), clock, epochs=2, steps=1000,
               step_s=0.002)
    drawn = frames(stream.getvalue())
    assert drawn and max(len(f) for f in drawn) <= 59


def test_quiet_shows_only_warnings(capsys):
    clock, stream = Clock(), Terminal()
    bar = Progress(False, stream=stream, clock=clock)
    bar.message("recipe: something")
    run_epochs(bar, clock, epochs=2, steps=500, step_s=0.002)
    bar.warn("not learning")
    captured = capsys.readouterr()
    assert stream.getvalue() == "" and captured.out == ""
    assert captured.err == "distnn: warning: not learning\n"


class FakeJob:
    """What relaunch needs of the mpiexec it starts; records the environment given."""

    started: list[dict] = []

    pid = 2**22 + 1      # no such process: killing its group after the job does nothing

    def __init__(self, command, env=None, **kwargs):
        if env is None:
            return                                       # the launcher's relay
        FakeJob.started.append(env)
        (Path(env[launch.JOB_DIR_VAR]) / launch.STARTED_NOTE).touch()   # as rank 0 does

    def wait(self, timeout=None) -> int:
        return 0

    def poll(self) -> int:
        return 0


def relaunch_env(monkeypatch, stderr) -> dict:
    FakeJob.started = []
    monkeypatch.setattr(launch, "find_launcher", lambda: Launcher("mpiexec", OTHER))
    monkeypatch.setattr(launch.subprocess, "Popen", FakeJob)
    monkeypatch.setattr(launch.sys, "stderr", stderr)
    assert launch.relaunch(2, ["train"]) == 0
    (env,) = FakeJob.started
    return env


def test_launcher_tells_the_ranks_the_user_has_a_terminal_and_its_width(monkeypatch):
    main, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 97, 0, 0))
    with open(secondary, "w") as terminal, open(main, "rb"):
        env = relaunch_env(monkeypatch, terminal)
    assert env[TTY_VAR] == "1" and env["COLUMNS"] == "97"


def test_launcher_tells_the_ranks_a_pipe_is_no_terminal(monkeypatch):
    monkeypatch.setenv(TTY_VAR, "1")                 # a stale setting: the launcher knows better
    env = relaunch_env(monkeypatch, io.StringIO())
    assert env[TTY_VAR] == "0"


TRAIN = ["train", "--procs", "2", "--strategy", "allreduce", "--samples-per-class", "1000",
         "--batch-size", "16", "--hidden", "8", "--epochs", "60", "--eval-every", "30"]


def read_all(fd: int, process: subprocess.Popen, timeout: float) -> str:
    """Everything written to a pseudo-terminal until its last writer closes it."""
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:                              # EIO: every writer has closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        process.kill()
    process.wait(timeout=10)
    return b"".join(chunks).decode()


def test_procs_run_on_a_terminal_shows_a_live_line(tmp_path):
    main, secondary = os.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {key: value for key, value in child_env().items() if key not in (TTY_VAR, "COLUMNS")}
    process = subprocess.Popen([sys.executable, "-m", "distnn", *TRAIN, "--out", str(tmp_path / "run")],
                               stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    try:
        text = read_all(main, process, timeout=120)
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, text
    drawn = frames(text)
    positions = {re.match(r"epoch (\d+)/60 step +(\d+)/", f).groups() for f in drawn}
    assert len(positions) >= 2, text
    assert any(step != "0" for _, step in positions), text        # drawn within an epoch
    assert max(len(f) for f in drawn) < 100                         # fits the terminal
    assert "\r" in text and "run saved in" in text


def test_procs_run_in_a_pipe_shows_plain_lines(tmp_path):
    done = distnn([*TRAIN, "--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr
    for text in (done.stdout, done.stderr):
        assert "\r" not in text and not ESCAPE.search(text) and "samples/s" not in text
    assert [line.split()[:2] for line in done.stdout.splitlines() if line.startswith("epoch")] == [
        ["epoch", "30"], ["epoch", "60"]]
