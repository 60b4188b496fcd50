"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is one ``.npz`` (never unpickled): parameters, optimizer state, the epoch
reached (the sampler's position: sample order is a function of seed and epoch), the
strategy's counters and the config as JSON. Rank 0 writes it to a temporary file and
renames it, so the file on disk is always a complete checkpoint; the other ranks wait at
a barrier, so nobody runs ahead of a checkpoint that might still fail.

Loading checks every field's type, shape and values, so a damaged checkpoint ends in one
UsageError naming the file and the field, never in a traceback or a silently wrong run.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from distnn.atomic import atomic_write
from distnn.config import FIELD_TYPES, TrainConfig
from distnn.data.files import read_npz
from distnn.errors import UsageError
from distnn.guards import check_memory, model_memory_bytes, regular_file
from distnn.model_file import FLOAT_DTYPES, check_sizes, parameter_count, shown

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT = "distnn-checkpoint-1"
REQUIRED = ("config", "epoch", "sizes", "params", "velocity", "iterations")
OPTIONAL = ("epoch_step",)   # steps into the next epoch (an interrupted run); 0 if absent
# ps-async's counters and their number of dimensions (the other strategies keep none).
# They add up: every applied update is counted once per worker and once by staleness.
STRATEGY_COUNTERS = {"updates": 0, "applied": 1, "staleness_counts": 1}
NULLABLE = {field.name for field in dataclasses.fields(TrainConfig) if field.default is None}
DAMAGED = "the checkpoint is damaged; resume from another copy or train from the start"


def save_checkpoint(path: Path, *, config, epoch: int, model, optimizer, strategy_state: dict,
                    epoch_step: int = 0) -> None:
    """``epoch`` epochs done, and ``epoch_step`` steps of the next (non-zero when a run
    was interrupted mid-epoch)."""
    state = optimizer.state_dict()
    arrays = {
        "format": np.asarray(FORMAT),
        "config": np.asarray(json.dumps(config.to_dict())),
        "epoch": np.asarray(epoch, dtype=np.int64),
        "epoch_step": np.asarray(epoch_step, dtype=np.int64),
        "sizes": np.asarray(model.sizes, dtype=np.int64),
        "params": model.params,
        "velocity": state["velocity"],
        "iterations": np.asarray(state["iterations"], dtype=np.int64),
        **{f"strategy.{name}": np.asarray(value) for name, value in strategy_state.items()},
    }
    atomic_write(Path(path), lambda stream: np.savez(stream, **arrays))


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, validated; UsageError if it is missing, corrupt or foreign.

    Returns ``path``, ``config`` (dict), ``epoch``, ``epoch_step``, ``sizes`` (list), ``params`` and
    ``velocity`` (1-D arrays of one floating dtype), ``iterations`` and ``strategy`` (the
    counters by name).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise UsageError(f"--resume: no checkpoint at {path}")
    regular_file(path, "--resume")
    where = f"--resume: {path}"
    arrays = read_npz(path, "--resume: {path} is corrupt or not a checkpoint ({exc})",
                      role="--resume")
    _check_format_and_names(arrays, where)
    config = _config(arrays["config"], where)
    sizes = check_sizes(arrays["sizes"], where, DAMAGED)
    params, velocity = _parameters(arrays, sizes, config, where)
    if config.get("hidden") is not None and config["hidden"] != sizes[1:-1]:
        raise UsageError(f"{where}: 'sizes' {sizes} disagree with the config's hidden widths "
                         f"{config['hidden']}; {DAMAGED}")
    return {
        "path": path,
        "config": config,
        "epoch": _count(arrays["epoch"], "epoch", where),
        "epoch_step": _count(arrays.get("epoch_step", np.int64(0)), "epoch_step", where),
        "sizes": sizes,
        "params": params,
        "velocity": velocity,
        "iterations": _count(arrays["iterations"], "iterations", where),
        "strategy": _strategy_counters(arrays, where),
    }


def _refuse(where: str, field: str, problem: str) -> UsageError:
    return UsageError(f"{where}: {field!r} {problem}; {DAMAGED}")


def _check_format_and_names(arrays: dict, where: str) -> None:
    fmt = arrays.get("format")
    if fmt is None or fmt.ndim != 0 or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        found = "missing" if fmt is None else shown(fmt)
        raise UsageError(f"{where} is not a distnn checkpoint (format {found}, expected "
                         f"{FORMAT!r})")
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}; {DAMAGED}")
    allowed = {"format", *REQUIRED, *OPTIONAL, *(f"strategy.{name}" for name in STRATEGY_COUNTERS)}
    unexpected = sorted(set(arrays) - allowed)
    if unexpected:
        raise UsageError(f"{where}: unexpected array(s) {', '.join(map(repr, unexpected))}; "
                         f"{DAMAGED}")


