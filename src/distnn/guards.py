"""Guards for inputs that would hang or exhaust the machine: special files and memory.

A FIFO blocks its reader until someone writes, and a device such as ``/dev/zero`` never
ends, so every file a user names is checked to be a regular file before it is opened. A
size that needs more memory than the machine has is refused with an estimate, before any
allocation, instead of ending in a ``MemoryError`` (or the kernel's OOM killer) mid-run.
"""

import os
import stat
from pathlib import Path

from distnn.errors import UsageError

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
                         f"{format_bytes(available)} of memory available here; {remedy}")
