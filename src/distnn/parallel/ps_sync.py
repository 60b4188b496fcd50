"""Synchronous parameter server: rank 0 averages every worker's gradient, then updates
(or K servers, ranks 0..K-1, each its shard of the parameters: ``--servers K``).

Per step, each worker computes its gradient *sum* and prepares its part of the update
(``optimizer.prepare``: for SGD, ``-lr_t / global batch * sum``; the schedule is the same
on every rank); the server applies the parts, added in rank order (so the result is the
same run to run), and every worker continues from the new parameters. Preparing on the
workers leaves the server, the one rank every step waits for, one pass over memory per
worker plus two (SGD). The server computes no gradients (p processes = 1 server + p-1
workers, as in the original) and alone holds the optimizer state. On one node, where the
optimizer folds the preparation into its update's one pass (``folds_preparation``: plain
SGD with the compiled kernels), the workers leave their sums as they are and the server
scales them as it adds them (``apply_sums``): the same products, one pass fewer. Two ways
to move the vectors:

- ranks on one node (the default when possible): each worker's gradient row and the one
  parameter vector live in MPI-3 shared memory, so nothing is copied. Workers ring the
  server's doorbell (``doorbell.py``) when their row is written and sleep on their own
  until the server has updated the parameters: every waiting rank sleeps in the kernel
  and wakes within a context switch. Measured with ``benchmarks/speed.py``.
- workers on several hosts, a host holding several (``--sync node-aware``, the default
  there; ``node_aware.py``): the workers of each host write their parts into rows of the
  host's shared memory and add them up, each its shard of the columns; the host's leader
  sends each server its shard of the sum (one message per host per server, tag GRADIENT)
  and receives the parameters into the host's one shared copy, which every worker of
  the host reads after a fence. A server adds the host sums in host order.
- otherwise: one flat gradient message per worker (tag GRADIENT), received in arrival
  order with ``probe_politely``, and a parameter ``Ibcast`` completed with
  ``wait_politely``, so no waiting rank spins a core. Measured with
  ``benchmarks/wait_policy.py`` (3 ranks, 2 cores): 1.45x the steps/s of blocking calls
  on 784-256-10 at batch 128, 1.7x on the full-batch seed model. Point-to-point gradients
  and an ``Igatherv`` measured the same there; point-to-point is the protocol ps-async
  shares.

With ``--combine models`` (the original's algorithm) each worker instead takes a whole
SGD step on its slice with its own optimizer and velocity, every ``--local-steps`` steps
sends its *parameters* (tag PARAMS), and the server averages them, in rank order, and
broadcasts the mean. Always by messages: the workers' models are separate vectors.

With ``--servers K`` (``shards.py``), server ``s`` owns shard ``s`` of the parameters and
of the optimizer state: each worker sends each server its shard of its part of the step
(one message per server; on one node, one doorbell ring each), server ``s`` adds the
parts of its shard in rank order and updates it, and broadcasts it (one broadcast per
server). The update is element by element, so every shard gets the same bits as one
server would: K changes only who computes what, and where the bytes travel.

On one node with one server, workers that have a core to themselves (``own_cores``: no
other rank may run there) help the server with its update; they would only wait
meanwhile. Each worker computes the first layer's weight gradient, the backward pass's
last GEMM, in two (``MLP.announce_early_part``): a quarter of its rows last
(``early_rows``). Every worker flags in shared memory when the rest of its gradient (the
early part) is in, and when all of it is; the helpers, polling the flags, apply the
early part while the slowest worker still computes, then with the server each its piece
of the rest. So the update's time on the step's critical path is what remains after the
last gradient, and each piece stays in the cache of the core that updates it. Where the
server's piece ends moves each step towards an even finish (the server notes whether the
helpers had finished when it had: the split follows this machine's speed of the moment,
never changing the bits). The server sleeps until the workers that share its core have
rung (each hands it the core as it sleeps), then polls the helpers' flags: a ring from
another core would wake it amid its core mates' computing. Where the server has a core
of its own, every worker rings it. The update is element by element: the same bits.

With ``--deterministic`` (``micro.py``) a worker computes the gradient sum of each of its
micro-batches into that micro-batch's row of the servers' ``(M, n_params)`` rows (shared
memory on one node; otherwise its run of rows, of each server's shard, as one message to
that server: ``M / workers`` times the usual gradient's bytes), prepares nothing, and each
server adds the ``M`` rows of its shard in micro-batch order, then prepares and applies:
element by element, so any K gets the same bits as one server. Node-aware synchronisation
would add a host's micro-batch sums out of that order: ``--deterministic`` keeps the flat
path.
"""

