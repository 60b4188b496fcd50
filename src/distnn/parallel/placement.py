"""Where one rank's flat vectors live, decided by its strategy before the model and the
optimizer exist, so that every buffer is allocated once, where it will be used: private
memory, or MPI-3 shared memory that the ranks of a node read directly."""

from dataclasses import dataclass, field

import numpy as np

from distnn.parallel.node_aware import HostGroups
from distnn.parallel.shared_memory import SharedBuffers


@dataclass
class Placement:
    """``params`` and ``grads`` for the model; ``state`` for the optimizer (its buffers by
    name; empty on a rank that never applies an update); ``owned``, the slice of ``params``
    the optimizer updates, which ``state`` is shaped like (a parameter server's shard);
    ``shared``, the shared memory to free at the end; ``rows``, the strategy's own views
    (workers' gradient rows...); ``helpers``, the workers that apply a piece of a parameter
    server's update (ps-sync on one node), and ``polled``, those of them whose progress
    the server reads off flags in shared memory rather than hears rung; ``sync``, how
    ranks on different hosts combine (``node-aware`` or ``flat``; None on one host), and
    ``groups``, the node-aware path's communicators."""

    params: np.ndarray
    grads: np.ndarray
    state: dict[str, np.ndarray]
    shared: SharedBuffers | None = None
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    owned: slice = field(default_factory=lambda: slice(None))
    helpers: tuple[int, ...] = ()
    polled: tuple[int, ...] = ()
    sync: str | None = None
    groups: HostGroups | None = None


def private(n: int, dtype, state_names=(), rows: dict | None = None,
            owned: slice = slice(None)) -> Placement:
    """Everything in this process's own memory; state for the ``owned`` slice."""
    size = len(range(n)[owned])
    return Placement(np.zeros(n, dtype=dtype), np.zeros(n, dtype=dtype),
                     {name: np.zeros(size, dtype=dtype) for name in state_names},
                     rows=rows or {}, owned=owned)
