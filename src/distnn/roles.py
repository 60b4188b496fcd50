"""Who does what in a job: which ranks are parameter servers, which are workers, and which
rows each worker takes. One object, so that the arithmetic lives in one place.

No MPI here: the launcher and the benchmark use it before any MPI job exists.
"""

from dataclasses import dataclass

from distnn.config import SERVER_STRATEGIES
from distnn.data.sampler import worker_range


@dataclass(frozen=True)
class Roles:
    """The roles of the ``size`` ranks of a job; ranks ``0..servers-1`` are parameter
    servers (none for serial and allreduce: every rank is a worker)."""

    size: int
    servers: int = 0

    @classmethod
    def of(cls, strategy: str, size: int) -> "Roles":
        return cls(size, 1 if strategy in SERVER_STRATEGIES and size > 1 else 0)

    @property
    def n_workers(self) -> int:
        return self.size - self.servers

    @property
    def worker_ranks(self) -> range:
        return range(self.servers, self.size)

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
