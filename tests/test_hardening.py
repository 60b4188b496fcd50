"""Bad input, each kind through the real CLI: a specific message, exit 2, nothing written."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from helpers import distnn, mpi_script
from idx_files import write_image_set


def csv_pair(x_text, y_text):
    def make(d):
        (d / "data").mkdir()
        (d / "data" / "X_train.csv").write_text(x_text)
        (d / "data" / "y_train.csv").write_text(y_text)
        return ["train", "--dataset", str(d / "data")]
    return make


def npz(**arrays):
    def make(d):
        np.savez(d / "d.npz", **arrays)
        return ["train", "--dataset", str(d / "d.npz")]
    return make


def image_set(damage):
    def make(d):
        write_image_set(d / "imgs")
        damage(d / "imgs")
        return ["train", "--dataset", "mnist", "--data-dir", str(d / "imgs")]
    return make


def truncate(directory):
    path = directory / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))


def bad_magic(directory):
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x08\x03\x00\x00" * 4))


def flags(*args):
    return lambda d: ["train", *args]


def toml(text):
    def make(d):
        (d / "c.toml").write_text(text)
        return ["train", "--config", str(d / "c.toml")]
    return make


def model_command(command, *extra):
    def make(d):
        assert distnn(["train", "--epochs", "1", "--quiet", "--out", str(d / "m")]).returncode == 0
        (d / "x.csv").write_text("1,2,3\n4,5,6\n")
        (d / "nan.csv").write_text("1,2\nnan,5\n")
        return [command, str(d / "m" / "model.npz"), *[a.format(d=d) for a in extra]]
    return make


def not_a_model(d):
    (d / "fake.npz").write_bytes(b"PK\x03\x04garbage")
    return ["evaluate", str(d / "fake.npz")]


def checkpoint_file(content):
    def make(d):
        (d / "ck").mkdir()
        if content is None:
            np.savez(d / "ck" / "checkpoint.npz", params=np.zeros(3))
        else:
            (d / "ck" / "checkpoint.npz").write_bytes(content)
        return ["train", "--resume", str(d / "ck")]
    return make


def unwritable(d):
    (d / "file").write_text("")
    return ["train", "--out", str(d / "file" / "run")]


CASES = {
    "ragged csv": (csv_pair("1,2\n3\n", "0\n1\n"), "data row 2 has 1 columns, the first has 2"),
    "non-numeric csv": (csv_pair("1,2\n3,abc\n", "0\n1\n"), "data row 2 is not numeric"),
    "nan feature": (csv_pair("1,2\nnan,4\n", "0\n1\n"), "X_train holds NaN or infinite values"),
    "inf feature": (npz(X_train=np.array([[1.0, np.inf], [0, 1]]), y_train=[0, 1]),
                    "X_train holds NaN or infinite values"),
    "non-integer label": (csv_pair("1,2\n3,4\n", "0\n0.5\n"), "y_train holds non-integer labels"),
    "negative label": (csv_pair("1,2\n3,4\n", "0\n-3\n"), "y_train holds a negative label (-3)"),
    "x/y length mismatch": (csv_pair("1,2\n3,4\n5,6\n", "0\n1\n"),
                            "X_train has 3 rows but y_train has 2"),
    "empty file": (csv_pair("", "0\n"), "X_train.csv holds no data rows"),
    "single class": (csv_pair("1,2\n3,4\n5,6\n", "0\n0\n0\n"), "labels hold a single class"),
    "test features differ": (npz(X_train=np.zeros((4, 2)), y_train=[0, 1, 0, 1],
                                 X_test=np.zeros((2, 3)), y_test=[0, 1]),
                             "X_test has 3 features but X_train has 2"),
    "npz without labels": (npz(X_train=np.zeros((4, 2))), "missing y_train"),
    "truncated idx": (image_set(truncate), "truncated or corrupt file"),
    "wrong-magic idx": (image_set(bad_magic), "is not an IDX file (bad magic number"),
    "missing idx files": (image_set(lambda d: (d / "t10k-labels-idx1-ubyte.gz").unlink()),
                          "mnist not found in --data-dir"),
    "mnist without --data-dir": (flags("--dataset", "mnist"), "--dataset mnist needs --data-dir"),
    "missing dataset path": (flags("--dataset", "/no/such.npz"), "no such file or directory"),
    "batch below workers": (flags("--strategy", "ps-sync", "--procs", "1"),
                            "needs at least 2 processes"),
    "unknown preset": (flags("--preset", "huge"), "argument --preset: invalid choice: 'huge'"),
    "bad epochs": (flags("--epochs", "-5"), "--epochs must be an integer >= 0, got -5"),
    "zero data shards": (flags("--data-shards", "0"), "--data-shards must be an integer >= 1, got 0"),
    "more shards than a batch": (flags("--data-shards", "9", "--batch-size", "8"),
                                 "--data-shards 9 is more than the 8 samples of a batch"),
    "bad batch size": (flags("--batch-size", "many"),
                       "--batch-size: must be a positive integer or 'full', got 'many'"),
    "unwritable output": (unwritable, "cannot create the run directory"),
    "corrupt checkpoint": (checkpoint_file(b"garbage"), "is corrupt or not a checkpoint"),
    "foreign checkpoint": (checkpoint_file(None), "is not a distnn checkpoint"),
    "toml unknown key": (toml("learning_rate = 0.1\n"), "unknown key 'learning_rate'"),
    "toml wrong type": (toml('epochs = "ten"\n'), "epochs must be int, got 'ten'"),
    "toml syntax": (toml("lr = = 1\n"), "not valid TOML"),
    "wrong feature count for a model": (
        model_command("predict", "--input", "{d}/x.csv", "--output", "{d}/y.csv"),
        "has 3 features per row; the model expects 2"),
    "nan input to predict": (
        model_command("predict", "--input", "{d}/nan.csv", "--output", "{d}/y.csv"),
        "holds NaN or infinite values"),
    "not a model file": (not_a_model, "is not a readable distnn model"),
    "evaluate on the wrong data": (model_command("evaluate", "--dataset", "mnist", "--data-dir",
                                                 "{d}/none"), "mnist not found in --data-dir"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_clearly(tmp_path, case):
    make, message = CASES[case]
    args = make(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    if args[0] == "train" and "--out" not in args and "--resume" not in args:
        args += ["--out", str(out)]
    done = distnn(args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error:") == 1, done.stderr
    if message is not None:
        assert message in done.stderr
    assert not out.exists()
    assert {p for p in tmp_path.rglob("*")} == before


def test_more_workers_than_samples_under_mpi(tmp_path):
    done = distnn(["train", "--strategy", "allreduce", "--samples-per-class", "1", "--classes", "2",
                   "--out", str(tmp_path / "out")], procs=3)
    assert done.returncode == 2
    assert "the training set has 2 samples, fewer than the 3 workers" in done.stderr
    assert not (tmp_path / "out").exists()


def test_shards_must_match_the_workers(tmp_path):
    done = distnn(["train", "--strategy", "allreduce", "--data-shards", "3",
                   "--out", str(tmp_path / "out")], procs=2)
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1, done.stderr
    assert "--data-shards 3 must be 1 or the number of workers (2)" in done.stderr


def test_a_bad_value_in_the_last_worker_share_is_found(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 3))
    x[-1, 2] = np.nan                  # only the last worker's share holds it
    np.save(tmp_path / "X_train.npy", x)
    np.save(tmp_path / "y_train.npy", np.arange(200) % 2)
    done = distnn(["train", "--dataset", str(tmp_path), "--strategy", "ps-sync",
                   "--out", str(tmp_path / "out")], procs=3)
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1, done.stderr
    assert "X_train holds NaN or infinite values" in done.stderr


@pytest.mark.parametrize("procs", [1, 3])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, procs):
    out = tmp_path / "run"
    # 3 steps per epoch; step 8 (epoch 3) turns a parameter NaN; checkpoints every epoch.
    done = mpi_script("nan_after.py", procs, ["8", "--strategy", "ps-sync" if procs > 1 else "serial",
                                             "--batch-size", "100", "--samples-per-class", "100",
                                             "--eval-every", "1", "--epochs", "6", "--quiet",
                                             "--out", str(out)])
    assert done.returncode == 3, done.stderr
    assert "training diverged at epoch 3" in done.stderr
    assert "the last good checkpoint, from epoch 2, is kept" in done.stderr
    with np.load(out / "checkpoint.npz") as checkpoint:
        assert int(checkpoint["epoch"]) == 2
        assert np.all(np.isfinite(checkpoint["params"]))
    assert not (out / "model.npz").exists()


def test_refused_mpi_runs_end_cleanly_without_leaving_shared_memory(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    before = set(shm.iterdir())
    done = distnn(["train", "--strategy", "ps-sync", "--batch-size", "1",
                   "--out", str(tmp_path / "out")], procs=3)
    assert done.returncode == 2 and "error:" in done.stderr
    assert "Abort" not in done.stderr
    assert {p for p in set(shm.iterdir()) - before if p.name.startswith("mpich")} == set()


def test_no_named_pipes_names_the_way_out(tmp_path):
    done = mpi_script("no_fifos.py", 3, ["--strategy", "ps-sync", "--epochs", "2", "--out",
                                         str(tmp_path / "out")])
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1, done.stderr
    assert "cannot create the doorbell pipes" in done.stderr and "--no-shared-memory" in done.stderr
