"""A scikit-learn style classifier over distnn, for scripts, notebooks and pipelines.

    from distnn.estimator import MLPClassifier
    clf = MLPClassifier(hidden=(64,), epochs=300, batch_size=64, lr=0.1).fit(X, y)
    clf = MLPClassifier(procs=4, strategy="allreduce", batch_size=128).fit(X, y)
    clf.predict(X), clf.predict_proba(X), clf.score(X, y), clf.history_

``procs=1`` (the default) trains in this process (``MPI.COMM_SELF``). ``procs=N`` trains on
N MPI processes that this process launches, as ``distnn train --procs N`` does: the data
go to a private temporary directory as ``.npy`` files, ``mpiexec -n N`` runs
``distnn.estimator_worker`` on them (every rank memory-maps the arrays), rank 0 writes
the model back, and this process loads it; the directory is removed however the job ends.
Prediction always runs in this process.

Labels may be any sortable values (strings, negative or unsigned integers): ``classes_``
maps them to the model's outputs, as scikit-learn does. Inputs are standardised by
default (``standardize=True``), inside the model, so predictions do not depend on the
scale of the features.

scikit-learn is optional: with it installed the class is a ``BaseEstimator`` and
``ClassifierMixin`` (``clone``, ``Pipeline``, grid search, ``cross_val_score``); without
it the same parameter protocol (``get_params``/``set_params``) and ``score`` are built in.
"""

import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from distnn.api import (
    LearningWarning,
    OptionError,
    check_fits,
    check_procs,
    features,
    train_config,
)
from distnn.api import fit as fit_on_comm
from distnn.data import Dataset
from distnn.errors import UsageError
from distnn.estimator_worker import MODEL_FILE, OPTIONS_FILE, RESULT_FILE

HISTORY_KEYS = ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
WORKER = "distnn.estimator_worker"
LOG_FILE = "job.log"
ERROR_TAIL = 6000         # characters of the job's output carried by a DistributedFitError
STOP_GRACE_S = 5          # a stopped job's mpiexec gets this long after SIGTERM, then SIGKILL


