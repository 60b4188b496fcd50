"""Velocities decaying into float32 subnormals: epoch time with and without the flush.

    OPENBLAS_NUM_THREADS=1 python benchmarks/subnormals.py [--epochs 6]

Serial 784-256-10 on Fashion-MNIST, batch 128, SGD(0.05, decay 5e-4, momentum 0.9); the
two variants alternate epoch by epoch in one process (this machine is noisy).
"""

import argparse
import time

import numpy as np

from distnn import optim
from distnn.config import make_config
from distnn.data import load_dataset
from distnn.nn import MLP
from distnn.optim import sgd


def epoch(model, optimizer, x, y) -> float:
    start = time.perf_counter()
    for s in range(0, x.shape[0], 128):
        model.gradient_sum(x[s:s + 128], y[s:s + 128])
        optimizer.step(model.grads, min(128, x.shape[0] - s))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    data = load_dataset(make_config(dataset="fashion-mnist").data)
    runs = {}
    for flush in (True, False):
        model = MLP([784, 256, 10], seed=0)
        runs[flush] = (model, optim.SGD(model.params, lr=0.05, lr_decay=5e-4, momentum=0.9))
    times = {True: [], False: []}
    never = 1 << 62
    for e in range(args.epochs):
        for flush in (True, False):
            sgd.FLUSH_EVERY = 64 if flush else never
            times[flush].append(epoch(*runs[flush], data.x_train, data.y_train))
        tiny = np.finfo(np.float32).tiny
        velocity = runs[False][1].velocity
        subnormal = np.count_nonzero((velocity != 0) & (np.abs(velocity) < tiny))
        print(f"epoch {e}: flush {times[True][-1]:.3f}s  no flush {times[False][-1]:.3f}s  "
              f"(subnormal velocities without flush: {subnormal})", flush=True)
    later = slice(2, None)
    ratio = np.median(times[False][later]) / np.median(times[True][later])
    print(f"epochs 2+: no-flush / flush time = {ratio:.2f}x")


if __name__ == "__main__":
    main()
