"""A train/test pair of arrays, and where it comes from (``--dataset``)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distnn.config import MAX_CLASSES, MAX_SEED, DataConfig
from distnn.data.files import path_exists, read_array, read_npz, split_label_column
from distnn.data.idx import load_idx_images
from distnn.data.sampler import worker_range
from distnn.data.spiral import spiral_data
from distnn.errors import UsageError
from distnn.guards import check_memory, local_processes

MANY_CLASSES = 100   # above this and above half the rows, the "labels" are likely a feature
CHECK_ROWS = 4096   # rows per chunk of the NaN check: no full-size temporary

SPLITS = ("X_train", "y_train", "X_test", "y_test")
IMAGE_SETS = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",
                      "On Debian/Ubuntu: apt-get install dataset-fashion-mnist."),
    "mnist": (None, "Download the four MNIST IDX files and pass their folder as --data-dir."),
}
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(digit) for digit in range(10)),
}


@dataclass
class Dataset:
    """Features (n, n_features) in the model's dtype and integer labels (n,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    class_names: tuple[str, ...] | None = None   # label k's name, where the data set has them

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def load_dataset(config: DataConfig, share: tuple[int, int] | None = (0, 1)) -> Dataset:
    """The data set that ``config.dataset`` names: ``spiral``, ``fashion-mnist``,
    ``mnist`` (IDX files in ``config.data_dir``) or a path. ``config`` holds the data
    fields alone (``TrainConfig.data``).

    A path is an ``.npz`` holding ``X_train``, ``y_train`` (and optionally ``X_test``,
    ``y_test``), one ``.csv`` with a label column, or a directory holding ``X_train.csv``/``y_train.csv``
    (the original's layout; ``.npy`` files work too) and optionally the test pair.
    Without a test pair, a random ``test_fraction`` of the rows (drawn from ``seed``, so
    the same on every rank) is held out: files are often sorted by class.

    ``share = (k, n)`` checks the values (NaN, infinity) of only the k-th of n contiguous
    shares of the rows, ``None`` none of them: ranks that each check their own share find
    every bad value between them, and a memory-mapped ``.npy`` stays unread outside a
    rank's share. Shapes, dtypes and labels are always checked in full.
    """
    if not isinstance(config, DataConfig):
        raise TypeError(f"load_dataset takes a DataConfig (TrainConfig.data), not "
                        f"{type(config).__name__}")
    if config.dataset == "spiral":
        return _spiral(config)
    if config.dataset in IMAGE_SETS:
        default_dir, how_to_get = IMAGE_SETS[config.dataset]
        directory = config.data_dir or default_dir
        if directory is None:
            raise UsageError(f"--dataset {config.dataset} needs --data-dir. {how_to_get}")
        arrays = load_idx_images(Path(directory), config.dataset, how_to_get)
        dataset = _validated(config.dataset, arrays, config, share)
        dataset.class_names = CLASS_NAMES[config.dataset][:dataset.n_classes]
        return dataset
    path = Path(config.dataset)
    if not path_exists(path, "--dataset"):
        raise UsageError(
            f"--dataset {config.dataset!r}: no such file or directory "
            "(use spiral, fashion-mnist, mnist, a .csv or .npz file, or a directory with "
            "X_train.csv and y_train.csv)"
        )
    if path.is_dir():
        arrays = _read_directory(path)
    elif path.suffix.lower() in (".csv", ".txt"):
        arrays = split_label_column(path, config.label_column, "--dataset")
    else:
        arrays = read_npz(path, role="--dataset")
    return _validated(str(path), arrays, config, share)


def _spiral(config) -> Dataset:
    """Training and test spirals.

    ``spiral_draw = "separate"``: the training set from ``seed`` and the test set from the
    seed after it (wrapping round at RandomState's limit). ``"original"``: as the original's
    ``generate_data.py`` made its files: ``nnfs.init()`` (float32, NumPy seed ``seed``), the
    training set, then the test set, from one stream, then the training rows shuffled with
    ``np.random.shuffle`` (verified against its committed CSV files, bit for bit).
    """
    dtype = np.dtype(config.dtype)
    test_samples = config.test_samples_per_class or config.samples_per_class
    rows = (config.samples_per_class + test_samples) * config.classes
    # Per row: float64 features, their copy in dtype, uint8 and intp labels.
    check_memory(rows * (2 * 8 + 2 * dtype.itemsize + 1 + np.dtype(np.intp).itemsize),
                 f"the spiral data set ({config.samples_per_class:,} samples x {config.classes:,} "
                 "classes, train and test)", "lower --samples-per-class or --classes",
                 processes=local_processes())
    if config.spiral_draw == "original":
        rng = np.random.RandomState(config.seed)
        x_train, y_train = spiral_data(config.samples_per_class, config.classes, rng, float32=True)
        x_test, y_test = spiral_data(test_samples, config.classes, rng, float32=True)
        order = np.arange(x_train.shape[0])
        rng.shuffle(order)
        x_train, y_train = x_train[order], y_train[order]
    else:
        x_train, y_train = spiral_data(
            config.samples_per_class, config.classes, np.random.RandomState(config.seed)
        )
        x_test, y_test = spiral_data(
            test_samples, config.classes,
            np.random.RandomState((config.seed + 1) % (MAX_SEED + 1)),
        )
    return Dataset("spiral", x_train.astype(dtype), y_train.astype(np.intp),
                   x_test.astype(dtype), y_test.astype(np.intp), config.classes)