class _Parameters:
    """scikit-learn's parameter protocol and ``score``, for when scikit-learn is absent."""

    def get_params(self, deep: bool = True) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params):
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against ``y`` (weighted by ``sample_weight``)."""
        return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))


try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import DataConversionWarning, NotFittedError

    _BASES = (ClassifierMixin, BaseEstimator)
except ImportError:
    _BASES = (_Parameters,)
    DataConversionWarning = UserWarning

    class NotFittedError(ValueError, AttributeError):
        """The estimator is used before ``fit`` (scikit-learn's, when it is installed)."""


class DistributedFitError(RuntimeError):
    """A multi-process fit failed: a rank crashed, or mpiexec could not run the job.

    ``returncode`` is mpiexec's exit status; ``output`` is what the job printed (the failing
    rank's ``[rank r/size]`` traceback among it).
    """

    def __init__(self, message: str, returncode: int | None, output: str):
        super().__init__(message)
        self.returncode, self.output = returncode, output


# The estimator's SGD, as it always was: its own defaults, not the command line's recipe.
SGD_DEFAULTS = {"lr": 0.1, "lr_decay": 1e-3, "momentum": 0.9}


class MLPClassifier(*_BASES):
    """A multilayer perceptron classifier trained by distnn, serially or on MPI processes.

    Parameters
    ----------
    hidden : int or tuple of int, default (64,)
        Widths of the hidden layers.
    epochs : int, default 200
        Passes over the training data.
    batch_size : int or None, default None
        Global batch size; None trains on the full batch (one step per epoch).
    optimizer : "sgd", "adam" or "adamw", default "sgd"
        The update rule (``distnn.optim``).
    lr, lr_decay, momentum : float or None, default None
        None: the optimizer's defaults. SGD: 0.1, 1e-3, 0.9 (``lr_t = lr / (1 + lr_decay t)``,
        ``v = momentum v - lr_t g``, ``w += v``); Adam and AdamW: lr 0.001, a constant rate.
    schedule : None, "inverse-decay", "constant", "step" or "cosine", default None
        The learning rate over the run; None: inverse-decay for SGD, constant otherwise.
    weight_decay : float or None, default None
        L2 penalty (SGD, Adam) or decoupled decay (AdamW); None: 0, and 0.01 for AdamW.
    activation : "relu", "tanh" or "gelu", default "relu"
        After every hidden layer.
    dropout : float, default 0.0
        Probability of dropping a hidden unit in training.
    dtype : "float32" or "float64", default "float32"
        Precision of the parameters and of the data.
    init : "he" or "nnfs", default "he"
        Weight initialisation.
    seed : int, default 0
        Seeds the weights, the sample order and the validation split.
    shuffle : bool, default True
        Reshuffle the samples every epoch (mini-batches only).
    strategy : None, "serial", "allreduce", "ps-sync" or "ps-async", default None
        Gradient path; None is "serial" for one process and "allreduce" for several.
    procs : int, default 1
        MPI processes to train on; more than one launches ``mpiexec``.
    standardize : bool, default True
        Scale every feature to zero mean and unit variance over the training rows, inside
        the model (prediction applies the same statistics).
    max_staleness : int or None, default None
        ps-async only: no applied gradient staler than this.
    eval_every : int, default 1
        Epochs between the evaluations recorded in ``history_`` (the last epoch always).
    shared_memory : bool, default True
        Move gradients through MPI-3 shared memory when all ranks share a node.
    data_shards : int, default 1
        Draw worker k's part of every batch from shard k of the rows (1 or the number of
        workers).
    validation_fraction : float or None, default None
        Share of the rows held out (drawn from ``seed``) and scored at every evaluation, as
        ``test_loss`` and ``test_accuracy`` in ``history_``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted labels; output k of the model is ``classes_[k]``.
    n_features_in_ : int
    model_ : distnn.nn.MLP
        The trained network (``distnn.model_file.save_model`` writes it as ``model.npz``).
    history_ : list of dict
        One record per evaluation, like Keras's ``History``: ``epoch``, ``train_loss``,
        ``train_accuracy`` (and ``test_loss``, ``test_accuracy`` with
        ``validation_fraction``).
    n_iter_ : int
        Epochs trained.

    Parameters are validated by ``fit`` (scikit-learn's convention), which raises a
    ``ValueError`` naming the parameter.
    """

    def __init__(self, hidden=(64,), epochs=200, batch_size=None, optimizer="sgd", lr=None,
                 lr_decay=None, momentum=None, schedule=None, weight_decay=None,
                 activation="relu", dropout=0.0, dtype="float32", init="he", seed=0,
                 shuffle=True, strategy=None, procs=1, standardize=True, max_staleness=None,
                 eval_every=1, shared_memory=True, data_shards=1, validation_fraction=None):
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.lr_decay = lr_decay
        self.momentum = momentum
        self.schedule = schedule
        self.weight_decay = weight_decay
        self.activation = activation
        self.dropout = dropout
        self.dtype = dtype
        self.init = init
        self.seed = seed
        self.shuffle = shuffle
        self.strategy = strategy
        self.procs = procs
        self.standardize = standardize
        self.max_staleness = max_staleness
        self.eval_every = eval_every
        self.shared_memory = shared_memory
        self.data_shards = data_shards
        self.validation_fraction = validation_fraction

    def fit(self, X, y) -> "MLPClassifier":
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,).

        Raises ValueError for a bad parameter or bad data, ``TrainingDiverged`` when the loss
        becomes NaN, and ``DistributedFitError`` when a multi-process job fails.
        """
        X = _as_features(X)
        y = _as_labels(y, X.shape[0])
        procs = check_procs(self.procs)
        options = self._options(procs)
        config = train_config(options, procs)
        classes, encoded = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValueError(f"y holds one class ({classes[0]!r}); classification needs at "
                             "least 2")
        x = features(X, "X", np.dtype(config.dtype))
        arrays = self._split(x, encoded.astype(np.intp))
        validation = (arrays["X_val"], arrays["y_val"]) if "X_val" in arrays else None
        if procs == 1:
            from mpi4py import MPI

            model, history = fit_on_comm(arrays["X"], arrays["y"], comm=MPI.COMM_SELF,
                                         validation_data=validation, **options)
        else:
            x_test, y_test = validation or (arrays["X"][:1], arrays["y"][:1])
            check_fits(config, Dataset("arrays", arrays["X"], arrays["y"], x_test, y_test,
                                       classes.size), procs)
            model, history, notes = _fit_in_job(procs, arrays, options)
            for note in notes:
                warnings.warn(note, LearningWarning, stacklevel=2)
        self.classes_ = classes
        self.model_ = model
        self.history_ = [{key: record[key] for key in HISTORY_KEYS if key in record}
                         for record in history]
        self.n_iter_ = int(history[-1]["epoch"])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_`` order."""
        self._check_fitted()
        X = _as_features(X, self.n_features_in_)
        return self.model_.predict_proba(features(X, "X", self.model_.dtype))

    def predict(self, X) -> np.ndarray:
        """The most probable label of every row, shape (n_samples,)."""
        probabilities = self.predict_proba(X)
        return self.classes_[np.argmax(probabilities, axis=1)]

    def __getstate__(self) -> dict:
        """The model as its arrays: the MLP's reusable work buffers are not worth pickling."""
        parent = getattr(super(), "__getstate__", None)
        state = dict(parent() if parent is not None else self.__dict__)
        if "model_" in state:
            model = state["model_"]
            state["model_"] = {"sizes": model.sizes, "dtype": str(model.dtype),
                               "activation": model.activation, "arrays": model.state_arrays()}
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        if isinstance(state.get("model_"), dict):
            from distnn.nn import MLP

            saved = state["model_"]
            state["model_"] = MLP(saved["sizes"], dtype=saved["dtype"],
                                  activation=saved.get("activation", "relu"))
            state["model_"].load_state_arrays(saved["arrays"])
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call "
                                 "fit before predict, predict_proba or score")

    def _options(self, procs: int) -> dict:
        """The training options of ``distnn.fit`` from this estimator's parameters."""
        params = self.get_params()
        options = {name: params[name] for name in
                   ("hidden", "epochs", "batch_size", "optimizer", "activation", "dropout",
                    "dtype", "init", "seed", "shuffle", "standardize", "max_staleness",
                    "eval_every", "shared_memory", "data_shards")}
        defaults = SGD_DEFAULTS if self.optimizer == "sgd" else {}
        for name in ("lr", "lr_decay", "momentum", "schedule", "weight_decay"):
            value = params[name] if params[name] is not None else defaults.get(name)
            if value is not None:
                options[name] = value
        options["strategy"] = self.strategy or ("serial" if procs == 1 else "allreduce")
        return options

    def _split(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Training arrays ``X``, ``y``, and with ``validation_fraction`` the held-out
        ``X_val``, ``y_val`` (a permutation drawn from ``seed``)."""
        fraction = self.validation_fraction
        if fraction is None:
            return {"X": x, "y": y}
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                or not 0 < fraction < 1:
            raise OptionError(f"validation_fraction must be None or in (0, 1), got {fraction!r}")
        n_val = int(round(fraction * x.shape[0]))
        if not 1 <= n_val < x.shape[0]:
            raise OptionError(f"validation_fraction {fraction} of {x.shape[0]} rows leaves no "
                              "validation or no training rows")
        held_out = np.zeros(x.shape[0], dtype=bool)
        held_out[np.random.default_rng(self.seed).permutation(x.shape[0])[:n_val]] = True
        return {"X": x[~held_out], "y": y[~held_out], "X_val": x[held_out], "y_val": y[held_out]}


def _as_features(X, n_features: int | None = None) -> np.ndarray:
    """``X`` as a 2-D numeric array, refused with scikit-learn's messages (its checks and
    users' code match them)."""
    if hasattr(X, "toarray"):
        raise TypeError("sparse input is not supported: pass a dense array (X.toarray())")
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if X.dtype.kind == "O":
        X = X.astype(np.float64)     # TypeError or ValueError for anything not a number
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X has dtype {X.dtype}; features must be numbers")
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D array (n_samples, n_features), got shape {X.shape}. "
                         "Reshape your data: a single feature with X.reshape(-1, 1), a single sample with "
                         "X.reshape(1, -1)")
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
                         "is required.")
    if X.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
                         "is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but MLPClassifier is expecting "
                         f"{n_features} features as input.")
    return X


