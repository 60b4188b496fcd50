"""How much memory a rank holds: its peak, and the resident part of memory-mapped data.

``.npy`` training files are memory-mapped (``data/files.py``): their pages count towards
a rank's resident memory only once it reads them, so the resident size of those mappings
is exactly the data that rank has touched. Linux reports both figures; elsewhere the
mapped figure is None.
"""

import resource
import sys
from pathlib import Path

SMAPS = Path("/proc/self/smaps")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux and macOS differ in units)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def mapped_npy_rss_mb() -> float | None:
    """Resident MiB of this process's mappings of ``.npy`` files (its data pages read)."""
    try:
        text = SMAPS.read_text()
    except OSError:
        return None
    total_kb, in_npy = 0, False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):         # a mapping's header: address perms ... path
            in_npy = len(fields) >= 6 and fields[-1].endswith(".npy")
        elif in_npy and fields[0] == "Rss:":
            total_kb += int(fields[1])
    return total_kb / 1024
