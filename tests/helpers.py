"""Launching distnn (serial or under mpiexec) from tests, always with a timeout."""

import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MPI_TIMEOUT_S = 60

# The equivalence tests' workloads: float64 spiral, an uneven batch and a full one, on the
# fused kernels where numba is installed (auto would keep runs this short on NumPy;
# tests/test_kernels.py covers both paths).
KERNELS = ["--kernels", "fused"] if importlib.util.find_spec("numba") else []
SPIRAL = ["--samples-per-class", "100", "--dtype", "float64", "--lr", "0.5", "--eval-every", "5",
          *KERNELS]
WORKLOADS = {
    "shuffled": [*SPIRAL, "--epochs", "12", "--batch-size", "37"],   # 37 does not divide 300
    "full": [*SPIRAL, "--epochs", "30", "--batch-size", "full"],
}
HERE = Path(__file__).parent


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


@functools.cache
def launcher():
    """The installed MPI's launcher (Hydra or Open MPI), as ``--procs`` finds it."""
    from distnn.launch import find_launcher

    return find_launcher()


def mpiexec_prefix(procs: int) -> list[str]:
    """``mpiexec ... -n procs`` with the flags ``--procs`` gives the installed launcher
    (binding; for Open MPI also root, oversubscription and its one-sided component)."""
    return launcher().launch(procs, forward=()).command


def child_env() -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    return env


def run(command: list[str], timeout: float = MPI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run ``command``; a hang fails the test instead of blocking the suite."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=child_env())


def distnn(args: list[str], procs: int = 1, timeout: float = MPI_TIMEOUT_S):
    """``distnn`` with ``args``, under ``mpiexec -n procs`` when procs > 1."""
    command = [sys.executable, "-m", "distnn", *args]
    if procs > 1:
        command = [*mpiexec_prefix(procs), sys.executable, "-m", "mpi4py", "-m", "distnn", *args]
    return run(command, timeout)


def mpi_script(name: str, procs: int, args: list[str] = (), timeout: float = MPI_TIMEOUT_S):
    command = [sys.executable, str(HERE / "mpi_scripts" / name), *args]
    if procs > 1:
        command = [*mpiexec_prefix(procs), *command]
    return run(command, timeout)


def train_params(out: Path, args: list[str], procs: int = 1) -> np.ndarray:
    """Train into ``out`` and return the final parameters as one flat vector."""
    done = distnn(["train", "--quiet", "--out", str(out), *args], procs=procs)
    assert done.returncode == 0, done.stderr
    return saved_params(out)


def saved_params(out: Path) -> np.ndarray:
    """The parameters in the run directory ``out``'s ``model.npz``, as one flat vector."""
    with np.load(out / "model.npz", allow_pickle=False) as model:
        layers = sorted({name.rsplit(".", 1)[0] for name in model.files if name.startswith("layers.")})
        return np.concatenate([np.concatenate([model[f"{layer}.weight"].ravel(),
                                               model[f"{layer}.bias"]]) for layer in layers])


def read_result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def max_relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def wait_for(path: Path, timeout: float = 60) -> None:
    """Until ``path`` exists (a run's first checkpoint, say); fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
