"""Every data input bounded and validated before work: one UsageError naming the culprit.

In-process tests of the loaders and the config, then the headline cases through the real
CLI (exit status 2, one message, no traceback, nothing written).
"""

import gzip
import io
import os
import struct
import time
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format

from distnn import guards
from distnn.config import make_config, read_config_file
from distnn.data import load_dataset
from distnn.data.idx import read_idx
from distnn.errors import UsageError
from distnn.guards import local_processes, model_memory_bytes
from distnn.nn import MLP
from distnn.train import check_fits
from helpers import distnn
from idx_files import idx_bytes, write_image_set

ROWS = "".join(f"{i},{-i},{i % 2}\n" for i in range(10))
BOM = b"\xef\xbb\xbf"


def load(path, **settings):
    return load_dataset(make_config(dataset=str(path), **settings).data)


def refused(match, call, *args, **kwargs):
    with pytest.raises(UsageError, match=match):
        call(*args, **kwargs)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


# ---- CSV ----------------------------------------------------------------------------------

def test_a_byte_order_mark_does_not_turn_the_first_row_into_a_header(tmp_path):
    (tmp_path / "d.csv").write_bytes(BOM + ROWS.encode())
    data = load(tmp_path / "d.csv")
    assert data.x_train.shape[0] + data.x_test.shape[0] == 10


def test_a_byte_order_mark_before_a_header_keeps_its_first_name(tmp_path):
    (tmp_path / "d.csv").write_bytes(BOM + b"a,b,label\n" + ROWS.encode())
    data = load(tmp_path / "d.csv", label_column="a")
    assert data.x_train.shape[0] + data.x_test.shape[0] == 10


def test_non_utf8_csv_is_named(tmp_path):
    (tmp_path / "d.csv").write_bytes(ROWS.encode() + b"\xff\xfe,1,0\n")
    refused(r"d\.csv is not a UTF-8 text CSV file", load, tmp_path / "d.csv")


def test_a_header_wider_than_the_rows_is_refused_not_indexed(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,c,label\n" + ROWS)
    refused("the header has 4 columns, the first data row has 3", load, tmp_path / "d.csv",
            label_column="label")


@pytest.mark.parametrize("column", ["--1", "²", "-", "99999999999999999999"])
def test_label_columns_that_are_not_indices_are_named(tmp_path, column):
    (tmp_path / "d.csv").write_text(ROWS)
    refused(f"--label-column '?{column}'?", load, tmp_path / "d.csv", label_column=column)


def test_a_one_column_csv_has_no_features(tmp_path):
    (tmp_path / "d.csv").write_text("0\n1\n0\n1\n")
    refused("a label column needs at least one feature", load, tmp_path / "d.csv")


def test_a_csv_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text(ROWS)
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: 100)
    refused(r"--dataset .*d\.csv \(.* bytes of CSV\) needs about", load, tmp_path / "d.csv")


# ---- special files and paths ----------------------------------------------------------------

@pytest.mark.timeout(20)
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, fifo):
    refused("is not a regular file", load, fifo)
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "X_train.csv")
    (tmp_path / "dir" / "y_train.csv").write_text("0\n1\n")
    refused("is not a regular file", load, tmp_path / "dir")
    refused("--config .* is not a regular file", read_config_file, str(fifo))


@pytest.mark.timeout(20)
def test_a_fifo_in_an_idx_folder_is_refused(tmp_path):
    write_image_set(tmp_path / "imgs", gz=False)
    (tmp_path / "imgs" / "train-labels-idx1-ubyte").unlink()
    os.mkfifo(tmp_path / "imgs" / "train-labels-idx1-ubyte")
    refused("--data-dir .*train-labels-idx1-ubyte is not a regular file", load_dataset,
            make_config(dataset="mnist", data_dir=str(tmp_path / "imgs")).data)


@pytest.mark.timeout(20)
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused():
    refused("/dev/zero is not a regular file", load, "/dev/zero")
    refused("--config /dev/zero is not a regular file", read_config_file, "/dev/zero")


def test_a_path_too_long_to_look_up_is_named():
    refused("--dataset a+...: not a usable path", load, "a" * 5000)


