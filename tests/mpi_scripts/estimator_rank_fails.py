"""``distnn.estimator_worker`` with rank 1 raising in its second optimizer step: what a
crash in ``MLPClassifier(procs=2).fit`` looks like (the test puts this module in the
worker's place through a ``DISTNN_MPIEXEC`` wrapper)."""

import sys

from mpi4py import MPI

from distnn import estimator_worker
from distnn.optim import SGD

original = SGD.apply
calls = {"n": 0}


def apply(self, *args, **kwargs):
    calls["n"] += 1
    if MPI.COMM_WORLD.Get_rank() == 1 and calls["n"] == 2:
        raise RuntimeError("injected failure in the estimator's job")
    return original(self, *args, **kwargs)


SGD.apply = apply
sys.exit(estimator_worker.main(sys.argv[1:]))
