"""One typed, validated training configuration, and the named presets.

Every field of ``TrainConfig`` is declared once, here: its type (the annotation), its
default, its range or choices and its help text (``option(...)``). The command line's
flags (``cli/parser.py``), the keys of a ``--config`` TOML file, the checkpoint's config
check and validation are all generated from these declarations, so a new field is one
line here and nothing else.

Precedence, lowest first: the recipe the data calls for (``recipes.py``), the preset
named by ``--preset``, a ``--config`` file, then every flag the user gave.
"""

import dataclasses
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass

from distnn import recipes
from distnn.errors import UsageError
from distnn.guards import regular_file
from distnn.nn.kernels import KERNELS
from distnn.nn.layers import ACTIVATIONS as LAYER_ACTIVATIONS
from distnn.optim import REGISTRY

STRATEGIES = ("serial", "ps-sync", "ps-async", "allreduce")
# Strategies with parameter servers (p processes = K servers, ranks 0..K-1, + p - K workers).
# Named here, not taken from distnn.parallel, so that the launcher and bench never import
# mpi4py.MPI: a process that initialised MPI and is then killed leaves a segment in /dev/shm.
SERVER_STRATEGIES = ("ps-sync", "ps-async")
DTYPES = ("float32", "float64")
INITS = ("he", "nnfs", "uniform")
SPIRAL_DRAWS = ("separate", "original")
COMBINES = ("gradients", "models")
SYNCS = ("auto", "node-aware", "flat")
TIMINGS = ("training", "original")
OPTIMIZERS = tuple(REGISTRY)
SCHEDULES = ("inverse-decay", "constant", "step", "cosine")
LR_SCALINGS = ("none", "linear")
ACTIVATIONS = tuple(LAYER_ACTIVATIONS)

MAX_CONFIG_BYTES = 1 << 20   # a config file is a few lines; more is a wrong file given
MAX_COUNT = 10**9            # epochs, sizes: checkpoints store them as int64
MAX_WIDTH = 1 << 24          # a layer's width: what model.npz accepts (model_file.MAX_WIDTH)
MAX_SEED = 2**32 - 1         # NumPy's RandomState takes seeds in [0, 2**32 - 1]
MAX_CLASSES = 10**6          # one model output per class; labels must be below this
MAX_PROCS = 4096
MAX_STALL_TIMEOUT_S = 7 * 24 * 3600   # a week: longer is a typo, and 0 turns it off


@dataclass(frozen=True)
class Spec:
    """What a field declares besides its type and default.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` exclude the bound);
    ``none`` is the word that stands for None on the command line (``--batch-size full``);
    ``default_text`` describes a default the recipe or another field decides;
    ``applies`` says when a value the user gives means anything, so that a flag the run
    would ignore is refused instead; ``group`` places the flag in ``--help``.
    """

    help: str
    group: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    none: str | None = None
    metavar: str | None = None
    default_text: str | None = None
    flag: bool = True                       # False: TOML and API only, no command-line flag
    applies: tuple | None = None            # (field, test of its value, what it applies to)


def option(default, help: str, group: str, **spec):
    return dataclasses.field(default=default, metadata={"spec": Spec(help, group, **spec)})


# (field, test of its value, the values it applies to): when a flag means something.
SPIRAL_ONLY = ("dataset", "spiral".__eq__, "spiral")
SGD_ONLY = ("optimizer", "sgd".__eq__, "sgd")
ADAM_ONLY = ("optimizer", ("adam", "adamw").__contains__, "adam and adamw")


