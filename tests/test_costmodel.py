"""The alpha-beta cost model: its formulas on known numbers, and the command end to end."""

import json

import pytest

from distnn.costmodel import fit, project, step_time
from helpers import distnn

NETWORK = {name: {"alpha": 1e-5, "beta": 1e-9} for name in ("p2p", "allreduce", "bcast")}
COMPUTE = {"seconds_per_sample": 1e-5, "seconds_per_param_update": 1e-9, "n_params": 1000,
           "bytes": 4000}


def test_fit_recovers_alpha_and_beta():
    sizes = [8, 1024, 65536]
    alpha, beta = fit(sizes, [2e-6 + 1e-9 * m for m in sizes])
    assert alpha == pytest.approx(2e-6) and beta == pytest.approx(1e-9)


def test_step_times_follow_the_formulas():
    batch = 1000
    assert step_time("serial", 1, batch, COMPUTE, NETWORK) == pytest.approx(1e-2 + 1e-6)
    assert step_time("allreduce", 1, batch, COMPUTE, NETWORK) == pytest.approx(1e-2 + 1e-6)
    rabenseifner = 2 * 2 * 1e-5 + 2 * 3 / 4 * 4000 * 1e-9
    doubling = 2 * (1e-5 + 4000 * 1e-9)
    assert step_time("allreduce", 4, batch, COMPUTE, NETWORK) == pytest.approx(
        2.5e-3 + 1e-6 + min(rabenseifner, doubling))
    message = 1e-5 + 4000 * 1e-9
    expected = 2.5e-3 + 4 * message + 1e-6 * 5 + 3 * message   # ceil(log2(5)) = 3
    assert step_time("ps-sync", 4, batch, COMPUTE, NETWORK) == pytest.approx(expected)
    cycle = 2.5e-3 + 2 * message + 1e-6
    assert step_time("ps-async", 4, batch, COMPUTE, NETWORK) == pytest.approx(cycle)


def test_k_servers_split_the_server_link_and_the_update():
    batch, servers = 1000, 4
    shard = 1e-5 + 4000 / servers * 1e-9                 # one message of M/K bytes
    expected = 2.5e-3 + 4 * shard + 1e-6 * 5 / servers + 3 * shard   # ceil(log2(4 + 4)) = 3
    assert step_time("ps-sync", 4, batch, COMPUTE, NETWORK, servers) == pytest.approx(expected)
    cycle = 2.5e-3 + 2 * servers * shard + 1e-6 / servers      # a message to and from each
    assert step_time("ps-async", 4, batch, COMPUTE, NETWORK, servers) == pytest.approx(cycle)
    assert step_time("allreduce", 4, batch, COMPUTE, NETWORK, servers) == \
        step_time("allreduce", 4, batch, COMPUTE, NETWORK)
    one, eight = (project(COMPUTE, NETWORK, 64, scaling="weak", servers=k) for k in (1, 8))
    assert eight["servers"] == 8
    # Each server still takes n messages: K shrinks their bytes, not their latency.
    assert one["speedup"]["ps-sync"][-1] < eight["speedup"]["ps-sync"][-1] < \
        8 * one["speedup"]["ps-sync"][-1]


def test_a_single_server_stops_scaling_before_allreduce_in_weak_scaling():
    weak = project(COMPUTE, NETWORK, 64, scaling="weak")
    at = dict(zip(weak["workers"], zip(weak["speedup"]["allreduce"], weak["speedup"]["ps-sync"])))
    assert at[1][0] == pytest.approx(1.0)
    assert at[1024][0] > at[1024][1]
    stops = weak["efficiency_below_half_at"]
    assert stops["ps-sync"] is not None
    assert stops["allreduce"] is None or stops["allreduce"] > stops["ps-sync"]


def test_costmodel_command_writes_its_report(tmp_path):
    done = distnn(["costmodel", "--sizes", "2,16,3", "--batch-size", "64", "--out", str(tmp_path)],
                  timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "costmodel.json").read_text())
    assert [p["scaling"] for p in report["projections"]] == ["strong", "weak"]
    assert set(report["network"]) == {"p2p", "allreduce", "bcast"}
    assert "## weak scaling: 64 samples per worker" in (tmp_path / "costmodel.md").read_text()
    assert (tmp_path / "costmodel.png").read_bytes()[:4] == b"\x89PNG"
