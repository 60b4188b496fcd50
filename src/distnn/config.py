"""One typed, validated training configuration, and the named presets.

Precedence, lowest first: the ``default`` preset, the preset named by ``--preset``,
then every flag the user gave.
"""

import dataclasses
import json
from dataclasses import dataclass

from distnn.errors import UsageError

STRATEGIES = ("serial", "ps-sync", "ps-async", "allreduce")
DTYPES = ("float32", "float64")
INITS = ("he", "nnfs")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"          # which preset the values started from
    dataset: str = "spiral"          # spiral, fashion-mnist, mnist, an .npz, or a directory
    data_dir: str | None = None      # IDX files of fashion-mnist / mnist
    label_column: str = "last"       # one-file CSV: first, last, an index or a header name
    samples_per_class: int = 1000    # spiral: points per arm
    classes: int = 3                 # spiral: number of arms (= classes)
    test_fraction: float = 0.2       # held out when a data file has no test split
    hidden: tuple[int, ...] = (64,)  # widths of the hidden layers
    init: str = "he"                 # weight init: "he" or "nnfs" (0.01 N(0,1))
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
    shared_memory: bool = True       # MPI-3 shared memory when all ranks share one node
    eval_every: int = 100            # epochs between evaluations (the last epoch always)
    checkpoint_every: int = 0        # epochs between checkpoints; 0 = at every evaluation
    out: str | None = None           # run directory; None = runs/<timestamp>

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict] = {
    "default": {},
    # The original C++/Eigen workload: spiral 10,000 points x 3 arms, 2-64-3, full batch.
    "seed": dict(samples_per_class=10_000, classes=3, hidden=(64,), init="nnfs",
                 dtype="float64", batch_size=None, epochs=10_000, eval_every=1000,
                 lr=1.0, lr_decay=1e-3, momentum=0.9),
    # Fashion-MNIST, 784-256-10: >= 0.89 test accuracy in 30 epochs (measured, README).
    "fmnist": dict(dataset="fashion-mnist", hidden=(256,), init="he", dtype="float32",
                   batch_size=128, epochs=30, eval_every=5, lr=0.05, lr_decay=5e-4,
                   momentum=0.9),
    "seed-10": dict(samples_per_class=10_000, classes=10, hidden=(64,), init="nnfs",
                    dtype="float64", batch_size=None, epochs=10_000, eval_every=1000,
                    lr=1.0, lr_decay=1e-3, momentum=0.9),
}

FIELDS = {field.name for field in dataclasses.fields(TrainConfig)}


FIELD_TYPES = {
    "preset": str, "dataset": str, "data_dir": str, "label_column": str, "samples_per_class": int,
    "classes": int,
    "test_fraction": float, "hidden": tuple, "init": str, "dtype": str, "strategy": str,
    "epochs": int, "batch_size": int, "lr": float, "lr_decay": float, "momentum": float,
    "seed": int, "shuffle": bool, "data_shards": int, "max_staleness": int, "shared_memory": bool,
    "eval_every": int,
    "checkpoint_every": int, "out": str,
}


def read_config_file(path: str) -> dict:
    """Fields from a TOML file (``lr = 0.1``, ``hidden = [256, 128]``, ``batch-size = "full"``).

    Keys may use dashes or underscores; unknown keys and wrongly typed values are refused
    with the file and key named.
    """
    import tomllib

    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from exc
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELD_TYPES:
            raise UsageError(f"--config {path}: unknown key {key!r}; known keys: "
                             f"{', '.join(sorted(FIELD_TYPES))}")
        values[name] = _typed(path, key, name, value)
    return values


def _typed(path: str, key: str, name: str, value):
    kind = FIELD_TYPES[name]
    if name == "batch_size" and value == "full":
        return None
    if kind is tuple:
        if not isinstance(value, list) or not all(type(v) is int for v in value):
            raise UsageError(f"--config {path}: {key} must be a list of integers, got {value!r}")
        return tuple(value)
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise UsageError(f"--config {path}: {key} must be {kind.__name__}, got {value!r}")
    return value


def make_config(preset: str = "default", **overrides) -> TrainConfig:
    """The preset's values with ``overrides`` on top, validated."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    unknown = set(overrides) - FIELDS
    if unknown:
        raise UsageError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    config = TrainConfig(preset=preset, **PRESETS[preset]).replace(**overrides)
    validate(config)
    return config


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(config: TrainConfig) -> None:
    """Raise UsageError naming the flag, the value received and what is allowed."""
    choices = {"strategy": STRATEGIES, "dtype": DTYPES, "init": INITS}
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise UsageError(f"{_flag(name)} {value!r} is not one of {', '.join(allowed)}")
    minimums = {"samples_per_class": 1, "classes": 2, "epochs": 0, "eval_every": 1,
                "checkpoint_every": 0, "data_shards": 1}
    for name, low in minimums.items():
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise UsageError(f"{_flag(name)} must be an integer >= {low}, got {value!r}")
    if config.batch_size is not None and config.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer or 'full', got {config.batch_size}")
    if not config.hidden or any(width < 1 for width in config.hidden):
        raise UsageError(f"--hidden needs positive layer widths, got {list(config.hidden)}")
    if not config.lr > 0:
        raise UsageError(f"--lr must be > 0, got {config.lr}")
    if not config.lr_decay >= 0:
        raise UsageError(f"--lr-decay must be >= 0, got {config.lr_decay}")
    if not 0 <= config.momentum < 1:
        raise UsageError(f"--momentum must be in [0, 1), got {config.momentum}")
    if not 0 < config.test_fraction < 1:
        raise UsageError(f"--test-fraction must be in (0, 1), got {config.test_fraction}")
    if config.max_staleness is not None:
        if config.strategy != "ps-async":
            raise UsageError(f"--max-staleness applies to --strategy ps-async only, "
                             f"not {config.strategy}")
        if config.max_staleness < 0:
            raise UsageError(f"--max-staleness must be >= 0, got {config.max_staleness}")
    if config.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {config.seed}")
