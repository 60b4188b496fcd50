"""Every artefact is validated on load (model.npz, checkpoint.npz, metrics.jsonl) and every
output path before writing: damage is exit 2 with the file and field named, never a
traceback, never a silent wrong answer, and nothing half-written."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from distnn.checkpoint import load_checkpoint, save_checkpoint
from distnn.config import make_config
from distnn.data import load_dataset
from distnn.errors import UsageError
from distnn.export import export_onnx
from distnn.inference import predict_file, score
from distnn.metrics_log import keep_through_epoch, read_metrics, repair_torn_tail
from distnn.model_file import load_model
from distnn.nn import MLP
from distnn.optim import SGD
from distnn.plot import plot_run
from distnn.rundir import RunDirectory
from distnn.train import train
from helpers import distnn


def tiny_run(out: Path, **overrides) -> Path:
    """Train a 2-4-3 spiral model for 3 epochs in this process; ``out`` then holds
    model.npz, checkpoint.npz and metrics.jsonl as ``distnn train`` writes them."""
    settings = dict(samples_per_class=20, hidden=(4,), epochs=3, eval_every=1, seed=1,
                    out=str(out))
    config = make_config(**{**settings, **overrides})
    run = RunDirectory(out, config.strategy)
    run.claim()
    try:
        model, _ = train(config, MPI.COMM_SELF, load_dataset(config.data), run=run, checkpoints=True)
        run.save_model(model)
    finally:
        run.release()
    return out


def ps_async_checkpoint(path: Path) -> Path:
    """A checkpoint with ps-async's counters (two workers, six updates), written by
    ``save_checkpoint`` from a real model and optimizer."""
    config = make_config(samples_per_class=20, hidden=(4,), epochs=2, strategy="ps-async")
    model = MLP([2, 4, 3], dtype="float32", seed=2)
    optimizer = SGD(model.params, lr=0.5, lr_decay=0.0, momentum=0.9)
    save_checkpoint(path, config=config, epoch=2, model=model,
                    optimizer_state=optimizer.state_dict(),
                    strategy_state={"updates": 6, "applied": np.array([3, 3]),
                                    "staleness_counts": np.array([4, 2])})
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("artefacts") / "run")


def arrays_of(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def rewrite(source: Path, target: Path, **changes) -> Path:
    """``source``'s arrays with ``changes`` (None deletes one), saved at ``target``."""
    arrays = arrays_of(source)
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value
    np.savez(target, **arrays)
    return target


def weight(run_dir, transform):
    return transform(arrays_of(run_dir / "model.npz")["layers.0.weight"])


def with_nan(array):
    array = array.copy()
    array.flat[1] = np.nan
    return array


MODEL_DAMAGE = {
    "NaN weight": (lambda d: {"layers.0.weight": weight(d, with_nan)},
                   "'layers.0.weight' holds NaN or infinite values"),
    "integer weights": (lambda d: {"layers.0.weight": weight(d, lambda w: w.astype(np.int64))},
                        "'layers.0.weight' is int64"),
    "mixed dtypes": (lambda d: {"layers.0.bias": np.zeros(4, dtype=np.float64)},
                     "'layers.0.bias' is float64, 'layers.0.weight' is float32"),
    "sizes disagree": (lambda d: {"sizes": np.array([2, 5, 3])},
                       "'layers.0.weight' has shape (2, 4), but sizes [2, 5, 3] need (2, 5)"),
    "negative size": (lambda d: {"sizes": np.array([2, -4, 3])}, "'sizes' holds a width outside"),
    "0-d sizes": (lambda d: {"sizes": np.array(3)}, "'sizes' must be a 1-D integer array"),
    "float sizes": (lambda d: {"sizes": np.array([2.0, 4.0, 3.0])},
                    "'sizes' must be a 1-D integer array"),
    "huge sizes": (lambda d: {"sizes": np.array([2, 10**12, 3])}, "'sizes' holds a width outside"),
    "one size": (lambda d: {"sizes": np.array([2])}, "'sizes' must list between 2 and"),
    "more layers than arrays": (lambda d: {"sizes": np.array([2, 4, 3, 3])},
                                "'layers.2.weight' is missing"),
    "missing bias": (lambda d: {"layers.1.bias": None}, "'layers.1.bias' is missing"),
    "unexpected array": (lambda d: {"mean": np.zeros(2)}, "unexpected array(s) 'mean'"),
    "unknown activation": (lambda d: {"activation": np.asarray("swish")},
                           "'activation' must be one of relu, tanh, gelu, got 'swish'"),
    "activation not a string": (lambda d: {"output": np.zeros(3)}, "'output' must be one of softmax"),
    "unknown format": (lambda d: {"format": np.asarray(7)}, "'format' is 7 (int64), this version"),
    "no format": (lambda d: {"format": None}, "is not a distnn model (no 'format'"),
    "pickled object": (lambda d: {"activation": np.array([{"a": 1}], dtype=object)},
                       "is not a readable distnn model"),
}


