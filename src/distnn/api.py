"""``distnn.fit``: training from your own mpi4py program, on every rank of a communicator.

    # mpiexec -n 4 python my_program.py
    from mpi4py import MPI
    import distnn

    X, y = ...                      # the same full arrays on every rank
    model, history = distnn.fit(X, y, comm=MPI.COMM_WORLD, strategy="allreduce", epochs=20)
    model.predict_proba(X_new)      # every rank holds the same trained model

The call is collective: every rank of ``comm`` must make it, with the same options. The
failure policy is the CLI's (DESIGN §3.5), without needing ``python -m mpi4py``:

- bad options or data (``OptionError``, both a ``ValueError`` and a ``distnn.errors.UsageError``)
  are found by every rank, or learnt through one agreement step, so every rank raises the
  same error and the program may go on;
- any other exception on any rank (a bug, ``MemoryError``, Ctrl-C) prints ``[rank r/size]``
  and the traceback on stderr and ends the whole job with ``MPI_Abort``, because the other
  ranks would otherwise wait in a collective for ever. On a one-process communicator it is
  simply raised.
"""

import math
import numbers
import sys
import time
import traceback
import warnings
from contextlib import contextmanager

import numpy as np

from distnn import recipes
from distnn.config import FIELD_INFO, MAX_CLASSES, MAX_PROCS, TrainConfig, check_given_apply, make_config
from distnn.data import Dataset, worker_range
from distnn.errors import UsageError
from distnn.nn import MLP
from distnn.progress import Progress

# The TrainConfig fields that shape training (the model, the optimizer, the loop and the
# strategy); data sources, run directories and checkpoints belong to the command line.
TRAIN_OPTIONS = ("seed", *(name for name, info in FIELD_INFO.items()
                           if info.spec.group in ("model", "optimizer", "training", "parallel")
                           and name not in ("procs", "checkpoint_every", "timing")))
TEST_KEYS = ("test_loss", "test_accuracy")
ABORT_GRACE_S = 0.5       # lets mpiexec forward the failing rank's traceback before MPI_Abort
EXIT_INTERRUPTED = 130
CHECK_ROWS = 4096         # rows per chunk of the finiteness check: no full-size temporary


class OptionError(UsageError, ValueError):
    """A bad option or bad training data: a ``ValueError`` to Python code, a ``UsageError``
    to distnn. Messages name options as Python does (``batch_size``, not ``--batch-size``)."""


class LearningWarning(UserWarning):
    """The model is not learning (loss at chance level, or rising): see ``distnn.learning``."""


def python_names(message: str) -> str:
    """A command-line message with its flags written as keyword names: ``--lr-decay`` ->
    ``lr_decay``."""
    import re

    return re.sub(r"--([a-z][a-z-]*)", lambda match: match.group(1).replace("-", "_"), message)


def train_config(options: dict, size: int) -> TrainConfig:
    """The validated config for ``options`` (names from ``TRAIN_OPTIONS``) on ``size`` ranks.

    Fields not given come from the recipe for data files (``recipes.py``: mini-batches,
    SGD lr 0.05, standardised inputs, epochs fitted to the number of rows). Raises
    OptionError.
    """
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(TRAIN_OPTIONS)}")
    from distnn.cli import check_process_count

    options = dict(options)
    if "hidden" in options:
        hidden = options["hidden"]
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            options["hidden"] = (hidden,)
        elif isinstance(hidden, (list, tuple, np.ndarray)):
            options["hidden"] = tuple(hidden)
    try:
        config = make_config(dataset="arrays", procs=size, **options)
        check_given_apply(config, options)
        check_process_count(config.strategy, size, config.servers)
    except UsageError as exc:
        raise OptionError(python_names(str(exc))) from None
    return config


def check_fits(config: TrainConfig, dataset: Dataset, size: int) -> TrainConfig:
    """``config`` fitted to the data (recipe sizes), after ``distnn.train.check_fits``;
    raises OptionError. Shapes are all it reads."""
    from distnn.train import check_fits as check

    config = recipes.fit_to_data(config, dataset.x_train.shape[0])
    try:
        check(config, dataset, size)
    except UsageError as exc:
        raise OptionError(python_names(str(exc))) from None
    return config


