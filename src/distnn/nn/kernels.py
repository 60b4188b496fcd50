"""Which compute path an MLP takes: one NumPy call per operation, or fused numba kernels.

``numpy``  one NumPy call (one pass over memory) per operation; always available.
``fused``  numba kernels, from the optional extra ``distnn[fused]``:
           ``fused-rows`` for a narrow one-hidden-layer model (few inputs, few classes: the
           original's 2-64-3), one pass over the rows doing forward, softmax cross-entropy
           and backward with a block of rows in registers (``nn/rows.py``);
           ``fused-blas`` for every other shape, the GEMMs left to NumPy's BLAS and
           everything around them fused (``nn/fused.py``).
``auto``   ``fused`` where numba imports and the run is long enough to repay numba's
           start-up (``AUTO_MIN_FLOPS``), ``numpy`` otherwise.

The choice by shape comes from ``benchmarks/kernels.py`` (the README gives its table).
Nothing here imports numba: a NumPy-only install never pays for it.
"""

import os
import stat
import tempfile
from pathlib import Path

KERNELS = ("numpy", "fused", "auto")
PATHS = ("numpy", "fused-rows", "fused-blas")
INSTALL = 'pip install "distnn[fused]" (numba >= 0.64)'
NOT_PLAIN = "the fused kernels compute ReLU networks without dropout or label smoothing"


def computes(activation: str, dropout: float, label_smoothing: float) -> bool:
    """Whether the fused kernels compute a model with these layer options (``plain``)."""
    return activation == "relu" and not dropout and not label_smoothing

# The rows kernel unrolls its inputs and classes into registers: past these it spills, and
# the BLAS path is faster (benchmarks/kernels.py).
ROWS_MAX_INPUTS = 8
ROWS_MAX_CLASSES = 6
# Importing numba and loading the compiled kernels costs about a second per process
# (benchmarks/kernels.py); a run of fewer flops than this (about 2 s of NumPy compute)
# would not win it back, and auto leaves it on NumPy.
AUTO_MIN_FLOPS = 1e10

_fused_error: str | None = None


class KernelsUnavailable(RuntimeError):
    """``--kernels fused`` was asked for where numba cannot be imported."""


def fused_error() -> str | None:
    """Why the fused kernels cannot be used here (None when they can). Imports numba once."""
    global _fused_error
    if _fused_error is None:
        prepare_numba_cache()
        try:
            import distnn.nn.fused  # noqa: F401
        except ImportError as exc:
            _fused_error = f"numba is not usable here ({exc})"
        else:
            _fused_error = ""
    return _fused_error or None


def numba_version() -> str | None:
    if fused_error() is not None:
        return None
    import numba

    return numba.__version__


def fused_path(sizes) -> str:
    """``fused-rows`` or ``fused-blas`` for a model of layer widths ``sizes``."""
    if (len(sizes) == 3 and sizes[0] <= ROWS_MAX_INPUTS and sizes[-1] <= ROWS_MAX_CLASSES):
        return "fused-rows"
    return "fused-blas"


def training_flops(sizes, samples: int) -> float:
    """Forward and backward over ``samples`` rows: about 6 flops per weight per row."""
    return 6.0 * sum(a * b for a, b in zip(sizes, sizes[1:])) * samples


def resolve(requested: str, sizes, available: bool | None = None,
            samples: float | None = None, plain: bool = True) -> str:
    """The path (one of ``PATHS``) that ``requested`` (one of ``KERNELS``, or a path
    itself) gives for ``sizes``. ``available`` overrides the local check (all ranks must
    agree on it); ``samples``, the rows the whole run will train on, lets ``auto`` keep a
    short run on NumPy (None: no such limit); ``plain`` is False for models the fused
    kernels do not compute (an activation other than ReLU, dropout)."""
    if requested not in KERNELS + PATHS:
        raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {requested!r}")
    if requested == "numpy":
        return "numpy"
    if not plain:
        if requested == "auto":
            return "numpy"
        raise ValueError(f"{NOT_PLAIN}; use --kernels numpy or auto")
    if requested in PATHS:
        return requested
    if (requested == "auto" and samples is not None
            and training_flops(sizes, samples) < AUTO_MIN_FLOPS):
        return "numpy"
    if available is None:
        available = fused_error() is None
    if not available:
        if requested == "fused":
            raise KernelsUnavailable(f"--kernels fused needs numba: {fused_error() or 'missing'}; "
                                     f"install it with {INSTALL}, or use --kernels numpy")
        return "numpy"
    return fused_path(sizes)


def _private_directory(path: Path) -> bool:
    """Create ``path`` (mode 0700) if needed; True if it is a directory this user owns
    that nobody else may write: generated kernels are imported from it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and os.access(path, os.W_OK))


def cache_directory() -> Path | None:
    """Where compiled kernels (and the generated rows kernels' source) are kept across
    runs: ``$NUMBA_CACHE_DIR``, else ``~/.cache/distnn``, else a private folder in the
    temporary directory. None when none is writable (kernels then compile every run)."""
    candidates = []
    if os.environ.get("NUMBA_CACHE_DIR"):
        candidates.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates += [Path(xdg) / "distnn", Path(tempfile.gettempdir()) / f"distnn-{os.getuid()}"]
    for path in candidates:
        if _private_directory(path):
            return path
    return None


def prepare_numba_cache() -> None:
    """Point numba's on-disk cache at a writable folder before numba is imported, when
    the installed package's own folder is read-only (a system-wide install): numba
    refuses ``cache=True`` where it has nowhere to write."""
    if os.environ.get("NUMBA_CACHE_DIR") or os.access(Path(__file__).parent, os.W_OK):
        return
    directory = cache_directory()
    if directory is not None:
        os.environ["NUMBA_CACHE_DIR"] = str(directory / "numba")
