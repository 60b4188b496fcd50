"""Throughput side by side in one run: bare NumPy, distnn serial, allreduce, ps-sync.

    python benchmarks/speed.py [--rounds 3] [--epochs 1]

784-256-10, float32, 128 samples per worker per step, on Fashion-MNIST when Debian's
dataset-fashion-mnist is installed (synthetic data of the same size otherwise); and the
2-64-3 seed model (float64, full batch of 30,000). The bare NumPy reference is the same
maths written plainly and carefully (no framework, no preallocation tricks). Variants
alternate within each round; the table gives median samples/s and the ratio to the
serial distnn run. One BLAS thread per process throughout.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")})

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from speedup import fashion_mnist_or_synthetic, run  # noqa: E402


def bare_numpy_epoch(x, y, sizes, batch, dtype, seed=0) -> float:
    """One shuffled epoch of 2-layer MLP SGD(momentum) in plain NumPy; returns samples/s.

    Mini-batches are shuffled, as distnn does (an unshuffled loop reads contiguous rows:
    less work than the training it stands in for); a full batch is not.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(size=(sizes[0], sizes[1])) * np.sqrt(2 / sizes[0])).astype(dtype)
    b1 = np.zeros(sizes[1], dtype)
    w2 = (rng.normal(size=(sizes[1], sizes[2])) * np.sqrt(2 / sizes[1])).astype(dtype)
    b2 = np.zeros(sizes[2], dtype)
    params = [w1, b1, w2, b2]
    velocity = [np.zeros_like(p) for p in params]
    lr, decay, momentum, t = 0.05, 5e-4, 0.9, 0
    start = time.perf_counter()
    order = rng.permutation(x.shape[0]) if batch < x.shape[0] else None
    for s in range(0, x.shape[0], batch):
        rows = slice(s, s + batch) if order is None else order[s:s + batch]
        xb, yb = x[rows], y[rows]
        n = xb.shape[0]
        h = np.maximum(xb @ w1 + b1, 0)
        z = h @ w2 + b2
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(n), yb] -= 1
        p /= n
        dh = (p @ w2.T) * (h > 0)
        grads = [xb.T @ dh, dh.sum(axis=0), h.T @ p, p.sum(axis=0)]
        lr_t = lr / (1 + decay * t)
        for param, v, g in zip(params, velocity, grads):
            v *= momentum
            v -= lr_t * g
            param += v
        t += 1
    return x.shape[0] / (time.perf_counter() - start)


def distnn_run(args: list[str], procs: int, out: Path) -> float:
    """samples/s of ``distnn train`` with one BLAS thread per process."""
    return run(args, procs, "1", out)["samples_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed-epochs", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="distnn-speed-"))
    dataset, name, x, y = fashion_mnist_or_synthetic(work)
    common = [*dataset, "--hidden", "256", "--lr", "0.05", "--lr-decay", "5e-4",
              "--epochs", str(args.epochs), "--eval-every", str(args.epochs)]
    variants = {
        "bare NumPy loop, batch 128": lambda out: bare_numpy_epoch(x, y, (784, 256, 10), 128,
                                                                    np.float32),
        "distnn serial, batch 128": lambda out: distnn_run([*common, "--batch-size", "128"], 1, out),
        "allreduce 2 procs, shared memory, 2x128": lambda out: distnn_run(
            [*common, "--strategy", "allreduce", "--batch-size", "256"], 2, out),
        "allreduce 2 procs, MPI Allreduce, 2x128": lambda out: distnn_run(
            [*common, "--strategy", "allreduce", "--batch-size", "256", "--no-shared-memory"], 2,
            out),
        "ps-sync 3 procs (1+2), 2x128": lambda out: distnn_run(
            [*common, "--strategy", "ps-sync", "--batch-size", "256"], 3, out),
    }
    from distnn.data.spiral import spiral_data
    sx, sy = spiral_data(10_000, 3, np.random.RandomState(0))
    seed_variants = {
        "seed: bare NumPy loop": lambda out: np.median([bare_numpy_epoch(
            sx, sy.astype(np.intp), (2, 64, 3), 30_000, np.float64) for _ in range(20)]),
        "seed: distnn serial": lambda out: distnn_run(
            ["--preset", "seed", "--epochs", str(args.seed_epochs), "--eval-every",
             str(args.seed_epochs)], 1, out),
    }
    for title, group, baseline in ((f"784-256-10 on {name}", variants, "distnn serial, batch 128"),
                                   ("2-64-3 seed model, full batch", seed_variants,
                                    "seed: distnn serial")):
        rates = {label: [] for label in group}
        for r in range(args.rounds):
            for i, (label, measure) in enumerate(group.items()):
                rates[label].append(measure(work / f"{title[:4]}-{i}-{r}"))
        base = statistics.median(rates[baseline])
        print(f"\n{title} (median of {args.rounds} rounds, samples/s)")
        for label, values in rates.items():
            median = statistics.median(values)
            print(f"  {label:42s} {median:12,.0f}   {median / base:5.2f}x distnn serial"
                  f"   (min {min(values):,.0f}, max {max(values):,.0f})")


if __name__ == "__main__":
    main()
