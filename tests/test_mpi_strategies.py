"""allreduce and ps-async: equivalence, protocol counts, the staleness bound, failures."""

import json
import time

import numpy as np
import pytest

from helpers import WORKLOADS, distnn, max_relative_difference, mpi_script, read_result, train_params


@pytest.mark.both_mpis
@pytest.mark.parametrize("procs", [1, 2, 3, 4])
@pytest.mark.parametrize("workload", ["shuffled", "full"])
def test_allreduce_equals_serial(tmp_path, serial_params, procs, workload):
    args = WORKLOADS[workload]
    params = train_params(tmp_path, ["--strategy", "allreduce", *args], procs=procs)
    assert max_relative_difference(params, serial_params[workload]) <= 1e-10
    result = read_result(tmp_path)
    assert result["workers"] == procs and len(result["params_sha256"]) == 64


@pytest.mark.both_mpis
@pytest.mark.parametrize("procs", [2, 3])
def test_allreduce_through_mpi_instead_of_shared_memory_also_equals_serial(tmp_path, serial_params,
                                                                          procs):
    params = train_params(tmp_path, ["--strategy", "allreduce", "--no-shared-memory",
                                     *WORKLOADS["shuffled"]], procs=procs)
    assert max_relative_difference(params, serial_params["shuffled"]) <= 1e-10
    assert read_result(tmp_path)["shared_memory"] is False


def test_allreduce_uses_shared_memory_on_one_node(tmp_path):
    train_params(tmp_path, ["--strategy", "allreduce", *WORKLOADS["full"]], procs=2)
    assert read_result(tmp_path)["shared_memory"] is True


def test_replica_hash_check_catches_a_one_ulp_difference():
    assert mpi_script("replica_check.py", 3).stdout.strip() == "OK"
    diverged = mpi_script("replica_check.py", 3, ["perturb"]).stdout.strip()
    assert diverged == "replicas diverged: ranks [1] hold parameters that differ from rank 0's"


TRANSPORTS = {"shared memory": [], "messages": ["--no-shared-memory"]}


@pytest.mark.both_mpis
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("workload", ["shuffled", "full"])
def test_ps_async_with_one_worker_is_serial_exactly(tmp_path, serial_params, workload, transport):
    args = [*WORKLOADS[workload], *TRANSPORTS[transport]]
    params = train_params(tmp_path, ["--strategy", "ps-async", *args], procs=2)
    np.testing.assert_array_equal(params, serial_params[workload])
    result = read_result(tmp_path)
    assert result["staleness_max"] == 0 and result["staleness_histogram"] == [result["updates"]]
    assert result["shared_memory"] is (transport == "shared memory")


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("procs", [3, 4])
def test_ps_async_applies_every_gradient_exactly_once(tmp_path, procs, transport):
    # 300 samples in batches of 149: the last batch (2 samples) leaves a worker without work.
    train_params(tmp_path, ["--strategy", "ps-async", "--samples-per-class", "100",
                            "--batch-size", "149", "--epochs", "7", "--eval-every", "3",
                            "--lr", "0.1", *TRANSPORTS[transport]], procs=procs)
    result = read_result(tmp_path)
    workers = procs - 1
    per_epoch = 2 * workers + min(2, workers)
    assert result["steps"] == result["updates"] == 7 * per_epoch
    assert result["gradients_sent_per_worker"] == result["updates_per_worker"]
    assert sum(result["updates_per_worker"]) == result["updates"]
    assert sum(result["staleness_histogram"]) == result["updates"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in records] == [3 * per_epoch, 6 * per_epoch, 7 * per_epoch]


def _slow_run(tmp_path, bound: int | None, transport: str = "shared memory",
              servers: int = 1) -> dict:
    args = ["2", "0.004", "--strategy", "ps-async", "--samples-per-class", "200",
            "--batch-size", "60", "--epochs", "3", "--lr", "0.05", "--quiet",
            "--out", str(tmp_path), "--servers", str(servers), *TRANSPORTS[transport]]
    if bound is not None:
        args += ["--max-staleness", str(bound)]
    done = mpi_script("slow_worker.py", 4, args)
    assert done.returncode == 0, done.stderr
    return read_result(tmp_path)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("bound", [0, 1, 3])