def fit(X, y, comm=None, *, validation_data=None, **options) -> tuple[MLP, list[dict]]:
    """Train an MLP on every rank of ``comm`` (collective); returns ``(model, history)``.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        The same full training features on every rank (a ``np.load(..., mmap_mode="r")``
        array shares its pages between the ranks of a node; with ``data_shards`` equal to
        the number of workers, each worker reads only its share). Converted to ``dtype``.
    y : integer array of shape (n_samples,)
        Class labels ``0..K-1`` of any integer dtype (int8 .. uint64); K is the largest
        label plus one. Encode other labels first (``np.unique(y, return_inverse=True)``),
        or use ``distnn.estimator.MLPClassifier``.
    comm : mpi4py.MPI.Comm, optional
        The ranks that train together; default ``MPI.COMM_WORLD``.
    validation_data : (X_val, y_val), optional
        Held-out rows scored at every evaluation (``test_loss``, ``test_accuracy``).
    **options
        Any of ``TRAIN_OPTIONS`` (``hidden``, ``epochs``, ``batch_size``, ``lr``, ``strategy``,
        ...; see ``distnn.config.TrainConfig``). Unset ones come from the recipe for data
        files: mini-batches, SGD lr 0.05, standardised inputs.

    Returns
    -------
    model : distnn.nn.MLP
        The trained model, identical on every rank (``predict_proba``, ``predict``;
        ``distnn.model_file.save_model`` writes it).
    history : list of dict
        One record per evaluation (every ``eval_every`` epochs and the last), the same on
        every rank: ``epoch``, ``step``, ``lr``, ``train_loss``, ``train_accuracy``
        (``test_loss``, ``test_accuracy`` with ``validation_data``), ``elapsed_s`` and the
        strategy's statistics.

    Raises
    ------
    OptionError
        On every rank alike, for a bad option, data the options do not fit, or ranks that
        disagree on the arrays' shapes or the options.
    distnn.train.TrainingDiverged
        On every rank alike, when the loss becomes NaN or infinite.

    Notes
    -----
    Ranks on one machine should use one BLAS thread each. With ``threadpoolctl`` installed,
    ``fit`` limits BLAS to one thread while it trains on more than one rank; without it,
    only the environment can: ``import distnn`` before NumPy under ``mpiexec`` sets
    ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` to 1 where unset, or set
    them yourself (``mpiexec -n 4 env OMP_NUM_THREADS=1 python my_program.py``).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    if comm.Get_size() == MPI.COMM_WORLD.Get_size():
        from distnn.parallel.shared_memory import unlink_job_segments

        unlink_job_segments(comm)     # an aborted job then leaves no segment in /dev/shm
    config, dataset, has_validation = _agreed_setup(comm, X, y, validation_data, options)
    history, progress = _History(), _HeldWarnings()
    try:
        with _one_blas_thread(comm.Get_size() > 1):
            from distnn.train import train

            model, _ = train(config, comm, dataset, run=history, progress=progress)
            records = comm.bcast(history.records if comm.Get_rank() == 0 else None, root=0)
    except UsageError:
        raise             # divergence: seen in reduced metrics, so raised by every rank alike
    except BaseException as exc:
        if comm.Get_size() == 1:
            raise
        _abort(comm, exc)
    if progress.held and _not_learnt(records, dataset.n_classes):
        warnings.warn(progress.held[0], LearningWarning, stacklevel=2)
    dropped = () if has_validation else TEST_KEYS
    records = [{key: value.item() if isinstance(value, np.generic) else value
                for key, value in record.items() if key not in dropped} for record in records]
    return model, records


class _History:
    """Receives ``train``'s evaluation records (the one method of a run directory it needs)."""

    def __init__(self):
        self.records: list[dict] = []

    def append_metrics(self, record: dict) -> None:
        self.records.append(record)


class _HeldWarnings(Progress):
    """No progress output; the not-learning warning (rank 0) held until training ends.

    The CLI prints it at once, so that a wasted run can be stopped; a call returns only at
    the end, when the whole history shows whether the model learnt after all (with a
    small ``eval_every``, the early evaluations come after a few steps only).
    """

    def __init__(self):
        super().__init__(enabled=False)
        self.held: list[str] = []

    def warn(self, text: str) -> None:
        self.held.append(text)


def _not_learnt(records: list[dict], n_classes: int) -> bool:
    """Whether the final training loss is still at chance level or above the first one."""
    from distnn.learning import AT_CHANCE

    final = records[-1]["train_loss"]
    return not final < min(AT_CHANCE * math.log(n_classes), records[0]["train_loss"])


@contextmanager
def _one_blas_thread(limit: bool):
    """One BLAS thread while several ranks train, if ``threadpoolctl`` can set it."""
    if not limit:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _abort(comm, exc: BaseException) -> None:
    """This rank failed: say so with the traceback, then end every rank of the job."""
    rank, size = comm.Get_rank(), comm.Get_size()
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(f"[rank {rank}/{size}] distnn.fit failed; aborting the job\n{text}")
    sys.stderr.flush()
    time.sleep(ABORT_GRACE_S)
    comm.Abort(EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1)


