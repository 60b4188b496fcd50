"""evaluate, predict, plot, info, export and --config (the estimator: test_estimator.py)."""

import json

import numpy as np
import pytest

from distnn.data.idx import read_idx
from distnn.errors import UsageError
from helpers import distnn
from idx_files import idx_bytes, write_image_set


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    done = distnn(["train", "--epochs", "300", "--eval-every", "100", "--out", str(out), "--quiet"])
    assert done.returncode == 0, done.stderr
    return out


def test_evaluate_reproduces_the_runs_test_accuracy(trained):
    done = distnn(["evaluate", str(trained / "model.npz"), "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    final = json.loads((trained / "result.json").read_text())["final"]
    assert result["accuracy"] == pytest.approx(final["test_accuracy"])
    assert result["loss"] == pytest.approx(final["test_loss"], rel=1e-5)
    confusion = np.array(result["confusion"])
    assert confusion.shape == (3, 3) and confusion.sum() == 3000
    assert np.trace(confusion) / 3000 == pytest.approx(result["accuracy"])


def test_evaluate_prints_a_confusion_matrix(trained):
    done = distnn(["evaluate", str(trained / "model.npz"), "--split", "train"])
    assert "confusion matrix (rows: true class, columns: predicted)" in done.stdout


def test_predict_writes_classes_and_probabilities(trained, tmp_path):
    (tmp_path / "x.csv").write_text("f1,f2\n0.1,0.2\n-0.5,0.3\n0.0,-0.9\n")
    done = distnn(["predict", str(trained / "model.npz"), "--input", str(tmp_path / "x.csv"),
                   "--output", str(tmp_path / "y.csv")])
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "y.csv").read_text().splitlines()
    assert lines[0] == "class,p_0,p_1,p_2" and len(lines) == 4
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(rows[:, 1:].sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(rows[:, 0], rows[:, 1:].argmax(axis=1))


def test_plot_writes_loss_and_accuracy_pngs(trained):
    done = distnn(["plot", str(trained)])
    assert done.returncode == 0, done.stderr
    for name in ("loss.png", "accuracy.png"):
        assert (trained / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_names_the_mpi_library_and_blas():
    done = distnn(["info"])
    assert done.returncode == 0, done.stderr
    assert "mpi_library" in done.stdout and "blas_threads" in done.stdout
    assert "numpy" in done.stdout
    rows = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert {"launcher", "launch", "placement", "binding"} <= set(rows)


def test_onnx_export_predicts_what_distnn_predicts(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from distnn.model_file import load_model

    done = distnn(["export", str(trained / "model.npz"), "--output", str(tmp_path / "m.onnx")])
    assert done.returncode == 0, done.stderr
    model = load_model(trained / "model.npz")
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    probabilities, labels = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x})
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-6)
    np.testing.assert_array_equal(labels, model.predict_proba(x).argmax(axis=1))


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_onnx_export_of_tanh_and_gelu_models_predicts_what_distnn_predicts(tmp_path, activation):
    ort = pytest.importorskip("onnxruntime")
    from distnn.model_file import load_model

    done = distnn(["train", "--hidden", "8,6", "--activation", activation, "--dropout", "0.2",
                   "--epochs", "20", "--quiet", "--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr
    assert distnn(["export", str(tmp_path / "run")]).returncode == 0
    model = load_model(tmp_path / "run" / "model.npz")
    assert model.activation == activation
    x = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)
    probabilities, _ = ort.InferenceSession(str(tmp_path / "run" / "model.onnx")).run(None,
                                                                                   {"input": x})
    np.testing.assert_allclose(probabilities, model.predict_proba(x), atol=1e-6)


def test_config_file_sets_values_and_flags_override_it(tmp_path):
    (tmp_path / "c.toml").write_text('lr = 0.5\nhidden = [16, 8]\nbatch-size = "full"\n'
                                     'epochs = 40\npreset = "seed"\nsamples-per-class = 30\n')
    done = distnn(["train", "--config", str(tmp_path / "c.toml"), "--epochs", "3", "--quiet",
                   "--out", str(tmp_path / "run")])
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["lr"], config["hidden"], config["batch_size"], config["epochs"],
            config["init"], config["preset"]) == (0.5, [16, 8], None, 3, "uniform", "seed")


def test_image_dataset_from_idx_files_trains(tmp_path):
    write_image_set(tmp_path / "imgs")
    done = distnn(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "imgs"),
                   "--hidden", "8", "--epochs", "60", "--batch-size", "20", "--lr", "0.1",
                   "--out", str(tmp_path / "run"), "--quiet"])
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["final"]["test_accuracy"] == 1.0


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_reads_plain_and_gzipped_files(tmp_path, gz):
    write_image_set(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")
    labels = read_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}")
    assert images.shape == (60, 4, 4) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(60) % 3)


def test_idx_reader_reads_float_data(tmp_path):
    array = np.arange(6, dtype=">f4").reshape(2, 3)
    (tmp_path / "f.idx").write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), array)


def test_idx_reader_names_a_truncated_file(tmp_path):
    (tmp_path / "t.idx").write_bytes(idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8))[:-1])
    with pytest.raises(UsageError, match="IDX data is 11 bytes, its header"):
        read_idx(tmp_path / "t.idx")
