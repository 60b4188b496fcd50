"""Decentralised synchronous SGD: every process is a worker, no server.

Per step, each rank computes the gradient sum of its slice, one ``Allreduce`` on the
flat buffer adds them everywhere, and every rank divides by the global batch size and
applies the same update, so all replicas stay identical (checked by hash at the end).
When the node has more ranks than cores, ranks wait in ``Iallreduce`` politely instead
of spinning on a core another rank needs.
"""

from mpi4py import MPI

from distnn.data.sampler import batch_length
from distnn.parallel.comm import mpi_type, oversubscribed, wait_politely
from distnn.parallel.strategy import Strategy


class Allreduce(Strategy):
    name = "allreduce"

    def __init__(self, comm, model, optimizer, data, timer, polite: bool | None = None):
        super().__init__(comm, model, optimizer, data, timer)
        self.polite = oversubscribed(comm) if polite is None else polite
        self._message = [model.grads, mpi_type(model.dtype)]

    def step(self, batch) -> None:
        self.local_gradient_sum(batch)
        self.timer.lap("compute")
        if self.polite:
            wait_politely(self.comm.Iallreduce(MPI.IN_PLACE, self._message, op=MPI.SUM))
        else:
            self.comm.Allreduce(MPI.IN_PLACE, self._message, op=MPI.SUM)
        self.timer.lap("comm")
        self.model.grads /= batch_length(batch)
        self.optimizer.step(self.model.grads)
        self.timer.lap("compute")
