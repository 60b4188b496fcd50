"""Property-based damage to the data inputs: CSV, NPZ and IDX files (plain and gzipped)
and TOML config files, each truncated, byte-flipped, padded, or rewritten with a header
that lies about the shape or dtype of what follows.

The property: loading either succeeds with a consistent data set (shapes agree, values
finite, labels in 0..K-1) or config, or raises UsageError. Never another exception, never
a hang (every example runs under a deadline), never a memory blow-up (the memory budget is
set to 64 MiB, so that any header promising more must be refused before it is believed).
"""

import gzip
import io
import json
import math
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from distnn import guards
from distnn.config import FIELD_TYPES, make_config, read_config_file
from distnn.data import load_dataset
from distnn.data.idx import IDX_FILES, IDX_TYPES
from distnn.errors import UsageError
from idx_files import idx_bytes

FUZZ = settings(max_examples=60, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
BUDGET = 64 << 20
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def small_memory(monkeypatch):
    monkeypatch.setattr(guards, "available_memory_bytes", lambda: BUDGET)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-inputs")


# ---- damage -------------------------------------------------------------------------------

@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` after up to four cuts, byte flips, insertions or deletions (none in a third
    of the examples, so that intact files exercise the loading path too)."""
    data = bytearray(data)
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 4]))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return bytes(data)


def check_loads(**settings):
    """Load; any outcome but a consistent data set or a UsageError fails the property."""
    try:
        data = load_dataset(make_config(**settings).data)
    except UsageError:
        event("refused")
        return None
    event("loaded")
    assert_consistent(data, np.dtype(settings.get("dtype", "float32")))
    return data


def assert_consistent(data, dtype):
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.ndim == 2 and x.dtype == dtype and x.shape[1] == data.n_features >= 1
        assert y.shape == (x.shape[0],) and x.shape[0] >= 1
        assert np.isfinite(x).all()
        assert y.dtype == np.intp and 0 <= y.min() and y.max() < data.n_classes
    assert data.n_classes == max(data.y_train.max(), data.y_test.max()) + 1 >= 2


# ---- CSV ----------------------------------------------------------------------------------

digits = st.integers(0, 9).map(str)
numbers = st.one_of(digits, digits, digits, st.floats(-1e3, 1e3, allow_nan=False).map(repr),
                    st.sampled_from(["nan", "inf", "1e10", "-1", "-0", " 3 ", "", "x", "1_0", "1e400"]))


@st.composite
def csv_files(draw, n=None) -> bytes:
    """A CSV of features and a label column (``n`` rows, or 2 to 8), mostly valid before
    it is damaged."""
    n, width = n or draw(st.integers(2, 8)), draw(st.integers(1, 4))
    fields = numbers if draw(st.booleans()) else digits
    rows = [",".join(draw(st.lists(fields, min_size=width, max_size=width)) + [str(i % 3)])
            for i in range(n)]
    header = [",".join(f"c{j}" for j in range(width)) + ",label"] if draw(st.booleans()) else []
    text = "\n".join(header + rows) + "\n"
    start = BOM if draw(st.booleans()) else b""
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16"]))
    return draw(damaged(start + text.encode(encoding)))


@FUZZ
@given(content=csv_files(),
       column=st.sampled_from(["first", "last", "0", "-1", "label", "c0", "--1", "²", "9"]))
def test_damaged_csv_loads_consistently_or_is_refused(scratch, small_memory, content, column):
    (scratch / "d.csv").write_bytes(content)
    check_loads(dataset=str(scratch / "d.csv"), label_column=column, test_fraction=0.5)


@FUZZ
@given(n=st.integers(2, 8), data=st.data())
def test_damaged_csv_pairs_load_consistently_or_are_refused(scratch, small_memory, n, data):
    folder = scratch / "pair"
    folder.mkdir(exist_ok=True)
    labels = [str(i % 2) for i in range(n)]
    labels[data.draw(st.integers(0, n - 1))] = data.draw(
        st.sampled_from(["0", "1", "2", "-1", "0.5", "1e10", "nan", "x", "true"]))
    (folder / "X_train.csv").write_bytes(data.draw(csv_files(n), label="X_train.csv"))
    (folder / "y_train.csv").write_bytes(data.draw(damaged("\n".join(labels).encode()), label="y_train.csv"))
    check_loads(dataset=str(folder), test_fraction=0.5)


# ---- NPZ ----------------------------------------------------------------------------------

DTYPES = ["<f8", "<f4", "<f2", "<i8", "<i4", "|u1", "|b1", "<c8", "<U3", "|S2", ">f8", "<u8"]


@st.composite
def npz_files(draw) -> bytes:
    """An .npz of X_train/y_train (and maybe a test pair), saved compressed or not, then
    damaged."""
    n, width = draw(st.integers(1, 6)), draw(st.sampled_from([0, 1, 2, 3, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    usual = st.sampled_from(["<f8", "<i8", "|u1"])
    arrays = {"X_train": rng.normal(size=(n, width)).astype(draw(st.sampled_from(DTYPES[:6]))),
              "y_train": (np.arange(n) % draw(st.integers(1, 3))).astype(
                  draw(st.one_of(usual, usual, st.sampled_from(DTYPES))))}
    if draw(st.booleans()):
        arrays["X_test"] = rng.normal(size=(2, draw(st.sampled_from([width, width, 0, 4]))))
        arrays["y_test"] = np.array([0, draw(st.sampled_from([1, 1, 2, -1, 10**7, 1.5]))])
    buffer = io.BytesIO()
    (np.savez_compressed if draw(st.booleans()) else np.savez)(buffer, **arrays)
    return draw(damaged(buffer.getvalue()))


@st.composite
def lying_npz_files(draw) -> bytes:
    """An .npz whose members' headers promise shapes and dtypes that the data after them
    need not match."""
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name in draw(st.sampled_from([("X_train", "y_train"), ("X_train", "y_train", "X_test",
                                                                    "y_test"), ("X", "y")])):
            shape = tuple(draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**40)),
                                        max_size=3)))
            header = io.BytesIO()
            npy_format.write_array_header_1_0(header, {"descr": draw(st.sampled_from(DTYPES)),
                                                       "fortran_order": draw(st.booleans()),
                                                       "shape": shape})
            archive.writestr(f"{name}.npy", header.getvalue() + draw(st.binary(max_size=200)))
    return buffer.getvalue()


@FUZZ
@given(content=st.one_of(npz_files(), npz_files(), lying_npz_files()))
def test_damaged_or_lying_npz_loads_consistently_or_is_refused(scratch, small_memory, content):
    (scratch / "d.npz").write_bytes(content)
    check_loads(dataset=str(scratch / "d.npz"), test_fraction=0.5)


# ---- IDX ----------------------------------------------------------------------------------

def image_set(n_train=6, n_test=3, side=2) -> dict[str, bytes]:
    arrays = {"X_train": np.arange(n_train * side * side, dtype=np.uint8).reshape(n_train, side, side),
              "y_train": (np.arange(n_train) % 3).astype(np.uint8),
              "X_test": np.ones((n_test, side, side), dtype=np.uint8),
              "y_test": (np.arange(n_test) % 2).astype(np.uint8)}
    return {split: idx_bytes(array) for split, array in arrays.items()}


@st.composite
def lying_idx(draw) -> bytes:
    """An IDX header of any type code and dimensions, followed by any number of bytes."""
    type_code = draw(st.one_of(st.sampled_from(sorted(IDX_TYPES)), st.integers(0, 255)))
    dims = draw(st.lists(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)), max_size=4))
    header = struct.pack(">BBBB", 0, 0, type_code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    return header + draw(st.binary(max_size=300))


@FUZZ
@given(split=st.sampled_from(sorted(IDX_FILES)), gz=st.booleans(), data=st.data())
def test_damaged_or_lying_idx_loads_consistently_or_is_refused(scratch, small_memory, split, gz, data):
    folder = scratch / ("idx-gz" if gz else "idx")
    folder.mkdir(exist_ok=True)
    files = image_set()
    files[split] = data.draw(st.one_of(damaged(files[split]), lying_idx()), label="content")
    for name, content in files.items():
        content = gzip.compress(content, mtime=0) if gz else content
        if gz and data.draw(st.booleans(), label="damage the gzip stream"):
            content = data.draw(damaged(content), label="gzip")
        (folder / (IDX_FILES[name] + (".gz" if gz else ""))).write_bytes(content)
    check_loads(dataset="mnist", data_dir=str(folder))


# ---- TOML ---------------------------------------------------------------------------------

def toml_value(value) -> str:
    """``value`` written as TOML (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


scalars = st.one_of(st.booleans(), st.integers(-2, 2**70), st.floats(), st.text(max_size=12),
                    st.sampled_from(["full", "ps-sync", "float64", "he", "spiral"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)), max_leaves=6)
keys = st.one_of(st.sampled_from(sorted(FIELD_TYPES)), st.sampled_from(sorted(FIELD_TYPES)).map(
    lambda name: name.replace("_", "-")), st.text(min_size=1, max_size=8))


@st.composite
def toml_files(draw) -> bytes:
    """A TOML file of known and unknown keys with values of any kind, in UTF-8 (with or
    without a byte-order mark) or Latin-1, maybe damaged."""
    entries = draw(st.dictionaries(keys, values, max_size=5))
    text = "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in entries.items())
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
    content = text.encode(encoding, errors="replace")
    return draw(damaged(content)) if draw(st.booleans()) else content


@FUZZ
@given(content=toml_files())
def test_any_toml_gives_a_valid_config_or_a_usage_error(scratch, content):
    (scratch / "c.toml").write_bytes(content)
    try:
        settings = read_config_file(str(scratch / "c.toml"))
        config = make_config(settings.pop("preset", "default"), **settings)
    except UsageError:
        event("refused")
        return
    event("accepted")
    assert 0 <= config.seed < 2**32 and math.isfinite(config.lr) and config.epochs <= 10**9


@FUZZ
@given(entries=st.dictionaries(st.sampled_from(sorted(FIELD_TYPES)), values, max_size=4))
def test_valid_toml_round_trips_its_values(scratch, entries):
    text = "".join(f"{key} = {toml_value(value)}\n" for key, value in entries.items())
    (scratch / "c.toml").write_bytes(BOM + text.encode())
    try:
        settings = read_config_file(str(scratch / "c.toml"))
    except UsageError:
        return
    for key, value in entries.items():
        read = settings[key]
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(read)
        elif key != "batch_size" or value != "full":
            assert read == (tuple(value) if key == "hidden" else value)
