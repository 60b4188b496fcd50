"""``distnn.fit`` from a plain mpi4py program (run without ``-m mpi4py``), int32 labels.

Every rank trains with allreduce on the same arrays; rank 0 then trains serially on
``COMM_SELF`` and prints one JSON line: the two models' largest difference in
probabilities, the history, and the errors that bad options and one rank's bad data
raised (the same on every rank, after the agreement step).
"""

import json

import numpy as np
from mpi4py import MPI

import distnn
from distnn.api import OptionError
from distnn.data.spiral import spiral_data

comm = MPI.COMM_WORLD
x, y = spiral_data(60, 3, np.random.RandomState(0))
labels = y.astype(np.int32)
options = dict(hidden=(16,), epochs=15, batch_size=40, lr=0.2, dtype="float64", eval_every=5)
model, history = distnn.fit(x, labels, comm=comm, strategy="allreduce",
                            validation_data=(x[:30], labels[:30]), **options)

errors = []
for bad in (dict(lr=-1.0), dict(strategy="ps-async", max_staleness=-2)):
    try:
        distnn.fit(x, labels, comm=comm, **{**options, **bad})
    except OptionError as exc:
        errors.append(str(exc))
poisoned = x.copy()
if comm.Get_rank() == comm.Get_size() - 1:
    poisoned[-1, 0] = np.nan            # the last rank checks the last rows
try:
    distnn.fit(poisoned, labels, comm=comm, strategy="allreduce", **options)
except ValueError as exc:
    errors.append(str(exc))
everyone = comm.gather(errors, root=0)

if comm.Get_rank() == 0:
    serial, _ = distnn.fit(x, labels, comm=MPI.COMM_SELF, **options)
    difference = np.max(np.abs(model.predict_proba(x) - serial.predict_proba(x)))
    print(json.dumps({"difference": float(difference), "history": history,
                      "errors": errors, "same_errors": all(e == errors for e in everyone)}))
