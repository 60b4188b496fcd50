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
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a text CSV file ({exc.reason})") from exc
    rows = [line for line in lines if line.strip()]
    if rows and not all(_is_number(field) for field in rows[0].split(",")):
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
    return values


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, memory-mapped so a rank only touches the rows it uses."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable .npy file: {exc}") from exc


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except Exception as exc:  # zipfile, OS and format errors all mean "not an npz"
        raise UsageError(f"{path} is not a readable .npz file: {exc}") from exc


def read_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return read_npy(path)
    return read_csv(path)
