"""What ``--timeline`` costs: per lap, and per step of a real strategy.

    python benchmarks/timeline_overhead.py                       # laps, in process
    mpiexec -n 3 python benchmarks/timeline_overhead.py --steps 2000 [--strategy allreduce]

Laps: nanoseconds per ``timer.lap(phase)`` of the default ``PhaseTimer``, of a
``RecordingTimer`` outside its window and inside it (the best of ``--rounds``).
Steps (under MPI): steps/s of the strategy with the default timer and with a
``RecordingTimer`` that records every step, alternated round by round (this machine is
noisy: compare within one run).
"""

import argparse
import os
import time
from types import SimpleNamespace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from distnn.config import make_config  # noqa: E402
from distnn.data import Dataset  # noqa: E402
from distnn.parallel.timing import PhaseTimer, RecordingTimer  # noqa: E402
from distnn.timeline import capacity  # noqa: E402
from distnn.train import setup  # noqa: E402

LAPS = 200_000


def lap_ns(timer, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        lap = timer.lap
        started = time.perf_counter()
        for _ in range(LAPS // 4):
            lap("compute")
            lap("comm")
            lap("update")
            lap("wait")
        best = min(best, (time.perf_counter() - started) / LAPS)
    return best * 1e9


def laps(rounds: int) -> None:
    source = SimpleNamespace(batch_number=0)
    outside, inside = RecordingTimer(), RecordingTimer()
    for timer, first in ((outside, 1), (inside, 0)):
        timer.follow(source)
        timer.record(first, 1, LAPS)
    for name, timer in (("PhaseTimer (no --timeline)", PhaseTimer()),
                        ("RecordingTimer, outside the window", outside),
                        ("RecordingTimer, inside the window", inside)):
        inside.recorded = 0
        print(f"{name:38s} {lap_ns(timer, rounds):6.0f} ns per lap")


def steps(comm, args) -> None:
    rng = np.random.default_rng(0)
    n = 4096
    data = Dataset("synthetic", rng.normal(size=(n, args.features)).astype(np.float32),
                   rng.integers(0, 10, n), rng.normal(size=(64, args.features)).astype(np.float32),
                   rng.integers(0, 10, 64), 10)
    rates = {False: [], True: []}
    for _ in range(args.rounds):
        for recording in (False, True):
            config = make_config(strategy=args.strategy, hidden=(args.hidden,),
                                 batch_size=args.batch, lr=0.01, standardize=False,
                                 timeline="unused.json" if recording else None)
            job = setup(config, comm, data)
            if recording:
                job.timer.record(0, args.steps, capacity(args.steps,
                                                         job.roles.is_server(comm.Get_rank()),
                                                         job.roles.n_workers))
            batches = list(job.sampler.batches(0))
            comm.Barrier()
            started = time.perf_counter()
            for i in range(args.steps):
                job.strategy.batch_number = i
                job.strategy.step(batches[i % len(batches)])
            comm.Barrier()
            rates[recording].append(args.steps / (time.perf_counter() - started))
            job.strategy.finish()
    if comm.Get_rank() == 0:
        for recording, measured in rates.items():
            print(f"{args.strategy} on {comm.Get_size()} ranks, "
                  f"{'recording every step' if recording else 'no --timeline       '}: "
                  f"{np.mean(measured):8.1f} ± {1.96 * np.std(measured):6.1f} steps/s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=("ps-sync", "allreduce"), default="ps-sync")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        laps(args.rounds)
    else:
        steps(comm, args)


if __name__ == "__main__":
    main()
