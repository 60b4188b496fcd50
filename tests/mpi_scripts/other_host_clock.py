"""Run ``distnn train`` with one rank as if on another machine: its clock SKEW seconds
ahead of the others', and another host name (the timeline's clock-offset tests).

Usage: other_host_clock.py RANK SKEW distnn-train-args...
"""

import sys
import time

from mpi4py import MPI

rank, skew = int(sys.argv[1]), float(sys.argv[2])
if MPI.COMM_WORLD.Get_rank() == rank:
    own_clock = time.perf_counter
    time.perf_counter = lambda: own_clock() + skew
    MPI.Get_processor_name = lambda: "elsewhere"

from distnn import cli  # noqa: E402  (after the clock is set: every reading takes it)

sys.exit(cli.main(["train", *sys.argv[3:]]))