# ---- NPZ ----------------------------------------------------------------------------------

def lying_npz(path, shape, dtype="<f8", data=b"\0" * 64, compression=zipfile.ZIP_DEFLATED):
    """An .npz whose X_train header promises ``shape`` but holds only ``data``."""
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False,
                                               "shape": shape})
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("X_train.npy", header.getvalue() + data)
        y = io.BytesIO()
        np.save(y, np.array([0, 1]))
        archive.writestr("y_train.npy", y.getvalue())
    return path


def test_an_npz_member_promising_terabytes_is_refused_from_its_header(tmp_path):
    path = lying_npz(tmp_path / "d.npz", (10**6, 10**6))
    start = time.perf_counter()
    refused(r"X_train \(1000000, 1000000\) float64.* needs about 7.3 TiB", load, path)
    assert time.perf_counter() - start < 5


def test_a_compressed_npz_that_inflates_past_memory_is_refused(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "d.npz", X_train=np.zeros((2000, 100)), y_train=np.arange(2000) % 2)
    assert (tmp_path / "d.npz").stat().st_size < 10_000
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: 1_000_000)
    refused(r"d\.npz .* needs about 1\.5 MiB", load, tmp_path / "d.npz")


def test_an_npz_member_that_is_not_an_array_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("X_train", b"\0" * 100)
    refused("member 'X_train' is not an .npy array", load, tmp_path / "d.npz")


def test_an_npz_shorter_than_its_header_promises_is_refused(tmp_path):
    refused("is not a readable .npz file", load, lying_npz(tmp_path / "d.npz", (2, 8), data=b"\0" * 8))


def test_zero_features_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((4, 0)), y_train=[0, 1, 0, 1])
    refused(r"X_train has no features \(shape \(4, 0\)\)", load, tmp_path / "d.npz")


# ---- labels -------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1e10, 0, 1]), "holds the label 10000000000; labels must be integers 0..K-1"),
    (np.array([0, 10**10, 0, 1], dtype=np.int64), "holds the label 10000000000"),
    (np.array([0, 1e300, 0, 1]), "holds the label 1"),
    (np.array([0, 2**64 - 1, 0, 1], dtype=np.uint64), "holds the label 18446744073709551615"),
    (np.array([True, False, True, False]), "has dtype bool; labels must be integers"),
    (np.array([0, -1, 0, 1]), r"holds a negative label \(-1\)"),
    (np.array([0, 0.5, 0, 1]), "holds non-integer labels"),
    (np.array([0, np.nan, 0, 1]), "holds non-integer labels"),
])
def test_bad_labels_are_named(tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", X_train=np.ones((4, 2)), y_train=labels)
    refused(message, load, tmp_path / "d.npz")


def test_a_label_of_1e10_in_a_csv_is_refused(tmp_path):
    (tmp_path / "d.csv").write_text("1,2,0\n3,4,1e10\n5,6,1\n7,8,0\n")
    refused("holds the label 10000000000", load, tmp_path / "d.csv")


# ---- IDX ----------------------------------------------------------------------------------

def gzip_bomb(header: bytes, gigabytes: int = 1) -> bytes:
    """``header`` followed by ``gigabytes`` GiB of zeros, gzipped into about a megabyte:
    concatenated gzip members, each 16 MiB of zeros."""
    member = gzip.compress(b"\0" * (1 << 24), compresslevel=9)
    return gzip.compress(header) + member * (64 * gigabytes)


@pytest.mark.timeout(20)
def test_a_gzip_bomb_is_inflated_no_further_than_its_header_promises(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip_bomb(struct.pack(">BBBBI", 0, 0, 0x08, 1, 4)))
    assert path.stat().st_size < 2_000_000
    start = time.perf_counter()
    refused("IDX data is more than 4 bytes, its header .* promises 4", read_idx, path)
    assert time.perf_counter() - start < 2


def test_an_idx_header_promising_more_than_memory_is_refused_before_reading(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip_bomb(struct.pack(">BBBBIII", 0, 0, 0x0E, 3, 2**31, 2**31, 2**31), 0))
    refused(r"IDX \(2147483648, 2147483648, 2147483648\) f8, and as float32\) needs about", read_idx, path)


def test_a_damaged_gzip_stream_is_named(tmp_path):
    data = bytearray(gzip.compress(idx_bytes(np.arange(200, dtype=np.uint8))))
    data[20:30] = b"\xff" * 10
    (tmp_path / "x.gz").write_bytes(bytes(data))
    refused(r"x\.gz is a damaged gzip file", read_idx, tmp_path / "x.gz")


def test_images_with_no_rows_are_refused_not_reshaped(tmp_path):
    write_image_set(tmp_path / "imgs")
    (tmp_path / "imgs" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((0, 4, 4), dtype=np.uint8))))
    refused("X_train is empty", load_dataset,
            make_config(dataset="mnist", data_dir=str(tmp_path / "imgs")).data)


