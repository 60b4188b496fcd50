"""Optimizers over one flat parameter vector, and the schedules of their learning rate.

The contract strategies rely on is in ``base.py``. Adding an optimizer is its module plus
one line in ``REGISTRY``.
"""

from distnn.optim.adam import Adam, AdamW
from distnn.optim.base import Optimizer
from distnn.optim.schedule import Schedule
from distnn.optim.sgd import SGD, flush_subnormals, sgd_step

REGISTRY: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
}

__all__ = ["REGISTRY", "SGD", "Adam", "AdamW", "Optimizer", "Schedule", "flush_subnormals",
           "sgd_step"]
