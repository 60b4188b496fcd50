"""Rank 1 cannot import numba (simulated): what does each rank agree to run?

Usage: kernels_agree.py OUT   (each rank writes OUT.<rank>: its auto choice, then the
refusal of --kernels fused)
"""

import sys

from mpi4py import MPI

from distnn.errors import UsageError
from distnn.nn import kernels
from distnn.train import agreed_kernels

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
if rank == 1:
    kernels._fused_error = "numba is not usable here (simulated)"
lines = [f"auto {agreed_kernels(comm, 'auto', [2, 64, 3])}"]
try:
    agreed_kernels(comm, "fused", [2, 64, 3])
except UsageError as error:
    lines.append(f"fused refused: {error}")
with open(f"{sys.argv[1]}.{rank}", "w") as out:
    out.write("\n".join(lines) + "\n")
