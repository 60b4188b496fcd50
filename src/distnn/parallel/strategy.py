"""What every strategy shares: the model replica, the data and this rank's slice of a batch."""

import itertools

import numpy as np
from mpi4py import MPI

from distnn.data.sampler import batch_length, sub_batch, take
from distnn.parallel.comm import mpi_type
from distnn.parallel.doorbell import own_core_on_node
from distnn.parallel.micro import micro_batches_of, micro_range
from distnn.parallel.placement import Placement, private
from distnn.parallel.shards import broadcast_shards, gather_shards
from distnn.parallel.shared_memory import to_private_memory
from distnn.parallel.stall import watch_of
from distnn.parallel.timing import PhaseTimer
from distnn.roles import Roles


class Strategy:
    """The gradient path of one rank.

    Built in two steps, so that every buffer is allocated once where it will live:
    ``place`` (collective) decides where this rank's parameters, gradients and optimizer
    state are, the model and the optimizer are built on them, then the strategy itself.

    ``run_epoch`` is called on every rank for every epoch; synchronous strategies
    implement ``step(batch)``, called with the same global batch on every rank (the
    sampler is deterministic). ``synchronize`` is called before every evaluation and at
    the end: afterwards every rank holds the current global parameters.

    The strategy talks to the optimizer through its contract alone (``optim/base.py``):
    ``prepare`` on the rank that computed a gradient, ``apply`` (or ``advance``) where the
    parameters are owned.
    """

    name = ""
    stops_mid_epoch = True    # may stop between any two steps (see ``run_epoch``)
    polite = True   # wait with Test/Iprobe + short sleeps (distnn.parallel.comm), not spinning

    def __init__(self, comm: MPI.Comm, roles: Roles, model, optimizer, data, timer: PhaseTimer,
                 placement: Placement, config):
        self.comm, self.roles, self.model, self.optimizer, self.data, self.timer = (
            comm, roles, model, optimizer, data, timer)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.placement, self.shared = placement, placement.shared
        self.groups = placement.groups    # --sync node-aware: this rank's host groups
        self.watch = watch_of(comm)     # bounds every wait (stall.py)
        # Whether a wait may spin: no other rank of the job runs on this rank's cores.
        self.owns_core = own_core_on_node(comm)
        self.worker_index = roles.worker_index(self.rank)    # None on a parameter server
        self.combine_models = config.combine == "models"   # local steps, then models averaged
        self.local_steps = config.local_steps                # local steps between averagings
        self.drop_remainder = config.drop_remainder  # slices of floor(B/n); B mod n rows unused
        self._type = mpi_type(model.dtype)      # the flat buffers' MPI datatype
        self._status = MPI.Status()
        self._x = np.empty((0, model.n_features), dtype=model.dtype)
        self._y = np.empty(0, dtype=np.intp)
        self.measure_loss = False    # set for one step: its slice's loss for the progress line
        self.recent_loss: float | None = None
        self.averagings = 0          # --combine models: models averaged so far
        self.model_bytes_sent = 0    # --combine models: model bytes this rank gave to MPI
        self._pending = 0            # --combine models: local steps since the last averaging
        self.batch_number = 0        # global batches so far: the dropout masks' step
        # --deterministic: micro-batches per global batch, and this worker's run of them.
        self.micro_batches = config.micro_batches if config.deterministic else None
        self.micro = range(0) if self.micro_batches is None or self.worker_index is None \
            else micro_batches_of(self.micro_batches, roles.n_workers, self.worker_index)

    @classmethod
    def place(cls, comm: MPI.Comm, roles: Roles, n_params: int, dtype, state_names,
              config) -> Placement:
        """Where this rank's buffers live (collective). By default: private memory, with
        optimizer state on every rank (each applies every update)."""
        return private(n_params, dtype, state_names)

    @classmethod
    def updates_per_epoch(cls, sampler, roles: Roles) -> int:
        """Optimizer steps per epoch: one per global batch for synchronous strategies."""
        return sampler.steps_per_epoch

    def local_gradient_sum(self, batch) -> int:
        """Summed gradient of this worker's contiguous slice of ``batch`` into ``model.grads``;
        returns the slice's number of rows."""
        n = batch_length(batch)
        if self.drop_remainder:
            share = n // self.roles.n_workers
            start, stop = self.worker_index * share, (self.worker_index + 1) * share
        else:
            start, stop = self.roles.rows(n, self.rank)
        measure = self.measure_loss
        loss_sum = self._gradient_of(batch, start, stop, measure)
        self._report_loss(measure, loss_sum, stop - start)
        return stop - start

    def micro_gradient_sums(self, batch, rows, add_as_you_go: bool = False) -> None:
        """``--deterministic``: the gradient sum of each of this worker's micro-batches of
        ``batch`` (``self.micro``) into its own row: ``rows``, buffers from
        ``model.gradient_buffer``, one per micro-batch. With ``add_as_you_go`` (serial),
        ``rows`` is two buffers: each sum after the first is computed into the second and
        added to the first at once, the additions ``fold`` makes, in its order."""
        n = batch_length(batch)
        measure, loss_sum, rows_done = self.measure_loss, 0.0, 0
        for k, index in enumerate(self.micro):
            row = rows[min(k, 1)] if add_as_you_go else rows[k]
            self.model.use_gradients(row)
            start, stop = micro_range(n, self.micro_batches, index)
            loss_sum += self._gradient_of(batch, start, stop, measure)
            rows_done += stop - start
            if add_as_you_go and k:
                total = rows[0][0]      # a buffer is (flat vector, layer views)
                total += row[0]
        self._report_loss(measure, loss_sum, rows_done)

    def apply_total(self, total: np.ndarray, batch_size: int, part: slice = slice(None)) -> None:
        """``--deterministic``, where the parameters of ``part`` are owned: ``total``, the
        batch's gradient sum over ``part`` added up in micro-batch order (``fold``),
        prepared and applied here, so that the same operations meet the same values for
        any process count and any cut of the vector."""
        self.optimizer.apply([self.optimizer.prepare(total, batch_size)], part=part)

    def _gradient_of(self, batch, start: int, stop: int, measure: bool) -> float:
        """Summed gradient of positions ``[start, stop)`` of ``batch`` into ``model.grads``;
        returns their summed loss when ``measure`` (else 0)."""
        part = sub_batch(batch, start, stop)
        rows = stop - start
        if not isinstance(part, slice) and self._x.shape[0] < rows:
            self._x = np.empty((rows, self.model.n_features), dtype=self.model.dtype)
            self._y = np.empty(rows, dtype=np.intp)
        x = take(self.data.x_train, part, self._x)
        y = take(self.data.y_train, part, self._y)
        samples = None
        if self.model.dropout:
            indices = np.arange(part.start, part.stop) if isinstance(part, slice) else part
            samples = (self.batch_number, indices)
        if measure:
            # The same gradient (the loss only reads what the gradient computes), plus one
            # log per row: asked for only on steps where rank 0's live line redraws.
            loss_sum, _ = self.model.loss_and_gradient_sum(x, y, samples)
            return loss_sum
        self.model.gradient_sum(x, y, samples)
        return 0.0

    def _report_loss(self, measured: bool, loss_sum: float, rows: int) -> None:
        if measured:
            self.recent_loss = loss_sum / max(rows, 1)
            self.measure_loss = False

    def local_model_step(self, batch) -> None:
        """``--combine models``, on a worker: one step of its own optimizer, with its own
        velocity, on the mean gradient of its slice (as the original's workers step). An
        empty slice (a short last batch) gives a zero gradient: the step is momentum only,
        so that every worker's schedule stays in step."""
        rows = self.local_gradient_sum(batch)
        self.optimizer.step(self.model.grads, max(rows, 1))
        self.timer.lap("compute")
        self._pending += 1

    def combine_statistics(self) -> dict:
        """What model averaging sent, for ``result.json``: ``bytes_sent_per_worker`` counts
        the model bytes each worker handed to MPI (ps-sync: its messages to the server;
        allreduce: its contribution to the collective, whose ring moves about twice that)."""
        if not self.combine_models:
            return {}
        sent = self.comm.allreduce(self.model_bytes_sent if self.worker_index is not None else 0)
        return {"combine": "models", "local_steps": self.local_steps,
                "averagings": self.averagings,
                "bytes_sent_per_worker": sent // self.roles.n_workers}

    def run_epoch(self, sampler, epoch: int, first_step: int = 0, should_stop=None) -> int | None:
        """Steps ``first_step..`` of ``epoch``. Before each step, ``should_stop(step)`` (the
        same answer on every rank) may end the epoch early: returns the number of steps of
        this epoch done when it stopped, None when the epoch is complete."""
        batches = itertools.islice(sampler.batches(epoch, indices=self.worker_index is not None),
                                   first_step, None)
        for index, batch in enumerate(batches, start=first_step):
            if should_stop is not None and should_stop(index):
                return index
            self.batch_number = epoch * sampler.steps_per_epoch + index
            self.step(batch)
        return None

    def step(self, batch) -> None:
        raise NotImplementedError

    def stop_agreed(self, stop) -> bool:
        """Collective: whether any rank has been asked to ``stop`` (``StopRequest``). A
        strategy whose every step brings all ranks together may answer from its steps."""
        return stop.agreed(self.comm, self.owns_core)

    def synchronize(self) -> None:
        """Synchronous strategies keep every replica current after each step."""

    def _broadcast_params(self) -> None:
        """The parameters to every rank: each parameter server's shard of them (with one
        server, rank 0's whole vector)."""
        broadcast_shards(self.comm, self.roles, self.model.params, self.polite)

    def _free_shared_memory(self) -> dict:
        """Copy the model out of shared memory, if it is there, and release it, and the
        node-aware path's communicators (collective); returns ``{"shared_memory": ...}``
        for the result record (node-aware: the ranks of each host share memory, even where
        rank 0, a parameter server, keeps its own)."""
        used = self.shared is not None or self.groups is not None
        if self.shared is not None:
            to_private_memory(self.model, self.optimizer, self.placement.owned)
            self.shared.free()
            self.shared = None
        if self.groups is not None:
            self.groups.free()
            self.groups = None
        return {"shared_memory": used}

    def sync_statistics(self) -> dict:
        """How ranks on different hosts combined, for ``result.json``: ``node-aware``,
        ``flat``, or None when every rank was on one host."""
        return {"sync": self.placement.sync}

    def state_dict(self) -> dict:
        """Counters a checkpoint must carry (rank 0's view, at a synchronisation point)."""
        return {}

    def checkpoint_state(self) -> tuple[dict, dict] | None:
        """The optimizer's state, as whole vectors, and ``state_dict``, for the checkpoint
        rank 0 writes (None on the other ranks). Collective: with several parameter
        servers, their shards of the optimizer state are gathered first."""
        saved = self.optimizer.state_dict()
        if self.roles.servers > 1:
            saved["state"] = gather_shards(self.comm, self.roles, self.optimizer.state_names,
                                           self.optimizer.state, self.model.n_params,
                                           self.model.dtype)
        return (saved, self.state_dict()) if self.rank == 0 else None

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; called on every rank with the same dict."""

    def statistics(self) -> dict:
        """Strategy-specific counters for metrics.jsonl (rank 0's view)."""
        return {}

    def finish(self) -> dict:
        """Called once after the last step; returns strategy-specific statistics."""
        return {}
