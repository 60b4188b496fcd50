"""Scaling benchmark: every (strategy, processes) configuration, run through ``distnn train``.

Each configuration runs once to warm up (discarded), then ``repeats`` times; the table
reports the median training time of the slowest rank and its spread, samples/s, speedup
over the *fastest* serial run (one BLAS thread or all cores, NumPy or fused kernels: a
parallel speedup over a slow serial path is no speedup), efficiency per process and per
worker, the final test accuracy (a speedup that stops learning is no speedup) and where the
ranks' time went.

Strong scaling keeps the workload fixed; weak scaling grows the global batch (or, with a
full batch, the spiral data) with the number of workers, so each worker's share stays
fixed, and speedup is the ratio of samples/s.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distnn.config import SERVER_STRATEGIES, STRATEGIES
from distnn.errors import UsageError
from distnn.roles import Roles

COLUMNS = ("strategy", "processes", "workers", "threads", "kernels", "time_s_median", "time_s_min",
           "time_s_max", "samples_per_s", "speedup", "speedup_vs_numpy_serial",
           "efficiency_per_process", "efficiency_per_worker", "test_accuracy", "compute_share",
           "comm_share", "wait_share")


def configurations(strategies: list[str], procs: list[int],
                   servers: int = 1) -> list[tuple[str, int]]:
    """Every valid (strategy, processes); serial runs once, at 1 process; the parameter
    servers' strategies where ``servers`` leave a worker."""
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise UsageError(f"--strategies: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(STRATEGIES)}")
    if any(p < 1 for p in procs):
        raise UsageError(f"--procs values must be >= 1, got {procs}")
    configs = [("serial", 1)]
    for strategy in strategies:
        if strategy == "serial":
            continue
        minimum = servers + 1 if strategy in SERVER_STRATEGIES else 1
        configs += [(strategy, p) for p in procs if p >= minimum]
    return configs


# Fields that only some strategies take: the serial baseline (one process) and the other
# strategies would refuse them, so each configuration gets only those that apply to it.
STRATEGY_FIELDS = {
    "max_staleness": ("ps-async",),
    "servers": ("ps-sync", "ps-async"),
    "combine": ("ps-sync", "allreduce"),
    "local_steps": ("ps-sync", "allreduce"),
    "drop_remainder": ("ps-sync", "allreduce"),
    "shared_memory": ("ps-sync", "ps-async", "allreduce"),
    "deterministic": ("serial", "ps-sync", "allreduce"),
    "micro_batches": ("serial", "ps-sync", "allreduce"),
}


@dataclass(frozen=True)
class Workload:
    """What every configuration trains: a preset, a config file and field values on top,
    as ``distnn train`` takes them (the fields a recipe fills stay to ``distnn train``)."""

    preset: str | None = None
    config_file: str | None = None
    overrides: dict = field(default_factory=dict)

    def config(self):
        """The config these settings resolve to, before the data is known."""
        from distnn.config import make_config, read_config_file

        from_file = read_config_file(self.config_file) if self.config_file else {}
        preset = self.preset or from_file.pop("preset", "default")
        return make_config(preset, **{**from_file, **self.overrides})

    def for_run(self, strategy: str, workers: int, scaling: str) -> dict:
        """The field values of one configuration: weak scaling multiplies the global batch
        (or, with a full batch of the spiral, its size) so that each worker's share stays
        fixed."""
        values = {name: value for name, value in self.overrides.items()
                  if strategy in STRATEGY_FIELDS.get(name, (strategy,))}
        if scaling == "strong" or workers == 1:
            return values
        config = self.config()
        if config.batch_size is not None and "batch_size" not in config.auto:
            values["batch_size"] = config.batch_size * workers
        elif config.batch_size is None and config.dataset == "spiral":
            values["samples_per_class"] = config.samples_per_class * workers
        else:
            raise UsageError("--scaling weak needs --batch-size N (or a full batch of the "
                             "spiral) to grow with the workers")
        return values

    def argv(self, values: dict) -> list[str]:
        from distnn.cli.parser import to_argv

        return ([*(["--preset", self.preset] if self.preset else []),
                 *(["--config", self.config_file] if self.config_file else []), *to_argv(values)])

    def describe(self) -> str:
        return " ".join(self.argv(self.overrides)) or "default workload"


class BenchFailed(Exception):
    """A run of the benchmark failed; the message says which and why."""


