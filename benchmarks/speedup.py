"""Serial vs ps-sync training time, through the real CLI, interleaved in one run.

    python benchmarks/speedup.py [--repeats 3] [--seed-epochs 1000] [--synthetic-epochs 4]

Workloads: the seed preset (spiral 30,000 samples, 2-64-3, full batch; fewer epochs than
the original's 10,000) and a 784-256-10 MLP on synthetic data at batch 128. Serial runs
with one BLAS thread (the single-core baseline) and with the default threads. Reports the
median ``train_time_s`` (slowest rank, evaluation excluded), its spread, final test
accuracy, and speedup = serial (1 thread) / strategy.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

import measured


def synthetic(path: Path, samples: int = 16384, features: int = 784, classes: int = 10) -> Path:
    """A learnable problem: labels from a random linear teacher."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples + 2048, features)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(features, classes)), axis=1)
    np.savez(path, X_train=x[:samples], y_train=y[:samples], X_test=x[samples:], y_test=y[samples:])
    return path


FMNIST = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_or_synthetic(work: Path) -> tuple[list[str], str, np.ndarray, np.ndarray]:
    """distnn's --dataset flags, a name and the training arrays: Fashion-MNIST where
    Debian's dataset-fashion-mnist is installed, synthetic data of its size otherwise."""
    if (FMNIST / "train-images-idx3-ubyte.gz").exists():
        from distnn.config import make_config
        from distnn.data import load_dataset
        data = load_dataset(make_config(dataset="fashion-mnist").data)
        return ["--dataset", "fashion-mnist"], "Fashion-MNIST", data.x_train, data.y_train
    path = synthetic(work / "synthetic.npz", samples=60000)
    with np.load(path) as arrays:
        return ["--dataset", str(path)], "synthetic 60000x784", arrays["X_train"], arrays["y_train"]


def run(args: list[str], procs: int, threads: str | None, out: Path,
        python: str = sys.executable) -> dict:
    """``distnn train`` by ``python`` (another venv's, for another MPI) with ``threads`` BLAS
    threads per rank (None: the library's default); its ``result.json``."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
        if threads:
            env[name] = threads
    command = [python, "-m", "distnn", "train", "--quiet", "--out", str(out), *args]
    if procs > 1:
        command += ["--procs", str(procs)]
    subprocess.run(command, check=True, env=env, timeout=900)
    return json.loads((out / "result.json").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed-epochs", type=int, default=1000)
    parser.add_argument("--synthetic-epochs", type=int, default=4)
    args = parser.parse_args()
    work = measured.scratch("distnn-bench-")
    data = synthetic(work / "synthetic.npz")
    workloads = {
        f"seed preset, {args.seed_epochs} epochs": [
            "--preset", "seed", "--epochs", str(args.seed_epochs), "--eval-every",
            str(args.seed_epochs)],
        f"784-256-10 synthetic, batch 128, {args.synthetic_epochs} epochs": [
            "--dataset", str(data), "--hidden", "256", "--batch-size", "128", "--lr", "0.05",
            "--epochs", str(args.synthetic_epochs), "--eval-every", str(args.synthetic_epochs)],
    }
    variants = [("serial, 1 BLAS thread", ["--strategy", "serial"], 1, "1"),
                ("serial, default threads", ["--strategy", "serial"], 1, None),
                ("ps-sync, 3 processes", ["--strategy", "ps-sync"], 3, "1")]
    print(f"{os.cpu_count()} cores; median of {args.repeats} (min-max); "
          "speedup vs serial with 1 BLAS thread")
    for title, base in workloads.items():
        times = {name: [] for name, *_ in variants}
        accuracy = {}
        for repeat in range(args.repeats):
            for name, extra, procs, threads in variants:
                result = run([*base, *extra], procs, threads, work / f"{len(times[name])}-{repeat}")
                times[name].append(result["train_time_s"])
                accuracy[name] = result["final"]["test_accuracy"]
        baseline = statistics.median(times[variants[0][0]])
        print(f"\n{title}")
        print(f"  {'variant':26s} {'time s':>8s} {'spread':>15s} {'speedup':>8s} {'test acc':>9s}")
        for name, *_ in variants:
            median = statistics.median(times[name])
            print(f"  {name:26s} {median:8.2f} {min(times[name]):7.2f}-{max(times[name]):<7.2f}"
                  f" {baseline / median:7.2f}x {accuracy[name]:9.4f}")


if __name__ == "__main__":
    main()
