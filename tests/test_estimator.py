"""MLPClassifier (serial and on MPI processes) and distnn.fit in users' mpi4py programs."""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from distnn.api import LearningWarning, OptionError
from distnn.data.spiral import spiral_data
from distnn.estimator import DistributedFitError, MLPClassifier
from helpers import HERE, mpi_script

MULTI_PROCESS_TIMEOUT_S = 60
# Short runs on the spiral learn little; the tests that are about the warning say so.
pytestmark = pytest.mark.filterwarnings("ignore::distnn.api.LearningWarning")


@pytest.fixture
def spiral():
    return spiral_data(50, 3, np.random.RandomState(0))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary directories made by this process go to ``tmp_path``, to be counted."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_estimator_fits_predicts_and_scores():
    x, y = spiral_data(100, 3, np.random.RandomState(0))
    names = np.array(["red", "green", "blue"])[y]
    clf = MLPClassifier(epochs=400, batch_size=50, lr=0.2).fit(x, names)
    assert list(clf.classes_) == ["blue", "green", "red"]
    assert clf.score(x, names) > 0.7
    assert set(clf.predict(x[:10])) <= set(names)
    np.testing.assert_allclose(clf.predict_proba(x[:5]).sum(axis=1), 1, atol=1e-6)
    assert clf.set_params(lr=0.01).get_params()["lr"] == 0.01
    with pytest.raises(ValueError, match="(?i)invalid parameter 'learning_rate'"):
        clf.set_params(learning_rate=1)


def test_labels_of_any_dtype_give_the_same_model(spiral):
    x, y = spiral
    encodings = [y, y.astype(np.int32), y.astype(np.uint64), y.astype(np.int8) - 7,
                 np.array(["a", "b", "c"])[y], y.astype(np.float64) * 10]
    probabilities = []
    for labels in encodings:
        clf = MLPClassifier(epochs=20, batch_size=30).fit(x, labels)
        np.testing.assert_array_equal(clf.classes_, np.unique(labels))
        assert clf.predict(x).dtype == labels.dtype
        probabilities.append(clf.predict_proba(x))
    for other in probabilities[1:]:
        np.testing.assert_array_equal(other, probabilities[0])


