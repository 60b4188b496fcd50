"""``distnn.fit`` in a plain mpi4py program (no ``-m mpi4py``) where rank 1 raises in its
third optimizer step: the job must end at once with rank 1's traceback, not hang."""

import numpy as np
from injection import fail_in_update
from mpi4py import MPI

import distnn

fail_in_update(rank=1, call=3, message="injected failure in step 3")
rng = np.random.default_rng(0)
x, y = rng.normal(size=(200, 4)), rng.integers(0, 3, size=200)
distnn.fit(x, y, comm=MPI.COMM_WORLD, strategy="allreduce", epochs=1000, batch_size=20)