def run_once(train_args: list[str], strategy: str, procs: int, out: Path, timeout: float,
             threads: int = 1, kernels: str | None = None) -> dict:
    command = [sys.executable, "-m", "distnn", "train", "--quiet", "--out", str(out),
               "--strategy", strategy, "--threads", str(threads), *train_args,
               *(["--kernels", kernels] if kernels else [])]
    if procs > 1:
        command += ["--procs", str(procs)]
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BenchFailed(f"{strategy} on {procs} processes ran past {timeout:.0f} s") from exc
    if done.returncode == 2:
        refusal = done.stderr.strip().removeprefix("distnn: error: ")
        raise UsageError(f"{strategy} on {procs} processes refused the workload: {refusal}")
    if done.returncode != 0:
        raise BenchFailed(f"{strategy} on {procs} processes failed "
                          f"(exit {done.returncode}):\n{done.stderr.strip()}")
    return json.loads((out / "result.json").read_text())


def summarize(strategy: str, procs: int, results: list[dict], baseline_rate: float | None,
              threads: int = 1) -> dict:
    """One configuration's row; ``speedup`` against ``baseline_rate`` (samples/s), which
    ``run_bench`` sets to the fastest serial run's once every run is done."""
    times = [r["train_time_s"] for r in results]
    median = statistics.median(times)
    rate = statistics.median(r["samples_per_s"] for r in results)
    speedup = rate / baseline_rate if baseline_rate else 1.0
    workers = results[0]["workers"]
    shares = {}
    for phase in ("compute", "comm", "wait"):
        per_run = [statistics.mean(rank[f"{phase}_s"] for rank in r["ranks"]) / r["train_time_s"]
                   for r in results]
        shares[f"{phase}_share"] = statistics.median(per_run)
    kernels = results[0].get("kernels", {}).get("used", "numpy")
    return {"strategy": strategy, "processes": procs, "workers": workers, "threads": threads,
            "kernels": kernels,
            "time_s_median": median, "time_s_min": min(times), "time_s_max": max(times),
            "samples_per_s": rate, "speedup": speedup,
            "speedup_vs_numpy_serial": None,
            "efficiency_per_process": speedup / procs, "efficiency_per_worker": speedup / workers,
            "test_accuracy": results[-1]["final"]["test_accuracy"], **shares}


def _is_numpy_serial(row: dict) -> bool:
    return row["strategy"] == "serial" and row["threads"] == 1 and row["kernels"] == "numpy"


def baseline_note(rows: list[dict]) -> str:
    """Which serial run every speedup is against, and what a faster serial did to them."""
    serial = [r for r in rows if r["strategy"] == "serial"]
    if not serial:
        return ""
    fastest = max(serial, key=lambda r: r["samples_per_s"])
    note = (f"Speedup is against the fastest serial run here: {fastest['threads']} BLAS "
            f"thread{'s' if fastest['threads'] > 1 else ''}, {fastest['kernels']} kernels, "
            f"{fastest['samples_per_s']:,.0f} samples/s.")
    numpy_serial = next((r for r in serial if _is_numpy_serial(r)), None)
    if numpy_serial is not None and numpy_serial is not fastest:
        ratio = fastest["samples_per_s"] / numpy_serial["samples_per_s"]
        note += (f" It runs {ratio:.2f}× serial with NumPy kernels (1 thread), so every "
                 f"speedup against it is {ratio:.2f}× lower than against that slower serial "
                 "path (the next column): faster serial compute leaves less for the parallel "
                 "strategies to win.")
    return note


