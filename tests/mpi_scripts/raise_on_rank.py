"""Run ``distnn train`` with one rank raising in its Nth step (fail-fast test).

Usage: raise_on_rank.py RANK STEP distnn-train-args...
"""

import sys

from mpi4py import MPI

from distnn import cli
from distnn.parallel import STRATEGIES

failing_rank, failing_step = int(sys.argv[1]), int(sys.argv[2])
calls = {"n": 0}

for strategy in STRATEGIES.values():
    original = strategy.step

    def step(self, batch, _original=original):
        calls["n"] += 1
        if MPI.COMM_WORLD.Get_rank() == failing_rank and calls["n"] == failing_step:
            raise RuntimeError(f"injected failure in step {failing_step}")
        _original(self, batch)

    strategy.step = step

sys.exit(cli.main(["train", *sys.argv[3:]]))
