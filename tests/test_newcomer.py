"""A newcomer's first runs on real data: defaults that learn, a warning when nothing is
learned, and commands that know the run they are given."""

import json

import numpy as np
import pytest

from helpers import distnn, read_result

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory):
    """scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes) as one CSV."""
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    path = tmp_path_factory.mktemp("data") / "digits.csv"
    header = ",".join([f"pixel{i}" for i in range(x.shape[1])] + ["digit"])
    np.savetxt(path, np.c_[x, y], delimiter=",", header=header, comments="", fmt="%g")
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_csv):
    out = tmp_path_factory.mktemp("runs") / "digits"
    done = distnn(["train", "--dataset", str(digits_csv), "--out", str(out)], timeout=300)
    assert done.returncode == 0, done.stderr
    return out, done


def test_a_file_gets_the_mini_batch_recipe_and_learns(digits_run):
    out, done = digits_run
    assert "recipe: mini-batch, for data from files and images: batch 32" in done.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["recipe"], config["batch_size"], config["standardize"]) == ("minibatch", 32, True)
    assert read_result(out)["final"]["test_accuracy"] >= 0.9
    assert read_result(out)["warnings"] == []
    with np.load(out / "model.npz") as model:
        assert model["input.scale"].shape == (64,)


def test_the_spiral_keeps_the_original_recipe(tmp_path):
    done = distnn(["train", "--epochs", "3", "--out", str(tmp_path / "run")])
    assert "recipe: the original's, for the spiral at full batch: full batch, SGD lr 1" in done.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["recipe"], config["batch_size"], config["standardize"]) == ("original", None, False)


