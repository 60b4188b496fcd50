"""Decentralised synchronous SGD: every process is a worker, no server.

Per step, each rank computes the gradient sum of its slice and prepares its part of the
update (``optimizer.prepare``); the parts are added and every replica applies the same
update, so all replicas stay identical (checked by hash at the end). Two ways to add them:

- ranks on one node (the default when possible): the parts, the parameters and the
  optimizer state live in MPI-3 shared memory. Each rank prepares its part in its own row;
  after a fence, rank r adds every rank's part of its shard of the vector (in rank order)
  and updates that shard of the one shared parameter vector and of the state; a second
  fence ends the step. No gradient is copied and each rank updates 1/n of the parameters.
  Measured with ``benchmarks/speed.py``.
- ranks on several hosts, a host holding several (``--sync node-aware``, the default
  there; ``node_aware.py``): the same shared rows, parameters and state, one copy per
  host. Rank r adds its shard of the host's rows into the leader's row; the leaders (one
  per host) allreduce the host sums; every rank updates its shard of the host's
  parameters. Four fences a step, one vector per host over the network.
- otherwise (``--sync flat`` across hosts, ``--no-shared-memory``): one blocking
  ``Allreduce`` of the prepared parts, then every rank updates all parameters. Blocking
  even when ranks outnumber cores: every rank computes, so no idle core is there to give
  back, and a multi-round collective pays the sleep latency
  once per round (``benchmarks/wait_policy.py --strategy allreduce``, 2 cores:
  blocking 156-220 vs polite 143-150 steps/s at 3 ranks, 187-215 vs 129-131 at 4 ranks).

With ``--deterministic`` (``micro.py``) a rank computes the gradient sum of each of its
micro-batches into that micro-batch's row of an ``(M, n_params)`` array, and the rows are
added in micro-batch order where the parameters are owned: on one node the rows are
shared (one array per node) and rank r adds its shard of every row, as above; otherwise
one ``Allgatherv`` gives every rank every row (each receives about ``M - M/p`` vectors,
where the ring allreduce moves about two) and every rank adds them all. Adding a host's
rows first (node-aware) would change that order: ``--deterministic`` keeps the flat path.

With ``--combine models`` each rank steps its own optimizer (own velocity) on its slice,
and every ``--local-steps`` steps one ``Allreduce`` of the parameters, divided by the
number of ranks, replaces every replica by the mean: Local SGD. Always by messages.
"""

import numpy as np
from mpi4py import MPI

from distnn.data.sampler import batch_length, worker_range
from distnn.parallel.comm import wait_politely, wait_spinning
from distnn.parallel.micro import fold, micro_batches_of
from distnn.parallel.node_aware import add_host_parts, group_by_host
from distnn.parallel.placement import Placement, private
from distnn.parallel.shared_memory import SharedBuffers
from distnn.parallel.strategy import Strategy