@dataclass(frozen=True)
class TrainConfig:
    # -- where the values started ---------------------------------------------------------
    preset: str = option("default", "start from a named workload", "run", flag=False)
    recipe: str = option("original", "which recipe filled the values not set (recipes.py)",
                         "run", choices=tuple(recipes.RECIPES), flag=False)
    # -- data -------------------------------------------------------------------------------
    dataset: str = option(
        "spiral", "spiral, fashion-mnist, mnist, a .csv or .npz file, or a directory with "
        "X_train.csv, y_train.csv", "data")
    data_dir: str | None = option(
        None, "folder of the IDX files", "data",
        default_text="/usr/share/datasets/fashion-mnist for fashion-mnist",
        applies=("dataset", lambda v: v in ("fashion-mnist", "mnist"), "fashion-mnist or mnist"))
    label_column: str = option(
        "auto", "one-file CSV: first, last, a 0-based index or a header name", "data",
        default_text="the one header column named label, target, class or y, else the last",
        applies=("dataset", lambda v: v.lower().endswith((".csv", ".txt")), "a one-file CSV"))
    samples_per_class: int = option(1000, "spiral: points per class", "data", low=1,
                                    applies=SPIRAL_ONLY)
    classes: int = option(3, "spiral: number of classes", "data", low=2, high=MAX_CLASSES,
                          applies=SPIRAL_ONLY)
    test_samples_per_class: int | None = option(
        None, "spiral: test points per class", "data", low=1, default_text="--samples-per-class",
        applies=SPIRAL_ONLY)
    spiral_draw: str = option(
        "separate", "spiral: 'separate' draws the test set from seed+1; 'original' draws train "
        "then test from one float32 stream and shuffles the training rows, as the original's "
        "generate_data.py", "data", choices=SPIRAL_DRAWS, applies=SPIRAL_ONLY)
    test_fraction: float = option(
        0.2, "held-out share when a data file has no test split", "data", low=0, high=1,
        low_open=True, high_open=True,
        applies=("dataset", lambda v: v not in ("spiral", "fashion-mnist", "mnist"),
                 "a data file without a test split"))
    seed: int = option(0, "data split, weights, dropout and sample order", "data", low=0,
                       high=MAX_SEED)
    standardize: bool = option(
        False, "scale every input feature to zero mean and unit variance over the training rows; "
        "the statistics are stored in model.npz", "model",
        default_text="on for data from files, off for images and the spiral at full batch")
    # -- model ------------------------------------------------------------------------------
    hidden: tuple[int, ...] = option((64,), "hidden layer widths, e.g. 64 or 256,128", "model",
                                     low=1, high=MAX_WIDTH)
    activation: str = option("relu", "hidden-layer activation", "model", choices=ACTIVATIONS)
    dropout: float = option(
        0.0, "drop each hidden unit with this probability in training (inverted dropout; "
        "masks depend only on seed, step and sample, so synchronous strategies equal serial)",
        "model", low=0, high=1, high_open=True)
    label_smoothing: float = option(
        0.0, "train against (1 - s) one-hot + s / classes targets (Szegedy et al.); evaluations "
        "report the plain cross-entropy", "model", low=0, high=1, high_open=True)
    init: str = option(
        "he", "weight init: he (N(0, 2/fan_in)), nnfs (0.01 N(0,1)), or uniform (U(-0.01, 0.01) "
        "from glibc rand(), the original's)", "model", choices=INITS)
    dtype: str = option("float32", "parameters and data", "model", choices=DTYPES)
    kernels: str = option(
        "auto", "compute path: numpy (one NumPy call per operation), fused (numba's kernels, "
        "pip install 'distnn[fused]'), or auto (fused where every rank has numba and the run "
        "is long enough to repay its start-up)", "model", choices=KERNELS)
    # -- optimizer --------------------------------------------------------------------------
    optimizer: str = option("sgd", "sgd (momentum, the original's), adam, or adamw (Adam "
                            "with decoupled weight decay)", "optimizer", choices=OPTIMIZERS)
    lr: float = option(1.0, "initial (peak) learning rate", "optimizer", low=0, low_open=True,
                       default_text="by the recipe: 1 for the spiral at full batch, 0.05 "
                       "otherwise; 0.001 for adam and adamw")
    schedule: str = option(
        "inverse-decay", "learning rate over time: inverse-decay lr/(1 + lr_decay t) (the "
        "original's), constant, step (x --lr-gamma every --lr-step-epochs), or cosine (to "
        "--lr-min at the last step)", "optimizer", choices=SCHEDULES,
        default_text="inverse-decay for sgd, constant for adam and adamw")
    lr_decay: float = option(
        1e-3, "inverse-decay: lr_t = lr / (1 + lr_decay * t), t = updates so far", "optimizer",
        low=0, default_text="by the recipe: 0.001 for the spiral at full batch, 0.0005 otherwise",
        applies=("schedule", "inverse-decay".__eq__, "inverse-decay"))
    lr_step_epochs: int = option(10, "step: epochs between two multiplications by --lr-gamma",
                                 "optimizer", low=1,
                                 applies=("schedule", "step".__eq__, "step"))
    lr_gamma: float = option(0.1, "step: factor applied every --lr-step-epochs", "optimizer",
                             low=0, high=1, low_open=True,
                             applies=("schedule", "step".__eq__, "step"))
    lr_min: float = option(0.0, "cosine: learning rate at the last step", "optimizer", low=0,
                           applies=("schedule", "cosine".__eq__, "cosine"))
    warmup_epochs: float = option(0.0, "raise the learning rate linearly from 0 over this many "
                                  "epochs, then follow --schedule", "optimizer", low=0,
                                  high=MAX_COUNT)
    lr_scaling: str = option(
        "none", "linear: multiply --lr by global batch / --lr-base-batch (the linear scaling "
        "rule of Goyal et al., for larger batches on more workers)", "optimizer",
        choices=LR_SCALINGS)
    lr_base_batch: int = option(256, "linear --lr-scaling: the batch size --lr was tuned for",
                                "optimizer", low=1, applies=("lr_scaling", "linear".__eq__, "linear"))
    momentum: float = option(0.9, "sgd: v = momentum * v - lr_t * g", "optimizer", low=0,
                             high=1, high_open=True, applies=SGD_ONLY)
    nesterov: bool = option(False, "sgd: Nesterov momentum (w += momentum * v - lr_t * g)",
                            "optimizer", applies=SGD_ONLY)
    weight_decay: float = option(
        0.0, "sgd and adam: L2 penalty added to the gradient; adamw: decoupled decay "
        "w -= lr_t * weight_decay * w", "optimizer", low=0,
        default_text="0, 0.01 for adamw")
    beta1: float = option(0.9, "adam/adamw: decay of the gradient's running mean", "optimizer",
                          low=0, high=1, high_open=True, applies=ADAM_ONLY)
    beta2: float = option(0.999, "adam/adamw: decay of the squared gradient's running mean",
                          "optimizer", low=0, high=1, high_open=True, applies=ADAM_ONLY)
    eps: float = option(1e-8, "adam/adamw: added to the root of the second moment",
                        "optimizer", low=0, low_open=True, applies=ADAM_ONLY)
    # -- training ---------------------------------------------------------------------------
    strategy: str = option("serial", "gradient path", "training", choices=STRATEGIES)
    epochs: int = option(
        1000, "passes over the training data", "training", low=0,
        default_text=f"by the recipe: {recipes.RECIPES['original']['epochs']} for the spiral at "
        f"full batch; otherwise enough for {recipes.MIN_STEPS} updates, {recipes.MIN_EPOCHS} to "
        f"{recipes.MAX_AUTO_EPOCHS}")
    batch_size: int | None = option(
        None, "global batch size, or 'full'", "training", low=1, none="full",
        default_text=f"by the recipe: full for the spiral; otherwise "
        f"{recipes.RECIPES['minibatch']['batch_size']}, or {recipes.SMALL_BATCH} below "
        f"{recipes.SMALL_DATA_ROWS} training rows")
    shuffle: bool = option(True, "reshuffle the samples every epoch (--no-shuffle keeps the "
                           "stored order)", "training")
    data_shards: int = option(
        1, "draw worker k's part of every batch from shard k of the rows; set K to the number "
        "of workers so that each reads only its share of a memory-mapped .npy", "training",
        low=1, metavar="K")
    eval_every: int = option(
        100, "epochs between evaluations, and always the last", "training", low=1,
        default_text=f"by the recipe: {recipes.RECIPES['original']['eval_every']} for the spiral "
        f"at full batch, about {recipes.EVALUATIONS} evaluations per run otherwise")
    checkpoint_every: int = option(0, "epochs between checkpoints; 0: at every evaluation "
                                   "(always at the end)", "training", low=0)
    timing: str = option(
        "training", "'original' times as the original did: every step also computes its "
        "training loss and accuracy, and evaluations count as training time", "training",
        choices=TIMINGS)
    # -- parallel ---------------------------------------------------------------------------
    procs: int | None = option(None, "launch N MPI processes with mpiexec, unless already "
                               "under MPI", "parallel", low=1, high=MAX_PROCS,
                               default_text="1, or the resumed run's")
    max_staleness: int | None = option(
        None, "ps-async: no applied gradient staler than this", "parallel", low=0, high=MAX_COUNT,
        default_text="unbounded")
    servers: int = option(
        1, "ps-sync/ps-async: ranks 0..K-1 are parameter servers, each owning one contiguous "
        "shard of the parameters and of the optimizer state; the other ranks are workers",
        "parallel", low=1, high=MAX_PROCS - 1, metavar="K",
        applies=("strategy", SERVER_STRATEGIES.__contains__, "ps-sync and ps-async"))
    combine: str = option(
        "gradients", "ps-sync/allreduce: average the workers' gradients (== serial), or their "
        "models after local SGD steps, each worker with its own velocity (the original's "
        "algorithm; messages only)", "parallel", choices=COMBINES)
    local_steps: int = option(1, "--combine models: local steps between averagings (K-fold "
                              "less communication; 1 is the original)", "parallel", low=1,
                              metavar="K")
    drop_remainder: bool = option(
        False, "--combine models: every worker takes floor(B/n) rows and the last B mod n rows "
        "of a batch go unused, as in the original", "parallel")
    shared_memory: bool = option(
        True, "MPI-3 shared memory when all ranks share one node (--no-shared-memory moves "
        "gradients and parameters by MPI messages)", "parallel")
    sync: str = option(
        "auto", "ps-sync/allreduce across hosts: node-aware (the ranks of a host combine their "
        "parts in shared memory and one rank per host exchanges with the other hosts) or flat "
        "(every rank exchanges by messages); auto is node-aware when ranks span several hosts "
        "and a host holds two or more of the ranks that combine (workers, for ps-sync)",
        "parallel", choices=SYNCS,
        applies=("strategy", ("ps-sync", "allreduce").__contains__, "ps-sync and allreduce"))
    deterministic: bool = option(
        False, "parameters bit-identical for every process count and placement (serial, "
        "ps-sync, allreduce; float32 too): every global batch is cut into --micro-batches "
        "parts, each computed whole on one worker, whose gradient sums are added in their "
        "order", "parallel")
    micro_batches: int = option(
        8, "--deterministic: parts of every global batch (at least the number of workers, "
        "at most the batch); the results depend on it, so keep it across runs you compare",
        "parallel", low=1, high=MAX_PROCS, metavar="M",
        applies=("deterministic", bool, "--deterministic"))
    stall_timeout: float = option(
        120.0, "end the job (exit 4) when a rank has waited this long for a silent peer (a dead "
        "host, a cut link, a stopped process), naming it; 0 waits forever", "parallel", low=0,
        high=MAX_STALL_TIMEOUT_S, metavar="SECONDS")
    # -- output -----------------------------------------------------------------------------
    out: str | None = option(None, "run directory", "run",
                             default_text="runs/<time>-<strategy>")
    timeline: str | None = option(
        None, "write every rank's phases (compute, update, comm, wait, evaluation, checkpoint) "
        "over a window of steps as a Chrome trace for Perfetto or chrome://tracing; a bare file "
        "name goes into the run directory", "run", metavar="FILE.json", default_text="none")
    timeline_steps: str | None = option(
        None, "the steps --timeline records: COUNT steps from global step START (counted from "
        "0)", "run", metavar="START:COUNT",
        default_text="the 100 steps after the run's first 10, earlier in a shorter run")
    auto: tuple[str, ...] = dataclasses.field(default=(), metadata={})   # recipe-fitted, not saved

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        del data["auto"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    @property
    def data(self) -> "DataConfig":
        """The fields that decide which rows the data set holds (``load_dataset``'s input)."""
        return DataConfig(**{name: getattr(self, name) for name in DATA_FIELDS})


@dataclass(frozen=True)
class DataConfig:
    """What ``load_dataset`` needs: the source, how a spiral is drawn, how rows are split."""

    dataset: str = "spiral"
    data_dir: str | None = None
    label_column: str = "auto"
    samples_per_class: int = 1000
    classes: int = 3
    test_samples_per_class: int | None = None
    spiral_draw: str = "separate"
    test_fraction: float = 0.2
    seed: int = 0
    dtype: str = "float32"


DATA_FIELDS = tuple(field.name for field in dataclasses.fields(DataConfig))


@dataclass(frozen=True)
class FieldInfo:
    """A declared field as the generators use it: name, spec, default and the value type
    (``kind``: int, float, str, bool or tuple of ints; ``optional``: None allowed)."""

    name: str
    spec: Spec
    default: object
    kind: type
    optional: bool

    @property
    def flag(self) -> str:
        return flag_of(self.name)


def _field_infos() -> dict[str, FieldInfo]:
    hints = typing.get_type_hints(TrainConfig)
    infos = {}
    for field in dataclasses.fields(TrainConfig):
        spec = field.metadata.get("spec")
        if spec is None:
            continue
        hint, optional = hints[field.name], False
        if isinstance(hint, types.UnionType):
            args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            hint, optional = args[0], True
        kind = tuple if typing.get_origin(hint) is tuple else hint
        infos[field.name] = FieldInfo(field.name, spec, field.default, kind, optional)
    return infos


FIELD_INFO: dict[str, FieldInfo] = _field_infos()
FIELDS = {field.name for field in dataclasses.fields(TrainConfig)}
FIELD_TYPES = {name: info.kind for name, info in FIELD_INFO.items()}
NULLABLE = {name for name, info in FIELD_INFO.items() if info.optional}


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
    # Fashion-MNIST, 784-256-10: >= 0.90 test accuracy in 30 epochs (measured, README).
    "fmnist": dict(dataset="fashion-mnist", hidden=(256,), init="he", dtype="float32",
                   batch_size=128, epochs=30, eval_every=5, optimizer="adamw", lr=2e-3,
                   weight_decay=0.05, schedule="cosine"),
    # The same with the recipe's SGD (>= 0.89): what model averaging, SGD's alone, runs on.
    "fmnist-sgd": dict(dataset="fashion-mnist", hidden=(256,), init="he", dtype="float32",
                       batch_size=128, epochs=30, eval_every=5, lr=0.05, lr_decay=5e-4,
                       momentum=0.9),
    "seed-10": dict(samples_per_class=10_000, classes=10, hidden=(64,), init="uniform",
                    dtype="float64", batch_size=None, epochs=10_000, eval_every=1000,
                    lr=1.0, lr_decay=1e-3, momentum=0.9),
}


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


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
        if name not in FIELD_INFO:
            raise UsageError(f"--config {path}: unknown key {shown(key)}; known keys: "
                             f"{', '.join(sorted(FIELD_INFO))}")
        values[name] = _typed(path, key, FIELD_INFO[name], value)
    return values