@pytest.mark.parametrize("case", sorted(MODEL_DAMAGE))
def test_a_damaged_model_is_refused_naming_the_field(run_dir, tmp_path, case):
    changes, message = MODEL_DAMAGE[case]
    path = rewrite(run_dir / "model.npz", tmp_path / "model.npz", **changes(run_dir))
    with pytest.raises(UsageError) as caught:
        load_model(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_intact_model_loads_exactly(run_dir):
    model = load_model(run_dir / "model.npz")
    stored = arrays_of(run_dir / "model.npz")
    assert model.sizes == [2, 4, 3] and model.dtype == np.float32
    for i, layer in enumerate(model.layers):
        np.testing.assert_array_equal(layer.weight, stored[f"layers.{i}.weight"])
        np.testing.assert_array_equal(layer.bias, stored[f"layers.{i}.bias"])


def test_a_model_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(UsageError, match="is not a regular file"):
        load_model(tmp_path / "fifo.npz")
    with pytest.raises(UsageError, match="no such file"):
        load_model(tmp_path / "none.npz")


def test_a_model_that_unpacks_beyond_memory_is_refused(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("distnn.guards.available_memory_bytes", lambda: 1000)
    with pytest.raises(UsageError, match="more than the 900 B a run may plan to use"):
        load_model(run_dir / "model.npz")


CHECKPOINT_DAMAGE = {
    "NaN params": (lambda a: {"params": with_nan(a["params"])}, "'params' holds NaN"),
    "integer params": (lambda a: {"params": a["params"].astype(np.int32)}, "'params' is int32"),
    "velocity of another dtype": (lambda a: {"optimizer.velocity":
                                             a["optimizer.velocity"].astype(np.float64)},
                                  "'optimizer.velocity' is float64, 'params' is float32"),
    "short velocity": (lambda a: {"optimizer.velocity": a["optimizer.velocity"][:-1]},
                       "'optimizer.velocity' has shape (26,), but sizes [2, 4, 3] need (27,)"),
    "state of another optimizer": (lambda a: {"optimizer.velocity": None,
                                              "optimizer.exp_avg": a["optimizer.velocity"]},
                                   "keeps ['optimizer.velocity']"),
    "2-D params": (lambda a: {"params": a["params"].reshape(3, 9)}, "'params' has shape (3, 9)"),
    "sizes lie": (lambda a: {"sizes": np.array([2, 5, 3])}, "'params' has shape (27,), but sizes"),
    "negative epoch": (lambda a: {"epoch": np.asarray(-1)}, "'epoch' must be a non-negative integer"),
    "float iterations": (lambda a: {"iterations": np.asarray(3.0)},
                         "'iterations' must be a non-negative integer"),
    "config a list": (lambda a: {"config": np.asarray("[1, 2]")}, "'config' must be a JSON object"),
    "config not JSON": (lambda a: {"config": np.asarray("{")}, "'config' is not valid JSON"),
    "config wrong type": (lambda a: {"config": np.asarray(json.dumps(
        {**json.loads(str(a["config"])), "lr": "fast"}))}, "field 'lr' must be float, got 'fast'"),
    "config dtype differs": (lambda a: {"config": np.asarray(json.dumps(
        {**json.loads(str(a["config"])), "dtype": "float64"}))},
        "'params' is float32, but the config says float64"),
    "unexpected array": (lambda a: {"extra": np.zeros(1)}, "unexpected array(s) 'extra'"),
    "missing iterations": (lambda a: {"iterations": None}, "lacks iterations"),
    "negative counter": (lambda a: {"strategy.applied": np.array([-1, 7])},
                         "'strategy.applied' must be a 1-D array of non-negative integers"),
    "counters do not add up": (lambda a: {"strategy.updates": np.asarray(7)},
                               "'strategy.updates' does not add up"),
    "2-D counter": (lambda a: {"strategy.updates": np.array([6, 0])},
                    "'strategy.updates' must be a non-negative integer"),
    "a server's staleness does not add up": (
        lambda a: {"strategy.staleness_counts": np.array([[4, 2], [5, 2]])},
        "does not add up: updates 6, sum of applied 6, sum of staleness_counts [6, 7]"),
    "3-D staleness": (lambda a: {"strategy.staleness_counts": np.ones((1, 2, 3), np.int64)},
                      "'strategy.staleness_counts' must be a 1-D array of non-negative integers "
                      "(2-D: a row per server)"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_is_refused_naming_the_field(tmp_path, case):
    changes, message = CHECKPOINT_DAMAGE[case]
    source = ps_async_checkpoint(tmp_path / "source.npz")
    path = rewrite(source, tmp_path / "checkpoint.npz", **changes(arrays_of(source)))
    with pytest.raises(UsageError) as caught:
        load_checkpoint(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_an_intact_checkpoint_loads_with_its_counters(tmp_path, run_dir):
    loaded = load_checkpoint(ps_async_checkpoint(tmp_path / "checkpoint.npz"))
    assert (loaded["epoch"], loaded["epoch_step"], loaded["sizes"]) == (2, 0, [2, 4, 3])
    assert int(loaded["strategy"]["updates"]) == 6
    np.testing.assert_array_equal(loaded["strategy"]["applied"], [3, 3])
    serial = load_checkpoint(run_dir)
    assert (serial["epoch"], serial["iterations"], serial["strategy"]) == (3, 3, {})
    assert serial["params"].shape == serial["optimizer"]["velocity"].shape == (27,)


def test_a_checkpoint_of_two_servers_holds_a_histogram_per_server(tmp_path):
    source = ps_async_checkpoint(tmp_path / "source.npz")
    two = rewrite(source, tmp_path / "two.npz",
                  **{"strategy.staleness_counts": np.array([[4, 2], [6, 0]])})
    np.testing.assert_array_equal(load_checkpoint(two)["strategy"]["staleness_counts"],
                                  [[4, 2], [6, 0]])


def test_a_checkpoint_of_the_first_format_still_loads(tmp_path):
    source = ps_async_checkpoint(tmp_path / "source.npz")
    arrays = arrays_of(source)
    old = rewrite(source, tmp_path / "old.npz", format=np.asarray("distnn-checkpoint-1"),
                  velocity=arrays["optimizer.velocity"], **{"optimizer.velocity": None})
    loaded = load_checkpoint(old)
    np.testing.assert_array_equal(loaded["optimizer"]["velocity"], arrays["optimizer.velocity"])


def test_predict_refuses_bad_output_paths_before_writing(run_dir, tmp_path):
    model = load_model(run_dir / "model.npz")
    x = tmp_path / "x.csv"
    x.write_text("0.1,0.2\n0.3,-0.4\n")
    bad = {tmp_path: "is a directory", tmp_path / "no" / "y.csv": "does not exist",
           Path("/proc/self/y.csv"): "a virtual file system", x: "is also an input",
           run_dir / "model.npz": "is also an input"}
    for output, message in bad.items():
        with pytest.raises(UsageError, match=message) as caught:
            predict_file(model, x, output, sources=(run_dir / "model.npz",))
        assert str(caught.value).startswith(f"--output {output}")
    assert x.read_text() == "0.1,0.2\n0.3,-0.4\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_predict_names_an_unwritable_output_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    model = load_model(run_dir / "model.npz")
    (tmp_path / "x.csv").write_text("0.1,0.2\n")

    def disk_full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("distnn.guards.atomic_write", disk_full)
    with pytest.raises(UsageError, match="--output .*y.csv: cannot write it .No space left"):
        predict_file(model, tmp_path / "x.csv", tmp_path / "y.csv")
    assert not (tmp_path / "y.csv").exists()


def test_predict_refuses_a_non_regular_or_non_numeric_input(run_dir, tmp_path):
    model = load_model(run_dir / "model.npz")
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(UsageError, match="--input .*fifo.csv is not a regular file"):
        predict_file(model, tmp_path / "fifo.csv", tmp_path / "y.csv")
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    with pytest.raises(UsageError, match="holds <U1 values; features must be numbers"):
        predict_file(model, tmp_path / "text.npy", tmp_path / "y.csv")
    assert not (tmp_path / "y.csv").exists()


def test_evaluate_refuses_labels_the_model_cannot_predict(run_dir):
    model = load_model(run_dir / "model.npz")
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(UsageError, match="labels go from 0 to 5; the model has 3 classes"):
        score(model, x, np.array([0, 1, 5]), "--dataset d")
    with pytest.raises(UsageError, match="labels go from -1 to 1"):
        score(model, x, np.array([0, 1, -1]))
    with pytest.raises(UsageError, match="no samples"):
        score(model, x[:0], np.array([], dtype=np.int64))
    assert score(model, x, np.array([0, 1, 2]))["samples"] == 3


def test_export_refuses_bad_output_paths_and_writes_a_loadable_file(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = load_model(run_dir / "model.npz")
    for output, message in {tmp_path: "is a directory", Path("/proc/m.onnx"): "virtual file system",
                            tmp_path / "no" / "m.onnx": "does not exist"}.items():
        with pytest.raises(UsageError, match=message):
            export_onnx(model, output)
    with pytest.raises(UsageError, match="is also an input"):
        export_onnx(model, run_dir / "model.npz", sources=(run_dir / "model.npz",))
    assert list(tmp_path.iterdir()) == []
    export_onnx(model, tmp_path / "m.onnx")
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    probabilities, _ = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x})
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-6)


def metrics_copy(run_dir: Path, tmp_path: Path, tail: str = "") -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text((run_dir / "metrics.jsonl").read_text() + tail)
    return path


def test_a_torn_last_metrics_line_is_skipped_with_a_warning_and_repaired(run_dir, tmp_path, capsys):
    path = metrics_copy(run_dir, tmp_path, '{"epoch": 4, "train_lo')
    records = read_metrics(path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "the last line is incomplete" in warning
    assert repair_torn_tail(path) is True
    assert path.read_text() == (run_dir / "metrics.jsonl").read_text()
    assert repair_torn_tail(path) is False
    read_metrics(path)
    assert capsys.readouterr().err == ""


def test_a_complete_last_line_without_newline_gets_one(run_dir, tmp_path):
    path = metrics_copy(run_dir, tmp_path)
    path.write_text(path.read_text().rstrip("\n"))
    assert repair_torn_tail(path) is False
    assert path.read_text() == (run_dir / "metrics.jsonl").read_text()


def test_resume_keeps_the_records_through_the_checkpoint(run_dir, tmp_path):
    path = metrics_copy(run_dir, tmp_path, '{"epoch": 4, "tr')
    kept = keep_through_epoch(path, 2)
    assert [r["epoch"] for r in kept] == [1, 2]
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]


METRICS_DAMAGE = {
    "bad line inside": ('{"epoch": 4, "tr\n{"epoch": 5}\n', "line 4 is not JSON"),
    "not an object": ("[1, 2]\n", "line 4 is a JSON list, not an object"),
    "missing field": ('{"epoch": 4, "train_loss": 1, "train_accuracy": 0.5, "test_loss": 1}\n',
                      "line 4: 'test_accuracy' is missing"),
    "text loss": ('{"epoch": 4, "train_loss": "low", "train_accuracy": 0.5, "test_loss": 1, '
                  '"test_accuracy": 0.5}\n', "line 4: 'train_loss' is 'low', not a number"),
    "fractional epoch": ('{"epoch": 4.5, "train_loss": 1, "train_accuracy": 0.5, "test_loss": 1, '
                         '"test_accuracy": 0.5}\n', "line 4: 'epoch' is 4.5"),
    "accuracy above 1": ('{"epoch": 4, "train_loss": 1, "train_accuracy": 2, "test_loss": 1, '
                         '"test_accuracy": 0.5}\n', "line 4: 'train_accuracy' is 2, not in [0, 1]"),
    "not UTF-8": ("\udcff\n", "is not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(METRICS_DAMAGE))
def test_damaged_metrics_are_refused_naming_line_and_field(run_dir, tmp_path, case):
    tail, message = METRICS_DAMAGE[case]
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(((run_dir / "metrics.jsonl").read_text() + tail).encode("utf-8", "surrogateescape"))
    with pytest.raises(UsageError) as caught:
        read_metrics(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_nan_loss_of_a_diverged_run_is_read(run_dir, tmp_path):
    path = metrics_copy(run_dir, tmp_path, '{"epoch": 4, "train_loss": NaN, "train_accuracy": 0.3, '
                        '"test_loss": NaN, "test_accuracy": 0.3}\n')
    assert np.isnan(read_metrics(path)[-1]["train_loss"])


def test_plot_ignores_a_torn_line_and_writes_whole_pngs(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "run").mkdir()
    metrics_copy(run_dir, tmp_path / "run", '{"epoch": 4, "tr')
    written = plot_run(tmp_path / "run")
    assert [p.name for p in written] == ["loss.png", "accuracy.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "accuracy.png", "loss.png", "metrics.jsonl"]


# Through the real CLI: exit 2, one message naming the file and field, no traceback, nothing written.

def cli_model(run_dir, d, **changes):
    return str(rewrite(run_dir / "model.npz", d / "model.npz", **changes))


def cli_input(d):
    (d / "x.csv").write_text("0.1,0.2\n0.3,0.4\n")
    return str(d / "x.csv")


CLI_CASES = {
    "predict with NaN weights": (
        lambda r, d: ["predict", cli_model(r, d, **{"layers.0.weight": weight(r, with_nan)}),
                      "--input", cli_input(d), "--output", str(d / "y.csv")],
        "'layers.0.weight' holds NaN or infinite values"),
    "predict with integer weights": (
        lambda r, d: ["predict", cli_model(r, d, **{"layers.0.weight": weight(r, np.int64)}),
                      "--input", cli_input(d), "--output", str(d / "y.csv")],
        "'layers.0.weight' is int64"),
    "export with lying sizes": (
        lambda r, d: ["export", cli_model(r, d, sizes=np.array([2, 400, 3])), "--output",
                      str(d / "m.onnx")], "but sizes [2, 400, 3] need (2, 400)"),
    "evaluate with an unexpected array": (
        lambda r, d: ["evaluate", cli_model(r, d, mean=np.zeros(2)), "--samples-per-class", "20"],
        "unexpected array(s) 'mean'"),
    "predict into a directory": (
        lambda r, d: ["predict", str(r / "model.npz"), "--input", cli_input(d), "--output", str(d)],
        "is a directory"),
    "export under /proc": (
        lambda r, d: ["export", str(r / "model.npz"), "--output", "/proc/distnn-model.onnx"],
        "--output /proc/distnn-model.onnx is under /proc, a virtual file system"),
    "plot a bad metrics line": (
        lambda r, d: ["plot", str(metrics_copy(r, d, "{oops}\n").parent)],
        "metrics.jsonl: line 4 is not JSON"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_damaged_artefacts_through_the_cli(run_dir, tmp_path, case):
    make, message = CLI_CASES[case]
    args = make(run_dir, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in [*tmp_path.rglob("*"), *run_dir.rglob("*")]}
    done = distnn(args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert {p: p.stat().st_mtime_ns for p in [*tmp_path.rglob("*"), *run_dir.rglob("*")]} == before


def test_plot_through_the_cli_warns_once_about_a_torn_line(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    metrics_copy(run_dir, tmp_path, '{"epoch": 4, "tr')
    done = distnn(["plot", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning:") == 1 and "the last line is incomplete" in done.stderr
    assert (tmp_path / "loss.png").exists() and (tmp_path / "accuracy.png").exists()


def test_resume_from_a_nan_checkpoint_through_the_cli(run_dir, tmp_path):
    (tmp_path / "run").mkdir()
    arrays = arrays_of(run_dir / "checkpoint.npz")
    np.savez(tmp_path / "run" / "checkpoint.npz", **{**arrays, "params": with_nan(arrays["params"])})
    done = distnn(["train", "--resume", str(tmp_path / "run"), "--epochs", "4", "--quiet"])
    assert done.returncode == 2, done.stderr
    assert f"{tmp_path / 'run' / 'checkpoint.npz'}: 'params' holds NaN" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.npz"]
