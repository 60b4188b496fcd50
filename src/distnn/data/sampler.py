"""Which samples each step uses, identical on every rank.

The order of an epoch is a pure function of ``(seed, epoch)``: no rank consults its own
random state, so all ranks agree on every global batch without communicating.
A global batch is cut into contiguous worker slices whose sizes differ by at most one.
"""

import numpy as np


def worker_range(n: int, n_workers: int, worker: int) -> tuple[int, int]:
    """``[start, stop)`` of worker ``worker``'s share of ``n`` items (as ``np.array_split``)."""
    base, extra = divmod(n, n_workers)
    start = worker * base + min(worker, extra)
    return start, start + base + (1 if worker < extra else 0)


class BatchSampler:
    """Global batches of sample indices for every epoch.

    Parameters
    ----------
    n_samples : int
    batch_size : int or None
        None means full batch: one step per epoch on all samples (the original's scheme).
        The last batch of an epoch may be smaller; it is kept, not dropped.
    seed : int
    shuffle : bool
        When False, batches are ``slice`` objects, so taking them copies nothing.
    """

    def __init__(self, n_samples: int, batch_size: int | None, seed: int, shuffle: bool = True):
        self.n_samples = n_samples
        self.batch_size = n_samples if batch_size is None else min(batch_size, n_samples)
        self.seed = seed
        self.shuffle = shuffle

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_samples // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(self.n_samples)

    def batches(self, epoch: int):
        """Yield each global batch of ``epoch``: an index array, or a slice without shuffling."""
        order = self.epoch_order(epoch) if self.shuffle else None
        for start in range(0, self.n_samples, self.batch_size):
            stop = min(start + self.batch_size, self.n_samples)
            yield slice(start, stop) if order is None else order[start:stop]


def batch_length(batch) -> int:
    return batch.stop - batch.start if isinstance(batch, slice) else len(batch)


def sub_batch(batch, start: int, stop: int):
    """Positions ``[start, stop)`` of a batch, keeping its kind (slice or index array)."""
    if isinstance(batch, slice):
        return slice(batch.start + start, batch.start + stop)
    return batch[start:stop]


def take(array: np.ndarray, batch, out: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``array`` in ``batch``: a view for a slice, a gather into ``out`` otherwise."""
    if isinstance(batch, slice):
        return array[batch]
    if out is None:
        return array[batch]
    # mode="clip" (the indices are valid by construction) lets NumPy gather straight into
    # ``out``; the default mode="raise" buffers the copy and was 3x slower here.
    return np.take(array, batch, axis=0, out=out[: len(batch)], mode="clip")
