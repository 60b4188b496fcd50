"""The run directory: config.json, metrics.jsonl, model.npz, result.json, checkpoint.npz.

A run owns its directory. Before the ranks agree that a run can start, ``check_target``
only looks (nothing is created, so a refused run leaves nothing behind); afterwards rank 0
``claim``s it: creates it, takes an exclusive lock on it for the life of the run (a
second run given the same ``--out`` is refused, not interleaved), and removes what an
earlier, killed run may have left half-written. Every file but the append-only metrics
log is written to a temporary name and renamed, so a crash never leaves a torn file.
"""

import fcntl
import json
import os
import time
from pathlib import Path

from distnn.atomic import write_json
from distnn.errors import UsageError
from distnn.guards import check_creatable, refuse_virtual_directory
from distnn.launch import note_run_directory, remove_temporary_files
from distnn.metrics_log import METRICS_NAME, keep_through_epoch
from distnn.model_file import save_model
from distnn.nn import MLP

# What distnn itself writes into a run directory: the only files --overwrite replaces.
RUN_FILES = frozenset({"config.json", METRICS_NAME, "model.npz", "result.json", "checkpoint.npz",
                       "loss.png", "accuracy.png", "model.onnx", "timeline.json"})


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def check_target(path: Path | None, *, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that cannot become this run's directory; creates nothing."""
    if path is None:
        check_creatable(Path("runs"), "--out", "the run directory")
        return
    path = Path(path)
    refuse_virtual_directory(path, "--out")
    if not path.exists():
        check_creatable(path, "--out", "the run directory")
        return
    if not path.is_dir():
        raise UsageError(f"--out {path} exists and is not a directory; give a new directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path}: the directory is not writable by this user")
    entries = sorted(entry.name for entry in path.iterdir() if not _is_temporary(entry.name))
    if not entries or resume:
        return
    if not overwrite:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UsageError(f"--out {path} is not empty ({shown}); choose a new directory, "
                         f"continue that run with --resume {path}, or replace it with --overwrite")
    foreign = [name for name in entries if name not in RUN_FILES]
    if foreign:
        raise UsageError(f"--overwrite replaces a distnn run directory only, and {path} holds "
                         f"other files ({', '.join(foreign[:5])}); choose another --out")
    if "config.json" not in entries:
        raise UsageError(f"--overwrite replaces a distnn run directory only, and {path} holds no "
                         "config.json, so it is not one; choose another --out")


def default_path(strategy: str) -> Path:
    """``runs/<time>-<strategy>``; ``claim`` adds ``-2``, ``-3``... if another run took it."""
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{strategy}"


class RunDirectory:
    """Rank 0's handle on a run directory.

    ``resume_epoch`` (when continuing a run) keeps the metrics up to that epoch;
    ``overwrite`` replaces the distnn files of an earlier run; ``path`` None picks
    ``default_path(strategy)``.
    """

    def __init__(self, path: Path | None, strategy: str, resume_epoch: int | None = None,
                 overwrite: bool = False):
        self.requested, self.strategy = path, strategy
        self.resume_epoch, self.overwrite = resume_epoch, overwrite
        self.path: Path | None = None
        self._lock: int | None = None

    def claim(self) -> Path:
        """Create (or reopen) the directory and lock it for this run; returns its path."""
        if self.requested is None:
            self.path, created = self._claim_default()
        else:
            self.path = Path(self.requested)
            try:
                self.path.mkdir(parents=True)
                created = True       # by this run: a refused claim removes it again
            except FileExistsError:
                created = False
            except OSError as exc:
                raise UsageError(f"--out {self.path}: cannot create the run directory "
                                 f"({exc.strerror})") from exc
        try:
            self._take_lock()
            self._prepare_contents()
        except BaseException:
            # Only a run that holds the lock may take back a directory it created: without
            # the lock, another run owns it now (and may not have written into it yet).
            if created and self._lock is not None:
                _remove_empty(self.path)
            self.release()
            raise
        note_run_directory(self.path)
        return self.path

    def _claim_default(self) -> tuple[Path, bool]:
        base = default_path(self.strategy)
        for attempt in range(1, 1000):
            path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
            try:
                path.mkdir(parents=True)
            except FileExistsError:
                continue
            except OSError as exc:
                raise UsageError(f"cannot create the run directory {path} ({exc.strerror}); "
                                 "give --out") from exc
            return path, True
        raise UsageError(f"{base}: a thousand runs started this second; give --out")

    def _take_lock(self) -> None:
        """An exclusive lock on the directory itself, held until the process ends, so no
        file is left behind to mark it."""
        descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise UsageError(f"--out {self.path} is in use by another distnn run; wait for it to "
                             "end or choose another --out") from None
        self._lock = descriptor

    def _prepare_contents(self) -> None:
        remove_temporary_files(self.path)
        metrics = self.path / METRICS_NAME
        if self.resume_epoch is not None:
            if metrics.exists():
                keep_through_epoch(metrics, self.resume_epoch)
            else:
                metrics.write_text("")
            return
        entries = [entry for entry in self.path.iterdir()]
        if entries and not self.overwrite:
            raise UsageError(f"--out {self.path} is not empty (another run wrote there "
                             "meanwhile); choose a new directory")
        for entry in entries:
            if entry.name in RUN_FILES:
                entry.unlink()
        metrics.write_text("")

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def write_config(self, config) -> None:
        write_json(self.path / "config.json", config.to_dict())

    def append_metrics(self, record: dict) -> None:
        with open(self.path / METRICS_NAME, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def save_model(self, model: MLP) -> Path:
        path = self.path / "model.npz"
        save_model(path, model)
        return path

    def write_result(self, result: dict) -> None:
        write_json(self.path / "result.json", result)


def _remove_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
