"""Property-based damage to the artefacts distnn writes (model.npz, checkpoint.npz,
metrics.jsonl): truncations, byte flips and "shape lies" (arrays rewritten with other
shapes, dtypes, NaN/inf, extra or missing arrays, sizes that lie).

The property: loading either raises UsageError, or returns an artefact that is exactly
valid (and then predict and ONNX export give correct results). Never another exception,
never a hang (every example runs under a deadline).
"""

import contextlib
import io
import json
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from distnn.checkpoint import STRATEGY_COUNTERS, load_checkpoint
from distnn.config import make_config
from distnn.errors import UsageError
from distnn.export import export_onnx
from distnn.metrics_log import NUMERIC_FIELDS, read_metrics, repair_torn_tail
from distnn.model_file import FLOAT_DTYPES, load_model, parameter_count
from distnn.nn import MLP
from distnn.optim import SGD
from test_artefacts import arrays_of, ps_async_checkpoint, tiny_run

ort = pytest.importorskip("onnxruntime")

FUZZ = settings(max_examples=60, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_,
          np.complex64, "<U4", "S3"]


class Artefacts(dict):
    """The fixture's files and arrays; its short repr keeps hypothesis' reports readable."""

    def __init__(self, **items):
        super().__init__(items)

    def __repr__(self):
        return f"Artefacts({self['run']})"


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """The files of one tiny training run, the arrays they hold, and a scratch folder."""
    base = tmp_path_factory.mktemp("fuzz")
    run = tiny_run(base / "run")
    ps_async = ps_async_checkpoint(base / "ps-async.npz")
    return Artefacts(run=run, scratch=base,
                     model=arrays_of(run / "model.npz"),
                     checkpoints=[arrays_of(run / "checkpoint.npz"), arrays_of(ps_async)],
                     metrics=(run / "metrics.jsonl").read_text(),
                     bytes={"model": (run / "model.npz").read_bytes(),
                            "checkpoint": (run / "checkpoint.npz").read_bytes()})


def random_array():
    return hnp.arrays(dtype=st.sampled_from(DTYPES),
                      shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))


@st.composite
def variant(draw, array: np.ndarray) -> np.ndarray:
    """``array`` changed the way a tampered file would change it."""
    change = draw(st.sampled_from(["dtype", "flatten", "transpose", "extra dim", "scalar",
                                   "shorter", "non-finite", "random"]))
    if change == "dtype":
        try:
            return array.astype(draw(st.sampled_from(DTYPES)))
        except ValueError:   # text that is not a number: the array stays as it was
            return array
    if change == "flatten":
        return array.reshape(-1)
    if change == "transpose":
        return array.T.copy()
    if change == "extra dim":
        return array[None]
    if change == "scalar":
        return array.reshape(-1)[:1].reshape(()) if array.size else array.reshape(-1)
    if change == "shorter":
        return array.reshape(-1)[:-1]
    if change == "non-finite" and array.dtype.kind == "f" and array.size:
        array = array.copy()
        array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf,
                                                                                 -np.inf]))
        return array
    return draw(random_array())


@st.composite
def lying_sizes(draw) -> np.ndarray:
    widths = draw(st.lists(st.integers(-3, 2**40), min_size=0, max_size=5)
                  | st.lists(st.integers(1, 6), min_size=2, max_size=4))
    return np.asarray(widths, dtype=np.int64).astype(
        draw(st.sampled_from([np.int64, np.int32, np.float64, np.uint64])))


@st.composite
def damaged(draw, arrays: dict) -> dict:
    """``arrays`` after one to three changes: a changed, deleted or added array, or lying sizes."""
    arrays = dict(arrays)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["change", "change", "delete", "add", "sizes"]))
        name = draw(st.sampled_from(sorted(arrays))) if arrays else None
        if action == "change" and name:
            arrays[name] = draw(variant(arrays[name]))
        elif action == "delete" and name:
            del arrays[name]
        elif action == "add":
            new = draw(st.sampled_from(["layers.2.weight", "layers.1.bias", "mean", "strategy.x",
                                        "epoch_step"])
                       | st.text(string.ascii_letters + "._", min_size=1, max_size=10))
            arrays[new] = draw(random_array())
        else:
            arrays["sizes"] = draw(lying_sizes())
    return arrays