def shown(value, limit: int = 60) -> str:
    """``repr(value)``, shortened: a message must stay readable whatever a file holds."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(shortened)"


def _typed(path: str, key: str, info: FieldInfo, value):
    kind = info.kind
    if info.spec.none is not None and value == info.spec.none:
        return None
    if kind is tuple:
        if not isinstance(value, list) or not all(type(v) is int for v in value):
            raise UsageError(f"--config {path}: {key} must be a list of integers, "
                             f"got {shown(value)}")
        return tuple(value)
    if kind is float and type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise UsageError(f"--config {path}: {key} = {shown(value)} is too large for a "
                             "floating-point number") from None
    if type(value) is not kind:
        raise UsageError(f"--config {path}: {key} must be {kind.__name__}, got {shown(value)}")
    return value


def has_type(name: str, value) -> bool:
    """Whether a JSON ``value`` fits field ``name`` (a tuple is a list of ints)."""
    info = FIELD_INFO[name]
    if value is None:
        return info.optional
    if info.kind is tuple:
        return isinstance(value, list) and all(type(width) is int for width in value)
    if info.kind is float:
        return type(value) in (int, float)
    return type(value) is info.kind


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


def validate(config: TrainConfig) -> None:
    """Raise UsageError naming the flag, the value received and what is allowed."""
    for info in FIELD_INFO.values():
        _check_field(info, getattr(config, info.name))
    _check_combine(config)
    _check_sync(config)
    if config.timeline_steps is not None:
        if config.timeline is None:
            raise UsageError("--timeline-steps needs --timeline FILE.json, the trace it "
                             "chooses the steps of")
        timeline_steps(config.timeline_steps)
    _check_deterministic(config)
    if config.max_staleness is not None and config.strategy != "ps-async":
        raise UsageError(f"--max-staleness applies to --strategy ps-async only, "
                         f"not {config.strategy}")
    if config.servers > 1 and config.strategy not in SERVER_STRATEGIES:
        raise UsageError(f"--servers applies to --strategy ps-sync or ps-async only, "
                         f"not {config.strategy}")


MAX_STEP = 2**53     # steps are counted exactly in a float64 timeline buffer


def timeline_steps(text: str) -> tuple[int, int]:
    """``(start, count)`` of a ``--timeline-steps START:COUNT``; a UsageError otherwise."""
    start, colon, count = text.partition(":")
    if not (colon and start.isdecimal() and count.isdecimal() and start.isascii()
            and count.isascii()):
        raise UsageError(f"--timeline-steps must be START:COUNT (two integers, such as 10:100), "
                         f"got {shown(text)}")
    start, count = int(start), int(count)
    if count < 1 or start + count > MAX_STEP:
        raise UsageError(f"--timeline-steps {text}: COUNT must be at least 1 and START + COUNT "
                         f"at most {MAX_STEP:,}")
    return start, count


def check_given_apply(config: TrainConfig, given) -> None:
    """Refuse values the user gave (flags, a config file, keyword options) that this run
    would silently ignore: ``--classes`` with a CSV, ``--momentum`` with adam..."""
    problems = []
    for name, info in FIELD_INFO.items():
        if name not in given or info.spec.applies is None:
            continue
        depends, test, meaning = info.spec.applies
        value = getattr(config, depends)
        if not test(value):
            problems.append(f"{info.flag} does not apply to {flag_of(depends)} {value} (only to "
                            f"{meaning}); drop it")
    if problems:
        raise UsageError("; ".join(problems))


def _check_field(info: FieldInfo, value) -> None:
    """The field's type, then its choices or range. Values may come from argv, a TOML file,
    a checkpoint's JSON or Python keywords: a wrong type must not reach a comparison."""
    flag, spec = info.flag, info.spec
    if value is None and info.optional:
        return
    if info.kind is int:
        if not _is_integer(value):
            raise UsageError(f"{flag} must be an integer, got {shown(value)}")
    elif info.kind is float:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise UsageError(f"{flag} must be a number, got {shown(value)}")
        if not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value}")
    elif info.kind is bool:
        if type(value) is not bool:
            raise UsageError(f"{flag} must be true or false, got {shown(value)}")
    elif info.kind is str:
        if not isinstance(value, str) or "\0" in value:
            raise UsageError(f"{flag} must be text without NUL characters, got {shown(value)}")
    elif info.kind is tuple:
        if not isinstance(value, tuple) or not all(map(_is_integer, value)):
            raise UsageError(f"{flag} must be integer layer widths, got {shown(value)}")
        if not value or any(not spec.low <= width <= spec.high for width in value):
            raise UsageError(f"{flag} needs layer widths in [{spec.low:,}, {spec.high:,}], "
                             f"got {shown(list(value))}")
        return
    if spec.choices is not None and value not in spec.choices:
        raise UsageError(f"{flag} {value!r} is not one of {', '.join(spec.choices)}")
    if spec.low is not None or spec.high is not None:
        _check_range(info, value)


