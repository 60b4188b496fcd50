"""``distnn.fit`` in a plain mpi4py program (no ``-m mpi4py``) where rank 1 raises in its
third optimizer step: the job must end at once with rank 1's traceback, not hang."""

import numpy as np
from mpi4py import MPI

import distnn
from distnn.optim import SGD

original = SGD.apply
calls = {"n": 0}


def apply(self, *args, **kwargs):
    calls["n"] += 1
    if MPI.COMM_WORLD.Get_rank() == 1 and calls["n"] == 3:
        raise RuntimeError("injected failure in step 3")
    return original(self, *args, **kwargs)


SGD.apply = apply
rng = np.random.default_rng(0)
x, y = rng.normal(size=(200, 4)), rng.integers(0, 3, size=200)
distnn.fit(x, y, comm=MPI.COMM_WORLD, strategy="allreduce", epochs=1000, batch_size=20)
