"""One typed, validated training configuration, and the named presets.

Precedence, lowest first: the recipe the data calls for (``recipes.py``), the preset
named by ``--preset``, a ``--config`` file, then every flag the user gave.
"""

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass

from distnn import recipes
from distnn.errors import UsageError
from distnn.guards import regular_file
from distnn.nn.kernels import KERNELS

STRATEGIES = ("serial", "ps-sync", "ps-async", "allreduce")
# Strategies whose rank 0 is a parameter server (p processes = 1 server + p - 1 workers).
# Named here, not taken from distnn.parallel, so that the launcher and bench never import
# mpi4py.MPI: a process that initialised MPI and is then killed leaves a segment in /dev/shm.
SERVER_STRATEGIES = ("ps-sync", "ps-async")
DTYPES = ("float32", "float64")
INITS = ("he", "nnfs", "uniform")
SPIRAL_DRAWS = ("separate", "original")
COMBINES = ("gradients", "models")
TIMINGS = ("training", "original")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"          # which preset the values started from
    dataset: str = "spiral"          # spiral, fashion-mnist, mnist, an .npz, or a directory
    data_dir: str | None = None      # IDX files of fashion-mnist / mnist
    label_column: str = "auto"       # one-file CSV: auto, first, last, an index or a header name
    samples_per_class: int = 1000    # spiral: points per arm
    classes: int = 3                 # spiral: number of arms (= classes)
    test_samples_per_class: int | None = None  # spiral test set; None = samples_per_class
    spiral_draw: str = "separate"    # "separate": test from seed+1; "original": see dataset.py
    test_fraction: float = 0.2       # held out when a data file has no test split
    hidden: tuple[int, ...] = (64,)  # widths of the hidden layers
    init: str = "he"                 # "he", "nnfs" (0.01 N(0,1)), "uniform" (the original's)
    dtype: str = "float32"           # parameter and data precision
    strategy: str = "serial"         # gradient path, see distnn.parallel
    epochs: int = 1000               # passes over the training data
    batch_size: int | None = None    # global batch; None = full batch (one step per epoch)
    lr: float = 1.0                  # initial learning rate
    lr_decay: float = 1e-3           # lr_t = lr / (1 + lr_decay * t)
    momentum: float = 0.9            # v = momentum * v - lr_t * g
    seed: int = 0                    # data, weights and sample order
    shuffle: bool = True             # reshuffle the samples every epoch
    data_shards: int = 1             # part k of every batch comes from shard k of the rows
    max_staleness: int | None = None  # ps-async: bound on an applied gradient's staleness
    combine: str = "gradients"       # ps-sync/allreduce: average "gradients" or "models"
    local_steps: int = 1             # --combine models: local steps between averagings
    drop_remainder: bool = False     # --combine models: equal slices, last B mod n rows unused
    timing: str = "training"         # "original": per-step loss and evaluations are timed
    shared_memory: bool = True       # MPI-3 shared memory when all ranks share one node
    eval_every: int = 100            # epochs between evaluations (the last epoch always)
    checkpoint_every: int = 0        # epochs between checkpoints; 0 = at every evaluation
    stall_timeout: float = 120.0     # seconds a rank waits for a silent peer; 0 = forever
    out: str | None = None           # run directory; None = runs/<timestamp>
    procs: int | None = None         # MPI processes (--procs launches them); None = this job's
    standardize: bool = False        # inputs (x - mean) / std per feature, stats in model.npz
    kernels: str = "auto"            # compute path: "numpy", "fused" (numba), "auto"
    recipe: str = "original"         # which recipe filled the values not set (recipes.py)
    auto: tuple[str, ...] = ()       # fields the recipe will fit to the data size (not saved)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        del data["auto"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict] = {
    "default": {},
    # The original C++/Eigen workload: spiral 10,000 points x 3 arms, 2-64-3, full batch
    # (its intermediate vintage, generate_data.py at commit 060985a).
    "seed": dict(samples_per_class=10_000, classes=3, hidden=(64,), init="uniform",
                 dtype="float64", batch_size=None, epochs=10_000, eval_every=1000,
                 lr=1.0, lr_decay=1e-3, momentum=0.9, test_samples_per_class=1000,
                 spiral_draw="original"),
    # The original's final experiments (its report): 4 arms x 10,000, test 4 x 1,000.
    "seed-final": dict(samples_per_class=10_000, classes=4, hidden=(64,), init="uniform",
                       dtype="float64", batch_size=None, epochs=10_000, eval_every=1000,
                       lr=1.0, lr_decay=1e-3, momentum=0.9, test_samples_per_class=1000,
                       spiral_draw="original"),
    # Fashion-MNIST, 784-256-10: >= 0.89 test accuracy in 30 epochs (measured, README).
    "fmnist": dict(dataset="fashion-mnist", hidden=(256,), init="he", dtype="float32",
                   batch_size=128, epochs=30, eval_every=5, lr=0.05, lr_decay=5e-4,
                   momentum=0.9),
    "seed-10": dict(samples_per_class=10_000, classes=10, hidden=(64,), init="uniform",
                    dtype="float64", batch_size=None, epochs=10_000, eval_every=1000,
                    lr=1.0, lr_decay=1e-3, momentum=0.9),
}

