"""Reading arrays from CSV and NPY/NPZ files, with errors that name the file at fault."""

from pathlib import Path

import numpy as np

from distnn.errors import UsageError


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> np.ndarray:
    """A numeric CSV as a 2-D float64 array; a first line that is not numeric is a header."""
    return read_csv_with_header(path)[0]


def read_csv_with_header(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The numeric rows of a CSV, and its header's column names (None without a header)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a text CSV file ({exc.reason})") from exc
    rows = [line for line in lines if line.strip()]
    header = None
    if rows and not all(_is_number(field) for field in rows[0].split(",")):
        header = [name.strip() for name in rows[0].split(",")]
        rows = rows[1:]
    if not rows:
        raise UsageError(f"{path} holds no data rows")
    width = len(rows[0].split(","))
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
            raise UsageError(f"{path}: data row {number + 1} is not numeric: {row[:80]!r}") from exc
    return values, header


def split_label_column(path: Path, label_column: str) -> dict[str, np.ndarray]:
    """``X_train``/``y_train`` from one CSV whose ``label_column`` holds the labels.

    ``label_column`` is ``first``, ``last``, a 0-based index, or a header name.
    """
    values, header = read_csv_with_header(path)
    width = values.shape[1]
    if width < 2:
        raise UsageError(f"{path} has {width} column; a label column needs at least one feature")
    if label_column in ("first", "last"):
        column = 0 if label_column == "first" else width - 1
    elif label_column.lstrip("-").isdigit():
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


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, memory-mapped so a rank only touches the rows it uses."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable .npy file: {exc}") from exc


def read_npz(path: Path, error: str = "{path} is not a readable .npz file: {exc}"
             ) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, never unpickling; any failure becomes a UsageError
    worded by ``error`` (a format string with ``{path}`` and ``{exc}``)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile, OS and format errors all mean "not readable"
        raise UsageError(error.format(path=path, exc=exc)) from exc


def read_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return read_npy(path)
    return read_csv(path)
