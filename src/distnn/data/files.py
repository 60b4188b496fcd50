"""Reading arrays from CSV and NPY/NPZ files, with errors that name the file at fault.

Every file is checked to be a regular file before it is opened (a FIFO would block, a
device never end), and its memory is estimated before it is read: from its size for a
CSV, from each member's ``.npy`` header for an ``.npz`` (a compressed member may inflate
to far more than the file's size).
"""

import math
import os
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from distnn.errors import UsageError
from distnn.guards import check_memory, local_processes, regular_file

# Bytes of memory per byte of CSV text: the text, its lines, and the float64 values
# (a field such as "1," is 2 bytes of text and 8 of float64).
CSV_MEMORY_PER_BYTE = 6


def path_exists(path: Path, role: str) -> bool:
    """``path.exists()``, with a path the system cannot even look up (too long, a NUL)
    reported as a UsageError that starts with ``role``."""
    try:
        return Path(path).exists()
    except (OSError, ValueError) as exc:
        shown = str(path) if len(str(path)) <= 100 else str(path)[:100] + "..."
        raise UsageError(f"{role} {shown}: not a usable path ({getattr(exc, 'strerror', None) or exc})"
                         ) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path, role: str = "file") -> np.ndarray:
    """A numeric CSV as a 2-D float64 array; a first line that is not numeric is a header."""
    return read_csv_with_header(path, role)[0]


def _read_text(path: Path, role: str) -> str:
    """The whole of a UTF-8 text file (a byte-order mark is dropped, not read as data)."""
    path = regular_file(path, role)
    size = os.stat(path).st_size
    check_memory(CSV_MEMORY_PER_BYTE * size, f"{role} {path} ({size:,} bytes of CSV)",
                 "give a binary .npy file (memory-mapped, read by the rows each rank uses)",
                 processes=local_processes())
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a UTF-8 text CSV file ({exc.reason} at byte "
                         f"{exc.start}); save it as UTF-8") from exc


def read_csv_with_header(path: Path, role: str = "file") -> tuple[np.ndarray, list[str] | None]:
    """The numeric rows of a CSV, and its header's column names (None without a header)."""
    rows = [line for line in _read_text(path, role).splitlines() if line.strip()]
    header = None
    if rows and not all(_is_number(field) for field in rows[0].split(",")):
        header = [name.strip() for name in rows[0].split(",")]
        rows = rows[1:]
    if not rows:
        raise UsageError(f"{path} holds no data rows")
    width = len(rows[0].split(","))
    if header is not None and len(header) != width:
        raise UsageError(f"{path}: the header has {len(header)} columns, the first data row "
                         f"has {width}")
    values = np.empty((len(rows), width), dtype=np.float64)
    for number, row in enumerate(rows):
        fields = row.split(",")
        if len(fields) != width:
            raise UsageError(
                f"{path}: data row {number + 1} has {len(fields)} columns, the first has {width}"
            )
        try:
            values[number] = [float(field) for field in fields]
        except ValueError as exc:
            raise UsageError(f"{path}: data row {number + 1} is not numeric: {row[:80]!r}; distnn "
                             "reads comma-separated numbers, with labels as integers 0..K-1 "
                             "(encode text labels first, e.g. with numpy.unique(y, "
                             "return_inverse=True), or use distnn.estimator.MLPClassifier, "
                             "which takes any labels)") from exc
    return values, header


def _is_index(text: str) -> bool:
    """``3`` or ``-1``: ASCII digits only (``str.isdigit`` also accepts ``²``, which ``int``
    refuses)."""
    digits = text[1:] if text.startswith("-") else text
    return digits.isascii() and digits.isdigit()


LABEL_NAMES = ("label", "labels", "target", "class", "y")


def split_label_column(path: Path, label_column: str, role: str = "--dataset") -> dict[str, np.ndarray]:
    """``X_train``/``y_train`` from one CSV whose ``label_column`` holds the labels.

    ``label_column`` is ``first``, ``last``, a 0-based index, a header name, or ``auto``:
    the one header column named like a label (``LABEL_NAMES``), else the last column, so a
    file whose header says ``target`` first is not trained on its last feature.
    """
    values, header = read_csv_with_header(path, role)
    width = values.shape[1]
    if width < 2:
        raise UsageError(f"{path} has {width} column; a label column needs at least one feature")
    if label_column == "auto":
        named = [name for name in (header or []) if name.strip().lower() in LABEL_NAMES]
        label_column = named[0] if len(named) == 1 else "last"
    if label_column in ("first", "last"):
        column = 0 if label_column == "first" else width - 1
    elif _is_index(label_column):
        column = int(label_column)
        if not -width <= column < width:
            raise UsageError(f"--label-column {label_column}: {path} has {width} columns")
        column %= width
    elif header is not None and label_column in header:
        column = header.index(label_column)
    else:
        names = f"; its header has {', '.join(header)}" if header else " and no header"
        raise UsageError(f"--label-column {label_column!r} is not a column of {path}{names}")
    return {"X_train": np.delete(values, column, axis=1), "y_train": values[:, column]}


def read_npy(path: Path, role: str = "file") -> np.ndarray:
    """A ``.npy`` array, memory-mapped so a rank only touches the rows it uses."""
    path = regular_file(path, role)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path} is not a readable .npy file: {exc}") from exc


def npz_member_shapes(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every member of an ``.npz``, read from the ``.npy`` headers only.

    Raises ValueError (or a zipfile error) for a member that is not an ``.npy`` array:
    ``np.load`` would hand such a member back as bytes, inflated without bound.
    """
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"member {info.filename!r} is not an .npy array")
            with archive.open(info) as member:
                version = npy_format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = npy_format.read_array_header_2_0(member)
            shapes[info.filename[:-4]] = (shape, dtype)
    return shapes


def read_npz(path: Path, error: str = "{path} is not a readable .npz file: {exc}",
             role: str = "file") -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, never unpickling; any failure becomes a UsageError
    worded by ``error`` (a format string with ``{path}`` and ``{exc}``). The memory the
    arrays need is checked from their headers before any is inflated."""
    path = regular_file(path, role)
    try:
        shapes = npz_member_shapes(path)
    except Exception as exc:  # zipfile, OS and format errors all mean "not readable"
        raise UsageError(error.format(path=path, exc=exc)) from exc
    need = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())
    described = ", ".join(f"{name} {shape} {dtype}" for name, (shape, dtype) in shapes.items())
    check_memory(need, f"{path} ({described[:200]})",
                 "check the file, or store large arrays as .npy files (memory-mapped)",
                 processes=local_processes())
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile, OS and format errors all mean "not readable"
        raise UsageError(error.format(path=path, exc=exc)) from exc


def read_array(path: Path, role: str = "file") -> np.ndarray:
    if path.suffix == ".npy":
        return read_npy(path, role)
    return read_csv(path, role)
