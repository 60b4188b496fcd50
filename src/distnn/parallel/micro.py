"""``--deterministic``: the order of every floating-point sum fixed by the data, not the ranks.

Floating-point addition is not associative, so a gradient added up in another grouping
(one slice per worker, a ring allreduce) rounds differently, and runs at different
process counts drift apart, in float32 visibly. Here every global batch of ``B`` rows is
cut into ``M`` micro-batches whose boundaries depend on ``B`` and ``M`` only (as
``np.array_split``: the first ``B mod M`` have one row more). Each micro-batch's gradient
sum is computed whole, by the same code on the same rows, on one worker, which takes a
contiguous run of them; the owner of each parameter then adds the ``M`` sums in
micro-batch order, element by element (``fold``), and only then scales and updates.

Element-wise operations do not depend on how the vector is cut, so any number of ranks
owning shards of it (allreduce's ranks on one node, ``K`` parameter servers) gives the
same bits as one process owning all of it.
"""

import numpy as np

from distnn.data.sampler import worker_range


def micro_range(n: int, micro_batches: int, index: int) -> tuple[int, int]:
    """``[start, stop)`` of micro-batch ``index`` in a batch of ``n`` rows (empty when a
    short last batch has fewer rows than micro-batches)."""
    return worker_range(n, micro_batches, index)


def micro_batches_of(micro_batches: int, n_workers: int, worker: int) -> range:
    """The micro-batches worker ``worker`` computes: a contiguous run, so that its rows of
    the ``(micro_batches, n_params)`` sums are one block (one message)."""
    return range(*worker_range(micro_batches, n_workers, worker))


def fold(rows: np.ndarray, part: slice = slice(None)) -> np.ndarray:
    """``rows[0] + rows[1] + ... + rows[M-1]`` over the columns ``part``, added in order
    into ``rows[0, part]`` (which is returned): the same additions whoever owns ``part``."""
    total = rows[0, part]
    for row in rows[1:]:
        total += row[part]
    return total
