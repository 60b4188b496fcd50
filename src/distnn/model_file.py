"""``model.npz``: a trained model's arrays and metadata, written atomically, loaded without pickles."""

from pathlib import Path

import numpy as np

from distnn.atomic import atomic_write
from distnn.data.files import read_npz
from distnn.errors import UsageError
from distnn.nn import MLP

MODEL_FORMAT = 1


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
