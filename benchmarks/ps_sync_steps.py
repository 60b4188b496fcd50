"""Where a ps-sync step's time goes on one node: every rank's timestamps, step by step.

    mpiexec -bind-to core -n 3 python -m mpi4py benchmarks/ps_sync_steps.py [--steps 1000] [--rounds 3]

784-256-10, float32, 128 samples per worker per step, the default (shared-memory) ps-sync
exactly as ``distnn train`` builds it (``train.setup``), with its doorbells, its workers'
gradient and the optimizer's ``apply`` wrapped to note the time of each event. Per step:
the slowest worker's compute (step start to its gradient), the part of it after its early
part was flagged, the longest early piece of the update (begun before the last gradient
was in) and the longest late piece (begun after), the time
from the last gradient to the last piece applied and from there to the server's last ring
(its wake-up, checks and rings), their sum (the update's share of the critical path), the
slowest worker's wake-up after that ring, and the step period. Variants alternate within
each round: the default (workers with a core to themselves help, updating the early part
while the last worker computes the rest; the split between the server's piece and theirs
moves each step towards an even finish), the server's piece fixed at its share of the
late part (before the split moved), helpers that start only once every gradient is in,
and the server updating alone.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from distnn.config import make_config  # noqa: E402
from distnn.data import Dataset  # noqa: E402
from distnn.nn import MLP  # noqa: E402
from distnn.parallel import ps_sync  # noqa: E402
from distnn.parallel.ps_sync import PSSync  # noqa: E402
from distnn.train import setup  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402

# name: (workers with a core of their own help, they start on the early part, the split
# between the server's piece and the helpers' moves towards an even finish)
VARIANTS = {"default: helpers update the early part while the last worker computes; "
            "the split moves": (True, True, True),
            "the server's piece fixed (a share of the late part)": (True, True, False),
            "helpers start once every gradient is in": (True, False, True),
            "the server updates alone": (False, False, False)}
PHASES = ("worker compute", "last worker's late part", "early pieces", "late pieces",
          "last gradient to pieces applied", "pieces applied to parameters",
          "last gradient to parameters", "worker wake-up", "step period")


class Events:
    """(name, time) pairs of one rank, noted by wrappers around the step's calls."""

    def __init__(self):
        self.marks: list[tuple[str, float]] = []

    def note(self, name: str) -> None:
        self.marks.append((name, time.perf_counter()))

    def wrap(self, owner, method: str, before: str, after: str | None = None) -> None:
        original = getattr(owner, method)

        def wrapped(*args, **kwargs):
            self.note(before)
            result = original(*args, **kwargs)
            if after:
                self.note(after)
            return result
        setattr(owner, method, wrapped)


def steps_of(marks) -> list[dict]:
    steps = []
    for name, when in marks:
        if name == "step":
            steps.append({"step": when})
        else:
            steps[-1].setdefault(name, []).append(when)
    return steps


def phases(server_marks, worker_marks) -> dict:
    """Per-step seconds of each phase (ranks on one node share ``perf_counter``'s clock)."""
    server = steps_of(server_marks)
    workers = [steps_of(marks) for marks in worker_marks]
    n = min(len(server), *(len(w) for w in workers)) - 1
    out = {phase: [] for phase in PHASES}
    for i in range(n):
        steps = [w[i] for w in workers]
        last = max(steps, key=lambda step: step["done"][0])
        done = last["done"][0]
        appliers = [step for step in (server[i], *steps) if "apply" in step]
        pieces_in = max((step["applied"][-1] for step in appliers), default=done)
        out["worker compute"].append(max(step["done"][0] - step["step"] for step in steps))
        out["last worker's late part"].append(done - last["early"][0] if "early" in last
                                              else 0.0)
        spans = [(start, end) for step in appliers
                 for start, end in zip(step["apply"], step["applied"])]
        out["early pieces"].append(max((end - start for start, end in spans if start < done),
                                       default=0.0))
        out["late pieces"].append(max((end - start for start, end in spans if start >= done),
                                      default=0.0))
        out["last gradient to pieces applied"].append(pieces_in - done)
        out["pieces applied to parameters"].append(server[i]["ring"][-1] - pieces_in)
        out["last gradient to parameters"].append(server[i]["ring"][-1] - done)
        out["worker wake-up"].append(max(w[i + 1]["step"] for w in workers)
                                     - server[i]["ring"][-1])
        out["step period"].append(server[i + 1]["step"] - server[i]["step"])
    return out