# ---- config values and TOML ----------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    (dict(seed=2**32), r"--seed must be in \[0, 4294967295\], got 4294967296"),
    (dict(seed=-1), r"--seed must be in \[0, 4294967295\], got -1"),
    (dict(lr=float("inf")), "--lr must be a finite number, got inf"),
    (dict(lr=float("nan")), "--lr must be a finite number, got nan"),
    (dict(lr_decay=float("inf")), "--lr-decay must be a finite number, got inf"),
    (dict(momentum=float("nan")), "--momentum must be a finite number, got nan"),
    (dict(test_fraction=float("-inf")), "--test-fraction must be a finite number, got -inf"),
    (dict(epochs=10**10), "--epochs must be at most 1,000,000,000, got 10000000000"),
    (dict(batch_size=10**19), "--batch-size must be a positive integer up to 1,000,000,000"),
    (dict(hidden=(64, 10**12)), r"--hidden needs layer widths in \[1, 16,777,216\]"),
    (dict(classes=10**7), r"--classes must be in \[2, 1000000\], got 10000000"),
    (dict(epochs=True), "--epochs must be an integer, got True"),
    (dict(dataset="a\0b"), "--dataset must be text without NUL characters"),
])
def test_out_of_range_settings_are_named(settings, message):
    refused(message, make_config, **settings)


def test_the_largest_seed_works():
    data = load_dataset(make_config(seed=2**32 - 1, samples_per_class=5).data)
    assert data.x_train.shape == (15, 2)


def test_spiral_labels_beyond_256_classes_do_not_wrap():
    data = load_dataset(make_config(samples_per_class=2, classes=300).data)
    assert data.n_classes == 300 and data.y_train.max() == 299


def test_a_spiral_too_large_for_memory_is_refused_before_generating():
    start = time.perf_counter()
    refused(r"the spiral data set \(1,000,000,000 samples x 1,000 classes.* needs about",
            load_dataset, make_config(samples_per_class=10**9, classes=1000).data)
    assert time.perf_counter() - start < 1


def write_toml(tmp_path, data: bytes):
    (tmp_path / "c.toml").write_bytes(data)
    return str(tmp_path / "c.toml")


def test_toml_with_a_byte_order_mark_is_read(tmp_path):
    assert read_config_file(write_toml(tmp_path, BOM + b"lr = 0.5\n")) == {"lr": 0.5}


@pytest.mark.parametrize("data, message", [
    (b"lr = 0.5 # caf\xe9\n", r"--config .*c\.toml: not UTF-8 text \(invalid continuation byte"),
    (b"[lr]\nvalue = 1\n", r"--config .*c\.toml: lr must be float, got \{'value': 1\}"),
    (b'hidden = ["64"]\n', "hidden must be a list of integers, got"),
    (b"hidden = [[64]]\n", "hidden must be a list of integers, got"),
    (b"lr = 1" + b"0" * 400 + b"\n", "lr = 1000.*is too large for a floating-point number"),
    (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"# " + b"x" * (1 << 20) + b"\n", "too large for a config file"),
    (b'epochs = "' + b"x" * 1000 + b'"\n', r"epochs must be int, got 'xxx.*\(shortened\)$"),
])
def test_bad_toml_is_named(tmp_path, data, message):
    refused(message, read_config_file, write_toml(tmp_path, data))


