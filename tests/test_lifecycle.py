"""A run owns its directory and its processes: refusals before work, Ctrl-C, killed
launchers and ranks, and nothing left behind (no process, temporary file or segment)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import child_env, distnn, read_result, train_params, wait_for

SHM = Path("/dev/shm")
LONG = ["--samples-per-class", "2000", "--batch-size", "50", "--epochs", "3000",
        "--eval-every", "5", "--dtype", "float64"]


def segments() -> set[Path]:
    """MPICH's and Open MPI's shared-memory files (``shared_memory.SEGMENT_PREFIXES``)."""
    prefixes = ("mpich_shm_", "sm_segment.")
    return {p for p in SHM.iterdir() if p.name.startswith(prefixes)} if SHM.is_dir() else set()


def job_dirs() -> set[Path]:
    return set(Path(os.environ.get("TMPDIR", "/tmp")).glob("distnn-job-*"))


def start(args: list[str], cwd: Path | None = None) -> subprocess.Popen:
    """``distnn args`` in the background, in its own session (so a test can clean up)."""
    return subprocess.Popen([sys.executable, "-m", "distnn", *args], env=child_env(), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def processes_naming(text: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", "--", text], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def model_vector(run: Path) -> np.ndarray:
    with np.load(run / "model.npz", allow_pickle=False) as model:
        return np.concatenate([model[name].ravel() for name in sorted(model.files)
                               if name.startswith("layers.")])


def finish(job: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return job.communicate(timeout=timeout)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()


@pytest.mark.parametrize("args", [["--procs", "2"], ["--procs", "3", "--strategy", "serial"]])
def test_serial_on_several_processes_is_refused_before_launch(tmp_path, args):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "distnn", "train", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 2
    assert "--strategy serial runs on one process" in done.stderr
    assert "pick --strategy allreduce" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
    assert time.monotonic() - started < 20


def test_serial_under_plain_mpiexec_is_refused_once(tmp_path):
    done = distnn(["train", "--out", str(tmp_path / "run")], procs=2)
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1, done.stderr
    assert "--strategy serial runs on one process, but this job has 2" in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_non_empty_out_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "run"
    first = train_params(out, ["--epochs", "5"])
    again = distnn(["train", "--epochs", "7", "--out", str(out)])
    assert again.returncode == 2
    assert f"--out {out} is not empty" in again.stderr and "--overwrite" in again.stderr
    assert np.array_equal(train_params(out, ["--epochs", "5", "--overwrite"]), first)
    both = distnn(["train", "--resume", str(out), "--overwrite"])
    assert both.returncode == 2 and "give one of them" in both.stderr


def test_overwrite_replaces_only_a_run_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    done = distnn(["train", "--epochs", "2", "--out", str(tmp_path), "--overwrite"])
    assert done.returncode == 2 and "holds other files (notes.txt)" in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("out", ["/proc/distnn-run", "/dev/null"])
def test_special_output_paths_are_refused(out):
    done = distnn(["train", "--epochs", "1", "--out", out])
    assert done.returncode == 2 and f"--out {out}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_run_on_a_live_run_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    live = start(["train", *LONG, "--quiet", "--out", str(out)])
    try:
        wait_for(out / "config.json")
        second = distnn(["train", "--epochs", "2", "--out", str(out), "--overwrite"])
        assert second.returncode == 2
        assert f"--out {out} is in use by another distnn run" in second.stderr
    finally:
        live.send_signal(signal.SIGINT)
        finish(live)
    assert live.returncode == 130


def test_two_runs_given_the_same_out_at_once_do_not_interleave(tmp_path):
    out = tmp_path / "run"
    jobs = [start(["train", "--epochs", "300", "--eval-every", "10", "--quiet", "--out", str(out)])
            for _ in range(2)]
    outputs = [finish(job) for job in jobs]
    codes = sorted(job.returncode for job in jobs)
    assert codes == [0, 2], outputs
    loser = outputs[[job.returncode for job in jobs].index(2)][1]
    assert "in use by another distnn run" in loser or "is not empty" in loser, loser
    epochs = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 30


def test_stale_temporary_files_are_removed_when_a_run_continues(tmp_path):
    out = tmp_path / "run"
    train_params(out, ["--epochs", "3"])
    (out / ".checkpoint.npz.abc123.tmp").write_bytes(b"half a checkpoint")
    done = distnn(["train", "--resume", str(out), "--epochs", "4", "--quiet"])
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp"))


def test_the_launcher_removes_temporary_files_of_a_killed_job(tmp_path, monkeypatch):
    from distnn import launch

    job_dir, run_dir = tmp_path / "job", tmp_path / "run"
    job_dir.mkdir()
    run_dir.mkdir()
    (run_dir / ".model.npz.xyz.tmp").write_bytes(b"partial")
    (run_dir / "model.npz").write_bytes(b"kept")
    monkeypatch.setenv(launch.JOB_DIR_VAR, str(job_dir))
    launch.note_run_directory(run_dir)
    launch.clean_up_after(str(job_dir))
    assert [p.name for p in run_dir.iterdir()] == ["model.npz"]
    assert not job_dir.exists()


def interrupt_and_resume(tmp_path, signum, args, procs):
    """Stop a run with ``signum`` mid-way, resume it to the end; returns both runs' outputs."""
    out = tmp_path / "stopped"
    launch = ["--procs", str(procs)] if procs > 1 else []
    job = start(["train", *args, *launch, "--quiet", "--out", str(out)])
    wait_for(out / "checkpoint.npz")
    job.send_signal(signum)
    _, stderr = finish(job)
    assert job.returncode == 130, stderr
    assert "interrupted after " in stderr and f"distnn train --resume {out}" in stderr
    assert "Traceback" not in stderr
    with np.load(out / "model.npz") as model:
        assert np.all(np.isfinite(model["layers.0.weight"]))
    with np.load(out / "checkpoint.npz") as checkpoint:
        stopped_at = int(checkpoint["epoch"]), int(checkpoint["epoch_step"])
    done = distnn(["train", "--resume", str(out), "--quiet"], timeout=180)
    assert done.returncode == 0, done.stderr
    return out, stopped_at


