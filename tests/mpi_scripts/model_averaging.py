"""Model averaging against serial SGD, with every worker's velocity in view.

Usage: model_averaging.py STRATEGY EPOCHS [flags...]; prints one JSON line on rank 0:
the final parameters' largest relative difference from a serial run on rank 0, and the
same for the mean of the workers' velocities against serial's velocity.
"""

import json
import sys

import numpy as np
from mpi4py import MPI

from distnn.config import make_config
from distnn.data import load_dataset
from distnn.train import setup


def train(config, comm, dataset):
    job = setup(config, comm, dataset)
    for epoch in range(config.epochs):
        job.strategy.run_epoch(job.sampler, epoch)
    job.strategy.synchronize()
    stats = job.strategy.finish()
    return job.model, job.optimizer, job.strategy, stats


def main() -> None:
    comm = MPI.COMM_WORLD
    strategy_name, epochs, *flags = sys.argv[1:]
    overrides = dict(samples_per_class=100, dtype="float64", lr=0.5, epochs=int(epochs),
                     strategy=strategy_name, combine="models")
    for flag in flags:
        name, value = flag.split("=")
        overrides[name] = int(value) if value.isdigit() else value
    config = make_config(**overrides)
    dataset = load_dataset(config.data)
    model, optimizer, strategy, stats = train(config, comm, dataset)
    worker = strategy.worker_index
    velocity = optimizer.velocity if worker is not None else np.zeros_like(model.params)
    total = np.zeros_like(velocity)
    comm.Reduce(velocity, total, op=MPI.SUM, root=0)
    if comm.Get_rank() != 0:
        return
    mean_velocity = total / strategy.roles.n_workers
    serial, serial_optimizer, _, _ = train(config.replace(strategy="serial", combine="gradients"),
                                           MPI.COMM_SELF, dataset)

    def difference(a, b):
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    print(json.dumps({"params": difference(model.params, serial.params),
                      "mean_velocity": difference(mean_velocity, serial_optimizer.velocity),
                      "own_velocity": difference(velocity, serial_optimizer.velocity),
                      **stats}))


main()
