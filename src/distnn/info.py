"""What distnn runs on: versions, the MPI library and launcher, where ``--procs`` places
ranks, BLAS and its threads."""

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
        "mpi_library": MPI.Get_library_version().replace("\0", "").splitlines()[0].strip(),
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


def launch_rows(launcher, procs: int, hosts, mpi_library: str) -> dict:
    """What ``--procs procs`` (on ``hosts``) would start: the launcher, its command, which
    ranks each host runs and how they are bound; a warning when the launcher does not
    belong to the MPI library mpi4py loads."""
    import shlex

    from distnn.launchers import HYDRA, OPEN_MPI, local_cores

    launch = launcher.launch(procs, hosts, forward=())
    if hosts is None:
        placement = f"{procs} ranks on this machine ({local_cores()} cores)"
    else:
        placement = "; ".join(f"{host}: {_ranks(ranks)}" for host, ranks in
                              hosts.placement(procs))
    if launch.oversubscribed:
        placement += ", more ranks than slots: ranks share cores"
    rows = {
        "mpiexec": launcher.path,
        "launcher": f"{launcher.name} ({launcher.version or 'no --version output'})",
        "launch": f"{shlex.join(launch.command)} python -m mpi4py -m distnn ...",
        "placement": placement,
        "binding": launcher.binding(),
    }
    expected = {HYDRA: "Open MPI", OPEN_MPI: "MPICH"}.get(launcher.kind)
    if expected is not None and mpi_library.startswith(expected):
        rows["warning"] = (f"mpi4py loads {mpi_library.split(',')[0]}, but this mpiexec is "
                           f"{launcher.name}: --procs would start single-process jobs; use the "
                           "matching mpiexec (set DISTNN_MPIEXEC) or the venv of that MPI")
    for index, note in enumerate(launch.notes):
        rows[f"note{index + 1 if len(launch.notes) > 1 else ''}"] = note.removeprefix("note: ")
    return rows


def _ranks(ranks: range) -> str:
    """'rank 0' or 'ranks 0-3'."""
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"


def format_info(info: dict, launch: dict) -> str:
    rows = {**info, **launch}
    width = max(len(key) for key in rows)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in rows.items())
