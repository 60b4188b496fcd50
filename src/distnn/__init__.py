"""distnn: data-parallel neural-network training on MPI.

``distnn.fit`` (``distnn.api``) trains from your own mpi4py program; it is imported on
first use, so that ``import distnn`` loads neither NumPy nor MPI: ``distnn.cli`` must be
able to pin BLAS threads before NumPy is loaded, and so can a program that imports
distnn first. Under an MPI launcher with several ranks, importing distnn sets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` to 1 where they are
unset: the ranks already fill the cores.
"""

import os as _os

from distnn.launch import MPI_ENV_SIZE as _MPI_ENV_SIZE
from distnn.launch import env_int as _env_int
from distnn.launch import pin_blas_threads as _pin_blas_threads

__version__ = "0.1.0"
__all__ = ["fit", "__version__"]

if (_env_int(_MPI_ENV_SIZE) or 1) > 1:
    _pin_blas_threads(_os.environ)


def __getattr__(name: str):
    if name == "fit":
        from distnn.api import fit

        return fit
    raise AttributeError(f"module 'distnn' has no attribute {name!r}")