def _agreed_setup(comm, X, y, validation_data, options) -> tuple[TrainConfig, Dataset, bool]:
    """Config and dataset, checked on every rank; one agreement step makes every rank raise
    the first rank's OptionError, or a rank's different shapes or options."""
    rank, size = comm.Get_rank(), comm.Get_size()
    failure = signature = None
    try:
        config, dataset, has_validation = _local_setup(X, y, validation_data, options, rank, size)
        signature = (config.to_dict(), dataset.x_train.shape, dataset.x_test.shape,
                     dataset.n_classes)
    except OptionError as exc:
        failure = str(exc)
    gathered = comm.allgather((failure, signature))
    for other, (message, _) in enumerate(gathered):
        if message is not None:
            raise OptionError(message + (f" (found by rank {other} of {size})" if size > 1 else ""))
    for other, (_, theirs) in enumerate(gathered):
        if theirs != gathered[0][1]:
            raise OptionError(
                f"every rank must call fit with the same options and arrays of the same shapes; "
                f"rank {other} has X {theirs[1]}, {theirs[3]} classes, options {theirs[0]}, "
                f"rank 0 has X {gathered[0][1][1]}, {gathered[0][1][3]} classes, "
                f"options {gathered[0][1][0]}")
    return config, dataset, has_validation


def _local_setup(X, y, validation_data, options, rank: int, size: int):
    config = train_config(options, size)
    dtype = np.dtype(config.dtype)
    x_train = features(X, "X", dtype, (rank, size))
    y_train = labels(y, "y", x_train.shape[0])
    has_validation = validation_data is not None
    if has_validation:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise OptionError("validation_data must be a pair (X_val, y_val)")
        x_test = features(validation_data[0], "X_val", dtype, (rank, size))
        y_test = labels(validation_data[1], "y_val", x_test.shape[0])
        if x_test.shape[1] != x_train.shape[1]:
            raise OptionError(f"X_val has {x_test.shape[1]} features but X has {x_train.shape[1]}")
    else:
        # Nothing held out: one row keeps the evaluation's shape, its scores are dropped.
        x_test, y_test = x_train[:1], y_train[:1]
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if n_classes < 2:
        raise OptionError("y holds one class (0); classification needs labels 0..K-1 with K >= 2")
    dataset = Dataset("arrays", x_train, y_train, x_test, y_test, n_classes)
    return check_fits(config, dataset, size), dataset, has_validation


def features(X, name: str, dtype: np.dtype, share: tuple[int, int] = (0, 1)) -> np.ndarray:
    """``X`` as a 2-D array of ``dtype`` (no copy when it already is one, a memory map
    included); rank ``share[0]`` of ``share[1]`` checks its share of the rows for NaN and
    infinity. Raises OptionError."""
    x = np.asarray(X)
    if x.ndim != 2:
        raise OptionError(f"{name} must be 2-D (n_samples, n_features), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise OptionError(f"{name} has shape {x.shape}; it needs at least one row and one feature")
    if x.dtype.kind not in "fiub":
        raise OptionError(f"{name} has dtype {x.dtype}; features must be real numbers")
    with np.errstate(over="ignore"):     # beyond dtype's range becomes inf, refused below
        x = x.astype(dtype, copy=False)
    start, stop = worker_range(x.shape[0], share[1], share[0])
    for first in range(start, stop, CHECK_ROWS):
        if not np.isfinite(x[first:min(first + CHECK_ROWS, stop)]).all():
            raise OptionError(f"{name} holds NaN or infinity")
    return x


def labels(y, name: str, n_rows: int) -> np.ndarray:
    """Integer labels ``0..K-1`` of any integer dtype, as ``np.intp`` (what the loss indexes
    with). Raises OptionError."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise OptionError(f"{name} must hold one label per row ({n_rows},), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise OptionError(f"{name} has dtype {y.dtype}; labels must be integers 0..K-1 (encode "
                          "others with np.unique(y, return_inverse=True), or use "
                          "distnn.estimator.MLPClassifier)")
    low, high = y.min().item(), y.max().item()     # Python ints: uint64 and int64 compare
    if low < 0 or high >= MAX_CLASSES:
        raise OptionError(f"{name} holds the label {low if low < 0 else high}; labels must be "
                          f"0..K-1 with K at most {MAX_CLASSES:,}")
    return y.astype(np.intp, copy=False)


def check_procs(procs) -> int:
    """``procs`` as an int in [1, MAX_PROCS]; raises OptionError."""
    if not isinstance(procs, numbers.Integral) or isinstance(procs, bool) \
            or not 1 <= procs <= MAX_PROCS:
        raise OptionError(f"procs must be an integer in [1, {MAX_PROCS}], got {procs!r}")
    return int(procs)


__all__ = ["fit", "OptionError", "LearningWarning", "TRAIN_OPTIONS"]
