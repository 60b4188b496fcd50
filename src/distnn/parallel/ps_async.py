"""Asynchronous parameter server: the server applies each worker's gradient on arrival.

Protocol, per gradient: the server sends a worker the current parameters; the worker
computes the gradient sum of its slice of the next global batch and sends it back; the
server divides it by that global batch's size, applies it at once and, when allowed,
replies with the parameters it now holds. With one worker this is exactly serial SGD.

Two transports carry it (``async_transport.py``): shared memory and doorbells on one
node, MPI messages otherwise.

Staleness of an applied gradient = updates the server applied between sending the
parameters it was computed on and applying it. ``max_staleness = K`` bounds it
(stale-synchronous parallel): the server defers its reply to a worker, and the order in
which it accepts gradients, so that no applied gradient is staler than K. It keeps the
invariant: in-flight workers, oldest parameters first, satisfy
``updates - version + position <= K``. K = 0 means workers take turns.

Workers cover every epoch's samples exactly once (each its slice of each global batch);
an epoch ends on the server when all of its gradients are applied.

With ``--servers K``, each server runs this protocol on its own shard of the parameters
and of the optimizer state: it applies its shard of every worker's gradient on arrival,
keeps its own update and staleness counts, and holds the bound for its shard. A worker
computes once every server has released it. Servers decide alone, so with a bound they
take gradients in the order they released the workers: every server then makes the same
decisions in the same order, and no two can wait for each other through a worker one of
them has released and the other not (without a bound, a server releases a worker as soon
as it has applied its gradient, so no worker waits on a server that waits for it).
Rank 0 gathers every server's counts at each synchronisation; updates and updates per
worker are then the same on every shard, staleness is reported per shard.
"""

from collections import deque

import numpy as np
from mpi4py import MPI

from distnn.data.sampler import batch_length, worker_range
from distnn.errors import UsageError
from distnn.parallel.async_transport import MessageTransport, SharedMemoryTransport
from distnn.parallel.comm import wait_politely
from distnn.parallel.placement import Placement
from distnn.parallel.shared_memory import on_one_node
from distnn.parallel.strategy import Strategy


def batch_sizes_per_worker(sampler, n_workers: int) -> list[deque]:
    """For each worker, the global batch size of every gradient it sends in one epoch, in
    order (empty slices send none). The server divides each gradient sum by its own."""
    sizes = [deque() for _ in range(n_workers)]
    for length in sampler.batch_lengths():
        for worker in range(n_workers):
            start, stop = worker_range(length, n_workers, worker)
            if stop > start:
                sizes[worker].append(length)
    return sizes


