"""Guards for inputs that would hang or exhaust the machine: special files and memory.

A FIFO blocks its reader until someone writes, and a device such as ``/dev/zero`` never
ends, so every file a user names is checked to be a regular file before it is opened. A
size that needs more memory than the machine has is refused with an estimate, before any
allocation, instead of ending in a ``MemoryError`` (or the kernel's OOM killer) mid-run.
Output paths are checked the same way before any work, and written atomically.
"""

import os
import stat
from pathlib import Path

from distnn.atomic import atomic_write
from distnn.errors import UsageError
from distnn.nn.mlp import CHUNK_ROWS

MEMINFO = Path("/proc/meminfo")
MEMORY_SHARE = 0.9   # of the available memory one job may plan to use


def regular_file(path, role: str) -> Path:
    """``path`` if it is a regular file (or a link to one); otherwise a UsageError that
    starts with ``role`` (e.g. ``"--dataset"`` or ``"--config"``)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{role} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{role} {path}: cannot read it ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{role} {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{role} {path} is not a regular file (a FIFO, socket or device "
                         "would block or never end); give a file")
    return path


def available_memory_bytes() -> int | None:
    """Memory the kernel could give without swapping (Linux ``MemAvailable``), or the
    physical memory elsewhere; None when neither is known."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_memory(need_bytes: float, what: str, remedy: str, processes: int = 1) -> None:
    """Refuse ``what`` if ``processes`` copies of ``need_bytes`` exceed what this machine
    has available; the message gives the estimate and ``remedy``."""
    available = available_memory_bytes()
    total = need_bytes * processes
    if available is not None and total > MEMORY_SHARE * available:
        copies = f" ({processes} processes × {format_bytes(need_bytes)})" if processes > 1 else ""
        raise UsageError(f"{what} needs about {format_bytes(total)}{copies}, more than the "
                         f"{format_bytes(MEMORY_SHARE * available)} a run may plan to use "
                         f"({MEMORY_SHARE:.0%} of the {format_bytes(available)} available "
                         f"here); {remedy}")


VIRTUAL_FILE_SYSTEMS = (Path("/proc"), Path("/sys"))   # the kernel's views, never a place for output


def output_file(path, role: str, inputs=()) -> Path:
    """``path`` if a file can be written there; otherwise a UsageError that starts with
    ``role`` (e.g. ``"--output"``) and names the path.

    Checked before any work is done, so that a bad ``--output`` costs nothing: an existing
    directory or special file, a missing or unwritable folder, the kernel's virtual file
    systems, and any of ``inputs`` (the files the command reads: writing over one would
    destroy what the output was made from).
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{role} {path} is a directory; give a file name inside it")
    if path.exists() and not path.is_file():
        raise UsageError(f"{role} {path} is not a regular file (a FIFO, socket or device); "
                         "give a file name")
    folder = path.parent.resolve()
    if any(folder == root or root in folder.parents for root in VIRTUAL_FILE_SYSTEMS):
        raise UsageError(f"{role} {path} is under {folder}, a virtual file system of the "
                         "kernel; give a path on a disk")
    if not folder.is_dir():
        raise UsageError(f"{role} {path}: the folder {path.parent} does not exist; create it "
                         "first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{role} {path}: the folder {path.parent} is not writable")
    for source in inputs:
        if path.resolve() == Path(source).resolve():
            raise UsageError(f"{role} {path} is also an input of this command; writing it "
                             "would destroy it: give another file name")
    return path


def write_output(path: Path, role: str, write) -> None:
    """``atomic_write(path, write)``, with an OSError (disk full, quota, permissions that
    changed) reported as a UsageError naming ``role`` and the path; nothing half-written
    remains either way."""
    try:
        atomic_write(Path(path), write)
    except OSError as exc:
        raise UsageError(f"{role} {path}: cannot write it ({exc.strerror or exc})") from None


LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")   # MPICH, Open MPI
FLAT_VECTORS = 3         # parameters, gradients, the chunk-gradient sum (+ the optimizer's)
ACTIVATION_BUFFERS = 3   # per layer: activations, their gradients, the ReLU mask


def local_processes(default: int = 1) -> int:
    """How many ranks of this job share this machine, as the MPI launcher says (each holds
    its own copy of the data and the model); ``default`` when no launcher says so."""
    for name in LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return default


def model_memory_bytes(sizes, batch_rows: int, itemsize: int, optimizer_vectors: int = 1,
                       layer_buffers: int = 0) -> int:
    """Bytes one rank needs for an MLP with layer widths ``sizes`` (features, hidden...,
    classes) trained on batches of ``batch_rows``: ``FLAT_VECTORS`` flat vectors of all
    parameters plus the optimizer's (``Optimizer.memory_vectors``), and
    ``ACTIVATION_BUFFERS`` buffers of one chunk's rows per layer, plus ``layer_buffers``
    (an activation's derivative, dropout's masks).

    Python integers throughout, so that an absurd width gives an absurd estimate rather
    than an overflow."""
    sizes = [int(size) for size in sizes]
    n_params = sum((fan_in + 1) * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))
    rows = min(int(batch_rows), CHUNK_ROWS)
    activations = rows * sum(sizes[1:]) * (ACTIVATION_BUFFERS + layer_buffers)
    return ((FLAT_VECTORS + optimizer_vectors) * n_params + activations) * itemsize


SPECIAL_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


def refuse_virtual_directory(path: Path, flag: str) -> None:
    """Refuse a directory under /proc, /sys or /dev: they hold no real files."""
    resolved = path.resolve()
    for root in SPECIAL_ROOTS:
        if resolved == root or root in resolved.parents:
            raise UsageError(f"{flag} {path} is under {root}, which holds no real files; give "
                             "a directory on a disk")


def check_creatable(path: Path, flag: str, what: str = "the directory") -> None:
    """The nearest existing ancestor of ``path`` must be a directory this user may write."""
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: cannot create {what}, {ancestor} is a file; "
                         f"give another {flag}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot create {what}, {ancestor} is not "
                         f"writable by this user; give another {flag}")


def new_output_directory(path, flag: str) -> Path:
    """``path`` if it can become a new output folder: absent (its nearest existing parent a
    writable directory) or an empty directory, on a real file system; a UsageError naming
    ``flag`` otherwise. Creates nothing: the caller creates it once all else is checked."""
    path = Path(path)
    try:
        refuse_virtual_directory(path, flag)
        if not path.exists():
            check_creatable(path, flag)
        elif not path.is_dir():
            raise UsageError(f"{flag} {path} exists and is not a folder; give a new folder")
        elif any(path.iterdir()):
            raise UsageError(f"{flag} {path} is not empty; give a new or empty folder")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from None
    return path
