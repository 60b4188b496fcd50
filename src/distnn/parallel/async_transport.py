"""How ps-async's parameters and gradients travel: shared memory on one node, or messages.

Both offer the same operations, so the protocol in ``ps_async.py`` (release, staleness
bound, counts) does not depend on the transport. On one node, nothing is copied through
MPI and no waiting rank spins (Fashion-MNIST, 3 processes on 2 cores: 115-135k samples/s
against 60-71k through messages).

With ``--servers K``, server ``s`` moves only its shard of each vector (``Roles.shard``):
a worker takes its parameters from every server and sends every server its shard of its
gradient, one message (or doorbell ring) each.
"""

import numpy as np
from mpi4py import MPI

from distnn.parallel.comm import Tag, mpi_type, sleep_until, wait_politely
from distnn.parallel.doorbell import Doorbells
from distnn.parallel.placement import Placement, private
from distnn.parallel.shards import broadcast_shards, for_shard, from_server
from distnn.parallel.shared_memory import SharedBuffers, to_private_memory
from distnn.parallel.stall import watch_of


class MessageTransport:
    """Parameters and gradients as MPI messages; every wait polite (``comm.py``).

    A worker's gradient messages complete in its next ``receive_params``, together with
    the parameters it receives: a worker never waits for one server to take its gradient
    before it can receive another server's parameters, so servers that take gradients in
    different orders cannot wait for each other through it.
    """

    shared_memory = False

    @staticmethod
    def place(comm: MPI.Comm, roles, n_params: int, dtype, state_names) -> Placement:
        """Private buffers; a server also receives each gradient's shard into one of its own."""
        rank = comm.Get_rank()
        if not roles.is_server(rank):
            return private(n_params, dtype)
        shard = roles.owned(n_params, rank)
        return private(n_params, dtype, state_names,
                       {"gradient": np.zeros(shard.stop - shard.start, dtype)}, shard)

    def __init__(self, comm: MPI.Comm, roles, model, optimizer, placement: Placement):
        self.comm, self.roles, self.model, self._type = comm, roles, model, mpi_type(model.dtype)
        self.rank = comm.Get_rank()
        self.watch = watch_of(comm)
        self._status = MPI.Status()
        self._gradient = placement.rows.get("gradient")
        self._shard = placement.owned
        self._shards = roles.shards(model.n_params)
        self._sending: list[MPI.Request] = []     # a worker's gradient messages in flight

    def send_params(self, worker: int) -> None:
        wait_politely(self.comm.Isend([self.model.params[self._shard], self._type], dest=worker,
                                      tag=Tag.PARAMS), self.watch,
                      f"rank {worker} to take {for_shard('the parameters', self.roles, self.rank)}")

    def receive_gradient(self, sources: list[int]) -> tuple[int, np.ndarray]:
        """Wait for a gradient (its shard) from one of ``sources``; returns the worker and it."""
        sleep_until(lambda: any(self.comm.Iprobe(source=s, tag=Tag.GRADIENT, status=self._status)
                                for s in sources), self.watch,
                    for_shard("a gradient", self.roles, self.rank))
        worker = self._status.Get_source()
        self.comm.Recv([self._gradient, self._type], source=worker, tag=Tag.GRADIENT)
        return worker, self._gradient

    def receive_params(self) -> None:
        """Worker: every server's shard of the parameters."""
        params = self.model.params
        receiving = [self.comm.Irecv([params[shard], self._type], source=server, tag=Tag.PARAMS)
                     for server, shard in enumerate(self._shards)]
        self._complete_sends()
        for server, request in enumerate(receiving):
            wait_politely(request, self.watch, from_server("the parameters", self.roles, server))

    def send_gradient(self) -> None:
        """Worker: its gradient's shard to every server (completed by ``receive_params``)."""
        grads = self.model.grads
        self._sending = [self.comm.Isend([grads[shard], self._type], dest=server, tag=Tag.GRADIENT)
                         for server, shard in enumerate(self._shards)]

    def _complete_sends(self) -> None:
        for server, request in enumerate(self._sending):
            wait_politely(request, self.watch,
                          f"server {server} to take {for_shard('a gradient', self.roles, server)}")
        self._sending = []

    def publish(self) -> None:
        """Every rank takes the servers' parameters (collective; none in flight)."""
        self._complete_sends()
        broadcast_shards(self.comm, self.roles, self.model.params)

    def close(self) -> None:
        """Nothing to release once the last gradient is taken."""
        self._complete_sends()


