"""What every recorded figure carries besides its numbers: the machine, the load it ran
under, the code it measured, and when. A figure without these cannot be compared with a
rerun, so every benchmark that writes ``--json`` stamps its result with ``stamp``."""

import atexit
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


OUTPUTS = ("README.md", "benchmarks/figures.json")    # what figures.py itself rewrites


def commit() -> str:
    """The measured code: the commit, marked ``+changes`` when the tree differs from it
    (the figures' own outputs aside: a run that regenerates several figures rewrites them
    as it goes, and the code it measures has not changed)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){path}" for path in OUTPUTS)], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def cross_core_us() -> float | None:
    """The host's state: µs for one core to copy 814 KB that the other has just written
    (``cross_core.py``), about 24 in this VM's fast periods and 77 in its slow ones, which
    slow every parallel run alike (they come and go with the host, for seconds to
    minutes); None where it cannot be measured."""
    from distnn.errors import UsageError
    from distnn.launch import find_mpiexec

    try:
        command = [find_mpiexec(), "-bind-to", "core", "-n", "2", sys.executable,
                   str(Path(__file__).parent / "cross_core.py"), "--repeats", "100"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    except (UsageError, OSError, subprocess.TimeoutExpired):     # no MPI here, or it hung
        return None
    found = re.search(r"other core ([0-9.]+) µs", done.stdout)
    return float(found.group(1)) if found else None


class Stamp:
    """Open at the start of a measurement, ``close`` at its end: the load on both sides."""

    def __init__(self, command: str):
        self.command = command
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.load_start = os.getloadavg()[0]

    def close(self) -> dict:
        return {"command": self.command,
                "date": self.started.strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{cpu_model()}, {os.cpu_count()} cores",
                "load": [round(self.load_start, 2), round(os.getloadavg()[0], 2)],
                "commit": commit()}


def describe(stamp: dict) -> str:
    """One line for a README table: how, where and under what load it was measured."""
    start, end = stamp["load"]
    host = ""
    if stamp.get("cross_core_us") and None not in stamp["cross_core_us"]:
        before, after = stamp["cross_core_us"]
        host = (f"; one core copied 814 KB the other had written in {before:.0f} µs at the "
                f"start, {after:.0f} µs at the end (`cross_core.py`: ~24 fast, ~77 slow)")
    return (f"Measured with `{stamp['command']}` on {stamp['date']} ({stamp['machine']}; "
            f"load average {start:.1f} at the start, {end:.1f} at the end{host}; commit "
            f"{stamp['commit']}).")


def write(path: str | Path | None, result: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")


def scratch(prefix: str) -> Path:
    """A folder for a benchmark's runs, removed when the benchmark exits, also on an error
    or Ctrl-C: a run directory per variant and round adds up to tens of MB a run."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work