import numpy as np
from mpi4py import MPI

from distnn.data.sampler import batch_length, worker_range
from distnn.parallel.comm import Tag, probe_politely, sleep_until, spin_for, spin_until, wait_politely
from distnn.parallel.doorbell import SPIN_S, Doorbells, core_mates, own_cores
from distnn.parallel.micro import fold, micro_batches_of
from distnn.parallel.node_aware import add_host_parts, group_by_host
from distnn.parallel.placement import Placement, private
from distnn.parallel.shards import broadcast_shards, for_shard
from distnn.parallel.shared_memory import SharedBuffers
from distnn.parallel.strategy import Strategy

APPLIED = 1         # a helper's signal to the server: its pieces are applied (0: a gradient)
# A helper's flag (``ready``) counts three events a step: the early part of its gradient
# is in, all of it is, its pieces of the update are applied.
EARLY, GRADIENT, PIECES = 2, 1, 0
# How far the split between the server's piece and the helpers' moves in a step, in
# elements (least, most): it doubles while the same side finishes last, halves when not.
SPLIT_STEPS = (256, 32768)


def early_rows(sizes) -> int:
    """Where a worker splits the first layer's weight gradient (``MLP.announce_early_part``)
    when helpers update the rest meanwhile: a quarter of its rows come last, the work of
    about as long as the helpers' share of the rest takes (``benchmarks/ps_sync_steps.py``);
    with fewer than 8 inputs, all of them (the rest is then the later layers)."""
    return sizes[0] // 4 if sizes[0] >= 8 else sizes[0]


def update_helpers(comm, roles) -> tuple[int, ...]:
    """The workers that help the one parameter server of a node with its update: those
    with a core to themselves (collective). None with several servers, which share the
    update out already."""
    if roles.servers != 1:
        return ()
    owns = own_cores(comm)
    return tuple(rank for rank in roles.worker_ranks if owns[rank])