def _check_range(info: FieldInfo, value) -> None:
    spec, flag = info.spec, info.flag
    if info.kind is int and spec.none is not None:
        if not spec.low <= value <= MAX_COUNT:
            raise UsageError(f"{flag} must be a positive integer up to {MAX_COUNT:,} or "
                             f"'{spec.none}', got {value}")
        return
    if info.kind is int and spec.high is None:
        if value < spec.low:
            raise UsageError(f"{flag} must be an integer >= {spec.low}, got {value!r}")
        if value > MAX_COUNT:
            raise UsageError(f"{flag} must be at most {MAX_COUNT:,}, got {value}")
        return
    low_ok = spec.low is None or (value > spec.low if spec.low_open else value >= spec.low)
    high_ok = spec.high is None or (value < spec.high if spec.high_open else value <= spec.high)
    if low_ok and high_ok:
        return
    if spec.high is None:
        raise UsageError(f"{flag} must be {'>' if spec.low_open else '>='} {_number(spec.low)}, "
                         f"got {value}")
    interval = (f"{'(' if spec.low_open else '['}{_number(spec.low)}, {_number(spec.high)}"
                f"{')' if spec.high_open else ']'}")
    raise UsageError(f"{flag} must be in {interval}, got {value}")


def _number(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) and bound < 1e6 else str(bound)