class Allreduce(Strategy):
    name = "allreduce"
    polite = False

    @classmethod
    def place(cls, comm, roles, n_params, dtype, state_names, config) -> Placement:
        """Shared rows, parameters and state for the ranks of one node, or node-aware of
        each host; private memory otherwise."""
        size, rank = comm.Get_size(), comm.Get_rank()
        sync, groups = group_by_host(comm, config, combines=True)
        if groups is not None:
            local = groups.local
            shared = SharedBuffers(local)
            rows = shared.array((local.Get_size(), n_params), dtype)
            params = shared.array((n_params,), dtype)
            state = {name: shared.array((n_params,), dtype) for name in state_names}
            return Placement(params, rows[local.Get_rank()], state, shared, {"parts": rows},
                             sync=sync, groups=groups)
        shared_memory = (config.shared_memory and config.combine == "gradients" and size > 1
                         and sync is None)
        if config.deterministic:     # a row per micro-batch; a rank's first is its grads
            count, first = config.micro_batches, micro_batches_of(config.micro_batches, size,
                                                                  rank).start
        elif shared_memory:          # a row per rank
            count, first = size, rank
        else:
            placed = private(n_params, dtype, state_names)
            placed.sync = sync
            return placed
        if not shared_memory:
            rows = np.zeros((count, n_params), dtype)
            return Placement(np.zeros(n_params, dtype), rows[first],
                             {name: np.zeros(n_params, dtype) for name in state_names},
                             rows={"parts": rows}, sync=sync)
        shared = SharedBuffers(comm)
        rows = shared.array((count, n_params), dtype)
        params = shared.array((n_params,), dtype)
        state = {name: shared.array((n_params,), dtype) for name in state_names}
        return Placement(params, rows[first], state, shared, {"parts": rows})

    def __init__(self, comm, roles, model, optimizer, data, timer, placement, config):
        super().__init__(comm, roles, model, optimizer, data, timer, placement, config)
        self._message = [model.grads, self._type]
        self._parts = placement.rows.get("parts")
        if self.shared is not None:
            self._shard = slice(*worker_range(model.n_params, self.size, self.rank)) \
                if self.groups is None else self.groups.shard(model.n_params)
        if self.micro_batches is not None:
            own = self._parts[self.micro.start:self.micro.stop]
            self._rows = [model.gradient_buffer(row) for row in own]
            blocks = [micro_batches_of(self.micro_batches, self.size, rank)
                      for rank in range(self.size)]
            self._gathered = [self._parts, ([len(b) * model.n_params for b in blocks],
                                            [b.start * model.n_params for b in blocks]),
                              self._type]

    def step(self, batch) -> None:
        if self.combine_models:
            self.local_model_step(batch)
            if self._pending == self.local_steps:
                self._average_models()
            return
        if self.micro_batches is not None:
            self._deterministic_step(batch)
            return
        self.local_gradient_sum(batch)
        self.optimizer.prepare(self.model.grads, batch_length(batch))
        self.timer.lap("compute")
        if self.groups is not None:
            self._node_aware_step()
            return
        if self.shared is not None:
            self._shared_step()
            return
        wait = wait_politely if self.polite else wait_spinning
        wait(self.comm.Iallreduce(MPI.IN_PLACE, self._message, op=MPI.SUM), self.watch,
             "the gradient allreduce")
        self.timer.lap("comm")
        self.optimizer.apply([self.model.grads])
        self.timer.lap("update")

    def _shared_step(self) -> None:
        self.shared.fence("the other ranks' gradients")
        self.timer.lap("wait")
        self.optimizer.apply(self._parts[:, self._shard], part=self._shard)
        self.timer.lap("update")
        self.shared.fence("the other ranks' updates")
        self.timer.lap("wait")

    def _node_aware_step(self) -> None:
        """The host's parts added in its shared memory (each rank its shard of them), the
        host sums allreduced among the hosts' leaders, then every rank updates its shard of
        the host's parameters."""
        shared, groups, rows, timer = self.shared, self.groups, self._parts, self.timer
        add_host_parts(shared, rows, self._shard, timer, "ranks")
        if groups.leads:
            # Politely, unlike the flat path: a wait on another host's link is long beside
            # the sleeps' latency, and the core it would spin on is the one the host's
            # network stack and other ranks need meanwhile.
            wait_politely(groups.exchange.Iallreduce(MPI.IN_PLACE, [rows[0], self._type],
                                                     op=MPI.SUM),
                          self.watch, "the other hosts' gradient sums")
            timer.lap("comm")
        shared.fence("this host's leader to exchange its sum with the other hosts")
        timer.lap("wait")
        self.optimizer.apply(rows[0:1, self._shard], part=self._shard)
        timer.lap("update")
        shared.fence("the other ranks of this host to update their shards")
        timer.lap("wait")

    def _deterministic_step(self, batch) -> None:
        """Each micro-batch's sum into its row; the rows added in order where owned."""
        self.micro_gradient_sums(batch, self._rows)
        self.timer.lap("compute")
        if self.shared is not None:
            self.shared.fence("the other ranks' gradients")
            self.timer.lap("wait")
            self.apply_total(fold(self._parts, self._shard), batch_length(batch), self._shard)
            self.timer.lap("compute")
            self.shared.fence("the other ranks' updates")
            self.timer.lap("wait")
            return
        wait = wait_politely if self.polite else wait_spinning
        wait(self.comm.Iallgatherv(MPI.IN_PLACE, self._gathered), self.watch,
             "the micro-batches' gradients")
        self.timer.lap("comm")
        self.apply_total(fold(self._parts), batch_length(batch))
        self.timer.lap("compute")

    def _average_models(self) -> None:
        """Every replica becomes the mean of all of them (one Allreduce of the parameters)."""
        params = self.model.params
        self._pending = 0
        self.averagings += 1
        self.comm.Allreduce(MPI.IN_PLACE, [params, self._type], op=MPI.SUM)
        params /= self.size
        self.model_bytes_sent += params.nbytes
        self.timer.lap("comm")

    def synchronize(self) -> None:
        """With ``--combine models``, local steps not yet averaged are averaged now."""
        if self.combine_models and self._pending:
            self._average_models()

    def finish(self) -> dict:
        return {**self._free_shared_memory(), **self.sync_statistics(),
                **self.combine_statistics()}
