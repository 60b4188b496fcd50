"""How ps-async's parameters and gradients travel: shared memory on one node, or messages.

Both offer the same operations, so the protocol in ``ps_async.py`` (release, staleness
bound, counts) does not depend on the transport. On one node, nothing is copied through
MPI and no waiting rank spins (Fashion-MNIST, 3 processes on 2 cores: 115-135k samples/s
against 60-71k through messages).
"""

import numpy as np
from mpi4py import MPI

from distnn.parallel.comm import Tag, mpi_type, probe_politely, sleep_until, wait_politely
from distnn.parallel.doorbell import Doorbells
from distnn.parallel.placement import Placement, private
from distnn.parallel.shared_memory import SharedBuffers, to_private_memory
from distnn.parallel.stall import watch_of

SERVER = 0


class MessageTransport:
    """Parameters and gradients as MPI messages; every wait polite (``comm.py``)."""

    shared_memory = False

    @staticmethod
    def place(comm: MPI.Comm, roles, n_params: int, dtype, state_names) -> Placement:
        """Private buffers; the server also receives each gradient into one of its own."""
        if comm.Get_rank() != SERVER:
            return private(n_params, dtype)
        return private(n_params, dtype, state_names, {"gradient": np.zeros(n_params, dtype)})

    def __init__(self, comm: MPI.Comm, roles, model, optimizer, placement: Placement):
        self.comm, self.model, self._type = comm, model, mpi_type(model.dtype)
        self.watch = watch_of(comm)
        self._status = MPI.Status()
        self._gradient = placement.rows.get("gradient")

    def send_params(self, worker: int) -> None:
        wait_politely(self.comm.Isend([self.model.params, self._type], dest=worker,
                                      tag=Tag.PARAMS), self.watch, f"rank {worker} to take parameters")

    def receive_gradient(self, sources: list[int]) -> tuple[int, np.ndarray]:
        """Wait for a gradient from one of ``sources``; returns the worker and the gradient."""
        sleep_until(lambda: any(self.comm.Iprobe(source=s, tag=Tag.GRADIENT, status=self._status)
                                for s in sources), self.watch, "a gradient")
        worker = self._status.Get_source()
        self.comm.Recv([self._gradient, self._type], source=worker, tag=Tag.GRADIENT)
        return worker, self._gradient

    def receive_params(self) -> None:
        probe_politely(self.comm, self._status, source=SERVER, tag=Tag.PARAMS, watch=self.watch,
                       what="the parameters from the server")
        self.comm.Recv([self.model.params, self._type], source=SERVER, tag=Tag.PARAMS)

    def send_gradient(self) -> None:
        wait_politely(self.comm.Isend([self.model.grads, self._type], dest=SERVER,
                                      tag=Tag.GRADIENT), self.watch, "the server to take a gradient")

    def publish(self) -> None:
        """Every rank takes the server's parameters (collective; none in flight)."""
        wait_politely(self.comm.Ibcast([self.model.params, self._type], root=SERVER), self.watch,
                      "the parameters from the server")

    def close(self) -> None:
        """Nothing to release."""


class SharedMemoryTransport:
    """Ranks on one node: nothing is copied through MPI.

    The parameters live in one shared vector that only the server writes. Releasing a
    worker copies them into that worker's shared snapshot row (its model's parameters,
    which nobody changes while it computes) and rings its doorbell; the worker writes its
    gradient into its shared gradient row and rings the server's doorbell with its rank.
    """

    shared_memory = True

    @staticmethod
    def place(comm: MPI.Comm, roles, n_params: int, dtype, state_names) -> Placement:
        """The server's model is the one shared parameter vector; a worker's, its snapshot
        row, and its gradient its gradient row."""
        shared = SharedBuffers(comm)
        rows = {"snapshots": shared.array((roles.n_workers, n_params), dtype),
                "gradients": shared.array((roles.n_workers, n_params), dtype),
                "params": shared.array((n_params,), dtype)}
        worker = roles.worker_index(comm.Get_rank())
        if worker is None:
            return Placement(rows["params"], np.zeros(n_params, dtype),
                             {name: np.zeros(n_params, dtype) for name in state_names},
                             shared, rows)
        return Placement(rows["snapshots"][worker], rows["gradients"][worker], {}, shared, rows)

    def __init__(self, comm: MPI.Comm, roles, model, optimizer, placement: Placement):
        self.rank, self.roles, self.model, self.optimizer = comm.Get_rank(), roles, model, optimizer
        self.shared = placement.shared
        self._snapshots = placement.rows["snapshots"]
        self._gradients = placement.rows["gradients"]
        self._params = placement.rows["params"]
        self._bells = Doorbells(comm)
        self._ready: list[int] = []      # server: workers whose gradient waits to be applied

    def send_params(self, worker: int) -> None:
        self._snapshots[self.roles.worker_index(worker)] = self._params
        self.shared.sync()
        self._bells.ring(worker)

    def receive_gradient(self, sources: list[int]) -> tuple[int, np.ndarray]:
        while True:
            for worker in self._ready:
                if sources[0] == MPI.ANY_SOURCE or worker in sources:
                    self._ready.remove(worker)
                    self.shared.sync()
                    return worker, self._gradients[self.roles.worker_index(worker)]
            self._ready.extend(self._bells.wait_any("a gradient"))

    def receive_params(self) -> None:
        self._bells.wait(what="the parameters from the server")
        self.shared.sync()

    def send_gradient(self) -> None:
        self.shared.sync()
        self._bells.ring(SERVER, self.rank)

    def publish(self) -> None:
        """Server: every worker's snapshot becomes the current parameters (collective)."""
        if self.rank == SERVER:
            self._snapshots[...] = self._params
        self.shared.fence()

    def close(self) -> None:
        """Move the model back into private memory, then release the shared memory."""
        to_private_memory(self.model, self.optimizer)
        self.shared.free()
        self._bells.close()
