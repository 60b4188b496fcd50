"""Every optimizer and layer option on every strategy this communicator's size allows, in
one MPI job.

Written for any communicator size (run it at several): for each optimizer (with its
schedules and options; two cases add tanh or GELU and dropout) and each strategy (the
parameter servers with every number of servers that leaves a worker, ps-async with one
worker) and transport,
- the final parameters against serial's (synchronous strategies: equal to rounding;
  ps-async with one worker: bit for bit);
- a run stopped mid-way (as Ctrl-C stops one: at a step all ranks agree on, with a
  checkpoint) and resumed from its checkpoint, against the same run never stopped: bit
  for bit.

Usage: mpiexec -n N python every_optimizer.py OUT_DIR
Rank 0 prints one JSON line: {case: {"difference": d, "exact": bool, "resumed_exact": bool}},
a case named "<optimizer> <strategy> servers=<K> <transport>".
"""

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI
from stopping import train_until_stopped

from distnn.checkpoint import load_checkpoint
from distnn.config import make_config
from distnn.data import load_dataset
from distnn.train import train

BASE = dict(samples_per_class=100, dtype="float64", epochs=6, batch_size=37, eval_every=3,
            standardize=False, seed=3)
OPTIMIZERS = {
    "sgd": dict(optimizer="sgd", lr=0.5, momentum=0.9),
    "sgd-nesterov-decay-cosine-warmup": dict(optimizer="sgd", lr=0.5, momentum=0.9,
                                              nesterov=True, weight_decay=1e-3,
                                              schedule="cosine", warmup_epochs=1),
    "adam": dict(optimizer="adam", lr=0.01),
    "adamw-step-linear-scaling": dict(optimizer="adamw", lr=0.01, schedule="step",
                                      lr_step_epochs=2, lr_scaling="linear", lr_base_batch=64),
    "sgd-tanh-dropout": dict(optimizer="sgd", lr=0.5, momentum=0.9, activation="tanh",
                             dropout=0.2),
    "adam-gelu-dropout": dict(optimizer="adam", lr=0.01, activation="gelu", dropout=0.3),
}
TRANSPORTS = {"shared": dict(shared_memory=True), "messages": dict(shared_memory=False)}


def strategies(size: int) -> list[tuple[str, int]]:
    """(strategy, servers): allreduce; ps-sync with 1..size-1 servers; ps-async with one
    worker (serial exactly), on size-1 servers."""
    cases = [("allreduce", 1)]
    cases += [("ps-sync", servers) for servers in range(1, size)]
    if size >= 2:
        cases.append(("ps-async", size - 1))
    return cases


def params_of(model) -> np.ndarray:
    return np.array(model.params, copy=True)


def stopped_then_resumed(config, comm, dataset, out: Path) -> np.ndarray:
    """Train until a stop, checkpointing into ``out``, then resume to the end."""
    train_until_stopped(config, comm, dataset, out)
    checkpoint = load_checkpoint(out)
    model, _ = train(config, comm, dataset, resume=checkpoint)
    return params_of(model)


def main() -> None:
    comm = MPI.COMM_WORLD
    out = Path(sys.argv[1])
    dataset = load_dataset(make_config(**BASE).data)
    results = {}
    for name, options in OPTIMIZERS.items():
        serial = None
        if comm.Get_rank() == 0:
            model, _ = train(make_config(**BASE, **options), MPI.COMM_SELF, dataset)
            serial = params_of(model)
        for strategy, servers in strategies(comm.Get_size()):
            for transport, memory in TRANSPORTS.items():
                config = make_config(**BASE, **options, **memory, strategy=strategy,
                                     servers=servers)
                model, _ = train(config, comm, dataset)
                params = params_of(model)
                resumed = stopped_then_resumed(config, comm, dataset,
                                               out / f"{name}-{strategy}-{servers}-{transport}")
                if comm.Get_rank() == 0:
                    results[f"{name} {strategy} servers={servers} {transport}"] = {
                        "difference": float(np.max(np.abs(params - serial)) / np.max(np.abs(serial))),
                        "exact": bool(np.array_equal(params, serial)),
                        "resumed_exact": bool(np.array_equal(resumed, params)),
                    }
    if comm.Get_rank() == 0:
        print(json.dumps(results))


main()