@pytest.mark.parametrize("strategy, procs, signum", [
    ("serial", 1, signal.SIGINT),
    ("ps-sync", 3, signal.SIGINT),
    ("allreduce", 2, signal.SIGTERM),
])
def test_an_interrupted_run_resumes_bit_identical(tmp_path, strategy, procs, signum):
    args = ["--strategy", strategy, "--samples-per-class", "300", "--batch-size", "40",
            "--epochs", "120", "--eval-every", "20", "--dtype", "float64"]
    out, stopped_at = interrupt_and_resume(tmp_path, signum, args, procs)
    assert 0 < stopped_at[0] < 120
    reference = tmp_path / "reference"
    launched = ["--procs", str(procs)] if procs > 1 else []
    done = distnn(["train", *args, *launched, "--quiet", "--out", str(reference)], timeout=180)
    assert done.returncode == 0, done.stderr
    resumed, whole = model_vector(out), model_vector(reference)
    assert np.array_equal(resumed, whole)
    assert read_result(out)["epochs"] == 120


@pytest.mark.parametrize("gap_s", [0, 0.3])
def test_a_second_ctrl_c_to_a_worker_rank_ends_the_job_with_distnns_word(tmp_path, gap_s):
    """Two SIGINTs to one worker rank: at once, the rank stops "now" and says so itself
    (rank 0 was not interrupted, and an abort would end it before it spoke); later, the
    run has stopped at an agreed step and is exiting, where the signal must neither break
    into MPI_Finalize with a traceback nor kill the rank as Python shuts down."""
    out = tmp_path / "run"
    job = start(["train", "--procs", "3", "--strategy", "ps-sync", *LONG, "--quiet",
                 "--out", str(out)])
    try:
        wait_for(out / "checkpoint.npz")
        rank = max(processes_naming(f"mpi4py -m distnn train .*--out {out}"))
        os.kill(rank, signal.SIGINT)
        time.sleep(gap_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(rank, signal.SIGINT)
    finally:
        _, stderr = finish(job)
    assert job.returncode == 130, stderr
    assert "Traceback" not in stderr and "BAD TERMINATION" not in stderr, stderr
    assert "interrupted after " in stderr or "interrupted again: stopped at once" in stderr, stderr


def test_a_killed_launcher_ends_its_job_and_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    before_segments, before_jobs = segments(), job_dirs()
    job = start(["train", "--procs", "3", "--strategy", "ps-sync", *LONG, "--quiet",
                 "--out", str(out)])
    try:
        wait_for(out / "checkpoint.npz")
        assert len(processes_naming(str(out))) >= 4     # launcher, mpiexec and its ranks
        job.kill()
        job.wait()
        deadline = time.monotonic() + 20
        while processes_naming(str(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_naming(str(out)) == []
    finally:
        for pid in processes_naming(str(out)):
            os.kill(pid, signal.SIGKILL)
        finish(job)
    assert segments() - before_segments == set()
    assert job_dirs() - before_jobs == set()
    assert not list(out.glob(".*.tmp"))
    assert (out / "model.npz").exists()     # the ranks stopped cleanly and saved


@pytest.mark.both_mpis
def test_a_rank_killed_with_kill_9_leaves_no_segment(tmp_path):
    out = tmp_path / "run"
    before = segments()
    job = start(["train", "--procs", "3", "--strategy", "allreduce", *LONG, "--quiet",
                 "--out", str(out)])
    try:
        wait_for(out / "checkpoint.npz")
        ranks = [pid for pid in processes_naming(str(out))
                 if b"mpi4py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        os.kill(ranks[-1], signal.SIGKILL)
        _, stderr = finish(job)
    finally:
        finish(job)
    assert job.returncode != 0
    assert segments() - before == set()
    assert not list(out.glob(".*.tmp"))


def test_divergence_under_mpi_ends_without_abort_or_segment(tmp_path):
    before = segments()
    done = distnn(["train", "--strategy", "allreduce", "--lr", "1e30", "--momentum", "0",
                   "--eval-every", "1", "--epochs", "5", "--out", str(tmp_path / "run")], procs=2)
    assert done.returncode == 3, done.stderr
    assert "training diverged" in done.stderr and "Abort" not in done.stderr
    assert "BAD TERMINATION" not in done.stdout + done.stderr
    assert segments() - before == set()


def hydra_files() -> set[Path]:
    return set(Path("/tmp").glob("hydra_hwloc_xmlfile_*"))


def test_an_aborted_launched_job_leaves_no_temporary_file(tmp_path):
    from distnn import launch

    before = segments(), job_dirs(), hydra_files()
    script = Path(__file__).parent / "mpi_scripts" / "raise_on_rank.py"
    code = launch.relaunch(3, ["1", "5", "--strategy", "ps-sync", "--epochs", "50", "--quiet",
                               "--out", str(tmp_path / "run")], program=(str(script),))
    assert code != 0
    # Only what appeared counts: other jobs on the machine may remove their own files meanwhile.
    after = segments(), job_dirs(), hydra_files()
    assert [now - then for now, then in zip(after, before)] == [set(), set(), set()]
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_refused_claim_never_removes_a_directory_another_run_holds(tmp_path):
    from distnn.errors import UsageError
    from distnn.rundir import RunDirectory

    path = tmp_path / "run"
    first, second = RunDirectory(path, "serial"), RunDirectory(path, "serial")
    lock = first._take_lock

    def second_run_locks_first():      # the other run takes the lock between mkdir and flock,
        second.path = path               # and has written nothing yet
        second._take_lock()
        lock()

    first._take_lock = second_run_locks_first
    with pytest.raises(UsageError, match="is in use by another distnn run"):
        first.claim()
    assert path.is_dir()
    second.release()