FIELDS = {field.name for field in dataclasses.fields(TrainConfig)}


FIELD_TYPES = {
    "preset": str, "dataset": str, "data_dir": str, "label_column": str, "samples_per_class": int,
    "classes": int, "test_samples_per_class": int, "spiral_draw": str, "combine": str,
    "local_steps": int, "drop_remainder": bool, "timing": str,
    "test_fraction": float, "hidden": tuple, "init": str, "dtype": str, "strategy": str,
    "epochs": int, "batch_size": int, "lr": float, "lr_decay": float, "momentum": float,
    "seed": int, "shuffle": bool, "data_shards": int, "max_staleness": int, "shared_memory": bool,
    "eval_every": int,
    "checkpoint_every": int, "out": str, "procs": int, "standardize": bool, "recipe": str,
    "stall_timeout": float, "kernels": str,
}


MAX_CONFIG_BYTES = 1 << 20   # a config file is a few lines; more is a wrong file given
MAX_COUNT = 10**9            # epochs, sizes: checkpoints store them as int64
MAX_WIDTH = 1 << 24          # a layer's width: what model.npz accepts (model_file.MAX_WIDTH)
MAX_SEED = 2**32 - 1         # NumPy's RandomState takes seeds in [0, 2**32 - 1]
MAX_CLASSES = 10**6          # one model output per class; labels must be below this


def read_config_file(path: str) -> dict:
    """Fields from a TOML file (``lr = 0.1``, ``hidden = [256, 128]``, ``batch-size = "full"``).

    Keys may use dashes or underscores; unknown keys and wrongly typed values are refused
    with the file and key named. The file must be a regular file (a FIFO would block) of
    UTF-8 text, with or without a byte-order mark, as editors on Windows write it.
    """
    import tomllib

    regular_file(path, "--config")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"--config {path}: over {MAX_CONFIG_BYTES:,} bytes, too large for a "
                         "config file; give the TOML file of training settings")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "save it as UTF-8") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from exc
    except RecursionError:
        raise UsageError(f"--config {path}: not valid TOML (arrays or tables nested too "
                         "deeply)") from None
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELD_TYPES:
            raise UsageError(f"--config {path}: unknown key {_shown(key)}; known keys: "
                             f"{', '.join(sorted(FIELD_TYPES))}")
        values[name] = _typed(path, key, name, value)
    return values


def _shown(value, limit: int = 60) -> str:
    """``repr(value)``, shortened: a message must stay readable whatever a file holds."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(shortened)"


def _typed(path: str, key: str, name: str, value):
    kind = FIELD_TYPES[name]
    if name == "batch_size" and value == "full":
        return None
    if kind is tuple:
        if not isinstance(value, list) or not all(type(v) is int for v in value):
            raise UsageError(f"--config {path}: {key} must be a list of integers, "
                             f"got {_shown(value)}")
        return tuple(value)
    if kind is float and type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise UsageError(f"--config {path}: {key} = {_shown(value)} is too large for a "
                             "floating-point number") from None
    if type(value) is not kind:
        raise UsageError(f"--config {path}: {key} must be {kind.__name__}, got {_shown(value)}")
    return value


def make_config(preset: str = "default", **overrides) -> TrainConfig:
    """The preset's values with ``overrides`` on top, validated."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - FIELDS
    if unknown:
        raise UsageError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    values = recipes.fill({**PRESETS[preset], **overrides})
    config = TrainConfig(preset=preset, **values)
    validate(config)
    return config


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


MAX_PROCS = 4096
MAX_STALL_TIMEOUT_S = 7 * 24 * 3600   # a week: longer is a typo, and 0 turns it off
INT_FIELDS = ("samples_per_class", "classes", "epochs", "eval_every", "checkpoint_every",
              "data_shards", "seed", "local_steps")
OPTIONAL_INT_FIELDS = ("batch_size", "max_staleness", "procs", "test_samples_per_class")
FLOAT_FIELDS = ("lr", "lr_decay", "momentum", "test_fraction", "stall_timeout")
STR_FIELDS = ("dataset", "data_dir", "label_column", "out", "spiral_draw", "combine", "timing",
              "kernels")


