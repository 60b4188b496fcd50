"""Run ``distnn train`` with one rank raising in its Nth gradient or update (fail-fast test).

Usage: raise_on_rank.py RANK N distnn-train-args...
Workers fail in their Nth gradient computation, a parameter server in its Nth update (the
update it applies, or counts where its helpers apply all of it).
"""

import sys

from mpi4py import MPI

from distnn import cli
from distnn.optim import SGD
from distnn.parallel.strategy import Strategy

failing_rank, failing_call = int(sys.argv[1]), int(sys.argv[2])
calls = {"gradient": 0, "update": 0}   # each counted apart: a worker may also apply a piece


def failing(original, kind: str):
    def wrapper(*args, **kwargs):
        calls[kind] += 1
        if MPI.COMM_WORLD.Get_rank() == failing_rank and calls[kind] == failing_call:
            raise RuntimeError(f"injected failure in call {failing_call}")
        return original(*args, **kwargs)
    return wrapper


Strategy.local_gradient_sum = failing(Strategy.local_gradient_sum, "gradient")
SGD.apply = failing(SGD.apply, "update")
SGD.advance = failing(SGD.advance, "update")
sys.exit(cli.main(["train", *sys.argv[3:]]))