def measure(comm, data, steps: int, helpers: bool, early: bool,
            moves: bool) -> tuple[float, dict | None]:
    config = make_config(strategy="ps-sync", hidden=(256,), batch_size=128 * (comm.Get_size() - 1),
                         lr=0.05, lr_decay=5e-4, momentum=0.9, standardize=False)
    events = Events()
    previous = (ps_sync.update_helpers, MLP.announce_early_part, PSSync._move_split)
    if not helpers:
        ps_sync.update_helpers = lambda comm, roles: ()
    if not moves:
        PSSync._move_split = lambda strategy, server_last: None
    if early:
        def announce(model, rows, signal):
            def noted():
                events.note("early")
                signal()
            return previous[1](model, rows, noted)
        MLP.announce_early_part = announce
    else:
        MLP.announce_early_part = lambda model, rows, signal: rows * model.sizes[1]
    try:
        job = setup(config, comm, data)
    finally:
        ps_sync.update_helpers, MLP.announce_early_part, PSSync._move_split = previous
    strategy = job.strategy
    events.wrap(strategy._bells, "ring", "ring")
    events.wrap(strategy._bells, "wait_from", "wait", "woken")
    events.wrap(strategy, "local_gradient_sum", "gradient", "done")
    for method in ("apply", "apply_sums"):
        events.wrap(strategy.optimizer, method, "apply", "applied")
    batches = list(job.sampler.batches(0))
    for batch in batches[:20]:
        strategy.step(batch)
    comm.Barrier()
    events.marks.clear()
    start = time.perf_counter()
    for i in range(steps):
        events.note("step")
        strategy.step(batches[i % len(batches)])
    comm.Barrier()
    wall = time.perf_counter() - start
    strategy.finish()
    everyone = comm.gather(events.marks, root=0)
    if comm.Get_rank() != 0:
        return wall, None
    return wall, phases(everyone[0], everyone[1:])


def markdown(launches: list[dict]) -> str:
    """One column per variant: each phase's median (90th percentile) over the launches'
    steps, then samples/s of every launch. Launches, not rounds, are what vary most (a
    launch in a slower period of the host is slower in every phase, computing too)."""
    labels = list(launches[0]["variants"])
    lines = ["| per step, µs: median (90th percentile) | " + " | ".join(labels) + " |",
             "|---|" + "---|" * len(labels)]
    for phase in PHASES:
        cells = []
        for label in labels:
            medians = [run["variants"][label]["median_s"][phase] for run in launches]
            p90 = [run["variants"][label]["p90_s"][phase] for run in launches]
            cells.append(f"{statistics.median(medians) * 1e6:,.0f} "
                         f"({statistics.median(p90) * 1e6:,.0f})")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    rates = []
    for label in labels:
        each = sorted(run["variants"][label]["samples_per_s"] for run in launches)
        rates.append(f"**{statistics.median(each):,.0f}** ("
                     + ", ".join(f"{rate:,.0f}" for rate in each) + ")")
    lines.append(f"| samples/s: median of {len(launches)} launches (each launch) | "
                 + " | ".join(rates) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="rank 0 writes the measurements and their stamp here")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        sys.exit("run under mpiexec with at least 2 processes (1 server + workers)")
    stamp = measured.Stamp(f"mpiexec -bind-to core -n {comm.Get_size()} python "
                           "-m mpi4py benchmarks/ps_sync_steps.py " + " ".join(sys.argv[1:]))
    fmnist = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if fmnist.exists():
        from distnn.data import load_dataset
        data = load_dataset(make_config(dataset="fashion-mnist").data)
    else:
        rng = np.random.default_rng(0)
        x = rng.random((60_000, 784), dtype=np.float32)
        y = rng.integers(0, 10, size=60_000)
        data = Dataset("synthetic", x, y, x[:10], y[:10], 10)
    walls = {label: [] for label in VARIANTS}
    split = {label: {phase: [] for phase in PHASES} for label in VARIANTS}
    for _ in range(args.rounds):
        for label, variant in VARIANTS.items():
            wall, per_step = measure(comm, data, args.steps, *variant)
            walls[label].append(wall)
            if per_step:
                for phase, values in per_step.items():
                    split[label][phase].extend(values)
    if comm.Get_rank() != 0:
        return
    workers = comm.Get_size() - 1
    print(f"ps-sync, 1 server + {workers} workers on {os.cpu_count()} cores, 784-256-10, "
          f"{128 * workers} samples per step, {args.steps} steps x {args.rounds} rounds")
    result = {"processes": comm.Get_size(), "steps": args.steps, "variants": {}}
    for label in VARIANTS:
        rate = statistics.median(args.steps * 128 * workers / w for w in walls[label])
        medians = {phase: statistics.median(values) for phase, values in split[label].items()}
        p90 = {phase: float(np.percentile(values, 90)) for phase, values in split[label].items()}
        result["variants"][label] = {"samples_per_s": rate, "median_s": medians, "p90_s": p90}
        print(f"\n  {label}: {rate:,.0f} samples/s (median of rounds)")
        for phase in PHASES:
            values = np.array(split[label][phase]) * 1e6
            print(f"    {phase:28s} median {np.median(values):8.1f} us   p90 "
                  f"{np.percentile(values, 90):8.1f} us")
    result["stamp"] = stamp.close()
    print("\n" + measured.describe(result["stamp"]))
    measured.write(args.json, result)


if __name__ == "__main__":
    main()