def validate(config: TrainConfig) -> None:
    """Raise UsageError naming the flag, the value received and what is allowed."""
    _check_kinds(config)
    choices = {"strategy": STRATEGIES, "dtype": DTYPES, "init": INITS,
               "recipe": tuple(recipes.RECIPES), "spiral_draw": SPIRAL_DRAWS,
               "combine": COMBINES, "timing": TIMINGS, "kernels": KERNELS}
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise UsageError(f"{_flag(name)} {value!r} is not one of {', '.join(allowed)}")
    minimums = {"samples_per_class": 1, "classes": 2, "epochs": 0, "eval_every": 1,
                "checkpoint_every": 0, "data_shards": 1, "local_steps": 1}
    for name, low in minimums.items():
        value = getattr(config, name)
        if value < low:
            raise UsageError(f"{_flag(name)} must be an integer >= {low}, got {value!r}")
    maximums = {**dict.fromkeys(minimums, MAX_COUNT), "classes": MAX_CLASSES}
    for name, high in maximums.items():
        value = getattr(config, name)
        if value > high:
            raise UsageError(f"{_flag(name)} must be at most {high:,}, got {value}")
    if config.batch_size is not None and not 1 <= config.batch_size <= MAX_COUNT:
        raise UsageError(f"--batch-size must be a positive integer up to {MAX_COUNT:,} or 'full', "
                         f"got {config.batch_size}")
    if not config.hidden or any(not 1 <= width <= MAX_WIDTH for width in config.hidden):
        raise UsageError(f"--hidden needs layer widths in [1, {MAX_WIDTH:,}], "
                         f"got {_shown(list(config.hidden))}")
    _check_optimizer(config)
    if not 0 <= config.stall_timeout <= MAX_STALL_TIMEOUT_S:
        raise UsageError(f"--stall-timeout must be in [0, {MAX_STALL_TIMEOUT_S:,}] seconds (0 "
                         f"waits forever), got {config.stall_timeout}")
    if not 0 < config.test_fraction < 1:
        raise UsageError(f"--test-fraction must be in (0, 1), got {config.test_fraction}")
    if config.max_staleness is not None:
        if config.strategy != "ps-async":
            raise UsageError(f"--max-staleness applies to --strategy ps-async only, "
                             f"not {config.strategy}")
        if not 0 <= config.max_staleness <= MAX_COUNT:
            raise UsageError(f"--max-staleness must be in [0, {MAX_COUNT:,}], "
                             f"got {config.max_staleness}")
    _check_combine(config)
    if config.test_samples_per_class is not None and not 1 <= config.test_samples_per_class <= MAX_COUNT:
        raise UsageError(f"--test-samples-per-class must be in [1, {MAX_COUNT:,}], "
                         f"got {config.test_samples_per_class}")
    if config.procs is not None and not 1 <= config.procs <= MAX_PROCS:
        raise UsageError(f"--procs must be in [1, {MAX_PROCS}], got {config.procs}")
    if not 0 <= config.seed <= MAX_SEED:
        raise UsageError(f"--seed must be in [0, {MAX_SEED}], got {config.seed}")


def _check_kinds(config: TrainConfig) -> None:
    """Every field has its type: values may come from argv, a TOML file or a checkpoint's
    JSON, and a wrong type must not reach a comparison that would raise TypeError."""
    for name in INT_FIELDS + OPTIONAL_INT_FIELDS:
        value = getattr(config, name)
        if name in OPTIONAL_INT_FIELDS and value is None:
            continue
        if not _is_integer(value):
            raise UsageError(f"{_flag(name)} must be an integer, got {_shown(value)}")
    for name in FLOAT_FIELDS:
        value = getattr(config, name)
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise UsageError(f"{_flag(name)} must be a number, got {_shown(value)}")
        if not math.isfinite(value):
            raise UsageError(f"{_flag(name)} must be a finite number, got {value}")
    if not isinstance(config.hidden, tuple) or not all(map(_is_integer, config.hidden)):
        raise UsageError(f"--hidden must be integer layer widths, got {_shown(config.hidden)}")
    for name in STR_FIELDS:
        value = getattr(config, name)
        if value is None:
            continue
        if not isinstance(value, str) or "\0" in value:
            raise UsageError(f"{_flag(name)} must be text without NUL characters, got {_shown(value)}")
    for name in ("shuffle", "shared_memory", "standardize", "drop_remainder"):
        if type(getattr(config, name)) is not bool:
            raise UsageError(f"{_flag(name)} must be true or false, got {_shown(getattr(config, name))}")


def _is_integer(value) -> bool:
    """An int or NumPy integer (scikit-learn parameter grids hold those), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_optimizer(config: TrainConfig) -> None:
    if not config.lr > 0:
        raise UsageError(f"--lr must be > 0, got {config.lr}")
    if not config.lr_decay >= 0:
        raise UsageError(f"--lr-decay must be >= 0, got {config.lr_decay}")
    if not 0 <= config.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {config.momentum}")


def _check_combine(config: TrainConfig) -> None:
    """Model averaging belongs to the synchronous data-parallel strategies; its two options
    mean nothing without it."""
    if config.combine == "models" and config.strategy not in ("ps-sync", "allreduce"):
        raise UsageError(f"--combine models applies to --strategy ps-sync or allreduce, "
                         f"not {config.strategy}")
    if config.combine != "models":
        if config.local_steps != 1:
            raise UsageError(f"--local-steps {config.local_steps} needs --combine models "
                             "(gradients are combined at every step)")
        if config.drop_remainder:
            raise UsageError("--drop-remainder needs --combine models (gradient averaging "
                             "uses every row exactly)")
