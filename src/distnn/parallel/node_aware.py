"""Node-aware synchronisation (``--sync``): the ranks of a job grouped by host.

A byte between hosts costs far more than one within a host, and a host's link is shared
by all its ranks. So when ranks span several hosts and a host holds several of the ranks
that combine their parts of a step (every rank of allreduce, the workers of ps-sync),
those ranks add their parts in the host's shared memory first, and one rank per host,
its leader, exchanges the host's sum with the other hosts: each host sends one vector
per step (per server, of its shard), not one per rank.

- ``local``: the combining ranks of one host (shared memory, fences); each rank adds its
  column shard of the host's rows (``micro.fold``), in local rank order, into the leader's
  row, so that the host's sum costs every rank 1/L of it.
- ``exchange``: the leaders, and for ps-sync the servers first (ranks ``0..K-1`` of it):
  allreduce's leaders allreduce the host sums; ps-sync's leaders send each server its
  shard of the host sum, and each server broadcasts its shard of the parameters to the
  leaders, who receive it into the host's one shared copy of the parameters.

The flat path (every rank exchanges by messages) stays selectable: ``--sync flat``. With
every rank on one host there is nothing to exchange between hosts: the strategies' one-node
paths run and ``--sync`` changes nothing.
"""

from dataclasses import dataclass

from mpi4py import MPI

from distnn.data.sampler import worker_range
from distnn.parallel.micro import fold
from distnn.parallel.stall import share_watch


@dataclass
class HostGroups:
    """This rank's communicators of the node-aware path. ``local`` is None on a rank that
    does not combine (a parameter server); ``exchange`` is None on a rank that neither
    leads a host nor serves. ``leaders``: hosts with combining ranks (a server's rows)."""

    leaders: int
    local: MPI.Comm | None
    exchange: MPI.Comm | None

    @property
    def leads(self) -> bool:
        return self.local is not None and self.local.Get_rank() == 0

    def shard(self, n: int) -> slice:
        """The columns of the host's ``n``-element rows this rank adds up and updates."""
        return slice(*worker_range(n, self.local.Get_size(), self.local.Get_rank()))

    def free(self) -> None:
        for comm in (self.local, self.exchange):
            if comm is not None:
                comm.Free()
        self.local = self.exchange = None


def host_layout(comm: MPI.Comm, combines: bool) -> tuple[int, int, int]:
    """``(host, hosts, most)`` (collective): this rank's host (the lowest rank of ``comm``
    on it), the number of hosts, and the most combining ranks any host holds."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        host = node.bcast(comm.Get_rank(), root=0)
    finally:
        node.Free()
    placed = comm.allgather((host, combines))
    counts: dict[int, int] = {}
    for where, combining in placed:
        counts[where] = counts.get(where, 0) + combining
    return host, len(counts), max(counts.values())


def chosen(sync: str, hosts: int, most: int) -> str | None:
    """What ``--sync`` resolves to for a job on ``hosts`` hosts whose fullest host holds
    ``most`` combining ranks: ``node-aware`` or ``flat``, or None on one host."""
    if hosts < 2:
        return None
    if sync == "auto":
        return "node-aware" if most >= 2 else "flat"
    return sync


def group_by_host(comm: MPI.Comm, config, combines: bool) -> tuple[str | None, HostGroups | None]:
    """What ``config.sync`` resolves to here (``chosen``), and for the node-aware path this
    rank's communicators (collective; ranks that do not combine, the servers, join the
    exchange first). ``auto`` stays flat where the path cannot run: model averaging, no
    shared memory, or ``--deterministic``, whose order of additions a host's sum would
    change (an explicit ``--sync node-aware`` with those is refused by config)."""
    host, hosts, most = host_layout(comm, combines)
    sync = config.sync
    if sync == "auto" and (config.combine != "gradients" or not config.shared_memory
                           or config.deterministic):
        sync = "flat"
    sync = chosen(sync, hosts, most)
    if sync != "node-aware":
        return sync, None
    rank = comm.Get_rank()
    local = comm.Split(host if combines else MPI.UNDEFINED, key=rank)
    leads = local != MPI.COMM_NULL and local.Get_rank() == 0
    exchange = comm.Split(0 if leads or not combines else MPI.UNDEFINED, key=rank)
    local = None if local == MPI.COMM_NULL else local
    exchange = None if exchange == MPI.COMM_NULL else exchange
    for sub in (local, exchange):
        if sub is not None:
            share_watch(comm, sub)
    leaders = comm.allreduce(int(leads))
    return sync, HostGroups(leaders, local, exchange)


def add_host_parts(shared, rows, shard: slice, timer, peers: str) -> None:
    """The host's sum into row 0 of its shared ``rows``: once every rank of the host has
    written its row, each adds its ``shard`` of the columns, and all wait for the whole
    sum (``peers`` names the host's other ranks in a stall message)."""
    shared.fence(f"the gradients of the other {peers} of this host")
    timer.lap("wait")
    fold(rows, shard)
    timer.lap("comm")
    shared.fence(f"the other {peers} of this host to add their shards of its sum")
    timer.lap("wait")