def _config(array: np.ndarray, where: str) -> dict:
    """The saved config: a JSON object of known fields, each of its field's type."""
    if array.ndim != 0 or array.dtype.kind != "U":
        raise _refuse(where, "config", f"must be a JSON string, got {shown(array)}")
    try:
        config = json.loads(str(array))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _refuse(where, "config", f"is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise _refuse(where, "config", f"must be a JSON object, got {type(config).__name__}")
    for name, value in config.items():
        if name not in FIELD_TYPES:
            raise _refuse(where, "config", f"holds the unknown field {name!r}")
        if not _has_type(name, value):
            raise _refuse(where, "config", f"field {name!r} must be "
                          f"{FIELD_TYPES[name].__name__}, got {value!r:.80}")
    return config


def _has_type(name: str, value) -> bool:
    """Whether a JSON ``value`` fits config field ``name`` (a tuple is a list of ints)."""
    kind = FIELD_TYPES[name]
    if value is None:
        return name in NULLABLE
    if kind is tuple:
        return isinstance(value, list) and all(type(width) is int for width in value)
    if kind is float:
        return type(value) in (int, float)
    return type(value) is kind


def _count(array: np.ndarray, name: str, where: str) -> int:
    if array.ndim != 0 or array.dtype.kind not in "iu" or int(array) < 0:
        raise _refuse(where, name, f"must be a non-negative integer, got {shown(array)}")
    return int(array)


def _parameters(arrays: dict, sizes: list[int], config: dict, where: str):
    """``params`` and ``velocity``: 1-D, finite, of one floating dtype (the config's), with
    as many elements as ``sizes`` implies."""
    n_params = parameter_count(sizes)
    dtype = arrays["params"].dtype
    if dtype not in FLOAT_DTYPES:
        raise _refuse(where, "params", f"is {dtype}; parameters are float32 or float64")
    if config.get("dtype") not in (None, str(dtype)):
        raise _refuse(where, "params", f"is {dtype}, but the config says {config['dtype']}")
    for name in ("params", "velocity"):
        array = arrays[name]
        if array.dtype != dtype:
            raise _refuse(where, name, f"is {array.dtype}, 'params' is {dtype}")
        if array.shape != (n_params,):
            raise _refuse(where, name, f"has shape {array.shape}, but sizes {sizes} need "
                          f"({n_params},)")
        if not np.all(np.isfinite(array)):
            raise _refuse(where, name, "holds NaN or infinite values")
    check_memory(model_memory_bytes(sizes, 1, dtype.itemsize), f"resuming the {sizes} model of "
                 f"{where}", DAMAGED)
    return arrays["params"], arrays["velocity"]


def _strategy_counters(arrays: dict, where: str) -> dict:
    """The strategy's counters by name: non-negative integers of the expected dimensions,
    adding up as they do when written."""
    counters = {}
    for name, ndim in STRATEGY_COUNTERS.items():
        array = arrays.get(f"strategy.{name}")
        if array is None:
            continue
        if array.ndim != ndim or array.dtype.kind not in "iu" or np.any(array < 0):
            kind = "a non-negative integer" if ndim == 0 else "a 1-D array of non-negative integers"
            raise _refuse(where, f"strategy.{name}", f"must be {kind}, got {shown(array)}")
        counters[name] = array
    if counters and set(counters) != set(STRATEGY_COUNTERS):
        missing = sorted(set(STRATEGY_COUNTERS) - set(counters))
        raise _refuse(where, f"strategy.{missing[0]}", "is missing (the other counters are there)")
    if counters:
        totals = {name: int(np.sum(counters[name], dtype=np.uint64)) for name in counters}
        if len(set(totals.values())) != 1:
            raise _refuse(where, "strategy.updates", f"does not add up: updates {totals['updates']}, "
                          f"sum of applied {totals['applied']}, sum of staleness_counts "
                          f"{totals['staleness_counts']}")
    return counters


def check_resumable(checkpoint: dict, config, dataset, processes: int) -> None:
    """Refuse, before anything is written, a checkpoint that this data and job cannot
    continue: other layer widths (the data changed), another number of ps-async workers,
    or a position inside an epoch that the epoch does not have."""
    path = checkpoint["path"]
    sizes = [dataset.n_features, *config.hidden, dataset.n_classes]
    if checkpoint["sizes"] != sizes:
        raise UsageError(f"--resume: {path} holds a {checkpoint['sizes']} model, but this data "
                         f"needs {sizes}: the data changed since the run was saved; resume with "
                         "the data it was trained on, or start a new run")
    applied = checkpoint["strategy"].get("applied")
    if config.strategy == "ps-async" and applied is not None and applied.size != processes - 1:
        raise UsageError(f"--resume: {path} was written by {applied.size} ps-async workers; "
                         f"resume with --procs {applied.size + 1}, not {processes}")
    n_train = dataset.x_train.shape[0]
    batch = config.batch_size if config.batch_size and config.batch_size < n_train else n_train
    steps = -(-n_train // batch)
    step = checkpoint.get("epoch_step", 0)
    if step >= steps or (step and config.strategy == "ps-async"):
        raise UsageError(f"--resume: {path}: 'epoch_step' is {step}, but an epoch here has "
                         f"{steps} steps{' and ps-async stops only between epochs' if step else ''}; "
                         f"{DAMAGED}")
