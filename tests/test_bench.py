"""distnn bench: configurations, weak scaling, the table, and one small end-to-end run."""

import csv
import json
import os

import pytest

from distnn.bench import Workload, configurations, markdown, serial_configurations, summarize
from distnn.errors import UsageError
from distnn.nn.kernels import fused_error
from helpers import distnn


def test_configurations_put_the_serial_baseline_first_and_skip_impossible_ones():
    assert configurations(["ps-sync", "allreduce"], [1, 2, 3]) == [
        ("serial", 1), ("ps-sync", 2), ("ps-sync", 3),
        ("allreduce", 1), ("allreduce", 2), ("allreduce", 3)]
    with pytest.raises(UsageError, match="unknown magic"):
        configurations(["magic"], [1])
    assert configurations(["ps-async", "allreduce"], [2, 3], servers=2) == [
        ("serial", 1), ("ps-async", 3), ("allreduce", 2), ("allreduce", 3)]


def test_weak_scaling_keeps_each_workers_share():
    workload = Workload(overrides={"batch_size": 64, "epochs": 2})
    assert workload.for_run("allreduce", 3, "weak") == {"batch_size": 192, "epochs": 2}
    assert workload.argv(workload.for_run("allreduce", 3, "weak")) == [
        "--batch-size", "192", "--epochs", "2"]
    assert workload.for_run("allreduce", 3, "strong") == {"batch_size": 64, "epochs": 2}
    spiral = Workload(overrides={"samples_per_class": 100})
    assert spiral.for_run("allreduce", 2, "weak") == {"samples_per_class": 200}
    assert Workload(preset="seed").for_run("ps-sync", 2, "weak") == {"samples_per_class": 20_000}
    with pytest.raises(UsageError, match="--scaling weak needs --batch-size N"):
        Workload(overrides={"dataset": "fashion-mnist"}).for_run("allreduce", 2, "weak")


def test_each_strategy_gets_only_the_fields_it_takes():
    workload = Workload(overrides={"max_staleness": 2, "shared_memory": False, "epochs": 2,
                                   "servers": 2})
    assert workload.for_run("serial", 1, "strong") == {"epochs": 2}
    assert workload.for_run("ps-async", 2, "strong") == {
        "max_staleness": 2, "shared_memory": False, "epochs": 2, "servers": 2}
    assert workload.argv(workload.for_run("allreduce", 2, "strong")) == [
        "--no-shared-memory", "--epochs", "2"]


def _result(time_s, rate, workers=2, acc=0.9):
    return {"train_time_s": time_s, "samples_per_s": rate, "workers": workers,
            "final": {"test_accuracy": acc},
            "ranks": [{"compute_s": time_s / 2, "comm_s": time_s / 4, "wait_s": time_s / 4}]}


def test_summary_speedup_and_efficiencies():
    row = summarize("ps-sync", 3, [_result(2.0, 150), _result(1.0, 300), _result(1.5, 200)], 100)
    assert (row["time_s_median"], row["time_s_min"], row["time_s_max"]) == (1.5, 1.0, 2.0)
    assert row["speedup"] == pytest.approx(2.0)
    assert row["efficiency_per_process"] == pytest.approx(2 / 3)
    assert row["efficiency_per_worker"] == pytest.approx(1.0)
    assert row["compute_share"] == pytest.approx(0.5)
    assert "| ps-sync | 3 | 2 | 1 | numpy | 1.500 (1.000–2.000) | 200 | 2.00× |" in markdown([row], "t")
    marked = markdown([row], "t", cores=1)
    assert "| ps-sync | 3† | 2 |" in marked and "more workers than the 1 cores" in marked
    assert "†" not in markdown([row], "t", cores=2)      # 2 workers; the server sleeps


def test_speedups_are_against_the_fastest_serial_and_say_what_it_costs():
    numpy_serial = summarize("serial", 1, [_result(4.0, 100, workers=1)], None)
    fused_serial = {**numpy_serial, "kernels": "fused-rows", "samples_per_s": 400}
    parallel = summarize("allreduce", 2, [_result(1.0, 600)], None)
    rows = [numpy_serial, fused_serial, parallel]
    for row in rows:
        row["speedup"] = row["samples_per_s"] / 400
        row["speedup_vs_numpy_serial"] = row["samples_per_s"] / 100
    table = markdown(rows, "t")
    assert "fastest serial run here: 1 BLAS thread, fused-rows kernels, 400 samples/s" in table
    assert "4.00× serial with NumPy kernels" in table and "4.00× lower" in table
    assert "| allreduce | 2 | 2 | 1 | numpy | 1.000 (1.000–1.000) | 600 | 1.50× | 6.00× |" in table


def test_serial_runs_include_the_numpy_kernels_only_when_the_default_is_fused():
    assert serial_configurations(Workload(), 2, True) == [
        ("serial", 1, 1, None), ("serial", 1, 1, "numpy"), ("serial", 1, 2, None)]
    assert serial_configurations(Workload(), 1, False) == [("serial", 1, 1, None)]
    pinned = Workload(overrides={"kernels": "numpy"})
    assert serial_configurations(pinned, 1, True) == [("serial", 1, 1, None)]


def test_bench_end_to_end_writes_tables_and_plots(tmp_path):
    done = distnn(["bench", "--strategies", "allreduce,ps-async", "--procs", "1,2", "--repeats",
                   "1", "--samples-per-class", "50", "--epochs", "3", "--batch-size", "30",
                   "--out", str(tmp_path)], timeout=240)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    cores = len(os.sched_getaffinity(0))
    serial = serial_configurations(Workload(), cores, fused_error() is None)
    assert [(r["strategy"], r["processes"], r["threads"]) for r in rows] == [
        *((s, p, t) for s, p, t, _ in serial),
        ("allreduce", 1, 1), ("allreduce", 2, 1), ("ps-async", 2, 1)]
    fastest = max(r["samples_per_s"] for r in rows if r["strategy"] == "serial")
    for row in rows:
        assert row["speedup"] == pytest.approx(row["samples_per_s"] / fastest)
    assert max(r["speedup"] for r in rows if r["strategy"] == "serial") == 1.0
    assert all(r["test_accuracy"] > 0 for r in rows)
    assert "Speedup is against the fastest serial run here" in (tmp_path / "bench.md").read_text()
    with open(tmp_path / "bench.csv") as stream:
        assert len(list(csv.DictReader(stream))) == len(rows)
    assert "| allreduce | 2 | 2 | 1 |" in (tmp_path / "bench.md").read_text()
    for name in ("speedup.png", "time_split.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "runs" / "allreduce-p2-warmup" / "result.json").exists()
