"""Who does what in a job: which ranks are parameter servers, which shard of the parameters
each server owns, which are workers, and which rows each worker takes. One object, so that
the arithmetic lives in one place.

No MPI here: the launcher and the benchmark use it before any MPI job exists.
"""

from dataclasses import dataclass

from distnn.config import SERVER_STRATEGIES
from distnn.data.sampler import worker_range


@dataclass(frozen=True)
class Roles:
    """The roles of the ``size`` ranks of a job; ranks ``0..servers-1`` are parameter
    servers (none for serial and allreduce: every rank is a worker). Server ``s`` owns
    shard ``s`` of the parameter vector: an even, contiguous slice, as workers take rows."""

    size: int
    servers: int = 0

    @classmethod
    def of(cls, strategy: str, size: int, servers: int = 1) -> "Roles":
        """``servers`` (``--servers``) counts only for the server strategies."""
        return cls(size, servers if strategy in SERVER_STRATEGIES and size > 1 else 0)

    @property
    def n_workers(self) -> int:
        return self.size - self.servers

    @property
    def worker_ranks(self) -> range:
        return range(self.servers, self.size)

    @property
    def server_ranks(self) -> range:
        return range(self.servers)

    def is_server(self, rank: int) -> bool:
        return rank < self.servers

    def worker_index(self, rank: int) -> int | None:
        """``rank``'s position among the workers, or None for a server."""
        return None if self.is_server(rank) else rank - self.servers

    def worker_rank(self, index: int) -> int:
        return index + self.servers

    def rows(self, n: int, rank: int) -> tuple[int, int]:
        """``[start, stop)`` of the ``n`` rows (of a batch, or of a data set to score) that
        ``rank`` takes: an even, contiguous share per worker, none for a server."""
        index = self.worker_index(rank)
        return (0, 0) if index is None else worker_range(n, self.n_workers, index)

    def share_of(self, rank: int) -> tuple[int, int] | None:
        """``(worker index, workers)`` of ``rank``, or None for a server: which share of
        the data a rank checks and summarises."""
        index = self.worker_index(rank)
        return None if index is None else (index, self.n_workers)

    def shard(self, n_params: int, server: int) -> slice:
        """The slice of the ``n_params`` parameters (and of the optimizer state) that
        server ``server`` owns; all of them when there is no server."""
        return slice(*worker_range(n_params, max(self.servers, 1), server))

    def shards(self, n_params: int) -> list[slice]:
        """Every server's shard, in server order (one, the whole vector, without servers)."""
        return [self.shard(n_params, server) for server in range(max(self.servers, 1))]

    def owned(self, n_params: int, rank: int) -> slice:
        """What ``rank``'s optimizer updates: a server's shard, else the whole vector (a
        worker of a parameter server only prepares, but sees whole vectors)."""
        return self.shard(n_params, rank) if self.is_server(rank) else slice(0, n_params)