@st.composite
def damaged_bytes(draw, data: bytes) -> bytes:
    """``data`` truncated, or with a few bytes flipped."""
    if draw(st.booleans()):
        return data[: draw(st.integers(0, len(data) - 1))]
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def check_valid_model(model: MLP, stored: dict, scratch) -> None:
    """A loaded model must be what was stored, and predict and export correctly."""
    assert model.dtype in FLOAT_DTYPES and len(model.sizes) >= 2
    for i, layer in enumerate(model.layers):
        np.testing.assert_array_equal(layer.weight, stored[f"layers.{i}.weight"])
        np.testing.assert_array_equal(layer.bias, stored[f"layers.{i}.bias"])
    x = np.random.default_rng(0).normal(size=(7, model.n_features)).astype(model.dtype)
    probabilities = model.predict_proba(x)
    assert np.all(np.isfinite(probabilities))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-6)
    export_onnx(model, scratch / "model.onnx")
    onnx_probabilities, labels = ort.InferenceSession(str(scratch / "model.onnx")).run(
        None, {"input": x})
    np.testing.assert_allclose(onnx_probabilities, probabilities, atol=1e-5)


def load_model_or_refuse(path, scratch):
    try:
        model = load_model(path)
    except UsageError as exc:
        assert str(path) in str(exc)
        return None
    check_valid_model(model, arrays_of(path), scratch)
    return model


@FUZZ
@given(data=st.data())
def test_a_model_with_shape_lies_loads_exactly_or_is_refused(artefacts, data):
    arrays = data.draw(damaged(artefacts["model"]))
    path = artefacts["scratch"] / "model.npz"
    np.savez(path, **arrays)
    load_model_or_refuse(path, artefacts["scratch"])


@FUZZ
@given(data=st.data())
def test_a_truncated_or_flipped_model_loads_exactly_or_is_refused(artefacts, data):
    path = artefacts["scratch"] / "model.npz"
    path.write_bytes(data.draw(damaged_bytes(artefacts["bytes"]["model"])))
    load_model_or_refuse(path, artefacts["scratch"])


def test_the_fuzzed_model_strategies_reach_valid_models_too(artefacts):
    """The property's "valid" side is exercised: a changed bias of the right shape and
    dtype is a different, valid model."""
    arrays = {**artefacts["model"], "layers.1.bias": np.array([1.0, -2.0, 0.5], dtype=np.float32)}
    path = artefacts["scratch"] / "valid.npz"
    np.savez(path, **arrays)
    assert load_model_or_refuse(path, artefacts["scratch"]) is not None


def check_valid_checkpoint(loaded: dict) -> None:
    """What ``train.restore`` and the CLI rely on: consistent shapes, one float dtype,
    finite values, counters that add up, and a config the CLI accepts or refuses cleanly."""
    params, velocity, sizes = loaded["params"], loaded["optimizer"]["velocity"], loaded["sizes"]
    assert params.dtype in FLOAT_DTYPES and velocity.dtype == params.dtype
    assert params.shape == velocity.shape == (parameter_count(sizes),)
    assert np.all(np.isfinite(params)) and np.all(np.isfinite(velocity))
    assert loaded["epoch"] >= 0 and loaded["iterations"] >= 0 and loaded["epoch_step"] >= 0
    counters = loaded["strategy"]
    assert set(counters) in (set(), set(STRATEGY_COUNTERS))
    if counters:
        updates = int(counters["updates"])      # staleness: a histogram per server
        assert updates == counters["applied"].sum()
        assert all(updates == row.sum() for row in np.atleast_2d(counters["staleness_counts"]))
    model = MLP(sizes, dtype=params.dtype)
    model.params[...] = params
    optimizer = SGD(model.params, lr=0.1, lr_decay=0.0, momentum=0.9)
    optimizer.load_state_dict({"iterations": loaded["iterations"], "state": loaded["optimizer"]})
    saved = dict(loaded["config"])
    saved["hidden"] = tuple(saved.get("hidden", ()))
    with contextlib.suppress(UsageError):
        make_config(saved.pop("preset", "default"), **saved)


