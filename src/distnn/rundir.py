"""The run directory: config.json, metrics.jsonl, model.npz, result.json.

Only rank 0 creates one. Every file but the append-only metrics log is written to a
temporary name and renamed, so a crash never leaves a half-written file behind.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from distnn.data.files import read_npz
from distnn.errors import UsageError
from distnn.nn import MLP

MODEL_FORMAT = 1


def atomic_write(path: Path, write) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it over ``path``."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda stream: stream.write(text.encode()))


def check_writable(directory: Path) -> None:
    """Fail early, before any training, if ``directory`` cannot be created or written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {directory}: cannot create the run directory: {exc.strerror}") from exc
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--out {directory}: not a writable directory")


class RunDirectory:
    """Rank 0's handle on a run directory; ``resume_epoch`` keeps the metrics up to it."""

    def __init__(self, path: Path, resume_epoch: int | None = None):
        self.path = Path(path)
        check_writable(self.path)
        self.metrics_path = self.path / "metrics.jsonl"
        kept = ""
        if resume_epoch is not None and self.metrics_path.exists():
            lines = self.metrics_path.read_text().splitlines()
            kept = "".join(line + "\n" for line in lines
                           if line.strip() and json.loads(line)["epoch"] <= resume_epoch)
        self.metrics_path.write_text(kept)

    def write_config(self, config) -> None:
        write_json(self.path / "config.json", config.to_dict())

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def save_model(self, model: MLP) -> Path:
        path = self.path / "model.npz"
        save_model(path, model)
        return path

    def write_result(self, result: dict) -> None:
        write_json(self.path / "result.json", result)


def save_model(path: Path, model: MLP) -> None:
    """Layer arrays plus metadata, loadable with ``np.load(path, allow_pickle=False)``."""
    arrays = model.state_arrays()
    arrays["sizes"] = np.asarray(model.sizes, dtype=np.int64)
    arrays["activation"] = np.asarray("relu")
    arrays["output"] = np.asarray("softmax")
    arrays["format"] = np.asarray(MODEL_FORMAT, dtype=np.int64)
    atomic_write(Path(path), lambda stream: np.savez(stream, **arrays))


def load_model(path) -> MLP:
    """The MLP stored by ``save_model``; never unpickles."""
    path = Path(path)
    arrays = read_npz(path, "{path} is not a readable distnn model: {exc}")
    if "sizes" not in arrays or "layers.0.weight" not in arrays:
        raise UsageError(f"{path} is not a distnn model (no 'sizes' or 'layers.0.weight' array)")
    sizes = [int(s) for s in arrays["sizes"]]
    model = MLP(sizes, dtype=arrays["layers.0.weight"].dtype)
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        weight, bias = arrays.get(f"layers.{i}.weight"), arrays.get(f"layers.{i}.bias")
        if weight is None or bias is None or weight.shape != (fan_in, fan_out) or bias.shape != (fan_out,):
            raise UsageError(f"{path}: layer {i} does not match sizes {sizes}")
    model.load_state_arrays(arrays)
    return model
