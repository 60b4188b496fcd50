"""Input standardisation statistics: per-feature mean and 1/std of the training rows.

Features on different scales (a user's CSV of prices and ratios) leave SGD with one
learning rate that is too large for some inputs and too small for others. The statistics
are computed once, over the training rows only (the held-out rows must not leak into
them), and become part of the model (``MLP.set_input_transform``), so evaluation,
prediction and the ONNX export apply exactly what training used.

Each worker sums its own contiguous share of the rows, in chunks (a memory-mapped file
stays unread outside that share), and one ``Allreduce`` adds the sums; rank 0's result is
then broadcast so that every replica holds bit-identical statistics.
"""

import numpy as np
from mpi4py import MPI

from distnn.data.sampler import worker_range

CHUNK_ROWS = 4096
MIN_STD = 1e-8      # a constant feature (an always-black border pixel) is only centred


def feature_statistics(comm: MPI.Comm, x: np.ndarray, worker: int | None,
                       n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)`` with ``(x - shift) * scale`` of zero mean and unit variance per
    feature over all rows of ``x``; ``worker`` None (a parameter server) sums no rows."""
    n, features = x.shape
    start, stop = (0, 0) if worker is None else worker_range(n, n_workers, worker)
    sums = np.zeros((2, features), dtype=np.float64)
    for first in range(start, stop, CHUNK_ROWS):
        block = np.asarray(x[first:min(first + CHUNK_ROWS, stop)], dtype=np.float64)
        sums[0] += block.sum(axis=0)
        sums[1] += np.square(block).sum(axis=0)
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    mean = sums[0] / n
    variance = np.maximum(sums[1] / n - np.square(mean), 0.0)
    std = np.sqrt(variance)
    scale = np.where(std > MIN_STD * np.maximum(1.0, np.abs(mean)), 1.0 / np.maximum(std, MIN_STD), 1.0)
    statistics = np.stack([mean, scale])
    comm.Bcast(statistics, root=0)
    return statistics[0], statistics[1]
