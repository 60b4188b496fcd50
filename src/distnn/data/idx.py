"""IDX files (the MNIST family's format), gzipped or not, validated field by field.

Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32; the data follows in big-endian order.
"""

import gzip
from pathlib import Path

import numpy as np

from distnn.errors import UsageError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path) -> np.ndarray:
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (EOFError, gzip.BadGzipFile) as exc:
        raise UsageError(f"{path} is a damaged gzip file: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UsageError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_TYPES:
        raise UsageError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UsageError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UsageError(f"{path}: IDX data is {len(raw) - header} bytes, its header "
                         f"{shape} promises {expected} (truncated or corrupt file)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


IDX_FILES = {
    "X_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "X_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def find_idx_files(directory: Path, name: str, how_to_get: str) -> dict[str, Path]:
    """The four standard files in ``directory``, each plain or ``.gz``."""
    found, missing = {}, []
    for split, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        present = [c for c in candidates if c.exists()]
        if present:
            found[split] = present[0]
        else:
            missing.append(stem)
    if missing:
        raise UsageError(f"{name} not found in --data-dir {directory}: missing "
                         f"{', '.join(missing)} (or .gz). {how_to_get}")
    return found


def load_idx_images(directory: Path, name: str, how_to_get: str) -> dict[str, np.ndarray]:
    """Images flattened to (n, rows*cols) and scaled to [0, 1]; labels as integers."""
    arrays = {}
    for split, path in find_idx_files(directory, name, how_to_get).items():
        array = read_idx(path)
        if split.startswith("X"):
            if array.ndim != 3:
                raise UsageError(f"{path}: images must have 3 dimensions, got shape {array.shape}")
            array = array.reshape(array.shape[0], -1).astype(np.float32) / 255.0
        elif array.ndim != 1:
            raise UsageError(f"{path}: labels must have 1 dimension, got shape {array.shape}")
        arrays[split] = array
    return arrays
