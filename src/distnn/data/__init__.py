"""Training data: generators, file loaders and the batch sampler."""

from distnn.data.dataset import Dataset, load_dataset
from distnn.data.sampler import BatchSampler, worker_range

__all__ = ["BatchSampler", "Dataset", "load_dataset", "worker_range"]
