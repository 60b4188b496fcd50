"""``--deterministic`` at this communicator's size, in one MPI job; run it at several sizes
and compare the files bit for bit.

Written for any communicator size: every case trains on every strategy this size allows
(size 1: serial and allreduce; more: allreduce and ps-sync, and from 3 processes ps-sync
with 2 sharded servers) and every transport (shared memory and messages, from 2
processes), and rank 0 saves the final parameters under the
case's name. Besides:
- ``plain``: float32 allreduce without ``--deterministic`` (the files show that the flag
  matters: these differ between sizes);
- ``uninterrupted`` and ``resumed``: a deterministic run, and the same run stopped mid-epoch
  (as Ctrl-C stops one, with a checkpoint) and resumed from its checkpoint on one process
  fewer (a sub-communicator): the two must be the same bits.

Usage: mpiexec -n N python deterministic.py OUT_DIR
Rank 0 writes OUT_DIR/params-N.npz ({case strategy transport: parameters}).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI
from stopping import train_until_stopped

from distnn.checkpoint import load_checkpoint
from distnn.config import make_config
from distnn.data import load_dataset
from distnn.train import train

# 120 rows in batches of 37 (the last of 9): micro-batches of 4 and 5 rows, then of 1 and 2.
BASE = dict(samples_per_class=40, epochs=3, batch_size=37, eval_every=3, standardize=False,
            seed=5, deterministic=True, kernels="numpy")
SGD = dict(optimizer="sgd", lr=0.5, momentum=0.9)
ADAM = dict(optimizer="adam", lr=0.01)
CASES = {
    "sgd-float32": dict(SGD, dtype="float32"),
    "sgd-float64": dict(SGD, dtype="float64"),
    "adam-float32": dict(ADAM, dtype="float32"),
    "adam-float64": dict(ADAM, dtype="float64"),
    "sgd-nesterov-decay-tanh-dropout-float32": dict(SGD, nesterov=True, weight_decay=1e-3,
                                                    activation="tanh", dropout=0.2,
                                                    dtype="float32"),
    "adamw-5-micro-batches-float32": dict(optimizer="adamw", lr=0.01, micro_batches=5,
                                          dtype="float32"),
}
if importlib.util.find_spec("numba"):
    CASES["sgd-fused-rows-float32"] = dict(SGD, dtype="float32", kernels="fused")
    CASES["adam-fused-blas-float32"] = dict(ADAM, dtype="float32", kernels="fused", classes=7)
TRANSPORTS = {"shared": dict(shared_memory=True), "messages": dict(shared_memory=False)}


def strategies(size: int) -> dict:
    """Name: options, of every strategy ``size`` processes allow."""
    if size == 1:
        return {"serial": dict(strategy="serial"), "allreduce": dict(strategy="allreduce")}
    found = {"allreduce": dict(strategy="allreduce"), "ps-sync": dict(strategy="ps-sync")}
    if size >= 3:
        found["ps-sync-2-servers"] = dict(strategy="ps-sync", servers=2)
    return found


def transports(size: int) -> dict:
    return {"shared": TRANSPORTS["shared"]} if size == 1 else TRANSPORTS


def stopped_then_resumed_on_fewer(config, comm, dataset, out: Path) -> np.ndarray | None:
    """Train on ``comm`` until a stop, then resume on all its ranks but the last (all of
    them at size 1); the parameters on rank 0, None elsewhere."""
    train_until_stopped(config, comm, dataset, out)
    size, rank = comm.Get_size(), comm.Get_rank()
    fewer = comm.Split(0 if rank < max(size - 1, 1) else MPI.UNDEFINED, rank)
    params = None
    if fewer != MPI.COMM_NULL:
        model, _ = train(config, fewer, dataset, resume=load_checkpoint(out))
        params = np.array(model.params, copy=True)
        fewer.Free()
    comm.Barrier()
    return params if rank == 0 else None


def main() -> None:
    comm = MPI.COMM_WORLD
    size, out = comm.Get_size(), Path(sys.argv[1])
    results = {}
    for name, options in CASES.items():
        config = make_config(**{**BASE, **options})
        dataset = load_dataset(config.data)
        for strategy, choice in strategies(size).items():
            for transport, memory in transports(size).items():
                model, _ = train(config.replace(**choice, **memory), comm, dataset)
                results[f"{name} {strategy} {transport}"] = np.array(model.params, copy=True)
    plain = make_config(**{**BASE, **CASES["sgd-float32"], "deterministic": False})
    dataset = load_dataset(plain.data)
    model, _ = train(plain.replace(strategy="allreduce"), comm, dataset)
    results["plain"] = np.array(model.params, copy=True)
    # 5 steps an epoch: the stop (at the second agreement, global step 16) falls mid-epoch.
    resumable = make_config(**{**BASE, **CASES["sgd-float32"], "batch_size": 25, "epochs": 4},
                            strategy="allreduce", checkpoint_every=1)
    model, _ = train(resumable, comm, dataset)
    results["uninterrupted"] = np.array(model.params, copy=True)
    resumed = stopped_then_resumed_on_fewer(resumable, comm, dataset, out / f"resumed-{size}")
    if comm.Get_rank() == 0:
        results["resumed"] = resumed
        np.savez(out / f"params-{size}.npz", **results)


main()
