"""Checkpoints are atomic, and resuming continues a run exactly (DESIGN §3.6)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import child_env, distnn, mpi_script, mpiexec_prefix, read_result, train_params

BASE = ["--samples-per-class", "100", "--batch-size", "100", "--lr", "0.2", "--eval-every", "2",
        "--dtype", "float64"]
CASES = [("serial", 1), ("ps-sync", 3), ("allreduce", 3), ("ps-async", 2)]


@pytest.mark.parametrize("strategy, procs", CASES)
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, strategy, procs):
    args = ["--strategy", strategy, *BASE]
    whole = train_params(tmp_path / "whole", [*args, "--epochs", "8"], procs=procs)
    train_params(tmp_path / "part", [*args, "--epochs", "4"], procs=procs)
    resumed = train_params(tmp_path / "part", ["--resume", str(tmp_path / "part"), "--epochs", "8"],
                           procs=procs)
    np.testing.assert_array_equal(resumed, whole)
    result = read_result(tmp_path / "part")
    assert result["resumed_from_epoch"] == 4
    epochs = [json.loads(line)["epoch"]
              for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [2, 4, 6, 8]


def test_ps_async_counters_continue_across_a_resume(tmp_path):
    args = ["--strategy", "ps-async", *BASE]
    train_params(tmp_path, [*args, "--epochs", "4"], procs=3)
    train_params(tmp_path, ["--resume", str(tmp_path), "--epochs", "6"], procs=3)
    result = read_result(tmp_path)
    assert result["updates"] == result["steps"] == 6 * 3 * 2
    assert result["gradients_sent_per_worker"] == result["updates_per_worker"] == [18, 18]
    assert sum(result["staleness_histogram"]) == 36


def test_a_crashed_run_resumes_from_its_last_checkpoint_exactly(tmp_path):
    args = ["--strategy", "ps-sync", *BASE, "--epochs", "8", "--checkpoint-every", "2"]
    whole = train_params(tmp_path / "whole", args, procs=3)
    # Rank 1 computes 3 gradients per epoch: call 14 is in epoch 5, after the epoch-4 checkpoint.
    crashed = mpi_script("raise_on_rank.py", 3, ["1", "14", *args, "--quiet", "--out",
                                                 str(tmp_path / "crash")])
    assert crashed.returncode != 0 and "injected failure" in crashed.stderr
    assert not (tmp_path / "crash" / "model.npz").exists()
    resumed = train_params(tmp_path / "crash", ["--resume", str(tmp_path / "crash")], procs=3)
    np.testing.assert_array_equal(resumed, whole)
    assert read_result(tmp_path / "crash")["resumed_from_epoch"] == 4


def test_kill_9_of_a_rank_keeps_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "killed"
    command = [*mpiexec_prefix(3), sys.executable, "-m", "mpi4py", "-m", "distnn", "train",
               "--strategy", "ps-sync", "--samples-per-class", "2000", "--batch-size", "50",
               "--epochs", "1000", "--eval-every", "1", "--quiet", "--out", str(out)]
    job = subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "checkpoint.npz").exists()
        time.sleep(0.5)
        ranks = subprocess.run(["pgrep", "-f", "--", str(out)], capture_output=True, text=True)
        pids = [int(p) for p in ranks.stdout.split() if int(p) != job.pid]
        workers = [p for p in pids if b"mpi4py" in open(f"/proc/{p}/cmdline", "rb").read()]
        assert len(workers) == 3, ranks.stdout
        os.kill(workers[-1], signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode != 0
    done = distnn(["train", "--resume", str(out), "--epochs", "3", "--quiet"])
    assert done.returncode in (0, 2), done.stderr
    if done.returncode == 2:   # killed after epoch 3 was checkpointed: nothing left to do
        assert "is before the checkpoint, which reached epoch" in done.stderr
    else:
        assert read_result(out)["epochs"] == 3


def test_resume_refuses_changed_flags(tmp_path):
    train_params(tmp_path, [*BASE, "--epochs", "2"])
    done = distnn(["train", "--resume", str(tmp_path), "--lr", "0.1"])
    assert done.returncode == 2
    assert "may be given (got --lr)" in done.stderr


@pytest.mark.parametrize("content, message", [
    (b"not a zip file", "is corrupt or not a checkpoint"),
    (None, "is not a distnn checkpoint"),
])
def test_corrupt_or_foreign_checkpoint_is_refused(tmp_path, content, message):
    path = tmp_path / "checkpoint.npz"
    if content is None:
        np.savez(path, weights=np.zeros(3))
    else:
        path.write_bytes(content)
    done = distnn(["train", "--resume", str(tmp_path)])
    assert done.returncode == 2 and message in done.stderr


def test_missing_checkpoint_is_named(tmp_path):
    done = distnn(["train", "--resume", str(tmp_path)])
    assert done.returncode == 2
    assert f"--resume: no checkpoint at {tmp_path / 'checkpoint.npz'}" in done.stderr


def test_two_servers_resume_bit_identical_and_ps_sync_may_change_their_number(tmp_path):
    """ps-sync with 2 servers stopped and resumed equals the run that never stopped, and
    so does its checkpoint resumed with one server: the state shards were gathered whole,
    and the same two workers' update is the same whoever applies it."""
    args = ["--strategy", "ps-sync", "--servers", "2", *BASE]
    whole = train_params(tmp_path / "whole", [*args, "--epochs", "8"], procs=4)
    train_params(tmp_path / "part", [*args, "--epochs", "4"], procs=4)
    shutil.copytree(tmp_path / "part", tmp_path / "one")
    resumed = train_params(tmp_path / "part", ["--resume", str(tmp_path / "part"), "--epochs", "8"],
                           procs=4)
    np.testing.assert_array_equal(resumed, whole)
    one = train_params(tmp_path / "one", ["--resume", str(tmp_path / "one"), "--epochs", "8",
                                          "--servers", "1"], procs=3)
    np.testing.assert_array_equal(one, whole)
    assert read_result(tmp_path / "one")["config"]["servers"] == 1


def test_ps_async_with_two_servers_resumes_its_counters_per_shard(tmp_path):
    args = ["--strategy", "ps-async", "--servers", "2", *BASE]
    train_params(tmp_path, [*args, "--epochs", "4"], procs=4)
    with np.load(tmp_path / "checkpoint.npz") as checkpoint:
        assert checkpoint["strategy.staleness_counts"].shape[0] == 2
        assert np.all(checkpoint["strategy.staleness_counts"].sum(axis=1) == 4 * 3 * 2)
    train_params(tmp_path, ["--resume", str(tmp_path), "--epochs", "6"], procs=4)
    result = read_result(tmp_path)
    assert result["updates"] == result["steps"] == 6 * 3 * 2
    assert result["gradients_sent_per_worker"] == result["updates_per_worker"] == [18, 18]
    assert [sum(shard["staleness_histogram"]) for shard in result["staleness_per_shard"]] == [36, 36]


def test_ps_async_refuses_another_number_of_servers_on_resume(tmp_path):
    train_params(tmp_path, ["--strategy", "ps-async", "--servers", "2", *BASE, "--epochs", "2"],
                 procs=3)
    done = distnn(["train", "--resume", str(tmp_path), "--servers", "1", "--procs", "2",
                   "--epochs", "4"])
    assert done.returncode == 2
    assert "written by ps-async with 2 servers" in done.stderr
    assert "resume with --servers 2" in done.stderr
    assert read_result(tmp_path)["epochs"] == 2