def _as_labels(y, n_rows: int) -> np.ndarray:
    """``y`` as one label per row: any sortable values, but not continuous numbers."""
    if y is None:
        raise ValueError("MLPClassifier requires y to be passed, but the target y is None.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is "
                      "used as y.ravel()", DataConversionWarning, stacklevel=3)
        y = y.ravel()
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise ValueError(f"y must hold one label per row of X ({n_rows},), got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity.")
        if np.any(y != np.round(y)):
            raise ValueError("Unknown label type: continuous. MLPClassifier is a classifier: "
                             "y must hold class labels (integers or strings), not real values")
    return y


def _fit_in_job(procs: int, arrays: dict[str, np.ndarray], options: dict):
    """Train on ``procs`` MPI processes; returns ``(model, history, warnings)``."""
    from distnn.launch import (
        JOB_DIR_VAR,
        clean_up_after,  # the residue --procs removes
        mpiexec_command,
        pin_blas_threads,
    )
    from distnn.model_file import load_model

    directory = Path(tempfile.mkdtemp(prefix="distnn-fit-"))
    job = None
    try:
        for name, array in arrays.items():
            np.save(directory / f"{name}.npy", array)
        (directory / OPTIONS_FILE).write_text(json.dumps(options, default=_plain))
        try:
            launch = mpiexec_command(procs)
        except UsageError as exc:
            raise DistributedFitError(f"procs={procs} needs mpiexec: {exc}", None, "") from None
        env = dict(os.environ)
        pin_blas_threads(env)
        env[JOB_DIR_VAR] = str(directory)     # rank 0 notes the launcher's residue there
        command = [*launch, sys.executable, "-m", "mpi4py", "-m", WORKER, str(directory)]
        with open(directory / LOG_FILE, "wb") as log:
            try:
                job = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise DistributedFitError(f"cannot start {launch[0]}: {exc.strerror}", None,
                                          "") from None
            code = job.wait()
        output = (directory / LOG_FILE).read_text(errors="replace")
        if code != 0 or not (directory / RESULT_FILE).exists():
            tail = output[-ERROR_TAIL:]
            raise DistributedFitError(
                f"training on {procs} processes failed (mpiexec exit status {code}); the "
                f"job's output{' (its end)' if len(output) > ERROR_TAIL else ''}:\n{tail}",
                code, output)
        result = json.loads((directory / RESULT_FILE).read_text())
        if "error" in result:
            from distnn.train import TrainingDiverged

            raise (TrainingDiverged if result["diverged"] else OptionError)(result["error"])
        return load_model(directory / MODEL_FILE), result["history"], result["warnings"]
    finally:
        if job is not None and job.poll() is None:
            _stop(job)
        clean_up_after(str(directory))


def _plain(value):
    """A NumPy scalar or array (parameter grids hold them) as the Python values JSON needs."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{value!r} ({type(value).__name__}) is not a valid option value")


def _stop(job: subprocess.Popen) -> None:
    """End a job this process is leaving (Ctrl-C, an error): mpiexec stops its ranks on
    SIGTERM; if it has not within ``STOP_GRACE_S``, its whole process group is killed."""
    job.terminate()
    try:
        job.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except OSError:
            pass
        job.wait()
