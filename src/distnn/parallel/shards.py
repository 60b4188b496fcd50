"""The parameter vector cut into the shards of ``--servers K`` parameter servers: server
``s`` (rank ``s``) owns shard ``s`` (``Roles.shard``), an even, contiguous slice of the
parameters and of the optimizer state, and applies the updates of that slice alone.

Here are the collectives that move whole shards between the servers and the other ranks;
the per-step messages (each worker sends each server its shard of its part of the step)
belong to the strategies. Every wait is bounded by the stall watch and names the shard.
"""

import numpy as np
from mpi4py import MPI

from distnn.parallel.comm import mpi_type, wait_politely, wait_spinning
from distnn.parallel.stall import watch_of
from distnn.roles import Roles


def for_shard(what: str, roles: Roles, server: int) -> str:
    """``what`` a server waits for, for a stall message: for which shard, when there are
    several."""
    return what if roles.servers <= 1 else f"{what} for shard {server}"


def from_server(what: str, roles: Roles, server: int) -> str:
    """``what`` coming from ``server``, for a stall message: which shard, when there are
    several."""
    if roles.servers <= 1:
        return f"{what} from the server"
    return f"shard {server} of {what} from server {server}"


def broadcast_shards(comm: MPI.Comm, roles: Roles, vector: np.ndarray, polite: bool = True) -> None:
    """Every server's shard of ``vector`` to every rank of ``comm`` (collective): one
    broadcast rooted at each server, all in flight at once; with one server, rank 0's
    whole vector. Every rank must make the same calls: a ``Bcast`` never matches an
    ``Ibcast``."""
    watch, datatype = watch_of(comm), mpi_type(vector.dtype)
    wait = wait_politely if polite else wait_spinning
    requests = [comm.Ibcast([vector[shard], datatype], root=server)
                for server, shard in enumerate(roles.shards(vector.size))]
    for server, request in enumerate(requests):
        wait(request, watch, from_server("the parameters", roles, server))


def gather_shards(comm: MPI.Comm, roles: Roles, names, parts: dict, n: int, dtype) -> dict | None:
    """For each of ``names``, the servers' shards (``parts[name]`` on server ``s``: its
    shard of a vector of ``n`` elements) as one whole vector on rank 0 (collective;
    workers send nothing); None on the other ranks. Checkpoints only: not a step's path."""
    rank, watch, datatype = comm.Get_rank(), watch_of(comm), mpi_type(np.dtype(dtype))
    shards = roles.shards(n) + [slice(n, n)] * roles.n_workers
    counts = [shard.stop - shard.start for shard in shards]
    displacements = [shard.start for shard in shards]
    empty = np.empty(0, dtype=dtype)
    gathered = {}
    for name in names:
        whole = np.empty(n, dtype=dtype) if rank == 0 else None
        mine = parts[name] if roles.is_server(rank) else empty
        received = [whole, (counts, displacements), datatype] if rank == 0 else None
        wait_politely(comm.Igatherv([mine, datatype], received, root=0), watch,
                      f"the servers' shards of the optimizer's {name}")
        gathered[name] = whole
    return gathered if rank == 0 else None
