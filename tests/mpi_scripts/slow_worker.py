"""Run ``distnn train`` with one worker computing slowly (staleness-bound tests).

Usage: slow_worker.py RANK SECONDS distnn-train-args...
"""

import sys
import time

from mpi4py import MPI

from distnn import cli
from distnn.parallel.strategy import Strategy

slow_rank, delay = int(sys.argv[1]), float(sys.argv[2])
original = Strategy.local_gradient_sum


def slow_gradient(self, batch):
    if MPI.COMM_WORLD.Get_rank() == slow_rank:
        time.sleep(delay)
    return original(self, batch)


Strategy.local_gradient_sum = slow_gradient
sys.exit(cli.main(["train", *sys.argv[3:]]))