class SharedMemoryTransport:
    """Ranks on one node: nothing is copied through MPI.

    The parameters live in one shared vector that only the servers write, each its shard.
    Releasing a worker copies a server's shard into that worker's shared snapshot row (its
    model's parameters, which nobody changes while it computes) and rings its doorbell;
    the worker computes once every server has rung, then writes its gradient into its
    shared gradient row and rings every server's doorbell with its rank.
    """

    shared_memory = True

    @staticmethod
    def place(comm: MPI.Comm, roles, n_params: int, dtype, state_names) -> Placement:
        """A server's model is the one shared parameter vector, its optimizer's state its
        shard's; a worker's model is its snapshot row, and its gradient its gradient row."""
        shared = SharedBuffers(comm)
        rows = {"snapshots": shared.array((roles.n_workers, n_params), dtype),
                "gradients": shared.array((roles.n_workers, n_params), dtype),
                "params": shared.array((n_params,), dtype)}
        rank = comm.Get_rank()
        worker = roles.worker_index(rank)
        if worker is None:
            shard = roles.owned(n_params, rank)
            return Placement(rows["params"], np.zeros(n_params, dtype),
                             {name: np.zeros(shard.stop - shard.start, dtype)
                              for name in state_names}, shared, rows, shard)
        return Placement(rows["snapshots"][worker], rows["gradients"][worker], {}, shared, rows)

    def __init__(self, comm: MPI.Comm, roles, model, optimizer, placement: Placement):
        self.rank, self.roles, self.model, self.optimizer = comm.Get_rank(), roles, model, optimizer
        self.shared = placement.shared
        self._snapshots = placement.rows["snapshots"]
        self._gradients = placement.rows["gradients"]
        self._params = placement.rows["params"]
        self._shard = placement.owned
        self._bells = Doorbells(comm)
        self._ready: list[int] = []      # server: workers whose gradient waits to be applied

    def send_params(self, worker: int) -> None:
        shard = self._shard
        self._snapshots[self.roles.worker_index(worker), shard] = self._params[shard]
        self.shared.sync()
        self._bells.ring(worker)

    def receive_gradient(self, sources: list[int]) -> tuple[int, np.ndarray]:
        while True:
            for worker in self._ready:
                if sources[0] == MPI.ANY_SOURCE or worker in sources:
                    self._ready.remove(worker)
                    self.shared.sync()
                    return worker, self._gradients[self.roles.worker_index(worker), self._shard]
            self._ready.extend(self._bells.wait_any(for_shard("a gradient", self.roles,
                                                              self.rank)))

    def receive_params(self) -> None:
        servers = self.roles.servers
        self._bells.wait(servers, "the parameters from the server" if servers == 1
                         else f"the parameters from all {servers} servers")
        self.shared.sync()

    def send_gradient(self) -> None:
        self.shared.sync()
        for server in self.roles.server_ranks:
            self._bells.ring(server, self.rank)

    def publish(self) -> None:
        """Servers: every worker's snapshot becomes the current parameters (collective)."""
        if self.roles.is_server(self.rank):
            self._snapshots[:, self._shard] = self._params[self._shard]
        self.shared.fence()

    def close(self) -> None:
        """Move the model back into private memory, then release the shared memory."""
        to_private_memory(self.model, self.optimizer, self._shard)
        self.shared.free()
        self._bells.close()
