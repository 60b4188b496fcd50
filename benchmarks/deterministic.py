"""What ``--deterministic`` costs: steps/s with and without it, serial and allreduce.

    python benchmarks/deterministic.py [--rounds 3] [--epochs 1] [--procs 2]
                                       [--micro-batches 8] [--kernels numpy,fused]

784-256-10, float32, global batch 128, on Fashion-MNIST when Debian's
dataset-fashion-mnist is installed (synthetic data of the same size otherwise), one BLAS
thread per process. Two tables:

- the serial step in this process (``train.setup``'s objects, as ``distnn train`` runs
  them), plain and deterministic interleaved step by step on the same batches, so that
  load from other processes falls on all of them alike: median and fastest step;
- whole runs through ``distnn train``, serial and allreduce, variants alternating within
  each round: the median steps/s over the rounds (updates per second of ``train_time_s``,
  the slowest rank's, evaluations excluded), the spread, the ratio to the same run
  without ``--deterministic`` and the final test accuracy.

Where the cost comes from: ``M`` micro-batches of ``128 / M`` rows make ``M`` smaller
GEMMs instead of one per rank and write ``M`` gradient vectors instead of one, and the
owner of the parameters adds ``M`` rows, not one per rank.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")})

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402
from speedup import fashion_mnist_or_synthetic, run  # noqa: E402


def serial_step(x, y, kernels: str, micro_batches: int | None):
    """A serial ``step(batch)`` as ``distnn train`` builds it, on in-process data."""
    from mpi4py import MPI

    from distnn.config import make_config
    from distnn.data import Dataset
    from distnn.train import setup

    config = make_config(dataset="arrays", hidden=(256,), dtype="float32", kernels=kernels,
                         lr=0.05, lr_decay=5e-4, momentum=0.9, batch_size=128,
                         standardize=False, epochs=100, deterministic=micro_batches is not None,
                         micro_batches=micro_batches or 8)
    data = Dataset("arrays", x, y, x[:1], y[:1], int(y.max()) + 1)
    return setup(config, MPI.COMM_SELF, data).strategy.step


def interleaved(x, y, kernels: list[str], micro_batches: list[int], steps: int) -> dict:
    """Seconds per serial step of each variant, interleaved step by step."""
    from distnn.data import BatchSampler

    variants = {(k, m): serial_step(x, y, k, m) for k in kernels for m in [None, *micro_batches]}
    times = {variant: [] for variant in variants}
    sampler = BatchSampler(x.shape[0], 128, seed=0)
    for batch in sampler.batches(0):
        for variant, step in variants.items():
            start = time.perf_counter()
            step(batch)
            times[variant].append(time.perf_counter() - start)
        if len(times[variant]) == steps:
            break
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--procs", type=int, default=2, help="allreduce's processes")
    parser.add_argument("--micro-batches", default="8", help="comma-separated values of M")
    parser.add_argument("--kernels", default="numpy,fused", help="comma-separated paths")
    parser.add_argument("--steps", type=int, default=300, help="in-process steps per variant")
    args = parser.parse_args()
    work = measured.scratch("distnn-deterministic-")
    dataset, name, x, y = fashion_mnist_or_synthetic(work)
    kernels = args.kernels.split(",")
    micro = [int(m) for m in args.micro_batches.split(",")]
    times = interleaved(x.astype("float32"), y, kernels, micro, args.steps)
    print(f"{name}, 784-256-10 float32, batch 128: the serial step in process, "
          f"{args.steps} steps interleaved, 1 BLAS thread")
    print(f"{'variant':<32} {'median ms':>10} {'vs plain':>9} {'fastest ms':>11} {'vs plain':>9}")
    for (path, m), values in times.items():
        plain = times[(path, None)]
        median, fastest = statistics.median(values), min(values)
        ratios = [f"{statistics.median(plain) / median:.2f}x", f"{min(plain) / fastest:.2f}x"] \
            if m else ["", ""]
        label = f"{path}" + (f", --deterministic M={m}" if m else "")
        print(f"{label:<32} {1e3 * median:>10.3f} {ratios[0]:>9} {1e3 * fastest:>11.3f} "
              f"{ratios[1]:>9}")
    if args.rounds < 1:
        return
    print()
    workload = [*dataset, "--hidden", "256", "--batch-size", "128", "--dtype", "float32",
                "--epochs", str(args.epochs), "--eval-every", str(args.epochs)]
    variants = []
    for path in kernels:
        for strategy, procs in (("serial", 1), ("allreduce", args.procs)):
            base = ["--kernels", path, "--strategy", strategy]
            variants.append((f"{strategy} {procs}p, {path}", base, procs, None))
            for m in micro:
                variants.append((f"{strategy} {procs}p, {path}, --deterministic M={m}",
                                 [*base, "--deterministic", "--micro-batches", str(m)], procs,
                                 f"{strategy} {procs}p, {path}"))
    steps: dict[str, list[float]] = {label: [] for label, *_ in variants}
    accuracy: dict[str, float] = {}
    for round_ in range(args.rounds):
        for i, (label, flags, procs, _) in enumerate(variants):
            result = run([*workload, *flags], procs, "1", work / f"run-{round_}-{i}")
            steps[label].append(result["steps"] / result["train_time_s"])
            accuracy[label] = result["final"]["test_accuracy"]
    print(f"{name}, 784-256-10 float32, batch 128, {args.epochs} epoch(s), "
          f"{args.rounds} rounds, 1 BLAS thread per process")
    print(f"{'variant':<52} {'steps/s':>8} {'spread':>15} {'vs plain':>9} {'test acc':>9}")
    for label, _, _, plain in variants:
        median = statistics.median(steps[label])
        ratio = f"{median / statistics.median(steps[plain]):.2f}x" if plain else ""
        spread = f"{min(steps[label]):.0f}-{max(steps[label]):.0f}"
        print(f"{label:<52} {median:>8.0f} {spread:>15} {ratio:>9} {accuracy[label]:>9.4f}")


if __name__ == "__main__":
    main()
