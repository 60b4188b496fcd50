"""Run ``distnn train`` (ps-sync) with one rank slow in every piece of the update it
applies, for the split between the server's piece and the helpers' that moves towards an
even finish.

Usage: slow_update.py RANK SECONDS SPLIT_FILE distnn-train-args...

At the end the server (rank 0) writes into SPLIT_FILE where its piece of the last update
ended and how many parameters there are.
"""

import sys
import time
from pathlib import Path

from mpi4py import MPI

from distnn import cli
from distnn.parallel.ps_sync import PSSync

slow_rank, delay, split_file = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
rank = MPI.COMM_WORLD.Get_rank()
apply_piece, finish = PSSync._apply_piece, PSSync.finish


def slow_piece(self, piece, last=True):
    if rank == slow_rank:
        time.sleep(delay)
    return apply_piece(self, piece, last)


def finish_noting_the_split(self):
    if rank == 0:
        split_file.write_text(f"{self._pieces()[0].stop} {self.model.n_params}")
    return finish(self)


PSSync._apply_piece = slow_piece
PSSync.finish = finish_noting_the_split
sys.exit(cli.main(["train", *sys.argv[4:]]))
