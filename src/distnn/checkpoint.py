"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is one ``.npz`` (never unpickled): parameters, the optimizer's state buffers
by name (``optimizer.<name>``, whatever the optimizer keeps) and update count, the epoch
reached (the sampler's position: sample order is a function of seed and epoch), the
strategy's counters and the config as JSON. Rank 0 writes it to a temporary file and
renames it, so the file on disk is always a complete checkpoint; the other ranks wait at
a barrier, so nobody runs ahead of a checkpoint that might still fail.

Loading checks every field's type, shape and values, so a damaged checkpoint ends in one
UsageError naming the file and the field, never in a traceback or a silently wrong run.
"""

import json
from pathlib import Path

import numpy as np

from distnn.atomic import atomic_write
from distnn.config import FIELD_INFO, has_type
from distnn.data.files import read_npz
from distnn.errors import UsageError
from distnn.guards import check_memory, model_memory_bytes, regular_file
from distnn.model_file import FLOAT_DTYPES, check_sizes, parameter_count, shown

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT = "distnn-checkpoint-2"
FORMAT_1 = "distnn-checkpoint-1"   # SGD's velocity as 'velocity': still read
REQUIRED = ("config", "epoch", "sizes", "params", "iterations")
OPTIONAL = ("epoch_step",)   # steps into the next epoch (an interrupted run); 0 if absent
STATE_PREFIX = "optimizer."
# ps-async's counters and their numbers of dimensions (the other strategies keep none):
# staleness_counts has one row per server when there are several (--servers K), each
# server's histogram. They add up: every applied update is counted once per worker and,
# on every server, once by staleness.
STRATEGY_COUNTERS = {"updates": (0,), "applied": (1,), "staleness_counts": (1, 2)}
DAMAGED = "the checkpoint is damaged; resume from another copy or train from the start"


def save_checkpoint(path: Path, *, config, epoch: int, model, optimizer_state: dict,
                    strategy_state: dict, epoch_step: int = 0) -> None:
    """``epoch`` epochs done, and ``epoch_step`` steps of the next (non-zero when a run
    was interrupted mid-epoch). ``optimizer_state``: ``Optimizer.state_dict()``, with
    whole vectors (a sharded server's are gathered first)."""
    saved = optimizer_state
    arrays = {
        "format": np.asarray(FORMAT),
        "config": np.asarray(json.dumps(config.to_dict())),
        "epoch": np.asarray(epoch, dtype=np.int64),
        "epoch_step": np.asarray(epoch_step, dtype=np.int64),
        "sizes": np.asarray(model.sizes, dtype=np.int64),
        "params": model.params,
        **{STATE_PREFIX + name: buffer for name, buffer in saved["state"].items()},
        "iterations": np.asarray(saved["iterations"], dtype=np.int64),
        **{f"strategy.{name}": np.asarray(value) for name, value in strategy_state.items()},
    }
    atomic_write(Path(path), lambda stream: np.savez(stream, **arrays))


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, validated; UsageError if it is missing, corrupt or foreign.

    Returns ``path``, ``config`` (dict), ``epoch``, ``epoch_step``, ``sizes`` (list), ``params``
    (a 1-D array of one floating dtype), ``optimizer`` (its state buffers by name, like
    ``params``), ``iterations`` and ``strategy`` (the counters by name).
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
    arrays = _check_format_and_names(arrays, where)
    config = _config(arrays["config"], where)
    sizes = check_sizes(arrays["sizes"], where, DAMAGED)
    state = _optimizer_state(arrays, config, where)
    params = _flat_vectors(arrays, ["params", *state], sizes, config, where)
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
        "optimizer": {name.removeprefix(STATE_PREFIX): arrays[name] for name in state},
        "iterations": _count(arrays["iterations"], "iterations", where),
        "strategy": _strategy_counters(arrays, where),
    }


def _refuse(where: str, field: str, problem: str) -> UsageError:
    return UsageError(f"{where}: {field!r} {problem}; {DAMAGED}")


def _check_format_and_names(arrays: dict, where: str) -> dict:
    """The arrays of a checkpoint of a known format, a first-format one's velocity renamed
    as the second format names optimizer state."""
    fmt = arrays.get("format")
    if fmt is None or fmt.ndim != 0 or fmt.dtype.kind != "U" or str(fmt) not in (FORMAT, FORMAT_1):
        found = "missing" if fmt is None else shown(fmt)
        raise UsageError(f"{where} is not a distnn checkpoint (format {found}, expected "
                         f"{FORMAT!r})")
    if str(fmt) == FORMAT_1 and "velocity" in arrays:
        arrays = {STATE_PREFIX + "velocity" if name == "velocity" else name: array
                  for name, array in arrays.items()}
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}; {DAMAGED}")
    allowed = {"format", *REQUIRED, *OPTIONAL, *(f"strategy.{name}" for name in STRATEGY_COUNTERS)}
    unexpected = sorted(name for name in set(arrays) - allowed
                        if not name.startswith(STATE_PREFIX))
    if unexpected:
        raise UsageError(f"{where}: unexpected array(s) {', '.join(map(repr, unexpected))}; "
                         f"{DAMAGED}")
    return arrays


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
        if name not in FIELD_INFO:
            raise _refuse(where, "config", f"holds the unknown field {name!r}")
        if not has_type(name, value):
            raise _refuse(where, "config", f"field {name!r} must be "
                          f"{FIELD_INFO[name].kind.__name__}, got {value!r:.80}")
    return config