def test_a_model_that_learns_nothing_is_warned_about(tmp_path, digits_csv):
    out = tmp_path / "stuck"
    done = distnn(["train", "--dataset", str(digits_csv), "--lr", "1e-6", "--epochs", "4",
                   "--eval-every", "1", "--quiet", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: the model is not learning") == 1, done.stderr
    assert "no lower than chance level (ln 10 = 2.303)" in done.stderr
    assert "--lr 1e-06 is likely too low" in done.stderr
    assert len(read_result(out)["warnings"]) == 1


def test_the_warning_judges_progress_not_just_the_level():
    from distnn.config import make_config
    from distnn.learning import LearningMonitor

    config = make_config(dataset="data.csv", standardize=False, epochs=10, eval_every=1)

    def warned(losses):
        monitor = LearningMonitor(3, config)
        return [monitor.check({"epoch": epoch, "train_loss": loss})
                for epoch, loss in enumerate(losses, start=1)]

    plateau = warned([1.23, 1.22, 1.17, 1.17, 1.13])        # above ln 3, but falling: learning
    assert plateau == [None] * 5
    stuck = warned([1.10, 1.10, 1.10])
    assert stuck[:2] == [None, None] and "no lower than chance level" in stuck[2]
    assert "try --standardize" in stuck[2]
    rising = warned([0.9, 1.0, 1.5])
    assert "the training loss rose from 0.900 to 1.500 by epoch 3" in rising[2]


def test_evaluate_scores_the_runs_own_held_out_rows(digits_run):
    out, _ = digits_run
    final = read_result(out)["final"]
    for target in (out, out / "model.npz"):
        scored = distnn(["evaluate", str(target), "--json"])
        assert scored.returncode == 0, scored.stderr
        result = json.loads(scored.stdout)
        assert result["samples"] == 359 and result["split"] == "test"
        assert result["accuracy"] == pytest.approx(final["test_accuracy"], abs=1e-12)
    train = json.loads(distnn(["evaluate", str(out), "--split", "train", "--json"]).stdout)
    assert train["accuracy"] == pytest.approx(final["train_accuracy"], abs=1e-12)
    leaked = json.loads(distnn(["evaluate", str(out), "--seed", "1", "--json"]).stdout)
    assert leaked["accuracy"] > result["accuracy"]   # another split: training rows leak in


def test_predict_and_export_apply_the_standardisation(tmp_path, digits_run, digits_csv):
    ort = pytest.importorskip("onnxruntime")
    out, _ = digits_run
    rows = np.loadtxt(digits_csv, delimiter=",", skiprows=1)[:50, :-1]
    np.savetxt(tmp_path / "x.csv", rows, delimiter=",")
    assert distnn(["predict", str(out), "--input", str(tmp_path / "x.csv"),
                   "--output", str(tmp_path / "y.csv")]).returncode == 0
    predicted = np.loadtxt(tmp_path / "y.csv", delimiter=",", skiprows=1)
    assert distnn(["export", str(out), "--output", str(tmp_path / "m.onnx")]).returncode == 0
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    probabilities, labels = session.run(None, {"input": rows.astype(np.float32)})
    assert np.array_equal(labels, predicted[:, 0].astype(np.int64))
    np.testing.assert_allclose(probabilities, predicted[:, 1:], atol=1e-5)
    assert np.mean(labels == np.loadtxt(digits_csv, delimiter=",", skiprows=1)[:50, -1]) > 0.9


def test_fashion_mnist_class_names_in_the_confusion_matrix(tmp_path):
    from distnn.inference import format_score

    text = format_score({"samples": 2, "loss": 0.1, "accuracy": 0.5,
                         "confusion": [[1, 0], [1, 0]], "class_names": ["T-shirt/top", "Trouser"]})
    assert text.endswith("classes: 0 T-shirt/top, 1 Trouser")


def test_resume_keeps_the_strategy_and_process_count(tmp_path):
    out = tmp_path / "run"
    first = distnn(["train", "--procs", "3", "--strategy", "ps-sync", "--epochs", "3", "--quiet",
                    "--out", str(out)])
    assert first.returncode == 0, first.stderr
    more = distnn(["train", "--resume", str(out), "--epochs", "5", "--quiet"])
    assert more.returncode == 0, more.stderr
    result = read_result(out)
    assert (result["strategy"], result["processes"], result["epochs"]) == ("ps-sync", 3, 5)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """scikit-learn's wine data (178 rows, 13 features) as CSVs with a header."""
    x, y = sklearn_datasets.load_wine(return_X_y=True)
    folder = tmp_path_factory.mktemp("wine")
    names = [f"f{i}" for i in range(x.shape[1])]
    np.savetxt(folder / "last.csv", np.c_[x, y], delimiter=",", header=",".join([*names, "target"]),
               comments="", fmt="%g")
    np.savetxt(folder / "first.csv", np.c_[y, x], delimiter=",", header=",".join(["target", *names]),
               comments="", fmt="%g")
    text = [",".join([*names, "target"])] + [",".join([*map("{:g}".format, row), f"class_{int(k)}"])
                                             for row, k in zip(x, y)]
    (folder / "text_labels.csv").write_text("\n".join(text) + "\n")
    return folder


def test_a_header_named_target_is_the_label_wherever_it_stands(tmp_path, wine):
    for name in ("first", "last"):
        done = distnn(["train", "--dataset", str(wine / f"{name}.csv"), "--quiet", "--out",
                       str(tmp_path / name)])
        assert done.returncode == 0, done.stderr
        assert read_result(tmp_path / name)["final"]["test_accuracy"] > 0.9


def test_a_feature_taken_for_the_label_is_refused(tmp_path, wine):
    done = distnn(["train", "--dataset", str(wine / "first.csv"), "--label-column", "last",
                   "--out", str(tmp_path / "run")])
    assert done.returncode == 2 and "is the label column right?" in done.stderr


def test_text_labels_are_answered_with_the_remedy(tmp_path, wine):
    done = distnn(["train", "--dataset", str(wine / "text_labels.csv"), "--out", str(tmp_path / "r")])
    assert done.returncode == 2 and "labels as integers 0..K-1" in done.stderr
    assert "MLPClassifier" in done.stderr


def test_labels_that_start_at_one_are_warned_about(tmp_path):
    data = tmp_path / "one.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    np.savetxt(data, np.c_[x, 1 + (x[:, 0] > 0)], delimiter=",", header="a,b,c,label", comments="")
    done = distnn(["train", "--dataset", str(data), "--quiet", "--out", str(tmp_path / "r")])
    assert done.returncode == 0 and "classes 0 have no training rows" in done.stderr


def test_evaluate_warns_when_a_flag_moves_the_held_out_rows(digits_run):
    out, _ = digits_run
    done = distnn(["evaluate", str(out), "--seed", "3"])
    assert done.returncode == 0
    assert "--seed differs from the run's" in done.stderr


def test_output_cut_short_by_the_reader_is_no_error(digits_run):
    import subprocess
    import sys

    out, _ = digits_run
    done = subprocess.run(f"{sys.executable} -m distnn evaluate {out} | head -1", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.count("\n") == 1 and done.stderr == ""
