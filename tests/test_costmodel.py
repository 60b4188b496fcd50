"""The alpha-beta cost model: its formulas on known numbers, and the command end to end."""

import json

import pytest

from distnn.costmodel import (
    allreduce_phases,
    bcast_phases,
    fit,
    host_placement,
    host_step_time,
    project,
    project_hosts,
    step_time,
)
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


# -- Hosts sharing links (host_step_time): bytes per link direction, phase by phase --------
M = 4000.0
LINK = {name: {"alpha": 1e-5, "beta": 1e-8} for name in ("p2p", "allreduce", "bcast")}
NO_COMPUTE = {"seconds_per_sample": 0.0, "seconds_per_param_update": 0.0, "n_params": 1000,
              "bytes": M}
BLOCKS, CYCLIC = [0, 0, 1, 1], [0, 1, 0, 1]


def busiest(phases):
    return [phase.busiest for phase in phases]


def test_recursive_halving_keeps_the_big_halves_inside_hosts_placed_in_blocks():
    # Step 1 pairs ranks 1 apart (M/2 each), step 2 ranks 2 apart (M/4); the allgather retraces.
    assert busiest(allreduce_phases(BLOCKS, M, 2)) == [0, M / 2, M / 2, 0]
    assert busiest(allreduce_phases(CYCLIC, M, 2)) == [M, 0, 0, M]     # both ranks' M/2 cross
    assert busiest(allreduce_phases([0, 1], M, 2)) == [M / 2, M / 2]     # the hosts' leaders
    # Three ranks: rank 0 folds into rank 1 first, and takes the result back at the end.
    assert busiest(allreduce_phases([0, 1, 2], M, 3)) == [M, M / 2, M / 2, M]


def test_a_broadcast_reaches_each_host_once_per_tree_round():
    assert busiest(bcast_phases(0, [0, 0, 1, 1], M, 2)) == [M]
    assert busiest(bcast_phases(2, [0, 1, 2, 3], M, 4)) == [M, M]     # 2 -> 0; 2 -> 1, 0 -> 3


def network_seconds(strategy, hosts, servers=1, sync="flat"):
    return host_step_time(strategy, hosts, 512, NO_COMPUTE, LINK, servers, sync)["network"]


def test_node_aware_allreduce_sends_one_vector_per_host():
    alpha, beta = 1e-5, 1e-8
    assert network_seconds("allreduce", CYCLIC) == pytest.approx(4 * alpha + 2 * M * beta)
    assert network_seconds("allreduce", CYCLIC, sync="node-aware") == pytest.approx(
        2 * alpha + M * beta)
    # In blocks, MPICH's flat allreduce already keeps the big halves on each host.
    assert network_seconds("allreduce", BLOCKS) == pytest.approx(4 * alpha + M * beta)


def test_node_aware_ps_sync_sends_one_message_per_host_to_each_server():
    alpha, beta = 1e-5, 1e-8
    # Server on host 0 with worker 1; workers 2 and 3 on host 1: their two gradients share
    # host 1's link, then one broadcast round to host 1.
    assert network_seconds("ps-sync", BLOCKS) == pytest.approx(2 * alpha + 3 * M * beta)
    assert network_seconds("ps-sync", BLOCKS, sync="node-aware") == pytest.approx(
        2 * alpha + 2 * M * beta)
    # Two servers on two hosts, a worker beside each: M/2 each way, then the shards swap.
    two = network_seconds("ps-sync", CYCLIC, servers=2)
    assert two == pytest.approx(2 * alpha + M * beta)
    # One server: host 1's two workers send one sum, and the parameters come back: 2 M.
    assert network_seconds("ps-sync", CYCLIC, sync="node-aware") == pytest.approx(
        2 * alpha + 2 * M * beta)


def test_ps_async_rounds_wait_for_the_busiest_link_or_a_workers_cycle():
    alpha, beta = 1e-5, 1e-8
    # Three workers on host 1 share its link: each update's M out and M back, 3 M a round,
    # more than a worker's own M out then M back.
    assert host_step_time("ps-async", [0, 1, 1, 1], 384, NO_COMPUTE, LINK)["total"] == \
        pytest.approx(alpha + 3 * M * beta)
    slow = dict(NO_COMPUTE, seconds_per_sample=1e-3)
    cycle = 1e-3 * 384 / 3 + 2 * (alpha + M * beta)
    assert host_step_time("ps-async", CYCLIC, 384, slow, LINK)["total"] == pytest.approx(cycle)


def test_ranks_sharing_cores_compute_longer():
    slow = dict(NO_COMPUTE, seconds_per_sample=1e-3)
    alone = host_step_time("allreduce", CYCLIC, 400, slow, LINK)["compute"]
    assert alone == pytest.approx(0.1)
    assert host_step_time("allreduce", CYCLIC, 400, slow, LINK, cores=2)["compute"] == \
        pytest.approx(2 * alone)


def test_host_projection_says_where_each_strategy_stops_scaling():
    projection = project_hosts(COMPUTE, LINK, 64, ranks_per_host=4, hosts=[1, 2, 4, 8])
    assert projection["workers"] == [4, 8, 16, 32]
    assert set(projection["speedup"]) == {"allreduce/flat", "allreduce/node-aware",
                                          "ps-sync/flat", "ps-sync/node-aware", "ps-async/flat"}
    # The server's link takes one vector per host, not per worker: a quarter of the bytes
    # in, the same broadcast out, and the same computing.
    flat, aware = (projection["speedup"][f"ps-sync/{sync}"][-1] for sync in ("flat", "node-aware"))
    assert aware > 1.5 * flat
    assert host_placement("ps-sync", 2, 3, servers=2) == [0, 1, 2, 2, 2, 3, 3, 3]


def test_costmodel_takes_a_network_fitted_elsewhere_and_projects_hosts(tmp_path):
    network = tmp_path / "network.json"
    network.write_text(json.dumps(LINK))
    done = distnn(["costmodel", "--sizes", "2,16,3", "--batch-size", "64", "--network",
                   str(network), "--ranks-per-host", "2", "--out", str(tmp_path / "out")],
                  timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "costmodel.json").read_text())
    assert report["network"] == LINK and report["hosts"]["ranks_per_host"] == 2
    assert "ps-sync/node-aware" in (tmp_path / "out" / "costmodel.md").read_text()


def test_a_damaged_network_file_is_refused(tmp_path):
    network = tmp_path / "network.json"
    network.write_text('{"p2p": {"alpha": -1, "beta": 0}}')
    done = distnn(["costmodel", "--network", str(network), "--out", str(tmp_path / "out")])
    assert done.returncode == 2
    assert "--network" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_link_bound_peak_is_printed_with_its_digits():
    from distnn.costmodel import where_scaling_stops

    projection = {"workers": [2, 4, 8], "efficiency_below_half_at": {"ps-sync/flat": 2},
                  "peak_speedup": {"ps-sync/flat": 0.0213}, "peak_workers": {"ps-sync/flat": 8}}
    assert where_scaling_stops(projection, "ps-sync/flat") == (
        "- ps-sync/flat: efficiency falls below 50% at 2 workers; peak speedup 0.021× at 8 workers")
    projection["efficiency_below_half_at"]["ps-sync/flat"] = None
    projection["peak_speedup"]["ps-sync/flat"] = 814.83
    assert "stays above 50% up to 8 workers; peak speedup 814.8× at 8" in where_scaling_stops(
        projection, "ps-sync/flat")
