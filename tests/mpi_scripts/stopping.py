"""A run stopped as Ctrl-C stops it, for the resume tests of the multi-process scripts."""

from pathlib import Path

from distnn.interrupt import Interrupted
from distnn.rundir import RunDirectory
from distnn.train import train


class StopAfter:
    """A stop every rank asks for at the same point, as a Ctrl-C each rank receives: at
    their ``agreements``-th agreement (``agreed``), or where a strategy agrees through its
    steps (ps-sync on one node reads ``requested`` every step and stops at the first check
    after the step that carried it) from their ``agreements``-th step on. With checks at
    global steps 0, 16, ..., both stop at the same check."""

    def __init__(self, agreements: int):
        self.left = self.reads_left = agreements

    def agreed(self, comm, spin: bool = True) -> bool:
        self.left -= 1
        return self.left == 0

    @property
    def requested(self) -> bool:
        self.reads_left -= 1
        return self.reads_left <= 0


def train_until_stopped(config, comm, dataset, out: Path) -> None:
    """Train on ``comm`` until the second agreement stops it, checkpointing into ``out``
    (rank 0 owns the run directory, as ``distnn train`` does); every rank returns once
    all have stopped."""
    run = None
    if comm.Get_rank() == 0:
        run = RunDirectory(out, config.strategy)
        run.claim()
    try:
        train(config, comm, dataset, run=run, checkpoints=True, stop=StopAfter(2))
        raise AssertionError("the run was not stopped")
    except Interrupted:
        pass
    finally:
        if run is not None:
            run.release()
    comm.Barrier()