def test_a_huge_integer_in_toml_is_refused_by_its_bound(tmp_path):
    values = read_config_file(write_toml(tmp_path, b"epochs = 99999999999999999999999\n"))
    refused("--epochs must be at most 1,000,000,000", make_config, **values)


# ---- the model's memory ------------------------------------------------------------------

def test_the_estimate_counts_the_flat_vectors_of_the_real_model():
    sizes = (784, 256, 10)
    assert model_memory_bytes(sizes, 0, 4) == 4 * MLP(sizes).n_params * 4
    assert model_memory_bytes(sizes, 10**6, 8) - model_memory_bytes(sizes, 0, 8) == 4096 * 266 * 3 * 8


def test_a_model_too_large_for_memory_is_refused_with_its_estimate(monkeypatch):
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: 2**30)
    data = load_dataset(make_config(samples_per_class=10).data)
    check_fits(make_config(samples_per_class=10, hidden=(1000,)), data, 1)
    refused(r"the model 2-10000000-3 \(float32, batches of 30\) needs about 4.2 GiB, more "
            r"than the 921.6 MiB a run may plan to use", check_fits,
            make_config(samples_per_class=10, hidden=(10**7,)), data, 1)


def test_each_process_on_this_machine_holds_a_model(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_SIZE", raising=False)
    monkeypatch.setenv("MPI_LOCALNRANKS", "3")
    assert local_processes(8) == 3
    monkeypatch.setenv("MPI_LOCALNRANKS", "")
    assert local_processes(8) == 8


# ---- the headline cases through the CLI --------------------------------------------------

def npz_with_label(d, label):
    np.savez(d / "d.npz", X_train=np.random.default_rng(0).normal(size=(20, 2)),
             y_train=np.r_[np.arange(19) % 2, label])
    return ["--dataset", str(d / "d.npz")]


def make_fifo(d):
    os.mkfifo(d / "pipe.npz")
    return ["--dataset", str(d / "pipe.npz")]


def bomb_set(d):
    write_image_set(d / "imgs")
    header = struct.pack(">BBBBI", 0, 0, 0x08, 1, 60)
    (d / "imgs" / "train-labels-idx1-ubyte.gz").write_bytes(gzip_bomb(header))
    return ["--dataset", "mnist", "--data-dir", str(d / "imgs")]


def latin1_toml(d):
    (d / "c.toml").write_bytes(b"lr = 0.5 # caf\xe9\n")
    return ["--config", str(d / "c.toml")]


CLI_CASES = {
    "fifo": (make_fifo, "pipe.npz is not a regular file"),
    "dev zero": (lambda d: ["--dataset", "/dev/zero"], "--dataset /dev/zero is not a regular file"),
    "gzip bomb": (bomb_set, "train-labels-idx1-ubyte.gz: IDX data is more than 60 bytes"),
    "non-utf8 toml": (latin1_toml, "c.toml: not UTF-8 text"),
    "lr inf": (lambda d: ["--lr", "inf"], "--lr must be a finite number, got inf"),
    "seed 2**32": (lambda d: ["--seed", str(2**32)], "--seed must be in [0, 4294967295], got 4294967296"),
    "label 1e10": (lambda d: npz_with_label(d, 10**10), "y_train holds the label 10000000000"),
    "hidden 1e7": (lambda d: ["--hidden", "10000000"], "the model 2-10000000-3"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_headline_bad_inputs_through_the_cli(tmp_path, case):
    make, message = CLI_CASES[case]
    args = make(tmp_path)
    out = tmp_path / "out"
    done = distnn(["train", "--epochs", "1", "--quiet", *args, "--out", str(out)], timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("error:") == 1, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_a_bom_csv_trains_on_every_row_through_the_cli(tmp_path):
    (tmp_path / "d.csv").write_bytes(BOM + ROWS.encode())
    done = distnn(["train", "--dataset", str(tmp_path / "d.csv"), "--epochs", "1", "--quiet",
                   "--out", str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