def _read_directory(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for name in SPLITS:
        found = [path / f"{name}{ext}" for ext in (".npy", ".csv")
                 if path_exists(path / f"{name}{ext}", "--dataset")]
        if found:
            arrays[name] = read_array(found[0], "--dataset")
    return arrays


def _labels(source: str, name: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UsageError(f"{source}: {name} must be one label per row, got shape {y.shape}")
    if y.size == 0:
        raise UsageError(f"{source}: {name} is empty")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise UsageError(f"{source}: {name} holds non-integer labels; labels must be 0..K-1")
    elif y.dtype.kind not in "iu":
        raise UsageError(f"{source}: {name} has dtype {y.dtype}; labels must be integers 0..K-1")
    if y.min() < 0:
        raise UsageError(f"{source}: {name} holds a negative label ({int(y.min())})")
    if y.max().item() >= MAX_CLASSES:   # a Python number: 10**6 overflows float16
        # Checked before the cast: a float label of 1e300 would not survive it.
        raise UsageError(f"{source}: {name} holds the label {_number(y.max())}; labels must be "
                         f"integers 0..K-1 with K at most {MAX_CLASSES:,} (the model has one "
                         "output per class): number the classes from 0")
    return y.astype(np.intp)


def _number(value) -> str:
    """A label as a user wrote it: digits for an integer, a float's digits while exact."""
    if isinstance(value, np.integer) or abs(value) < 2**53:
        return str(int(value))
    return f"{value:.6g}"


def _features(source: str, name: str, x: np.ndarray, dtype, share) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise UsageError(f"{source}: {name} must be 2-D (samples, features), got shape {x.shape}")
    if x.shape[0] == 0:
        raise UsageError(f"{source}: {name} is empty")
    if x.shape[1] == 0:
        raise UsageError(f"{source}: {name} has no features (shape {x.shape}); each row needs "
                         "at least one value")
    if x.dtype.kind not in "fiu":
        raise UsageError(f"{source}: {name} has non-numeric dtype {x.dtype}")
    with np.errstate(over="ignore"):   # a value beyond dtype's range becomes inf, found below
        x = x.astype(dtype, copy=False)
    start, stop = (0, 0) if share is None else worker_range(x.shape[0], share[1], share[0])
    for first in range(start, stop, CHECK_ROWS):
        if not np.isfinite(x[first:min(first + CHECK_ROWS, stop)]).all():
            raise UsageError(f"{source}: {name} holds NaN or infinite values")
    return x


def _check_copies(source: str, arrays: dict, dtype: np.dtype) -> None:
    """Refuse data whose copies would not fit: features in another dtype are converted,
    and a held-out split copies every row. A memory-mapped ``.npy`` in ``dtype`` with a
    test pair needs no copy at all, however large it is."""
    need = 0
    for name in ("X_train", "X_test"):
        x = np.asarray(arrays.get(name, ()))
        copies = (x.dtype != dtype) + (name == "X_train" and "X_test" not in arrays)
        need += copies * x.size * dtype.itemsize
    check_memory(need, f"{source} in {dtype} (features converted or split)",
                 f"store the features as {dtype} .npy files with an X_test/y_test pair",
                 processes=local_processes())


def _validated(source: str, arrays: dict, config, share) -> Dataset:
    if "X" in arrays and "X_train" not in arrays:
        arrays = {"X_train": arrays["X"], "y_train": arrays.get("y"), **arrays}
    for name in ("X_train", "y_train"):
        if arrays.get(name) is None:
            raise UsageError(f"{source}: missing {name} (expected {', '.join(SPLITS)})")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise UsageError(f"{source}: X_test and y_test must come together")
    dtype = np.dtype(config.dtype)
    _check_copies(source, arrays, dtype)
    x_train = _features(source, "X_train", arrays["X_train"], dtype, share)
    y_train = _labels(source, "y_train", arrays["y_train"])
    if x_train.shape[0] != y_train.shape[0]:
        raise UsageError(f"{source}: X_train has {x_train.shape[0]} rows but y_train has "
                         f"{y_train.shape[0]}")
    if "X_test" in arrays:
        x_test = _features(source, "X_test", arrays["X_test"], dtype, share)
        y_test = _labels(source, "y_test", arrays["y_test"])
    else:
        n_test = int(round(config.test_fraction * x_train.shape[0]))
        if n_test < 1 or n_test >= x_train.shape[0]:
            raise UsageError(
                f"{source}: no X_test/y_test, and --test-fraction {config.test_fraction} of "
                f"{x_train.shape[0]} rows leaves no train or no test rows"
            )
        held_out = np.zeros(x_train.shape[0], dtype=bool)
        held_out[np.random.default_rng(config.seed).permutation(x_train.shape[0])[:n_test]] = True
        x_train, x_test = x_train[~held_out], x_train[held_out]
        y_train, y_test = y_train[~held_out], y_train[held_out]
    for x_name, x, y_name, y in (("X_train", x_train, "y_train", y_train),
                                 ("X_test", x_test, "y_test", y_test)):
        if x.shape[0] != y.shape[0]:
            raise UsageError(f"{source}: {x_name} has {x.shape[0]} rows but {y_name} has {y.shape[0]}")
    if x_test.shape[1] != x_train.shape[1]:
        raise UsageError(
            f"{source}: X_test has {x_test.shape[1]} features but X_train has {x_train.shape[1]}"
        )
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if n_classes < 2:
        raise UsageError(f"{source}: labels hold a single class; classification needs at least 2")
    if n_classes > MANY_CLASSES and n_classes > x_train.shape[0] // 2:
        raise UsageError(f"{source}: the labels go up to {n_classes - 1} for {x_train.shape[0]} "
                         "training rows, more classes than half the rows: is the label column "
                         "right? (--label-column first, last, an index or a header name)")
    return Dataset(source, x_train, y_train, x_test, y_test, n_classes)
