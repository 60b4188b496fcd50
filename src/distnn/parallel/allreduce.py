"""Decentralised synchronous SGD: every process is a worker, no server.

Per step, each rank computes the gradient sum of its slice, one ``Allreduce`` on the
flat buffer adds them everywhere, and every rank divides by the global batch size and
applies the same update, so all replicas stay identical (checked by hash at the end).

The ``Allreduce`` is blocking even when ranks outnumber cores: every rank computes, so
there is no idle rank whose core polite waiting could give back, and a multi-round
collective pays the sleep latency once per round. Measured with
``benchmarks/wait_policy.py --strategy allreduce`` (784-256-10, batch 128, 2 cores):
blocking 156-220 vs polite 143-150 steps/s at 3 ranks, 187-215 vs 129-131 at 4 ranks.
"""

from mpi4py import MPI

from distnn.data.sampler import batch_length
from distnn.parallel.comm import wait_politely
from distnn.parallel.strategy import Strategy


class Allreduce(Strategy):
    name = "allreduce"

    def __init__(self, comm, model, optimizer, data, timer, polite: bool = False):
        super().__init__(comm, model, optimizer, data, timer)
        self.polite = polite
        self._message = [model.grads, self._type]

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
