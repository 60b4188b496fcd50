"""Which samples each step uses, identical on every rank.

The order of an epoch is a pure function of ``(seed, epoch)``: no rank consults its own
random state, so all ranks agree on every global batch without communicating.
A global batch is cut into contiguous worker slices whose sizes differ by at most one.

With ``shards = K`` the rows are cut into K contiguous shards and part k of every global
batch (the slice worker k takes when there are K workers) is drawn from shard k only,
shuffled within the shard. A worker then reads only its shard all run long: with
memory-mapped data, the pages it touches are its share of the file, not the whole file.
The batches depend on K, not on the process count: a serial run with ``shards = K``
takes the same batches as K workers.
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
        When False, batches are ``slice`` objects (one shard), so taking them copies nothing.
    shards : int
        Draw part k of every batch from shard k of the rows (see the module docstring).
    """

    def __init__(self, n_samples: int, batch_size: int | None, seed: int, shuffle: bool = True,
                 shards: int = 1):
        self.n_samples = n_samples
        self.batch_size = n_samples if batch_size is None else min(batch_size, n_samples)
        self.seed = seed
        self.shuffle = shuffle
        self.shards = shards

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_samples // self.batch_size)

    def batch_lengths(self) -> list[int]:
        """The length of every global batch of an epoch, in order (the last may be short)."""
        full, rest = divmod(self.n_samples, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest else [])

    def shard_ranges(self) -> list[tuple[int, int]]:
        """``[start, stop)`` of each shard: exactly the rows its parts of an epoch use."""
        sizes = np.zeros(self.shards, dtype=np.int64)
        for length in self.batch_lengths():
            sizes += [stop - start for start, stop in
                      (worker_range(length, self.shards, k) for k in range(self.shards))]
        stops = np.cumsum(sizes)
        return [(int(stop - size), int(stop)) for size, stop in zip(sizes, stops)]

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Sample indices of ``epoch`` in the order the batches take them."""
        if self.shards == 1:
            return np.random.default_rng((self.seed, epoch)).permutation(self.n_samples)
        shards = [start + (np.random.default_rng((self.seed, epoch, k)).permutation(stop - start)
                           if self.shuffle else np.arange(stop - start))
                  for k, (start, stop) in enumerate(self.shard_ranges())]
        taken = [0] * self.shards
        parts = []
        for length in self.batch_lengths():
            for k in range(self.shards):
                start, stop = worker_range(length, self.shards, k)
                parts.append(shards[k][taken[k]:taken[k] + stop - start])
                taken[k] += stop - start
        return np.concatenate(parts)

    def batches(self, epoch: int, indices: bool = True):
        """Yield each global batch of ``epoch``: an index array, or a slice without shuffling.
        ``indices=False``, for a rank that reads no samples (a parameter server): slices of
        the same lengths, with no shuffle computed."""
        contiguous = not indices or (not self.shuffle and self.shards == 1)
        order = None if contiguous else self.epoch_order(epoch)
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