def _count(array: np.ndarray, name: str, where: str) -> int:
    if array.ndim != 0 or array.dtype.kind not in "iu" or int(array) < 0:
        raise _refuse(where, name, f"must be a non-negative integer, got {shown(array)}")
    return int(array)


def _optimizer_state(arrays: dict, config: dict, where: str) -> list[str]:
    """The names of the state arrays, which must be those the config's optimizer keeps."""
    from distnn.optim import REGISTRY

    optimizer = config.get("optimizer", "sgd")
    if optimizer not in REGISTRY:
        raise _refuse(where, "config", f"names the unknown optimizer {optimizer!r:.40}")
    expected = sorted(STATE_PREFIX + name for name in REGISTRY[optimizer].state_names)
    found = sorted(name for name in arrays if name.startswith(STATE_PREFIX))
    if found != expected:
        raise _refuse(where, "optimizer", f"state holds {found or 'nothing'}, but {optimizer} "
                      f"keeps {expected}")
    return found


def _flat_vectors(arrays: dict, names: list[str], sizes: list[int], config: dict,
                  where: str) -> np.ndarray:
    """``params`` and the optimizer state: 1-D, finite, of one floating dtype (the
    config's), with as many elements as ``sizes`` implies. Returns ``params``."""
    n_params = parameter_count(sizes)
    dtype = arrays["params"].dtype
    if dtype not in FLOAT_DTYPES:
        raise _refuse(where, "params", f"is {dtype}; parameters are float32 or float64")
    if config.get("dtype") not in (None, str(dtype)):
        raise _refuse(where, "params", f"is {dtype}, but the config says {config['dtype']}")
    for name in names:
        array = arrays[name]
        if array.dtype != dtype:
            raise _refuse(where, name, f"is {array.dtype}, 'params' is {dtype}")
        if array.shape != (n_params,):
            raise _refuse(where, name, f"has shape {array.shape}, but sizes {sizes} need "
                          f"({n_params},)")
        if not np.all(np.isfinite(array)):
            raise _refuse(where, name, "holds NaN or infinite values")
    check_memory(model_memory_bytes(sizes, 1, dtype.itemsize, len(names) - 1),
                 f"resuming the {sizes} model of {where}", DAMAGED)
    return arrays["params"]


def _strategy_counters(arrays: dict, where: str) -> dict:
    """The strategy's counters by name: non-negative integers of the expected dimensions,
    adding up as they do when written."""
    counters = {}
    kinds = {(0,): "a non-negative integer", (1,): "a 1-D array of non-negative integers",
             (1, 2): "a 1-D array of non-negative integers (2-D: a row per server)"}
    for name, ndims in STRATEGY_COUNTERS.items():
        array = arrays.get(f"strategy.{name}")
        if array is None:
            continue
        if array.ndim not in ndims or array.dtype.kind not in "iu" or np.any(array < 0):
            raise _refuse(where, f"strategy.{name}", f"must be {kinds[ndims]}, got {shown(array)}")
        counters[name] = array
    if counters and set(counters) != set(STRATEGY_COUNTERS):
        missing = sorted(set(STRATEGY_COUNTERS) - set(counters))
        raise _refuse(where, f"strategy.{missing[0]}", "is missing (the other counters are there)")
    if counters:
        updates = int(counters["updates"])
        applied = int(np.sum(counters["applied"], dtype=np.uint64))
        per_server = [int(row.sum(dtype=np.uint64))
                      for row in np.atleast_2d(counters["staleness_counts"])]
        if applied != updates or any(total != updates for total in per_server):
            staleness = per_server[0] if counters["staleness_counts"].ndim == 1 else per_server
            raise _refuse(where, "strategy.updates", f"does not add up: updates {updates}, "
                          f"sum of applied {applied}, sum of staleness_counts {staleness}")
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
    counters = checkpoint["strategy"]
    if config.strategy == "ps-async" and counters:
        workers, servers = counters["applied"].size, len(np.atleast_2d(counters["staleness_counts"]))
        if servers != config.servers:
            raise UsageError(f"--resume: {path} holds the counters of {servers} ps-async "
                             f"server(s), but its config says --servers {config.servers}; "
                             f"{DAMAGED}")
        if workers != processes - config.servers:
            raise UsageError(f"--resume: {path} was written by {workers} ps-async workers; "
                             f"resume with --procs {workers + servers}, not {processes}")
    n_train = dataset.x_train.shape[0]
    batch = config.batch_size if config.batch_size and config.batch_size < n_train else n_train
    steps = -(-n_train // batch)
    step = checkpoint.get("epoch_step", 0)
    if step >= steps or (step and config.strategy == "ps-async"):
        raise UsageError(f"--resume: {path}: 'epoch_step' is {step}, but an epoch here has "
                         f"{steps} steps{' and ps-async stops only between epochs' if step else ''}; "
                         f"{DAMAGED}")