class PSAsync(Strategy):
    name = "ps-async"

    @classmethod
    def place(cls, comm, roles, n_params, dtype, state_names, config) -> Placement:
        """The transport's buffers; the optimizer state on the servers alone, each its shard."""
        transport = SharedMemoryTransport if config.shared_memory and on_one_node(comm) \
            else MessageTransport
        return transport.place(comm, roles, n_params, dtype, state_names)

    def __init__(self, comm, roles, model, optimizer, data, timer, placement, config):
        super().__init__(comm, roles, model, optimizer, data, timer, placement, config)
        self.max_staleness = config.max_staleness
        self.sent = 0
        # A server's counts of its shard's updates (every rank has them: zero on a worker).
        self.updates = 0
        self.applied = np.zeros(roles.n_workers, dtype=np.int64)
        self.staleness_counts = np.zeros(1, dtype=np.int64)
        self._counts = self._table()     # rank 0: every server's counts, as last gathered
        if self.worker_index is None:
            self._version = np.zeros(self.size, dtype=np.int64)   # by rank
            self._remaining = np.zeros(self.size, dtype=np.int64)
            self._in_flight: list[int] = []
            self._parked = deque(roles.worker_ranks)
        transport = SharedMemoryTransport if self.shared is not None else MessageTransport
        self.transport = transport(comm, roles, model, optimizer, placement)

    @classmethod
    def updates_per_epoch(cls, sampler, roles) -> int:
        return sum(map(len, batch_sizes_per_worker(sampler, roles.n_workers)))

    stops_mid_epoch = False   # gradients in flight: a stop waits for the epoch's end

    def run_epoch(self, sampler, epoch: int, first_step: int = 0, should_stop=None) -> int | None:
        if first_step:
            raise ValueError("ps-async runs whole epochs; it cannot start mid-epoch")
        if self.worker_index is None:
            self._serve(batch_sizes_per_worker(sampler, self.roles.n_workers),
                        should_stop if self.rank == 0 else None, epoch * sampler.steps_per_epoch)
        else:
            for index, batch in enumerate(sampler.batches(epoch)):
                start, stop = self.roles.rows(batch_length(batch), self.rank)
                if stop > start:
                    self.batch_number = epoch * sampler.steps_per_epoch + index
                    self._work(batch)
        return None

    def _work(self, batch) -> None:
        timer = self.timer
        self.transport.receive_params()
        timer.lap("wait")
        self.local_gradient_sum(batch)
        timer.lap("compute")
        self.transport.send_gradient()
        self.sent += 1
        timer.lap("comm")

    def _serve(self, batch_sizes: list[deque], before_update=None, first_batch: int = 0) -> None:
        """Apply one epoch's gradients; ``before_update(i)`` is told of each (progress only:
        a stop waits for the epoch's end). ``first_batch``: the epoch's first global batch."""
        timer = self.timer
        per_worker = [len(sizes) for sizes in batch_sizes]
        self._remaining[self.roles.servers:] += per_worker
        self._release()
        for index in range(sum(map(len, batch_sizes))):
            if before_update is not None:
                before_update(index)
            worker, gradient = self.transport.receive_gradient(self._acceptable_sources())
            slot = self.roles.worker_index(worker)
            sizes = batch_sizes[slot]
            # The gradient's global batch (the timeline's step): a worker sends one per batch
            # in order; only the last batch of an epoch can leave it no rows.
            self.batch_number = first_batch + per_worker[slot] - len(sizes)
            timer.lap("wait")
            staleness = self.updates - self._version[worker]
            if self.max_staleness is not None and staleness > self.max_staleness:
                raise RuntimeError(f"staleness {staleness} exceeds the bound {self.max_staleness}")
            self.optimizer.apply([self.optimizer.prepare(gradient, sizes.popleft())])
            self.updates += 1
            self._record(worker, staleness)
            self._in_flight.remove(worker)
            self._remaining[worker] -= 1
            self._parked.append(worker)
            timer.lap("update")
            self._release()
            timer.lap("comm")

    def _record(self, worker: int, staleness: int) -> None:
        self.applied[self.roles.worker_index(worker)] += 1
        if staleness >= self.staleness_counts.size:
            self.staleness_counts = np.concatenate(
                [self.staleness_counts, np.zeros(staleness + 1 - self.staleness_counts.size,
                                                 dtype=np.int64)])
        self.staleness_counts[staleness] += 1

    def _release(self) -> None:
        """Send parameters to parked workers that have work, as the bound allows."""
        bound = self.max_staleness
        for _ in range(len(self._parked)):
            worker = self._parked.popleft()
            if self._remaining[worker] == 0 or (bound is not None and len(self._in_flight) > bound):
                self._parked.append(worker)
                continue
            self.transport.send_params(worker)
            self._version[worker] = self.updates
            self._in_flight.append(worker)

    def _acceptable_sources(self) -> list[int]:
        """Workers whose gradient may be applied next without breaking the bound (with
        several servers and a bound: the worker released first, see the module docstring)."""
        if self.max_staleness is None:
            return [MPI.ANY_SOURCE]
        if self.roles.servers > 1:
            return self._in_flight[:1]
        order = sorted(self._in_flight, key=lambda w: (self._version[w], w))
        for position, worker in enumerate(order):
            if self.updates - self._version[worker] + position >= self.max_staleness:
                return order[: position + 1]
        return [MPI.ANY_SOURCE]

    def synchronize(self) -> None:
        """Every rank takes the servers' parameters (no gradient is in flight here), and
        rank 0 every server's counts."""
        self.transport.publish()
        self._counts = self._gather_counts()

    def _table(self) -> np.ndarray:
        """This rank's counts as a row per server: updates, applied per worker, then the
        staleness histogram (zero on the other servers' rows, and on a worker)."""
        workers, servers = self.roles.n_workers, self.roles.servers
        table = np.zeros((servers, 1 + workers + self.staleness_counts.size), dtype=np.int64)
        if self.worker_index is None:
            table[self.rank] = [self.updates, *self.applied, *self.staleness_counts]
        return table

    def _gather_counts(self) -> np.ndarray:
        """Every server's row of counts, summed over the ranks (collective, bounded waits):
        the histograms' longest length first, so that every rank adds rows of one size."""
        longest = np.array([self.staleness_counts.size if self.worker_index is None else 1])
        wait_politely(self.comm.Iallreduce(MPI.IN_PLACE, longest, op=MPI.MAX), self.watch,
                      "the servers' counts")
        table = self._table()
        table = np.pad(table, ((0, 0), (0, int(longest[0]) + 1 + self.roles.n_workers
                                        - table.shape[1])))
        wait_politely(self.comm.Iallreduce(MPI.IN_PLACE, table, op=MPI.SUM), self.watch,
                      "the servers' counts")
        return table

    def _histograms(self) -> np.ndarray:
        """Rank 0: every server's staleness histogram, a row each."""
        return self._counts[:, 1 + self.roles.n_workers:]

    def state_dict(self) -> dict:
        """Rank 0, after ``synchronize``: updates and applied per worker (the same on every
        shard then), and the staleness histogram (one row per server when several)."""
        histograms = self._histograms()
        return {"updates": int(self._counts[0, 0]),
                "applied": self._counts[0, 1:1 + self.roles.n_workers].copy(),
                "staleness_counts": histograms[0].copy() if self.roles.servers == 1
                else histograms.copy()}

    def load_state_dict(self, state: dict) -> None:
        applied = np.asarray(state["applied"], dtype=np.int64)
        if applied.shape != (self.roles.n_workers,):
            raise UsageError(f"--resume: the checkpoint was written by {applied.size} ps-async "
                             f"workers; resume with the same number, not {self.roles.n_workers}")
        histograms = np.atleast_2d(np.asarray(state["staleness_counts"], dtype=np.int64))
        if histograms.shape[0] != self.roles.servers:
            raise UsageError(f"--resume: the checkpoint holds the counts of "
                             f"{histograms.shape[0]} ps-async servers; resume with "
                             f"--servers {histograms.shape[0]}, not {self.roles.servers}")
        if self.worker_index is None:
            self.updates = int(state["updates"])
            self.applied = applied.copy()
            mine = np.trim_zeros(histograms[self.rank], "b")
            self.staleness_counts = mine.copy() if mine.size else np.zeros(1, dtype=np.int64)
        else:
            self.sent = int(applied[self.worker_index])
        self._counts = np.zeros((self.roles.servers, 1 + applied.size + histograms.shape[1]),
                                dtype=np.int64)
        self._counts[:, 0] = int(state["updates"])
        self._counts[:, 1:1 + applied.size] = applied
        self._counts[:, 1 + applied.size:] = histograms

    def statistics(self) -> dict:
        """Rank 0's view of the counts, as last gathered: staleness over every shard's
        updates (and, with several servers, per shard)."""
        if self.rank != 0:
            return {}
        histograms = self._histograms()
        record = {"updates": int(self._counts[0, 0]),
                  "updates_per_worker": self._counts[0, 1:1 + self.roles.n_workers].tolist(),
                  **staleness_summary(histograms.sum(axis=0))}
        if self.roles.servers > 1:
            record["staleness_per_shard"] = [staleness_summary(row) for row in histograms]
        return record

    def finish(self) -> dict:
        self.transport.close()
        self._counts = self._gather_counts()
        sent = self.comm.gather(self.sent, root=0)
        if self.rank != 0:
            return {}
        sent = sent[self.roles.servers:]
        for server, row in enumerate(self._counts):
            applied = row[1:1 + self.roles.n_workers].tolist()
            if sent != applied:
                raise RuntimeError(f"gradients sent per worker {sent} differ from those server "
                                   f"{server} applied {applied}")
        return {"max_staleness": self.max_staleness, "gradients_sent_per_worker": sent,
                "shared_memory": self.transport.shared_memory, **self.statistics()}


def staleness_summary(histogram: np.ndarray) -> dict:
    """Mean, maximum and histogram (counts per staleness 0, 1, ...) of applied updates."""
    histogram = np.trim_zeros(histogram, "b")
    total = int(histogram.sum())
    return {
        "staleness_mean": float(np.arange(histogram.size) @ histogram / total) if total else 0.0,
        "staleness_max": int(histogram.size - 1) if total else 0,
        "staleness_histogram": histogram.tolist() if total else [0],
    }
