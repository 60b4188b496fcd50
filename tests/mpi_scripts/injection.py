"""Fault injection for the multi-process tests: make one rank fail at a chosen call."""

from mpi4py import MPI

from distnn.optim import SGD


def fail_in_update(rank: int, call: int, message: str) -> None:
    """Rank ``rank`` raises ``RuntimeError(message)`` in its ``call``-th optimizer update
    (1-based); every other update, on every rank, runs as usual."""
    original, calls = SGD.apply, {"n": 0}

    def apply(self, *args, **kwargs):
        calls["n"] += 1
        if MPI.COMM_WORLD.Get_rank() == rank and calls["n"] == call:
            raise RuntimeError(message)
        return original(self, *args, **kwargs)

    SGD.apply = apply