def load_checkpoint_or_refuse(path) -> None:
    try:
        loaded = load_checkpoint(path)
    except UsageError as exc:
        assert str(path) in str(exc)
        return
    check_valid_checkpoint(loaded)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**12)
                           | st.floats(allow_nan=True) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@st.composite
def damaged_config(draw, arrays: dict) -> dict:
    """A checkpoint whose config JSON has a field changed, removed or added."""
    config = json.loads(str(arrays["config"]))
    key = draw(st.sampled_from(sorted(config)) | st.text(max_size=6))
    if draw(st.booleans()) and key in config:
        del config[key]
    else:
        config[key] = draw(json_values)
    return {**arrays, "config": np.asarray(json.dumps(config))}


@FUZZ
@given(data=st.data())
def test_a_checkpoint_with_shape_lies_loads_exactly_or_is_refused(artefacts, data):
    base = data.draw(st.sampled_from(artefacts["checkpoints"]))
    arrays = data.draw(damaged(base) | damaged_config(base))
    path = artefacts["scratch"] / "checkpoint.npz"
    np.savez(path, **arrays)
    load_checkpoint_or_refuse(path)


@FUZZ
@given(data=st.data())
def test_a_truncated_or_flipped_checkpoint_loads_exactly_or_is_refused(artefacts, data):
    path = artefacts["scratch"] / "checkpoint.npz"
    path.write_bytes(data.draw(damaged_bytes(artefacts["bytes"]["checkpoint"])))
    load_checkpoint_or_refuse(path)


def quietly(function, *args):
    """``function(*args)`` and what it wrote on stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        result = function(*args)
    return result, stderr.getvalue()


@FUZZ
@given(data=st.data())
def test_a_torn_metrics_log_keeps_its_complete_records_and_is_repaired(artefacts, data):
    text = artefacts["metrics"]
    cut = data.draw(st.integers(0, len(text)))
    path = artefacts["scratch"] / "metrics.jsonl"
    path.write_text(text[:cut])
    pieces, originals = text[:cut].split("\n"), text.split("\n")
    whole = [piece for i, piece in enumerate(pieces) if piece and piece == originals[i]]
    torn = pieces[-1] != "" and pieces[-1] != originals[len(pieces) - 1]
    complete = [json.loads(line) for line in whole]
    records, warning = quietly(read_metrics, path)
    assert records == complete
    assert warning.count("\n") == int(torn)
    assert repair_torn_tail(path) is torn
    assert path.read_text() == "".join(line + "\n" for line in whole)
    assert quietly(read_metrics, path) == (complete, "")


@FUZZ
@given(data=st.data())
def test_a_damaged_metrics_log_reads_checked_records_or_is_refused(artefacts, data):
    lines = artefacts["metrics"].splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(lines)))
        damage = data.draw(st.sampled_from(["json", "text", "drop field", "flip"]))
        if damage == "json":
            lines.insert(position, json.dumps(data.draw(json_values)) + "\n")
        elif damage == "text":
            lines.insert(position, data.draw(st.text(max_size=12)))
        elif damage == "drop field" and position < len(lines):
            record = None
            with contextlib.suppress(ValueError):   # an earlier damage made it not JSON
                record = json.loads(lines[position])
            if isinstance(record, dict) and record:
                record.pop(data.draw(st.sampled_from(sorted(record))))
                lines[position] = json.dumps(record) + "\n"
        elif position < len(lines) and lines[position]:
            line = lines[position]
            at = data.draw(st.integers(0, len(line) - 1))
            lines[position] = line[:at] + data.draw(st.characters()) + line[at + 1:]
    path = artefacts["scratch"] / "metrics.jsonl"
    path.write_bytes("".join(lines).encode("utf-8", "surrogatepass"))
    for step in (read_metrics, repair_torn_tail, read_metrics):
        try:
            result, _ = quietly(step, path)
        except UsageError as exc:
            assert str(path) in str(exc)
            return
    for record in result:
        assert all(type(record[field]) in (int, float) for field in NUMERIC_FIELDS)
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1
