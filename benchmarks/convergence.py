"""Does asynchrony cost accuracy? ps-async vs ps-sync (and allreduce) for the same epochs.

    python benchmarks/convergence.py [--procs 3] [--seeds 0,1,2]

Same data, model, optimizer and epochs for every strategy; prints the final test
accuracy per seed and the mean gap to ps-sync.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402
from speedup import synthetic  # noqa: E402

STRATEGIES = ("ps-sync", "ps-async", "allreduce")


def accuracy(args: list[str], out: Path) -> tuple[float, float | None]:
    subprocess.run([sys.executable, "-m", "distnn", "train", "--quiet", "--out", str(out), *args],
                   check=True, timeout=900)
    result = json.loads((out / "result.json").read_text())
    return result["final"]["test_accuracy"], result.get("staleness_mean")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    work = measured.scratch("distnn-conv-")
    data = synthetic(work / "synthetic.npz")
    workloads = {
        "spiral 3x1000, 2-64-3, batch 100, lr 0.1, 100 epochs": [
            "--batch-size", "100", "--lr", "0.1", "--epochs", "100", "--eval-every", "100"],
        "spiral 3x1000, 2-64-3, full batch, lr 1.0, 1000 epochs": [
            "--epochs", "1000", "--eval-every", "1000"],
        "synthetic 784-256-10, batch 128, lr 0.05, 5 epochs": [
            "--dataset", str(data), "--hidden", "256", "--batch-size", "128", "--lr", "0.05",
            "--epochs", "5", "--eval-every", "5"],
    }
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.procs} processes (1 server + {args.procs - 1} workers for ps-*); "
          f"test accuracy per seed {seeds}")
    for title, base in workloads.items():
        print(f"\n{title}")
        results = {}
        for strategy in STRATEGIES:
            runs = [accuracy([*base, "--strategy", strategy, "--seed", str(seed),
                              "--procs", str(args.procs)], work / f"{strategy}-{seed}")
                    for seed in seeds]
            results[strategy] = [acc for acc, _ in runs]
            stale = runs[0][1]
            extra = f"  staleness mean {stale:.2f}" if stale is not None else ""
            gap = statistics.mean(results[strategy]) - statistics.mean(results["ps-sync"])
            print(f"  {strategy:10s} {' '.join(f'{a:.4f}' for a in results[strategy])}"
                  f"  mean {statistics.mean(results[strategy]):.4f}  vs ps-sync {gap:+.4f}{extra}")


if __name__ == "__main__":
    main()