def test_history_and_validation_split(spiral):
    x, y = spiral
    clf = MLPClassifier(epochs=12, batch_size=30, eval_every=4, validation_fraction=0.2).fit(x, y)
    assert clf.n_iter_ == 12
    assert [record["epoch"] for record in clf.history_] == [4, 8, 12]
    assert set(clf.history_[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss",
                                    "test_accuracy"}
    assert clf.history_[-1]["train_loss"] < clf.history_[0]["train_loss"]
    plain = MLPClassifier(epochs=3, batch_size=30).fit(x, y)
    assert [set(record) for record in plain.history_] == [{"epoch", "train_loss",
                                                           "train_accuracy"}] * 3


@pytest.mark.parametrize("params, message", [
    (dict(lr=-1), "lr must be > 0, got -1"),
    (dict(hidden=(0,)), "hidden needs layer widths"),
    (dict(strategy="ps-sync"), "strategy ps-sync needs at least 2 processes"),
    (dict(procs=0), r"procs must be an integer in \[1, 4096\], got 0"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(max_staleness=3), "max_staleness applies to strategy ps-async only"),
    (dict(dtype="float16"), "dtype 'float16' is not one of float32, float64"),
    (dict(validation_fraction=1.5), r"validation_fraction must be None or in \(0, 1\)"),
])
def test_parameters_are_validated_in_fit(spiral, params, message):
    clf = MLPClassifier(**params)          # scikit-learn's convention: __init__ only stores
    with pytest.raises(ValueError, match=message):
        clf.fit(*spiral)


def test_scikit_learn_estimator_checks():
    estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")
    results = estimator_checks.check_estimator(MLPClassifier(), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert failed == []
    assert sum(r["status"] == "passed" for r in results) >= 50


def test_pipeline_and_cross_val_score_on_iris():
    datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = datasets.load_iris(return_X_y=True)
    pipeline = make_pipeline(FunctionTransformer(lambda a: a * 1000.0),   # scale invariance
                             MLPClassifier(epochs=50, batch_size=32))
    assert cross_val_score(pipeline, X, y, cv=3).mean() > 0.9
    pipeline.set_params(mlpclassifier__standardize=False)
    with pytest.warns(LearningWarning, match="the model is not learning"):
        assert cross_val_score(pipeline, X, y, cv=3).mean() < 0.5


def test_fallback_without_scikit_learn():
    code = """if True:
        import sys
        sys.modules["sklearn"] = None          # an import of it now fails
        import numpy as np
        from distnn.estimator import MLPClassifier
        assert [base.__name__ for base in MLPClassifier.__mro__[1:]] == ["_Parameters", "object"]
        clf = MLPClassifier(epochs=30, batch_size=20).set_params(lr=0.2)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 2)); y = np.where(x[:, 0] > 0, "right", "left")
        assert clf.fit(x, y).score(x, y) > 0.9 and clf.get_params()["lr"] == 0.2
        try:
            MLPClassifier().predict(x)
        except ValueError as exc:
            assert "not fitted" in str(exc)
        else:
            raise AssertionError("no error before fit")
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(MULTI_PROCESS_TIMEOUT_S)
@pytest.mark.parametrize("strategy", ["allreduce", "ps-sync"])
def test_two_processes_equal_serial_and_leave_nothing(spiral, private_tmp, strategy):
    x, y = spiral
    params = dict(epochs=8, batch_size=25, lr=0.2, dtype="float64", eval_every=4,
                  validation_fraction=0.2)
    serial = MLPClassifier(**params).fit(x, y)
    parallel = MLPClassifier(**params, procs=2, strategy=strategy).fit(x, y)
    np.testing.assert_allclose(parallel.predict_proba(x), serial.predict_proba(x), rtol=1e-9,
                               atol=1e-12)
    assert [r["epoch"] for r in parallel.history_] == [r["epoch"] for r in serial.history_]
    np.testing.assert_allclose([r["test_loss"] for r in parallel.history_],
                               [r["test_loss"] for r in serial.history_], rtol=1e-9)
    assert list(private_tmp.iterdir()) == []


@pytest.mark.timeout(MULTI_PROCESS_TIMEOUT_S)
def test_a_crashing_rank_fails_the_fit_clearly_and_leaves_nothing(spiral, private_tmp, monkeypatch):
    from helpers import mpiexec

    # A wrapper around mpiexec that runs estimator_rank_fails in the worker's place.
    wrapper = private_tmp.parent / "mpiexec-wrapper"
    wrapper.write_text("#!/bin/sh\n"
                       'for arg in "$@"; do shift; [ "$arg" = distnn.estimator_worker ] && '
                       'arg=estimator_rank_fails; set -- "$@" "$arg"; done\n'
                       f'exec {mpiexec()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("DISTNN_MPIEXEC", str(wrapper))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE / "mpi_scripts"),
                                                      os.environ.get("PYTHONPATH", "")]))
    started = time.monotonic()
    with pytest.raises(DistributedFitError, match="training on 2 processes failed") as failure:
        MLPClassifier(epochs=50, batch_size=20, procs=2).fit(*spiral)
    assert time.monotonic() - started < 30
    assert failure.value.returncode != 0
    assert "[rank 1/2]" in str(failure.value)
    assert "RuntimeError: injected failure in the estimator's job" in failure.value.output
    assert list(private_tmp.iterdir()) == []


@pytest.mark.timeout(MULTI_PROCESS_TIMEOUT_S)
def test_distnn_fit_in_an_mpi4py_program_with_int32_labels():
    done = mpi_script("fit_on_comm.py", 2)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["difference"] < 1e-12                   # allreduce on 2 ranks == serial
    assert [record["epoch"] for record in result["history"]] == [5, 10, 15]
    assert "test_accuracy" in result["history"][0]
    assert result["same_errors"]
    lr, staleness, nan = result["errors"]
    assert lr.startswith("lr must be > 0, got -1.0")
    assert staleness.startswith("max_staleness must be in [0,")
    assert nan == "X holds NaN or infinity (found by rank 1 of 2)"


@pytest.mark.timeout(MULTI_PROCESS_TIMEOUT_S)
def test_distnn_fit_aborts_the_job_when_a_rank_fails():
    started = time.monotonic()
    done = mpi_script("fit_rank_fails.py", 2, timeout=30)
    assert time.monotonic() - started < 20
    assert done.returncode != 0
    assert "[rank 1/2] distnn.fit failed; aborting the job" in done.stderr
    assert "RuntimeError: injected failure in step 3" in done.stderr


def test_distnn_fit_on_one_process_takes_any_integer_labels(spiral):
    import distnn

    x, y = spiral
    reference = None
    for dtype in (np.int8, np.int32, np.uint16, np.uint64, np.intp):
        model, history = distnn.fit(x, y.astype(dtype), comm=None, epochs=3, batch_size=30)
        assert len(history) == 3 and "test_loss" not in history[0]
        reference = model.params if reference is None else reference
        np.testing.assert_array_equal(model.params, reference)
    with pytest.raises(OptionError, match="unknown option"):
        distnn.fit(x, y, comm=None, learning_rate=0.1)
    with pytest.raises(ValueError, match="y has dtype float64; labels must be integers"):
        distnn.fit(x, y.astype(np.float64), comm=None)
