"""What distnn runs on: versions, the MPI library and launcher, BLAS and its threads."""

import os
import platform
import sys

from distnn import __version__

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def describe(comm=None) -> dict:
    import mpi4py
    import numpy as np
    from mpi4py import MPI

    comm = comm or MPI.COMM_WORLD
    config = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return {
        "distnn": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "numpy": np.__version__,
        "mpi4py": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "ranks": comm.Get_size(),
        "cores_available": len(os.sched_getaffinity(0)),
        "blas": f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip(),
        "blas_threads": {name: os.environ.get(name, "unset") for name in THREAD_VARS},
        "kernels": _kernels(),
    }


def _kernels() -> str:
    """What ``--kernels auto`` gives here: the fused kernels with numba, or NumPy."""
    from distnn.nn import kernels

    version = kernels.numba_version()
    if version is None:
        return f"numpy ({kernels.fused_error()}; for fused: {kernels.INSTALL})"
    return f"fused available (numba {version}); auto uses them"


def format_info(info: dict, mpiexec: str) -> str:
    rows = {**info, "mpiexec": mpiexec}
    width = max(len(key) for key in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows.items())
