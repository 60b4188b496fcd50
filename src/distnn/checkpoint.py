"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint is one ``.npz`` (never unpickled): parameters, optimizer state, the epoch
reached (the sampler's position: sample order is a function of seed and epoch), the
strategy's counters and the config as JSON. Rank 0 writes it to a temporary file and
renames it, so the file on disk is always a complete checkpoint; the other ranks wait at
a barrier, so nobody runs ahead of a checkpoint that might still fail.
"""

import json
from pathlib import Path

import numpy as np

from distnn.atomic import atomic_write
from distnn.data.files import read_npz
from distnn.errors import UsageError

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT = "distnn-checkpoint-1"


def save_checkpoint(path: Path, *, config, epoch: int, model, optimizer, strategy_state: dict,
                    ) -> None:
    state = optimizer.state_dict()
    arrays = {
        "format": np.asarray(FORMAT),
        "config": np.asarray(json.dumps(config.to_dict())),
        "epoch": np.asarray(epoch, dtype=np.int64),
        "sizes": np.asarray(model.sizes, dtype=np.int64),
        "params": model.params,
        "velocity": state["velocity"],
        "iterations": np.asarray(state["iterations"], dtype=np.int64),
        **{f"strategy.{name}": np.asarray(value) for name, value in strategy_state.items()},
    }
    atomic_write(Path(path), lambda stream: np.savez(stream, **arrays))


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, validated; UsageError if it is missing, corrupt or foreign."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise UsageError(f"--resume: no checkpoint at {path}")
    arrays = read_npz(path, "--resume: {path} is corrupt or not a checkpoint ({exc})")
    if str(arrays.get("format", "")) != FORMAT:
        raise UsageError(f"--resume: {path} is not a distnn checkpoint (format "
                         f"{str(arrays.get('format', 'missing'))!r}, expected {FORMAT!r})")
    required = ("config", "epoch", "sizes", "params", "velocity", "iterations")
    missing = [name for name in required if name not in arrays]
    if missing:
        raise UsageError(f"--resume: {path} lacks {', '.join(missing)}")
    if arrays["params"].shape != arrays["velocity"].shape:
        raise UsageError(f"--resume: {path} has parameters and velocity of different shapes")
    try:
        config = json.loads(str(arrays["config"]))
    except json.JSONDecodeError as exc:
        raise UsageError(f"--resume: {path} holds an unreadable config ({exc})") from exc
    return {
        "path": path,
        "config": config,
        "epoch": int(arrays["epoch"]),
        "sizes": [int(s) for s in arrays["sizes"]],
        "params": arrays["params"],
        "velocity": arrays["velocity"],
        "iterations": int(arrays["iterations"]),
        "strategy": {name.split(".", 1)[1]: value for name, value in arrays.items()
                     if name.startswith("strategy.")},
    }
