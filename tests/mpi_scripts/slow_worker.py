"""Run ``distnn train`` with one worker computing slowly (staleness-bound tests; ps-sync's
helpers, which must wait for the slow worker's gradient).

Usage: slow_worker.py RANK SECONDS [--late] distnn-train-args...

``--late``: the worker is slow after its gradient's early part is in
(``MLP.announce_early_part``), not before its gradient.
"""

import sys
import time

from mpi4py import MPI

from distnn import cli
from distnn.nn import MLP
from distnn.parallel.strategy import Strategy

slow_rank, delay = int(sys.argv[1]), float(sys.argv[2])
late = sys.argv[3:4] == ["--late"]
slow_here = MPI.COMM_WORLD.Get_rank() == slow_rank
gradient, announce = Strategy.local_gradient_sum, MLP.announce_early_part


def slow_gradient(self, batch):
    if slow_here and not late:
        time.sleep(delay)
    return gradient(self, batch)


def slow_after_early_part(self, rows, signal):
    def signal_then_sleep():
        signal()
        time.sleep(delay)
    return announce(self, rows, signal_then_sleep if slow_here and late else signal)


Strategy.local_gradient_sum = slow_gradient
MLP.announce_early_part = slow_after_early_part
sys.exit(cli.main(["train", *sys.argv[3 + late:]]))
