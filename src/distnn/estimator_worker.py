"""The ranks of ``MLPClassifier(procs=N).fit``: ``python -m mpi4py -m distnn.estimator_worker DIR``.

``DIR``, made by the estimator, holds ``X.npy``, ``y.npy`` (and ``X_val.npy``, ``y_val.npy``
with a validation split) in the training dtype and ``options.json``. Every rank
memory-maps the arrays (one copy in the page cache per node) and calls ``distnn.fit`` on
``COMM_WORLD``; rank 0 writes ``model.npz`` and ``result.json`` (the history, the
not-learning warnings, or the error every rank raised alike) into ``DIR``. A crash on any
rank aborts the job (``distnn.fit``'s policy), which the estimator reports.
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np

OPTIONS_FILE = "options.json"
MODEL_FILE = "model.npz"
RESULT_FILE = "result.json"
ARRAYS = ("X", "y", "X_val", "y_val")


def main(argv: list[str]) -> int:
    from mpi4py import MPI

    from distnn.api import LearningWarning, fit
    from distnn.atomic import atomic_write
    from distnn.errors import UsageError
    from distnn.launch import note_launcher_residue
    from distnn.model_file import save_model
    from distnn.parallel.shared_memory import unlink_job_segments
    from distnn.train import TrainingDiverged

    directory = Path(argv[0])
    comm = MPI.COMM_WORLD
    unlink_job_segments(comm)
    if comm.Get_rank() == 0:
        note_launcher_residue()
    options = json.loads((directory / OPTIONS_FILE).read_text())
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r")
              for name in ARRAYS if (directory / f"{name}.npy").exists()}
    validation = (arrays["X_val"], arrays["y_val"]) if "X_val" in arrays else None
    result: dict = {}
    model = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LearningWarning)
        try:
            model, result["history"] = fit(arrays["X"], arrays["y"], comm=comm,
                                           validation_data=validation, **options)
        except UsageError as exc:     # raised by every rank alike: reported, not aborted
            result = {"error": str(exc), "diverged": isinstance(exc, TrainingDiverged)}
    result["warnings"] = [str(note.message) for note in caught
                          if issubclass(note.category, LearningWarning)]
    if comm.Get_rank() == 0:
        if model is not None:
            save_model(directory / MODEL_FILE, model)
        text = json.dumps(result).encode()
        atomic_write(directory / RESULT_FILE, lambda stream: stream.write(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