def _is_integer(value) -> bool:
    """An int or NumPy integer (scikit-learn parameter grids hold those), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_sync(config: TrainConfig) -> None:
    """Node-aware synchronisation adds gradients in each host's shared memory."""
    if config.sync != "node-aware":
        return
    if config.combine == "models":
        raise UsageError("--sync node-aware adds the gradients of a host's ranks in shared "
                         "memory; --combine models averages each worker's model by messages: "
                         "use --sync flat or auto")
    if not config.shared_memory:
        raise UsageError("--sync node-aware adds the parts of a host's ranks in shared memory; "
                         "drop --no-shared-memory or use --sync flat or auto")
    if config.deterministic:
        raise UsageError("--sync node-aware adds each host's parts first, out of the order of "
                         "the micro-batch sums that --deterministic fixes; use --sync flat or "
                         "auto (auto keeps the flat path under --deterministic)")


def _check_deterministic(config: TrainConfig) -> None:
    """``--deterministic`` fixes the order of every sum, which only the synchronous
    strategies that combine gradients have."""
    if not config.deterministic:
        return
    if config.strategy == "ps-async":
        raise UsageError("--deterministic needs --strategy serial, ps-sync or allreduce: "
                         "ps-async applies each gradient when it arrives, so the order of the "
                         "updates depends on timing; drop --deterministic or choose another "
                         "strategy")
    if config.combine == "models":
        raise UsageError("--deterministic combines gradients: --combine models averages models "
                         "that each worker trained on its own share of every batch, which "
                         "depend on the number of workers; use --combine gradients")


def _check_combine(config: TrainConfig) -> None:
    """Model averaging belongs to the synchronous data-parallel strategies; its two options
    mean nothing without it."""
    if config.combine == "models" and config.strategy not in ("ps-sync", "allreduce"):
        raise UsageError(f"--combine models applies to --strategy ps-sync or allreduce, "
                         f"not {config.strategy}")
    if config.combine == "models" and config.optimizer != "sgd":
        raise UsageError(f"--combine models averages SGD models (the original's algorithm); "
                         f"use --combine gradients with --optimizer {config.optimizer}")
    if config.combine != "models":
        if config.local_steps != 1:
            raise UsageError(f"--local-steps {config.local_steps} needs --combine models "
                             "(gradients are combined at every step)")
        if config.drop_remainder:
            raise UsageError("--drop-remainder needs --combine models (gradient averaging "
                             "uses every row exactly)")
