"""``model.npz``: a trained model's arrays and metadata, written atomically, loaded without pickles.

A model file is user input like any other: ``load_model`` checks every array's name,
shape, dtype and values against the metadata before anything is allocated, so a damaged
or tampered file ends in one UsageError naming the file and the field, never in a
traceback or in predictions made with NaN or integer weights.
"""

from pathlib import Path

import numpy as np

from distnn.atomic import atomic_write
from distnn.config import MAX_WIDTH  # far above any real layer; fan_in * fan_out stays exact
from distnn.data.files import read_npz
from distnn.errors import UsageError
from distnn.guards import check_memory, model_memory_bytes, regular_file
from distnn.nn import MLP
from distnn.nn.layers import ACTIVATIONS as LAYER_ACTIVATIONS
from distnn.nn.mlp import CHUNK_ROWS

MODEL_FORMAT = 1
ACTIVATIONS = tuple(LAYER_ACTIVATIONS)
OUTPUTS = ("softmax",)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Every array of a model file besides the layers' weights and biases; new metadata (e.g.
# input standardisation statistics) is added here, and anything else is refused.
METADATA = ("format", "sizes", "activation", "output")
# Optional, together or not at all: input standardisation, (x - shift) * scale per feature.
INPUT_TRANSFORM = ("input.shift", "input.scale")
MAX_LAYERS = 1024
DAMAGED = "the file is damaged or was not written by distnn; train again or use another copy"


def layer_names(n_layers: int) -> list[str]:
    """``layers.{i}.weight`` and ``layers.{i}.bias`` for every layer, in order."""
    return [f"layers.{i}.{part}" for i in range(n_layers) for part in ("weight", "bias")]


def parameter_count(sizes: list[int]) -> int:
    """Weights and biases of an MLP with layer widths ``sizes``."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))


def check_sizes(sizes: np.ndarray, where: str, remedy: str = DAMAGED) -> list[int]:
    """The layer widths stored in ``sizes``, if it is a 1-D integer array of at least two
    widths in [1, MAX_WIDTH] and at most MAX_LAYERS layers; otherwise a UsageError that
    starts with ``where`` (the file) and names the field."""
    def refuse(problem: str):
        return UsageError(f"{where}: 'sizes' {problem}; {remedy}")

    if sizes.dtype.kind not in "iu" or sizes.ndim != 1:
        raise refuse(f"must be a 1-D integer array of layer widths, got a {sizes.ndim}-D "
                     f"{sizes.dtype} array")
    if not 2 <= sizes.size <= MAX_LAYERS + 1:
        raise refuse(f"must list between 2 and {MAX_LAYERS + 1} layer widths, got {sizes.size}")
    widths = [int(width) for width in sizes]
    if any(not 1 <= width <= MAX_WIDTH for width in widths):
        raise refuse(f"holds a width outside [1, {MAX_WIDTH}]: {widths}")
    return widths


def shown(array: np.ndarray) -> str:
    """A stored value for an error message: a scalar's value, only the shape of an array."""
    if array.ndim == 0:
        return f"{array.tolist()!r} ({array.dtype})"
    return f"a {array.dtype} array of shape {array.shape}"


def save_model(path: Path, model: MLP) -> None:
    """Layer arrays plus metadata, loadable with ``np.load(path, allow_pickle=False)``."""
    arrays = model.state_arrays()
    arrays["sizes"] = np.asarray(model.sizes, dtype=np.int64)
    arrays["activation"] = np.asarray(model.activation)
    arrays["output"] = np.asarray(OUTPUTS[0])
    arrays["format"] = np.asarray(MODEL_FORMAT, dtype=np.int64)
    atomic_write(Path(path), lambda stream: np.savez(stream, **arrays))


