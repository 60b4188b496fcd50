"""A finished run as the commands after training see it: its model and its config.

``evaluate``, ``predict``, ``export`` and ``plot`` take a run directory or a model inside
one. The run's ``config.json`` then supplies the data set and how its held-out rows were
drawn (seed, test fraction, label column), so that a model trained on a file is scored on
the rows it was *not* trained on; flags given on the command line still win.
"""

import json
from pathlib import Path

from distnn.config import DATA_FIELDS
from distnn.errors import UsageError
from distnn.guards import regular_file

MODEL_NAME = "model.npz"
CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = 1 << 20


def locate_model(path: str) -> tuple[Path, Path | None]:
    """``(model file, run directory or None)`` for a run directory or a model file."""
    given = Path(path)
    if given.is_dir():
        model = given / MODEL_NAME
        if not model.exists():
            raise UsageError(f"{given} is a directory without {MODEL_NAME}: give a run directory "
                             "of a finished or interrupted run, or a model file")
        return model, given
    regular_file(given, "model")
    return given, given.parent if (given.parent / CONFIG_NAME).exists() else None


def locate_run(path: str) -> Path:
    """The run directory of ``path``: the directory itself, or the one holding a model file."""
    given = Path(path)
    return given if given.is_dir() else given.parent


def data_settings(run_dir: Path | None) -> dict:
    """The data fields of the run's ``config.json`` (empty without a run directory)."""
    if run_dir is None or not (run_dir / CONFIG_NAME).exists():
        return {}
    path = regular_file(run_dir / CONFIG_NAME, "run config")
    try:
        text = path.read_bytes()[:MAX_CONFIG_BYTES + 1]
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError("larger than any config distnn writes")
        config = json.loads(text.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"run config {path} is damaged ({exc}); give the data flags "
                         "(--dataset, --seed, ...) and a model file instead") from None
    if not isinstance(config, dict):
        raise UsageError(f"run config {path} is not a JSON object; give the data flags and a "
                         "model file instead")
    return {name: config[name] for name in DATA_FIELDS
            if name != "dtype" and config.get(name) is not None}