class PSSync(Strategy):
    name = "ps-sync"

    @classmethod
    def place(cls, comm, roles, n_params, dtype, state_names, config) -> Placement:
        """The workers' parts of each step are the servers' rows (shared memory on one node,
        else message buffers on each server, of its shard); the optimizer state lives on the
        servers, each its shard, and on every worker only when each steps its own model
        (``--combine models``). Node-aware: each host's workers share their rows and one
        copy of the parameters; a server keeps a row per host."""
        rank = comm.Get_rank()
        owned = roles.owned(n_params, rank)
        width = owned.stop - owned.start
        owns_state = roles.is_server(rank) or config.combine == "models"
        names = state_names if owns_state else ()
        sync, groups = group_by_host(comm, config, combines=not roles.is_server(rank))
        if groups is not None:
            if roles.is_server(rank):
                placed = private(n_params, dtype, names,
                                 {"parts": np.zeros((groups.leaders, width), dtype)}, owned)
            else:
                local = groups.local
                shared = SharedBuffers(local)
                rows = shared.array((local.Get_size(), n_params), dtype)
                params = shared.array((n_params,), dtype)
                placed = Placement(params, rows[local.Get_rank()], {}, shared, {"parts": rows})
            placed.sync, placed.groups = sync, groups
            return placed
        count = config.micro_batches if config.deterministic else roles.n_workers
        first = None if roles.is_server(rank) else \
            cls.rows_of(roles, config, roles.worker_index(rank))
        if config.shared_memory and config.combine == "gradients" and sync is None:
            helpers = update_helpers(comm, roles)
            # The server sleeps until the workers that share its core have rung (each
            # hands the core over as it sleeps); the helpers' progress, on other cores, it
            # reads off their flags: a ring would wake it amid its core mates' computing.
            polled = helpers if helpers and core_mates(comm)[roles.server_ranks[0]] else ()
            shared = SharedBuffers(comm)
            flags = {}
            if roles.servers == 1:     # each rank's stop request, the server's verdict
                flags["stops"] = shared.array((comm.Get_size() + 1,), np.int64)
            if helpers:
                flags["ready"] = shared.array((comm.Get_size(),), np.int64)
                flags["split"] = shared.array((1,), np.int64)   # the server's piece, moved
            rows = shared.array((count, n_params), dtype)
            params = shared.array((n_params,), dtype)
            grads = np.zeros(n_params, dtype) if first is None else rows[first.start]
            if helpers:       # the state where the helpers reach it (allocated by every rank)
                whole = {name: shared.array((width,), dtype) for name in state_names}
                state = whole if owns_state or rank in helpers else {}
            else:
                state = {name: np.zeros(width, dtype) for name in names}
            return Placement(params, grads, state, shared, {"parts": rows[:, owned], **flags},
                             owned=owned, helpers=helpers, polled=polled)
        if first is None:
            placed = private(n_params, dtype, names,
                             {"parts": np.zeros((count, width), dtype)}, owned)
        elif not config.deterministic:
            placed = private(n_params, dtype, names, owned=owned)
        else:
            own = np.zeros((len(first), n_params), dtype)     # a worker's micro-batch sums
            placed = private(n_params, dtype, names, {"own": own}, owned)
            placed.grads = own[0]
        placed.sync = sync
        return placed

    @staticmethod
    def rows_of(roles, config, worker: int) -> range:
        """The servers' rows that worker ``worker`` (an index) fills: its own, or with
        ``--deterministic`` those of its micro-batches."""
        if config.deterministic:
            return micro_batches_of(config.micro_batches, roles.n_workers, worker)
        return range(worker, worker + 1)

    def __init__(self, comm, roles, model, optimizer, data, timer, placement, config):
        super().__init__(comm, roles, model, optimizer, data, timer, placement, config)
        self._parts = placement.rows.get("parts")     # a server's: its shard of each part
        self._shard = placement.owned
        self._shards = roles.shards(model.n_params)
        self._rows_of = [self.rows_of(roles, config, worker) for worker in range(roles.n_workers)]
        self._batch_size = 0
        self._subarrays: dict = {}    # MPI datatypes of non-contiguous columns, by shape
        self._outgoing = model.grads[np.newaxis]    # a worker's rows for the servers
        # Where gradients go and parameters come from: the servers and every worker, or
        # (node-aware) the servers and the hosts' leaders, whose rows the servers keep.
        self._exchange = comm if self.groups is None else self.groups.exchange
        self._senders = roles.n_workers if self.groups is None else self.groups.leaders
        self._bells = None
        if self.shared is not None and self.groups is None:
            self._bells = Doorbells(self.comm)
        elif self.groups is not None and self.worker_index is not None:
            self._fold = self.groups.shard(model.n_params)
        # On one node, where the optimizer folds the preparation into its update's one pass
        # (plain SGD, compiled), the parts travel as sums: the workers skip that pass.
        self._sums = (self._bells is not None and self.micro_batches is None
                      and optimizer.folds_preparation)
        self._helpers = placement.helpers
        self._ready = placement.rows.get("ready")   # each helper's progress (three per step)
        self._polled = placement.polled
        self._ringers = [rank for rank in roles.worker_ranks if rank not in self._polled]
        self._ringing_helpers = [rank for rank in self._helpers if rank not in self._polled]
        self._other_workers = [rank for rank in roles.worker_ranks if rank != self.rank]
        self._round = 0
        self._stops, self._stop = placement.rows.get("stops"), None
        self._stop_requests = None if self._stops is None else self._stops[:-1]
        self._gradients_what = for_shard("the workers' gradients", roles, self.rank)
        self._params_what = ("the parameters from the server" if roles.servers == 1
                             else f"the parameters from all {roles.servers} servers")
        self._pieces_of: tuple = (None, [])     # (split, this rank's pieces there)
        self._late = early_rows(model.sizes) * model.sizes[1] if self._sums else model.n_params
        self._split = placement.rows.get("split")
        self._first_split = worker_range(self._late, len(self._helpers) + 1, 0)[1]
        self._split_step, self._split_move = SPLIT_STEPS[0], 0
        if self._helpers and self.worker_index is not None and self._sums:
            model.announce_early_part(early_rows(model.sizes), self._early_part_in)

        if self.micro_batches is not None and self.worker_index is not None:
            self._outgoing = placement.rows["own"] if self.shared is None else \
                self._parts[self.micro.start:self.micro.stop]
            self._rows = [model.gradient_buffer(row) for row in self._outgoing]

    def _pieces(self) -> list[slice]:
        """This rank's pieces of this step's update with helpers (none without). The
        server's is ``[0, split)``: it starts in the late part (the first layer's first
        weight rows, whose gradient a worker computes last), which it can only apply once
        every gradient is in. The helpers split the rest: first what lies beyond the late
        part, which they apply while the last worker still computes the late part, then
        what lies in it. Any split gives the same bits (the update is element by element),
        so the server moves it each step towards an even finish (``_move_split``)."""
        split = self._first_split + self._split.item(0)     # kept in [0, n] by _move_split
        if self._pieces_of[0] == split:
            return self._pieces_of[1]
        n, late = self.model.n_params, self._late
        if self.worker_index is None:
            pieces = [slice(0, split)]
        else:
            index, helpers = self._helpers.index(self.rank), len(self._helpers)
            early = max(split, late)
            start, stop = worker_range(n - early, helpers, index)
            late_start, late_stop = worker_range(max(late - split, 0), helpers, index)
            pieces = [slice(early + start, early + stop),
                      slice(split + late_start, split + late_stop)]
        self._pieces_of = (split, pieces)
        return pieces

    def _move_split(self, server_last: bool) -> None:
        """The server, once every piece is in (no helper reads the split until it rings the
        parameters): if it finished its piece last it takes less of the next update, else
        more, by a step that grows while the same side is last and shrinks when not."""
        move = -1 if server_last else 1
        least, most = SPLIT_STEPS
        self._split_step = min(self._split_step * 2, most) if move == self._split_move \
            else max(self._split_step // 2, least)
        self._split_move = move
        shift = self._split.item(0) + move * self._split_step
        self._split[0] = min(max(shift, -self._first_split),
                             self.model.n_params - self._first_split)

    def _flag(self, event: int) -> None:
        """This helper's progress: ``event`` of this step has happened."""
        self._ready[self.rank] = 3 * self._round - event

    def _flagged(self, ranks, event: int) -> bool:
        target, ready = 3 * self._round - event, self._ready
        for rank in ranks:
            if ready.item(rank) < target:
                return False
        return True

    def _early_part_in(self) -> None:
        """A worker's gradient is final but for the late part: its flag says so."""
        self.shared.sync()
        self._flag(EARLY)

    def step(self, batch) -> None:
        if self.combine_models:
            self._model_step(batch)
            return
        self._batch_size = batch_length(batch)
        self._round += 1
        if self.worker_index is not None:
            if self.micro_batches is not None:
                self.micro_gradient_sums(batch, self._rows)     # the servers prepare their sum
            else:
                self.local_gradient_sum(batch)
                if not self._sums:
                    self.optimizer.prepare(self.model.grads, self._batch_size)
            if self.rank not in self._helpers:
                self.optimizer.advance()      # a helper counts the update it applies
            self.timer.lap("compute")
        if self.groups is not None and self.worker_index is not None:
            self._host_step()
        elif self._bells is not None:
            self._shared_step()
        elif self.worker_index is None:
            self._serve()
        else:
            self._work()

    def _update(self) -> None:
        """Server: one update of its shard from the workers' parts, added in rank order
        (with ``--deterministic``: the micro-batches' sums, added in their order)."""
        if self.micro_batches is not None:
            self.apply_total(fold(self._parts), self._batch_size)
        elif self._sums:
            self.optimizer.apply_sums(self._parts, self._batch_size)
        else:
            self.optimizer.apply(self._parts)
        self.timer.lap("update")

    def _apply_piece(self, piece: slice, last: bool = True) -> None:
        """A piece of the update (its columns of the parts), by the server or a helper;
        the ``last`` of a rank's pieces counts the update."""
        if piece.stop == piece.start:
            if last:        # an empty piece still completes this rank's share: counted
                self.optimizer.advance()
                self.timer.lap("update")
            return
        if self.micro_batches is not None:
            self.apply_total(fold(self._parts, piece), self._batch_size, piece)
        elif self._sums:
            self.optimizer.apply_sums(self._parts[:, piece], self._batch_size, part=piece,
                                      counts=last)
        else:
            self.optimizer.apply(self._parts[:, piece], part=piece, counts=last)
        self.timer.lap("update")

    def _shared_step(self) -> None:
        shared, bells, roles, helpers = self.shared, self._bells, self.roles, self._helpers
        if self.worker_index is None:
            heard = bells.wait_from(self._ringers, self._gradients_what)
            self._await_flags(self._polled, GRADIENT, "the helping workers' gradients")
            shared.sync()
            self.timer.lap("wait")
            if helpers:
                self._apply_piece(self._pieces()[0])
                server_last = self._flagged(helpers, PIECES)
                # Every worker now waits for the parameters: spinning takes no one's core.
                bells.wait_from(self._ringing_helpers, "the helping workers' pieces of the update",
                                APPLIED, heard)
                self._await_flags(self._polled, PIECES,
                                  "the helping workers' pieces of the update")
                shared.sync()
                self._move_split(server_last)
                self.timer.lap("wait")
            else:
                self._update()
            if self._stops is not None:
                self._publish_stop_request()
                self._stops[-1] = any(self._stop_requests.tolist())
            shared.sync()
            for worker in roles.worker_ranks:
                bells.ring(worker)
            self.timer.lap("comm")
            return
        if self._stops is not None:
            self._publish_stop_request()
        shared.sync()
        if self._ready is not None:
            self._flag(GRADIENT)
        if self.rank in self._ringers:
            for server in roles.server_ranks:     # last: once rung, it may take this core
                bells.signal(server)
        if self.rank in self._helpers:
            others = self._other_workers
            early, late = self._pieces()
            self._await_flags(others, EARLY, "the other workers' gradients")
            shared.sync()
            self.timer.lap("wait")
            self._apply_piece(early, last=False)
            self._await_flags(others, GRADIENT, "the other workers' gradients")
            shared.sync()
            self.timer.lap("wait")
            self._apply_piece(late)
            shared.sync()
            self._flag(PIECES)
            if self.rank not in self._polled:
                bells.signal(roles.server_ranks[0], APPLIED)
            self.timer.lap("comm")
        bells.wait(roles.servers, self._params_what)
        shared.sync()
        self.timer.lap("wait")

    def stop_agreed(self, stop) -> bool:
        """On one node, the verdict of the last step: every rank writes its stop request
        into shared memory before its step's signal, and the server, which has heard every
        signal, writes whether any rank asked before it rings the parameters. The ranks
        read it before their next step, when it cannot change: the same answer everywhere,
        at no cost (a collective makes the ranks that share a core wait out sleeps). A
        request is acted on one step later than a collective would. Not with several
        servers: one of them could read the verdict before another has written it."""
        if self._stops is None:
            return super().stop_agreed(stop)
        self._stop = stop
        return bool(self._stops[-1])

    def _publish_stop_request(self) -> None:
        self._stops[self.rank] = self._stop is not None and self._stop.requested

    def _await_flags(self, ranks, event: int, what: str) -> None:
        """Until the flag of each rank of ``ranks`` says ``event`` of this step: polled
        without sleeping for ``SPIN_S`` (the ranks that poll have a core to themselves, or
        their core mates are waiting too), then between short sleeps."""
        if not ranks or self._flagged(ranks, event):
            return
        def arrived():
            return self._flagged(ranks, event)
        if not spin_for(arrived, SPIN_S):
            sleep_until(arrived, self.watch, what)

    def _host_step(self) -> None:
        """A worker, node-aware: the host's parts added up in its shared memory (each
        worker its shard of the columns); the leader sends each server its shard of the
        sum and brings the parameters into the host's copy."""
        shared, groups, rows, timer = self.shared, self.groups, self._parts, self.timer
        add_host_parts(shared, rows, self._fold, timer, "workers")
        if groups.leads:
            self._send_to_servers(rows[0:1], Tag.GRADIENT, "this host's gradient sum")
            timer.lap("comm")
            broadcast_shards(self._exchange, self.roles, self.model.params, self.polite)
            timer.lap("wait")
        shared.fence("this host's leader to bring the parameters from the servers")
        timer.lap("wait")

    def _serve(self) -> None:
        """A server (messages): its shard of every worker's part, or node-aware of every
        host's sum, in arrival order; the update; its shard of the parameters to all."""
        timer, comm = self.timer, self._exchange
        what = for_shard("a gradient" if self.groups is None else "a host's gradient sum",
                         self.roles, self.rank)
        for _ in range(self._senders):
            if self.polite:
                probe_politely(comm, self._status, tag=Tag.GRADIENT, watch=self.watch, what=what)
            else:
                spin_until(lambda: comm.Iprobe(source=MPI.ANY_SOURCE, tag=Tag.GRADIENT,
                                               status=self._status), self.watch, what)
            timer.lap("wait")
            source = self._status.Get_source()
            rows = self._rows_from(source)
            comm.Recv([self._parts[rows.start:rows.stop], self._type], source=source,
                      tag=Tag.GRADIENT)
            timer.lap("comm")
        self._update()
        broadcast_shards(comm, self.roles, self.model.params, self.polite)
        timer.lap("comm")

    def _rows_from(self, source: int) -> range:
        """A server's rows that rank ``source`` of the exchange fills: a worker's (its
        micro-batches' with ``--deterministic``), or node-aware a host leader's one."""
        if self.groups is not None:
            return range(source - self.roles.servers, source - self.roles.servers + 1)
        return self._rows_of[self.roles.worker_index(source)]

    def _model_step(self, batch) -> None:
        if self.worker_index is None:
            self.optimizer.advance()     # the schedule the workers run, for the metrics
            self._pending += 1
        else:
            self.local_model_step(batch)
        if self._pending == self.local_steps:
            self._average_models()

    def _average_models(self) -> None:
        """Workers' parameters to the servers (each its shard), their mean back to every
        rank."""
        timer, comm, params = self.timer, self.comm, self.model.params
        self._pending = 0
        self.averagings += 1
        if self.worker_index is None:
            what = for_shard("a worker's parameters", self.roles, self.rank)
            for _ in self.roles.worker_ranks:
                if self.polite:
                    probe_politely(comm, self._status, tag=Tag.PARAMS, watch=self.watch,
                                   what=what)
                else:
                    comm.Probe(source=MPI.ANY_SOURCE, tag=Tag.PARAMS, status=self._status)
                timer.lap("wait")
                source = self._status.Get_source()
                comm.Recv([self._parts[self.roles.worker_index(source)], self._type],
                          source=source, tag=Tag.PARAMS)
                timer.lap("comm")
            mean = params[self._shard]
            mean[...] = self._parts[0]
            for row in self._parts[1:]:
                mean += row
            mean /= self.roles.n_workers
            timer.lap("update")
        else:
            self._send_to_servers(params[np.newaxis], Tag.PARAMS, "parameters")
            self.model_bytes_sent += params.nbytes
            timer.lap("comm")
        self._broadcast_params()
        timer.lap("comm" if self.worker_index is None else "wait")

    def synchronize(self) -> None:
        """With ``--combine models``, local steps not yet averaged are averaged now."""
        if self.combine_models and self._pending:
            self._average_models()

    def _work(self) -> None:
        self._send_to_servers(self._outgoing, Tag.GRADIENT, "a gradient")
        self.timer.lap("comm")
        self._broadcast_params()
        self.timer.lap("wait")

    def _send_to_servers(self, rows: np.ndarray, tag: Tag, what: str) -> None:
        """A worker's ``rows`` (``(k, n_params)``) to the servers: one message to each, of
        its shard's columns (a subarray datatype where they are not contiguous)."""
        requests = [self._exchange.Isend(self._columns(rows, shard), dest=server, tag=tag)
                    for server, shard in enumerate(self._shards)]
        for server, request in enumerate(requests):
            wait_politely(request, self.watch,
                          f"server {server} to take {for_shard(what, self.roles, server)}")

    def _columns(self, rows: np.ndarray, shard: slice) -> list:
        """An MPI buffer of ``rows[:, shard]``, built once per shape and shard."""
        block = rows[:, shard]
        if block.flags.c_contiguous:
            return [block, self._type]
        key = (rows.shape, shard.start, shard.stop)
        if key not in self._subarrays:
            self._subarrays[key] = self._type.Create_subarray(
                rows.shape, block.shape, (0, shard.start)).Commit()
        return [rows, 1, self._subarrays[key]]

    def finish(self) -> dict:
        self.model.withdraw_early_part()    # its signal writes into the shared memory freed here
        for datatype in self._subarrays.values():
            datatype.Free()
        if self._bells is not None:
            self._bells.close()
        helping = {"update_helpers": list(self._helpers)} if self.shared is not None else {}
        return {**self._free_shared_memory(), **self.sync_statistics(),
                **self.combine_statistics(), **helping}
