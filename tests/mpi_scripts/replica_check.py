"""check_replicas_agree on real ranks: prints OK, or the error when one rank is perturbed.

Usage: replica_check.py [perturb]
"""

import sys

from mpi4py import MPI

from distnn.nn import MLP
from distnn.train import check_replicas_agree

comm = MPI.COMM_WORLD
model = MLP([2, 8, 3], dtype="float64")
if len(sys.argv) > 1 and comm.Get_rank() == 1:
    model.params[3] += 1e-15
try:
    check_replicas_agree(comm, model)
    outcome = "OK"
except RuntimeError as exc:
    outcome = str(exc)
if comm.Get_rank() == 0:
    print(outcome)
