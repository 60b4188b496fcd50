"""The run directory: config.json, metrics.jsonl, model.npz, result.json.

Only rank 0 creates one. Every file but the append-only metrics log is written to a
temporary name and renamed, so a crash never leaves a half-written file behind.
"""

import json
import os
from pathlib import Path

from distnn.atomic import write_json
from distnn.errors import UsageError
from distnn.model_file import save_model
from distnn.nn import MLP


def check_writable(directory: Path) -> None:
    """Fail early, before any training, if ``directory`` cannot be created or written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {directory}: cannot create the run directory: {exc.strerror}") from exc
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--out {directory}: not a writable directory")


class RunDirectory:
    """Rank 0's handle on a run directory; ``resume_epoch`` keeps the metrics up to it."""

    def __init__(self, path: Path, resume_epoch: int | None = None):
        self.path = Path(path)
        check_writable(self.path)
        self.metrics_path = self.path / "metrics.jsonl"
        kept = ""
        if resume_epoch is not None and self.metrics_path.exists():
            lines = self.metrics_path.read_text().splitlines()
            kept = "".join(line + "\n" for line in lines
                           if line.strip() and json.loads(line)["epoch"] <= resume_epoch)
        self.metrics_path.write_text(kept)

    def write_config(self, config) -> None:
        write_json(self.path / "config.json", config.to_dict())

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def save_model(self, model: MLP) -> Path:
        path = self.path / "model.npz"
        save_model(path, model)
        return path

    def write_result(self, result: dict) -> None:
        write_json(self.path / "result.json", result)