def markdown(rows: list[dict], title: str, cores: int | None = None) -> str:
    """The table; with ``cores``, rows with more workers than cores are marked (a waiting
    parameter server sleeps, so it is not counted)."""
    over = [r for r in rows if cores is not None and r["workers"] > cores]
    second = any(r["speedup_vs_numpy_serial"] is not None for r in rows) and any(
        _is_numpy_serial(r) and r["speedup"] != 1.0 for r in rows)
    lines = [f"# {title}", "", baseline_note(rows), "",
             "| strategy | procs | workers | threads | kernels | time s (median, min–max) "
             "| samples/s | speedup" + (" | vs NumPy serial" if second else "")
             + " | eff./proc | eff./worker | test acc | compute / comm / wait |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if second else "") + "---|---|---|---|"]
    for r in rows:
        mark = "†" if r in over else ""
        versus = f" | {r['speedup_vs_numpy_serial']:.2f}×" if second else ""
        lines.append(
            f"| {r['strategy']} | {r['processes']}{mark} | {r['workers']} | {r['threads']} "
            f"| {r['kernels']} | {r['time_s_median']:.3f} "
            f"({r['time_s_min']:.3f}–{r['time_s_max']:.3f}) | {r['samples_per_s']:,.0f} "
            f"| {r['speedup']:.2f}×{versus} | {r['efficiency_per_process']:.2f} "
            f"| {r['efficiency_per_worker']:.2f} | {r['test_accuracy']:.4f} "
            f"| {r['compute_share']:.0%} / {r['comm_share']:.0%} / {r['wait_share']:.0%} |")
    if over:
        lines += ["", f"† more workers than the {cores} cores here: workers share cores, so "
                      "these rows measure oversubscription, not scaling."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path, title: str = "distnn bench") -> list[Path]:
    """speedup.png (with the ideal line) and time_split.png; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.set_title(f"{title}\nspeedup over the fastest serial run", fontsize=9)
    axes.set_xticks(sorted({r["processes"] for r in rows}))
    most = max(r["processes"] for r in rows)
    axes.plot([1, most], [1, most], "k--", linewidth=1, label="ideal (per process)")
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        points = [r for r in rows if r["strategy"] == strategy and r["threads"] == 1]
        axes.plot([r["processes"] for r in points], [r["speedup"] for r in points], marker="o",
                  label=strategy)
    axes.set_xlabel("processes")
    axes.set_ylabel("speedup vs fastest serial")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "speedup.png")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4), dpi=100)
    axes.set_title(f"{title}\nwhere the time goes (mean over ranks, median run)", fontsize=9)
    labels = [f"{r['strategy']}\n{r['processes']} proc" + (f"\n{r['threads']} threads"
                                                          if r["threads"] > 1 else "")
              for r in rows]
    bottom = [0.0] * len(rows)
    for phase in ("compute", "comm", "wait"):
        values = [r[f"{phase}_share"] * r["time_s_median"] for r in rows]
        axes.bar(labels, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    axes.set_ylabel("seconds (mean over ranks)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "time_split.png")
    plt.close(figure)
    return [out / "speedup.png", out / "time_split.png"]


def serial_configurations(workload: Workload, cores: int,
                          fused_available: bool) -> list[tuple[str, int, int, str | None]]:
    """The serial runs: one BLAS thread; NumPy kernels too when the workload's default
    (auto) takes the fused ones; all cores' BLAS threads. The fastest is the baseline."""
    configs = [("serial", 1, 1, None)]
    if fused_available and "kernels" not in workload.overrides:
        configs.append(("serial", 1, 1, "numpy"))
    if cores > 1:
        configs.append(("serial", 1, cores, None))
    return configs


def run_bench(strategies: list[str], procs: list[int], workload: Workload, scaling: str,
              repeats: int, out: Path, timeout: float = 1800, log=print) -> list[dict]:
    from distnn.nn.kernels import fused_error

    if repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {repeats}")
    cores = len(os.sched_getaffinity(0))
    servers = workload.overrides.get("servers", 1)
    configs = serial_configurations(workload, cores, fused_error() is None) + [
        (strategy, p, 1, None) for strategy, p in configurations(strategies, procs, servers)[1:]]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for strategy, p, threads, kernels in configs:
        workers = Roles.of(strategy, p, servers).n_workers
        args = workload.argv(workload.for_run(strategy, workers, scaling))
        started = time.monotonic()
        name = (f"{strategy}-p{p}" + (f"-t{threads}" if threads > 1 else "")
                + (f"-{kernels}" if kernels else ""))
        run_once(args, strategy, p, out / "runs" / f"{name}-warmup", timeout, threads, kernels)
        results = [run_once(args, strategy, p, out / "runs" / f"{name}-r{i}", timeout, threads,
                            kernels) for i in range(repeats)]
        row = summarize(strategy, p, results, None, threads)
        rows.append(row)
        log(f"{strategy:>9} p={p} threads={threads} {row['kernels']}: "
            f"{row['time_s_median']:.3f} s, {row['samples_per_s']:,.0f} samples/s, "
            f"test acc {row['test_accuracy']:.4f}  ({time.monotonic() - started:.0f} s)")
    fastest = max(r["samples_per_s"] for r in rows if r["strategy"] == "serial")
    numpy_serial = next((r for r in rows if _is_numpy_serial(r)), None)
    for row in rows:
        row["speedup"] = row["samples_per_s"] / fastest
        row["efficiency_per_process"] = row["speedup"] / row["processes"]
        row["efficiency_per_worker"] = row["speedup"] / row["workers"]
        if numpy_serial is not None:
            row["speedup_vs_numpy_serial"] = row["samples_per_s"] / numpy_serial["samples_per_s"]
    title = f"distnn bench ({scaling} scaling): {workload.describe()}"
    (out / "bench.md").write_text(markdown(rows, title, cores=cores))
    record = {"title": title, "scaling": scaling, "repeats": repeats,
              "train_args": workload.argv(workload.overrides), "rows": rows}
    (out / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(out / "bench.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out, title)
    return rows
