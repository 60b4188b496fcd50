"""Throughput side by side in one run: bare NumPy, distnn serial (NumPy and fused
kernels), allreduce, ps-sync, and the GEMM-bound ceiling.

    python benchmarks/speed.py [--rounds 3] [--epochs 1] [--seed-epochs 100] [--preset-runs 1]

784-256-10, float32, 128 samples per worker per step, on Fashion-MNIST when Debian's
dataset-fashion-mnist is installed (synthetic data of the same size otherwise); and the
2-64-3 seed model (float64, full batch of 30,000). The bare NumPy reference is the same
maths written plainly and carefully (no framework, no preallocation tricks). The ceiling
is the step's five GEMMs alone (forward x W1 and h W2, backward h^T d, d W2^T, x^T dh) on
a batch of 128 rows: no training loop can beat it with NumPy's BLAS. Variants alternate
within each round; the tables give median samples/s, the ratio to distnn serial with
NumPy kernels (the path before the fused kernels) and to the fastest serial run, and for
784-256-10 the share of the ceiling. Then ``--preset seed`` end to end (10,000 epochs),
timed as a user would, and where a fused 784-256-10 step's time goes. One BLAS thread
per process throughout (the parallel variants take the default kernels, auto).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")})

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402
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


def gemm_arrays(x, sizes, batch, dtype, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    rows = rng.permutation(x.shape[0])[:batch]
    return {"x": np.ascontiguousarray(x[rows], dtype=dtype),
            "w1": rng.normal(size=sizes[:2]).astype(dtype),
            "w2": rng.normal(size=sizes[1:]).astype(dtype),
            "h": np.empty((batch, sizes[1]), dtype), "z": np.empty((batch, sizes[2]), dtype),
            "dh": np.empty((batch, sizes[1]), dtype), "dw1": np.empty(sizes[:2], dtype),
            "dw2": np.empty(sizes[1:], dtype)}


def gemms(a) -> None:
    """The five GEMMs of one 2-layer step, and nothing else."""
    np.matmul(a["x"], a["w1"], out=a["h"])
    np.matmul(a["h"], a["w2"], out=a["z"])
    np.matmul(a["h"].T, a["z"], out=a["dw2"])
    np.matmul(a["z"], a["w2"].T, out=a["dh"])
    np.matmul(a["x"].T, a["dh"], out=a["dw1"])


def gemm_ceiling(arrays, steps: int) -> float:
    """samples/s if a step cost only its GEMMs."""
    gemms(arrays)
    start = time.perf_counter()
    for _ in range(steps):
        gemms(arrays)
    return steps * arrays["x"].shape[0] / (time.perf_counter() - start)


def _serial(x, y, sizes, dtype, kernels, lr):
    """One process's training objects as ``distnn train`` builds them (``train.setup``)
    on in-process data: ``job.strategy.step`` is a training step exactly as the command
    runs it (gather, gradient, update, phase timer)."""
    from mpi4py import MPI

    from distnn.config import make_config
    from distnn.data import Dataset
    from distnn.train import setup

    config = make_config(dataset="arrays", hidden=tuple(sizes[1:-1]), dtype=dtype,
                         kernels=kernels, init="uniform", lr=lr, lr_decay=1e-3, momentum=0.9,
                         batch_size=None, standardize=False, epochs=10_000)
    data = Dataset("arrays", x, y, x[:1], y[:1], sizes[-1])
    return setup(config, MPI.COMM_SELF, data).strategy


def interleaved_steps(x, y, sizes, dtype, batch, steps: int, lr: float,
                      arrays=None) -> dict:
    """Per-step seconds of the serial training step with NumPy and with fused kernels
    (and of the GEMMs alone, with ``arrays``), interleaved step by step on the same
    batches so that load from other processes falls on all of them alike."""
    from distnn.data import BatchSampler

    strategies = {kernels: _serial(x, y, sizes, dtype, kernels, lr)
                  for kernels in ("numpy", "fused")}
    sampler = BatchSampler(x.shape[0], batch if batch < x.shape[0] else None, seed=0,
                           shuffle=batch < x.shape[0])
    times = {"numpy": [], "fused": [], **({"gemms": []} if arrays else {})}
    epoch = 0
    while len(times["numpy"]) < steps:
        for batch_rows in sampler.batches(epoch):
            for kernels, strategy in strategies.items():
                start = time.perf_counter()
                strategy.step(batch_rows)
                times[kernels].append(time.perf_counter() - start)
            if arrays:
                start = time.perf_counter()
                gemms(arrays)
                times["gemms"].append(time.perf_counter() - start)
            if len(times["numpy"]) == steps:
                break
        epoch += 1
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def step_breakdown(x, y, batch: int, steps: int = 400) -> dict:
    """Where a fused 784-256-10 float32 step's time goes, in this process (minimum over
    steps of each part, microseconds): the gather of the batch, the GEMMs alone, the whole
    fused gradient, the optimizer's update (NumPy passes: prepare, then sgd_step) and the
    one-pass ``fused.sgd_momentum_step`` that could replace it."""
    from distnn.nn.fused import sgd_momentum_step

    strategy = _serial(x, y, [x.shape[1], 256, 10], "float32", "fused", 0.05)
    model, optimizer = strategy.model, strategy.optimizer
    order = np.random.default_rng(0).permutation(x.shape[0])
    xb, yb = np.empty((batch, x.shape[1]), np.float32), np.empty(batch, np.intp)
    arrays = gemm_arrays(x, (x.shape[1], 256, 10), batch, np.float32)
    parts = {"gather": [], "gemms": [], "gradient": [], "update": [], "fused update": []}
    params, velocity = model.params.copy(), np.zeros_like(model.params)
    scale, momentum = np.float32(-0.05 / batch), np.float32(0.9)
    for step in range(steps):
        rows = order[(step * batch) % (x.shape[0] - batch):][:batch]
        start = time.perf_counter()
        np.take(x, rows, axis=0, out=xb, mode="clip")
        np.take(y, rows, out=yb, mode="clip")
        parts["gather"].append(time.perf_counter() - start)
        start = time.perf_counter()
        gemms(arrays)
        parts["gemms"].append(time.perf_counter() - start)
        start = time.perf_counter()
        model.gradient_sum(xb, yb)
        parts["gradient"].append(time.perf_counter() - start)
        start = time.perf_counter()
        sgd_momentum_step(params, model.grads, velocity, scale, momentum)
        parts["fused update"].append(time.perf_counter() - start)
        start = time.perf_counter()
        optimizer.step(model.grads, batch)
        parts["update"].append(time.perf_counter() - start)
    return {name: 1e6 * min(values) for name, values in parts.items()}


FMNIST_SERIAL = ("distnn serial, NumPy kernels, batch 128", "distnn serial, fused kernels, batch 128")
SEED_SERIAL = ("seed: distnn serial, NumPy kernels", "seed: distnn serial, fused kernels")
CEILING = "GEMM-bound ceiling: the step's 5 GEMMs alone"
PS_SYNC = "ps-sync 3 procs (1+2), 2x128"
ALLREDUCE_SHM = "allreduce 2 procs, shared memory, 2x128"
ALLREDUCE_MPI = "allreduce 2 procs, MPI Allreduce, 2x128"
PARALLEL = {ALLREDUCE_SHM: "allreduce with shared memory", ALLREDUCE_MPI: "allreduce by MPI",
            PS_SYNC: "ps-sync"}     # the launches the host's state is noted before
SLOW_HOST_US = 50     # cross_core.py above this: the host's slow state (about 24 µs or 77)


def measure(args) -> dict:
    """Every variant, alternating within each round; samples/s per round."""
    work = measured.scratch("distnn-speed-")
    # The launcher's job notes and the doorbell pipes go here, where no other program's
    # clean-up of the shared temporary folder can reach them mid-run.
    (work / "tmp").mkdir()
    os.environ["TMPDIR"] = str(work / "tmp")
    dataset, name, x, y = fashion_mnist_or_synthetic(work)
    common = [*dataset, "--hidden", "256", "--lr", "0.05", "--lr-decay", "5e-4",
              "--epochs", str(args.epochs), "--eval-every", str(args.epochs)]
    arrays = gemm_arrays(x, (784, 256, 10), 128, np.float32)
    steps = -(-x.shape[0] // 128) * args.epochs
    variants = {
        CEILING: lambda out: gemm_ceiling(arrays, steps),
        "bare NumPy loop, batch 128": lambda out: bare_numpy_epoch(x, y, (784, 256, 10), 128,
                                                                    np.float32),
        FMNIST_SERIAL[0]: lambda out: distnn_run(
            [*common, "--batch-size", "128", "--kernels", "numpy"], 1, out),
        FMNIST_SERIAL[1]: lambda out: distnn_run(
            [*common, "--batch-size", "128", "--kernels", "fused"], 1, out),
        ALLREDUCE_SHM: lambda out: distnn_run(
            [*common, "--strategy", "allreduce", "--batch-size", "256"], 2, out),
        ALLREDUCE_MPI: lambda out: distnn_run(
            [*common, "--strategy", "allreduce", "--batch-size", "256", "--no-shared-memory"], 2,
            out),
        PS_SYNC: lambda out: distnn_run(
            [*common, "--strategy", "ps-sync", "--batch-size", "256"], 3, out),
    }
    from distnn.data.spiral import spiral_data
    sx, sy = spiral_data(10_000, 3, np.random.RandomState(0))
    seed_args = ["--preset", "seed", "--epochs", str(args.seed_epochs), "--eval-every",
                 str(args.seed_epochs)]
    seed_variants = {
        "seed: bare NumPy loop": lambda out: np.median([bare_numpy_epoch(
            sx, sy.astype(np.intp), (2, 64, 3), 30_000, np.float64) for _ in range(20)]),
        SEED_SERIAL[0]: lambda out: distnn_run([*seed_args, "--kernels", "numpy"], 1, out),
        SEED_SERIAL[1]: lambda out: distnn_run([*seed_args, "--kernels", "fused"], 1, out),
    }
    result = {"dataset": name, "rounds": args.rounds, "fmnist": {}, "seed": {},
              "host_us": {label: [] for label in PARALLEL}}
    for key, group in (("fmnist", variants), ("seed", seed_variants)):
        rates = result[key]
        for label in group:
            rates[label] = []
        for r in range(args.rounds):
            for i, (label, run_variant) in enumerate(group.items()):
                if label in PARALLEL:
                    result["host_us"][label].append(measured.cross_core_us())
                rates[label].append(run_variant(work / f"{key}-{i}-{r}"))
            print(f"{key}, round {r + 1}: " + ", ".join(
                f"{label} {values[-1]:,.0f}" for label, values in rates.items()), flush=True)
    if args.preset_runs:
        walls, trains = [], []
        for r in range(args.preset_runs):
            start = time.perf_counter()
            run_result = run(["--preset", "seed", "--kernels", "fused"], 1, "1",
                             work / f"preset-{r}")
            walls.append(time.perf_counter() - start)
            trains.append(run_result["train_time_s"])
        result["preset"] = {"command_s": walls, "train_s": trains,
                            "setup_s": run_result["kernels"]["setup_s"],
                            "test_accuracy": run_result["final"]["test_accuracy"]}
    if args.steps:
        fmnist = interleaved_steps(x, y, [784, 256, 10], "float32", 128, args.steps, 0.05,
                                   arrays)
        seed = interleaved_steps(sx.astype(np.float64), sy.astype(np.intp), [2, 64, 3],
                                 "float64", 30_000, max(args.steps // 10, 20), 1.0)
        result["in_process"] = {"fmnist": fmnist, "seed": seed, "steps": args.steps}
        result["breakdown"] = step_breakdown(x, y, 128)
    return result


def _median(values) -> float:
    return statistics.median(values)


def ratios(result: dict) -> dict:
    """The figures a regression check compares, as ratios measured side by side (each a
    median over rounds, with the per-round values that show its spread)."""
    fm, seed = result["fmnist"], result["seed"]
    rounds = range(len(fm[CEILING]))
    out = {}
    for name, label in (("ps-sync 3 procs / fastest serial", PS_SYNC),
                        ("allreduce 2 procs, shared memory / fastest serial", ALLREDUCE_SHM),
                        ("allreduce 2 procs, MPI_Allreduce / fastest serial", ALLREDUCE_MPI)):
        out[name] = _vs_fastest_serial(fm, label)
    out["serial fused / GEMM ceiling (commands)"] = [fm[FMNIST_SERIAL[1]][r] / fm[CEILING][r]
                                                     for r in rounds]
    out["seed: serial fused / serial numpy (commands)"] = [
        seed[SEED_SERIAL[1]][r] / seed[SEED_SERIAL[0]][r] for r in range(len(seed[SEED_SERIAL[0]]))]
    if "in_process" in result:
        steps = result["in_process"]
        out["serial fused step / GEMM ceiling (in process)"] = [
            steps["fmnist"]["gemms"][0] / steps["fmnist"]["fused"][0]]
        out["seed: fused step / numpy step (in process)"] = [
            steps["seed"]["numpy"][0] / steps["seed"]["fused"][0]]
    return {name: {"value": _median(values), "rounds": values} for name, values in out.items()}


def _vs_fastest_serial(fm: dict, label: str) -> list[float]:
    """``label``'s samples/s in each round over that round's fastest serial run."""
    return [rate / max(fm[serial][r] for serial in FMNIST_SERIAL)
            for r, rate in enumerate(fm[label])]


def _by_host_state(result: dict, label: str) -> str:
    """``label``'s ratios to the round's fastest serial, median over its launches in the
    host's fast state and over those in its slow state (the overall median is the table's)."""
    states = {"fast": [], "slow": []}
    for ratio, us in zip(_vs_fastest_serial(result["fmnist"], label), result["host_us"][label]):
        if us is not None:
            states["fast" if us < SLOW_HOST_US else "slow"].append(ratio)
    return f"{PARALLEL[label]} " + ", ".join(
        f"{_median(values):.2f}× in {len(values)} {state}" if values else f"none {state}"
        for state, values in states.items())


def markdown(result: dict) -> str:
    """The README's Speed tables and the sentences whose numbers come from them."""
    lines = []
    for key, serial, title in (("fmnist", FMNIST_SERIAL, f"784-256-10 on {result['dataset']}"),
                               ("seed", SEED_SERIAL, "2-64-3 seed model, float64, full batch")):
        rates = result[key]
        medians = {label: _median(values) for label, values in rates.items()}
        base, fastest = medians[serial[0]], max(medians[label] for label in serial)
        ceiling = medians.get(CEILING)
        lines += ["", f"| {title}: variant (median of {result['rounds']} rounds) | samples/s "
                  "(min–max) | vs serial, NumPy kernels | vs fastest serial | of the GEMM "
                  "ceiling |", "|---|---|---|---|---|"]
        for label, values in rates.items():
            share = (f"{medians[label] / ceiling:.1%}" if ceiling and (
                "serial" in label or label == CEILING) else "")
            bold = "**" if label not in serial and label != CEILING else ""
            lines.append(f"| {label} | {medians[label]:,.0f} ({min(values):,.0f}–"
                         f"{max(values):,.0f}) | {medians[label] / base:.2f}× | {bold}"
                         f"{medians[label] / fastest:.2f}×{bold} | {share} |")
    if any(result.get("host_us", {}).values()):
        lines += ["", "The host's state just before each round's 784-256-10 parallel runs "
                  "(`cross_core.py`: µs for one core to copy 814 KB the other wrote; about 24 "
                  "in this VM's fast periods, 77 in its slow ones): " + "; ".join(
                      f"{PARALLEL[label]} " + ", ".join(
                          "?" if us is None else f"{us:.0f}" for us in values)
                      for label, values in result["host_us"].items()) + "."]
        lines += ["", "Against the fastest serial of the same round, by the host's state "
                  f"before the launch (fast: under {SLOW_HOST_US} µs): " + "; ".join(
                      _by_host_state(result, label) for label in PARALLEL) + "."]
    if "in_process" in result:
        fm, seed = result["in_process"]["fmnist"], result["in_process"]["seed"]
        lines += ["", "| the serial step in one process (median of "
                  f"{result['in_process']['steps']:,} interleaved steps; minimum) | GEMMs alone "
                  "| `--kernels numpy` | `--kernels fused` |", "|---|---|---|---|",
                  f"| 784-256-10, batch 128 | {1e3 * fm['gemms'][0]:.3f} ms | {1e3 * fm['numpy'][0]:.3f}"
                  f" ms ({1e3 * fm['numpy'][1]:.3f}): {fm['gemms'][0] / fm['numpy'][0]:.1%} of the "
                  f"ceiling | {1e3 * fm['fused'][0]:.3f} ms ({1e3 * fm['fused'][1]:.3f}): "
                  f"**{fm['gemms'][0] / fm['fused'][0]:.1%}** of the ceiling |",
                  f"| 2-64-3 seed, full batch | | {1e3 * seed['numpy'][0]:.3f} ms "
                  f"({1e3 * seed['numpy'][1]:.3f}) | {1e3 * seed['fused'][0]:.3f} ms "
                  f"({1e3 * seed['fused'][1]:.3f}): **{seed['numpy'][0] / seed['fused'][0]:.2f}×** "
                  "NumPy |"]
        parts = result["breakdown"]
        lines += ["", "Where a fused 784-256-10 step's time goes, in one process (minimum over "
                  "400 steps): " + ", ".join(f"{name} {value:,.0f} µs" for name, value in
                                             parts.items())
                  + f"; everything between the GEMMs {parts['gradient'] - parts['gemms']:,.0f} µs."]
    if "preset" in result:
        preset = result["preset"]
        lines += ["", f"`distnn train --preset seed --kernels fused` (10,000 epochs, serial): "
                  f"**{_median(preset['command_s']):.1f} s** as a command "
                  f"({len(preset['command_s'])} run(s)), {_median(preset['train_s']):.1f} s of it "
                  f"training, {preset['setup_s']:.2f} s importing numba and loading the kernels; "
                  f"test accuracy {preset['test_accuracy']:.4f}."]
    return "\n".join(lines).lstrip("\n") + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed-epochs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000,
                        help="interleaved in-process steps per kernels path (0: none)")
    parser.add_argument("--preset-runs", type=int, default=1,
                        help="runs of the whole --preset seed workload (0: none)")
    parser.add_argument("--json", help="write the measurements and their stamp here")
    args = parser.parse_args()
    stamp = measured.Stamp("python benchmarks/speed.py " + " ".join(sys.argv[1:]))
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start",
          flush=True)
    result = measure(args)
    result["stamp"] = stamp.close()
    result["ratios"] = ratios(result)
    print()
    print(markdown(result))
    for name, ratio in result["ratios"].items():
        print(f"  {name}: {ratio['value']:.3f} (rounds: "
              + ", ".join(f"{v:.3f}" for v in ratio["rounds"]) + ")")
    print(measured.describe(result["stamp"]))
    measured.write(args.json, result)


if __name__ == "__main__":
    main()
