"""Run ``distnn train`` with one rank stopping itself (SIGSTOP) in the first evaluation,
just before the ranks agree on their peak memory use: the other ranks must end the job by
the stall timeout, not wait in a collective for ever.

Usage: silent_in_evaluation.py RANK distnn-train-args...
"""

import os
import signal
import sys

from mpi4py import MPI

from distnn import cli, train

silent_rank = int(sys.argv[1])
measured = train.peak_rss_mb


def peak_rss_mb() -> float:
    if MPI.COMM_WORLD.Get_rank() == silent_rank:
        os.kill(os.getpid(), signal.SIGSTOP)
    return measured()


train.peak_rss_mb = peak_rss_mb
sys.exit(cli.main(["train", *sys.argv[2:]]))