def test_max_staleness_is_never_exceeded_with_a_slow_worker(tmp_path, bound, transport):
    result = _slow_run(tmp_path, bound, transport)
    assert result["max_staleness"] == bound
    assert result["staleness_max"] <= bound
    assert len(result["staleness_histogram"]) <= bound + 1
    assert result["gradients_sent_per_worker"] == result["updates_per_worker"]


def test_without_a_bound_the_slow_worker_is_stale(tmp_path):
    assert _slow_run(tmp_path, None)["staleness_max"] > 3


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_ps_async_with_two_servers_and_one_worker_is_serial_exactly(tmp_path, serial_params,
                                                                   transport):
    """Each server applies its shard of the one worker's every gradient, in order."""
    params = train_params(tmp_path, ["--strategy", "ps-async", "--servers", "2",
                                     *WORKLOADS["shuffled"], *TRANSPORTS[transport]], procs=3)
    np.testing.assert_array_equal(params, serial_params["shuffled"])
    shards = read_result(tmp_path)["staleness_per_shard"]
    assert [shard["staleness_histogram"] for shard in shards] == [[read_result(tmp_path)["updates"]]] * 2


def _add_up_on_every_shard(result: dict, servers: int) -> None:
    """Invariant 7 per shard: every server applied every gradient sent, each counted once
    by worker and once by staleness."""
    shards = result["staleness_per_shard"]
    assert len(shards) == servers
    assert result["gradients_sent_per_worker"] == result["updates_per_worker"]
    assert sum(result["updates_per_worker"]) == result["updates"] == result["steps"]
    for shard in shards:
        assert sum(shard["staleness_histogram"]) == result["updates"]
    assert sum(result["staleness_histogram"]) == servers * result["updates"]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_ps_async_with_two_servers_applies_every_gradient_once_per_shard(tmp_path, transport):
    train_params(tmp_path, ["--strategy", "ps-async", "--servers", "2", "--samples-per-class",
                            "100", "--batch-size", "149", "--epochs", "7", "--eval-every", "3",
                            "--lr", "0.1", *TRANSPORTS[transport]], procs=4)
    result = read_result(tmp_path)
    assert result["updates"] == 7 * (2 * 2 + 2)       # two workers, batches of 149, 149, 2
    _add_up_on_every_shard(result, 2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in records] == [18, 36, 42]
    assert all(len(r["staleness_per_shard"]) == 2 for r in records)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_max_staleness_holds_on_every_shard_with_a_slow_worker(tmp_path, transport):
    unbounded = _slow_run(tmp_path / "unbounded", None, transport, servers=2)
    assert max(s["staleness_max"] for s in unbounded["staleness_per_shard"]) > 1
    bounded = _slow_run(tmp_path / "bounded", 0, transport, servers=2)
    _add_up_on_every_shard(bounded, 2)
    assert [s["staleness_histogram"] for s in bounded["staleness_per_shard"]] == \
        [[bounded["updates"]]] * 2


@pytest.mark.both_mpis
@pytest.mark.parametrize("strategy, rank", [("ps-async", 2), ("ps-async", 0), ("allreduce", 1)])
def test_a_dying_rank_ends_the_job_within_seconds(tmp_path, strategy, rank):
    started = time.monotonic()
    done = mpi_script("raise_on_rank.py", 3, [str(rank), "20", "--strategy", strategy,
                                             "--batch-size", "50", "--epochs", "50", "--quiet",
                                             "--out", str(tmp_path)], timeout=30)
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert f"[rank {rank}/3]" in done.stderr and "injected failure in call 20" in done.stderr


def test_max_staleness_needs_ps_async(tmp_path):
    done = distnn(["train", "--max-staleness", "2", "--out", str(tmp_path / "r")])
    assert done.returncode == 2
    assert "--max-staleness applies to --strategy ps-async only, not serial" in done.stderr
