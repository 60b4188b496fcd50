"""IDX files (the MNIST family's format), gzipped or not, validated field by field.

Header: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian uint32; the data follows in big-endian order.
"""

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from distnn.data.files import path_exists
from distnn.errors import UsageError
from distnn.guards import check_memory, local_processes, regular_file

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: Path) -> np.ndarray:
    """The array of an IDX file, plain or gzipped, read no further than its header promises.

    A gzipped file is inflated in bounded steps: the header first, then at most the data
    size it promises plus one byte (to tell a longer file), so a few kilobytes that
    inflate to gigabytes (a gzip bomb) cost no more memory than an honest file. A promise
    larger than the memory here is refused before anything is read.
    """
    path = regular_file(path, "--data-dir")
    try:
        with open(path, "rb") as raw:
            if raw.read(2) == GZIP_MAGIC:
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw) as stream:
                    return _read_stream(path, stream, size=None)
            raw.seek(0)
            return _read_stream(path, raw, size=os.fstat(raw.fileno()).st_size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UsageError(f"{path} is a damaged gzip file: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_stream(path: Path, stream, size: int | None) -> np.ndarray:
    """Parse an IDX stream; ``size`` is the file's byte count when known (not gzipped)."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise UsageError(f"{path} is not an IDX file (bad magic number {magic.hex() or 'empty'})")
    type_code, ndim = magic[2], magic[3]
    if type_code not in IDX_TYPES:
        raise UsageError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    dims = stream.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise UsageError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    header = 4 + 4 * ndim
    if size is not None and size - header != expected:
        raise UsageError(f"{path}: IDX data is {size - header} bytes, its header "
                         f"{shape} promises {expected} (truncated or corrupt file)")
    converted = math.prod(shape) * np.dtype(np.float32).itemsize   # images become float32
    check_memory(expected + converted, f"{path} (IDX {shape} {dtype.str[1:]}, and as float32)",
                 "check that the file is not damaged", processes=local_processes())
    data = stream.read(expected + 1)
    if len(data) != expected:
        found = f"{len(data)}" if len(data) <= expected else f"more than {expected}"
        raise UsageError(f"{path}: IDX data is {found} bytes, its header "
                         f"{shape} promises {expected} (truncated or corrupt file)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


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
        present = [c for c in candidates if path_exists(c, "--data-dir")]
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
            check_memory(array.size * 4, f"{path} as float32 images", "check the file",
                         processes=local_processes())
            array = array.reshape(array.shape[0], math.prod(array.shape[1:])).astype(np.float32)
            array /= 255.0
        elif array.ndim != 1:
            raise UsageError(f"{path}: labels must have 1 dimension, got shape {array.shape}")
        arrays[split] = array
    return arrays
