"""Do waiting ranks steal a core? Blocking, polite and shared-memory waits, side by side.

    mpiexec [-bind-to core] -n 3 python benchmarks/wait_policy.py [--strategy ps-sync|allreduce]
                                     [--features 784 --hidden 256 --batch 128]

Runs the real strategy on synthetic data, alternating three policies for ``--rounds``
rounds (this machine is noisy: compare within one run), and prints steps/s and rank 0's
CPU seconds per wall second for each:

- blocking: messages, MPICH's blocking calls (which spin);
- polite: messages, Test/Iprobe plus short sleeps (``distnn.parallel.comm``);
- shared memory: MPI-3 shared buffers; ps-sync waits on pipe doorbells, allreduce on
  barriers (its default).
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from distnn.config import make_config  # noqa: E402
from distnn.data import Dataset  # noqa: E402
from distnn.train import setup  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402

POLICIES = {
    "blocking (MPICH spins)": dict(polite=False, shared_memory=False),
    "polite (probe + sleep)": dict(polite=True, shared_memory=False),
    "shared memory": dict(shared_memory=True),
}


def measure(comm, data, args, policy: dict) -> tuple[float, float]:
    config = make_config(strategy=args.strategy, hidden=(args.hidden,), batch_size=args.batch,
                         lr=0.01, momentum=0.9, standardize=False,
                         shared_memory=policy["shared_memory"])
    job = setup(config, comm, data)
    strategy = job.strategy
    strategy.polite = policy.get("polite", strategy.polite)
    batches = list(job.sampler.batches(0))
    for batch in batches[:5]:
        strategy.step(batch)
    comm.Barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(args.steps):
        strategy.step(batches[i % len(batches)])
    comm.Barrier()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    strategy.finish()
    return args.steps / wall, cpu / wall


def markdown(results: list[dict]) -> str:
    """One row per policy, one pair of columns per workload (each a run of this script)."""
    head = "| ps-sync waiting policy |" + "".join(
        f" {r['workload']}: steps/s | rank 0 CPU |" for r in results)
    lines = [head, "|---|" + "---|---|" * len(results)]
    for label in POLICIES:
        cells = []
        for r in results:
            policies = r["policies"]
            rate, base = (np.median(policies[name]["rates"]) for name in (label, BLOCKING))
            cells.append(f" {rate:,.0f} ({rate / base:.2f}×) | "
                         f"{np.median(policies[label]['cpu']):.0%} |")
        lines.append(f"| {label} |" + "".join(cells))
    return "\n".join(lines) + "\n"


BLOCKING = "blocking (MPICH spins)"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=("ps-sync", "allreduce"), default="ps-sync")
    parser.add_argument("--features", type=int, default=784)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="rank 0 writes the measurements and their stamp here")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    stamp = measured.Stamp(f"mpiexec -bind-to core -n {comm.Get_size()} python "
                           "benchmarks/wait_policy.py " + " ".join(sys.argv[1:]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, args.features)).astype(np.float32)
    y = rng.integers(0, 10, size=args.samples)
    data = Dataset("synthetic", x, y, x[:10], y[:10], 10)
    results = {label: [] for label in POLICIES}
    for _ in range(args.rounds):
        for label, policy in POLICIES.items():
            results[label].append(measure(comm, data, args, policy))
    if comm.Get_rank() == 0:
        print(f"{args.strategy}, {comm.Get_size()} processes on {os.cpu_count()} cores, "
              f"{args.features}-{args.hidden}-10, global batch {args.batch}, {args.steps} steps")
        blocking = np.median([r[0] for r in results[BLOCKING]])
        for label, runs in results.items():
            rates = np.array([r[0] for r in runs])
            server_cpu = np.array([r[1] for r in runs])
            print(f"  {label:24s} {np.median(rates):8.1f} steps/s  (runs: "
                  f"{', '.join(f'{r:.1f}' for r in rates)})  rank 0 CPU {np.median(server_cpu):.0%}"
                  f"  {np.median(rates) / blocking:.2f}x blocking")
        measured.write(args.json, {
            "strategy": args.strategy, "processes": comm.Get_size(),
            "workload": f"{args.features}-{args.hidden}-10, batch {args.batch:,}",
            "policies": {label: {"rates": [r[0] for r in runs], "cpu": [r[1] for r in runs]}
                         for label, runs in results.items()},
            "stamp": stamp.close()})


if __name__ == "__main__":
    main()