def load_model(path) -> MLP:
    """The MLP stored by ``save_model``, every array checked; never unpickles.

    Raises UsageError naming the file and the field at fault when anything is missing,
    extra, of another shape or dtype, not finite, or would not fit in memory.
    """
    path = regular_file(path, "model")
    where = f"model {path}"
    arrays = read_npz(path, "model {path} is not a readable distnn model: {exc}", role="model")
    _check_format(arrays, where)
    sizes = check_sizes(arrays["sizes"], where)
    _check_names(arrays, sizes, where)
    dtype = _check_layers(arrays, sizes, where)
    for name, allowed in (("activation", ACTIVATIONS), ("output", OUTPUTS)):
        _check_choice(arrays[name], name, allowed, where)
    check_memory(model_memory_bytes(sizes, CHUNK_ROWS, dtype.itemsize),
                 f"the {sizes} model in {path}", DAMAGED)
    model = MLP(sizes, dtype=dtype, activation=str(arrays["activation"]))
    model.load_state_arrays(arrays)
    return model


def _check_format(arrays: dict, where: str) -> None:
    fmt = arrays.get("format")
    if fmt is None or "sizes" not in arrays:
        raise UsageError(f"{where} is not a distnn model (no 'format' or 'sizes' array); "
                         "give a model.npz written by distnn train")
    if fmt.ndim != 0 or fmt.dtype.kind not in "iu" or int(fmt) != MODEL_FORMAT:
        raise UsageError(f"{where}: 'format' is {shown(fmt)}, this version "
                         f"reads format {MODEL_FORMAT}; {DAMAGED}")


def _check_names(arrays: dict, sizes: list[int], where: str) -> None:
    """Exactly the metadata and one weight and bias per layer: no more, no fewer."""
    expected = [*METADATA, *layer_names(len(sizes) - 1)]
    missing = [name for name in expected if name not in arrays]
    if any(name in arrays for name in INPUT_TRANSFORM):
        expected += INPUT_TRANSFORM
        missing += [name for name in INPUT_TRANSFORM if name not in arrays]
    if missing:
        raise UsageError(f"{where}: {missing[0]!r} is missing (sizes {sizes} need "
                         f"{len(sizes) - 1} layers); {DAMAGED}")
    unexpected = sorted(set(arrays) - set(expected))
    if unexpected:
        raise UsageError(f"{where}: unexpected array(s) {', '.join(map(repr, unexpected))} "
                         f"(a model file holds {', '.join(METADATA)}, layers.* and optionally "
                         f"{' and '.join(INPUT_TRANSFORM)}); {DAMAGED}")


def _check_layers(arrays: dict, sizes: list[int], where: str) -> np.dtype:
    """The one floating dtype of every layer array, after checking shapes and values."""
    dtype = arrays["layers.0.weight"].dtype
    if dtype not in FLOAT_DTYPES:
        raise UsageError(f"{where}: 'layers.0.weight' is {dtype}; a model's arrays are "
                         f"float32 or float64; {DAMAGED}")
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        for part, shape in (("weight", (fan_in, fan_out)), ("bias", (fan_out,))):
            name, array = f"layers.{i}.{part}", arrays[f"layers.{i}.{part}"]
            if array.shape != shape:
                raise UsageError(f"{where}: {name!r} has shape {array.shape}, but sizes {sizes} "
                                 f"need {shape}; {DAMAGED}")
            if array.dtype != dtype:
                raise UsageError(f"{where}: {name!r} is {array.dtype}, 'layers.0.weight' is "
                                 f"{dtype}; all layers share one dtype; {DAMAGED}")
            if not np.all(np.isfinite(array)):
                raise UsageError(f"{where}: {name!r} holds NaN or infinite values; {DAMAGED}")
    for name in INPUT_TRANSFORM:
        array = arrays.get(name)
        if array is None:
            continue
        if array.shape != (sizes[0],) or array.dtype != dtype:
            raise UsageError(f"{where}: {name!r} is {shown(array)}, but the model needs "
                             f"({sizes[0]},) {dtype}; {DAMAGED}")
        if not np.all(np.isfinite(array)) or (name == "input.scale" and np.any(array <= 0)):
            raise UsageError(f"{where}: {name!r} holds values that are not finite"
                             f"{' and positive' if name == 'input.scale' else ''}; {DAMAGED}")
    return dtype


def _check_choice(array: np.ndarray, name: str, allowed: tuple[str, ...], where: str) -> None:
    value = array.tolist() if array.ndim == 0 else None
    if array.dtype.kind != "U" or value not in allowed:
        raise UsageError(f"{where}: {name!r} must be one of {', '.join(allowed)}, got "
                         f"{shown(array)}; {DAMAGED}")
