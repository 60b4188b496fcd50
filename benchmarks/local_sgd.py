"""Local SGD: what averaging models every K steps costs in accuracy and saves in traffic.

Runs ``distnn train --combine models --local-steps K`` for every K (K = 1 is the original's
model averaging), plus gradient averaging as the reference, and prints one markdown table
per workload: test accuracy at each evaluation, the number of averagings and the model
bytes each worker sent. Accuracy and bytes do not depend on the machine's load; the
seconds do, and are shown only as a rough guide.

    python benchmarks/local_sgd.py                       # both workloads, K = 1, 2, 4, 8
    python benchmarks/local_sgd.py --workloads seed --ks 1,4,16
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOADS = {
    # The original's intermediate workload, shortened: 2,000 full-batch epochs.
    "seed": ["--preset", "seed", "--epochs", "2000", "--eval-every", "500"],
    # Fashion-MNIST, 784-256-10, mini-batches of 128: 469 steps per epoch.
    "fmnist": ["--preset", "fmnist-sgd", "--epochs", "3", "--eval-every", "1"],
}


def run(args: list[str], out: Path) -> tuple[list[dict], dict]:
    command = [sys.executable, "-m", "distnn", "train", "--quiet", "--out", str(out), *args]
    subprocess.run(command, check=True, timeout=3600)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records, json.loads((out / "result.json").read_text())


def table(name: str, procs: int, ks: list[int], scratch: Path) -> str:
    base = [*WORKLOADS[name], "--procs", str(procs), "--strategy", "allreduce"]
    rows = [("gradients (every step)", *run(base, scratch / f"{name}-gradients"))]
    for k in ks:
        records, result = run([*base, "--combine", "models", "--local-steps", str(k)],
                              scratch / f"{name}-k{k}")
        rows.append((f"models, K = {k}", records, result))
    epochs = [r["epoch"] for r in rows[0][1]]
    lines = [f"{name}: `distnn train {' '.join(base)} [--combine models --local-steps K]`", "",
             "| combine | " + " | ".join(f"test acc @ epoch {e}" for e in epochs)
             + " | averagings | MB sent per worker | time s |",
             "|---|" + "---|" * len(epochs) + "---|---|---|"]
    for label, records, result in rows:
        accuracies = " | ".join(f"{r['test_accuracy']:.4f}" for r in records)
        averagings = result.get("averagings", "—")
        sent = result.get("bytes_sent_per_worker")
        megabytes = f"{sent / 1e6:.2f}" if sent is not None else "—"
        lines.append(f"| {label} | {accuracies} | {averagings} | {megabytes} "
                     f"| {result['train_time_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="seed,fmnist")
    parser.add_argument("--ks", default="1,2,4,8", help="local steps between averagings")
    parser.add_argument("--procs", type=int, default=2)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    with tempfile.TemporaryDirectory(prefix="distnn-local-sgd-") as scratch:
        for name in args.workloads.split(","):
            print(table(name, args.procs, ks, Path(scratch)), flush=True)


if __name__ == "__main__":
    main()
