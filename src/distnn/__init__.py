"""distnn: data-parallel neural-network training on MPI.

Kept free of imports on purpose: ``distnn.cli`` must be able to pin BLAS threads
before NumPy is loaded.
"""

__version__ = "0.1.0"
