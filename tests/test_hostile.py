"""Cases from a hostile review that once broke a promise: each now ends in one message,
the right exit status and nothing written (or nothing left behind)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import child_env, distnn, wait_for

TINY = ["--samples-per-class", "50", "--epochs", "2"]


def refused(done, message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1, done.stderr


@pytest.mark.parametrize("bad, message", [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--hidden", "0"], "--hidden"),
    (["--preset", "nope"], "invalid choice: 'nope'"),
])
def test_bench_checks_its_workload_before_any_run(tmp_path, bad, message):
    done = distnn(["bench", "--strategies", "allreduce", "--procs", "2", *TINY, *bad,
                   "--out", str(tmp_path / "bench")])
    refused(done, message)
    assert not (tmp_path / "bench").exists()


def test_bench_and_costmodel_refuse_an_output_folder_that_holds_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    refused(distnn(["bench", "--strategies", "allreduce", "--procs", "2", *TINY,
                    "--out", str(tmp_path)]), "is not empty")
    refused(distnn(["costmodel", "--out", str(tmp_path / "notes.txt")]), "is not a folder")
    refused(distnn(["costmodel", "--out", "/proc/distnn-costmodel"]), "is under /proc")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_costmodel_checks_memory_and_its_bench_folder_first(tmp_path):
    refused(distnn(["costmodel", "--sizes", "1000000000,1000000000,10", "--out",
                    str(tmp_path / "a")]), "needs about")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench.json").write_text("{bad")
    refused(distnn(["costmodel", "--bench", str(tmp_path / "bench"), "--out",
                    str(tmp_path / "b")]), "is damaged or not written by distnn bench")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_path_the_system_refuses_is_named(tmp_path):
    long = tmp_path / ("x" * 300)
    refused(distnn(["train", *TINY, "--out", str(long)]), "File name too long")
    refused(distnn(["plot", str(long)]), "File name too long")


def test_overwrite_needs_a_run_directory(tmp_path):
    (tmp_path / "result.json").write_text("the user's own notes")
    refused(distnn(["train", *TINY, "--out", str(tmp_path), "--overwrite"]), "holds no config.json")
    assert (tmp_path / "result.json").read_text() == "the user's own notes"


def test_plot_checks_both_images_before_drawing(tmp_path):
    run = tmp_path / "run"
    assert distnn(["train", *TINY, "--quiet", "--out", str(run)]).returncode == 0
    (run / "accuracy.png").mkdir()
    refused(distnn(["plot", str(run)]), "accuracy.png")
    assert not (run / "loss.png").exists()


def test_a_resume_the_data_cannot_continue_changes_nothing(tmp_path):
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    np.savetxt(data, np.c_[rng.normal(size=(90, 4)), np.arange(90) % 3], delimiter=",")
    run = tmp_path / "run"
    assert distnn(["train", "--dataset", str(data), "--epochs", "2", "--quiet", "--out",
                   str(run)]).returncode == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    np.savetxt(data, np.c_[rng.normal(size=(90, 5)), np.arange(90) % 3], delimiter=",")
    refused(distnn(["train", "--resume", str(run), "--epochs", "4"]), "the data changed")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_checkpoint_position_beyond_its_epoch_is_refused(tmp_path):
    run = tmp_path / "run"
    assert distnn(["train", *TINY, "--quiet", "--out", str(run)]).returncode == 0
    with np.load(run / "checkpoint.npz") as checkpoint:
        arrays = dict(checkpoint)
    arrays["epoch_step"] = np.asarray(10**9)
    np.savez(run / "checkpoint.npz", **arrays)
    refused(distnn(["train", "--resume", str(run), "--epochs", "4"]), "'epoch_step' is 1000000000")


def test_zero_epochs_still_leave_a_checkpoint_to_resume(tmp_path):
    run = tmp_path / "run"
    assert distnn(["train", "--samples-per-class", "50", "--epochs", "0", "--quiet", "--out",
                   str(run)]).returncode == 0
    assert distnn(["train", "--resume", str(run), "--epochs", "2", "--quiet"]).returncode == 0


@pytest.mark.parametrize("flags, message", [
    (["--classes", "5"], "--classes does not apply to --dataset"),
    (["--label-column", "first"], "--label-column does not apply to --dataset spiral"),
])
def test_data_flags_that_would_be_ignored_are_refused(tmp_path, flags, message):
    data = tmp_path / "d.csv"
    np.savetxt(data, np.c_[np.ones((20, 2)), np.arange(20) % 2], delimiter=",")
    dataset = ["--dataset", str(data)] if "--classes" in flags else []
    refused(distnn(["train", *dataset, *flags, "--out", str(tmp_path / "run")]), message)


def test_divergence_is_one_message_that_does_not_promise_a_checkpoint(tmp_path):
    done = distnn(["train", "--samples-per-class", "100", "--epochs", "50", "--lr", "1e30",
                   "--lr-decay", "0", "--eval-every", "10", "--quiet", "--out", str(tmp_path / "r")])
    assert done.returncode == 3
    assert "no checkpoint was written before it" in done.stderr
    assert "RuntimeWarning" not in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("launcher, status", [("/bin/true", "exited"), ("/bin/false", "failed")])
def test_an_mpiexec_that_starts_nothing_is_named(tmp_path, monkeypatch, launcher, status):
    monkeypatch.setenv("DISTNN_MPIEXEC", launcher)
    done = distnn(["train", "--procs", "2", "--strategy", "allreduce", *TINY, "--out",
                   str(tmp_path / "run")])
    refused(done, f"{launcher} {status}")
    assert "without starting distnn's processes" in done.stderr


@pytest.mark.parametrize("script", [
    "sleep 1000 &\nwait\n",                                          # hangs even on --version
    'if [ "$1" = --version ]; then exit 0; fi\nsleep 1000 &\nwait\n',   # hangs in the run
])
def test_a_hung_mpiexec_cannot_keep_the_launcher_or_its_children(tmp_path, script):
    hung = tmp_path / "hung-mpiexec.sh"
    hung.write_text("#!/bin/sh\n" + script)
    hung.chmod(0o755)
    env = {**child_env(), "DISTNN_MPIEXEC": str(hung)}
    launcher = subprocess.Popen([sys.executable, "-m", "distnn", "train", "--procs", "2",
                                 "--strategy", "allreduce", *TINY, "--out", str(tmp_path / "r")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    try:
        time.sleep(2)
        launcher.send_signal(signal.SIGTERM)
        launcher.communicate(timeout=20)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    assert launcher.returncode is not None
    assert processes_whose_environment_names(str(hung)) == []


def processes_whose_environment_names(text: str) -> list[int]:
    """Every process that inherited ``text`` in its environment (a job's children do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "environ").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_a_deleted_run_directory_ends_the_run_with_one_message(tmp_path):
    run = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "distnn", "train", "--samples-per-class", "200",
                            "--epochs", "100000", "--batch-size", "10", "--eval-every", "20",
                            "--quiet", "--out", str(run)], env=child_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(run / "checkpoint.npz")
        # The run may write a file while rm empties the directory ("Directory not empty").
        for _ in range(20):
            if subprocess.run(["rm", "-rf", str(run)], capture_output=True).returncode == 0:
                break
        assert not run.exists()
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 1 and "cannot be written any more" in stderr
    assert "Traceback" not in stderr and stderr.count("error:") == 1
