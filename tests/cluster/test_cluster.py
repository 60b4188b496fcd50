"""Every claim made for one node, across hosts (DESIGN §3b): the virtual cluster of
``conftest.py``, MPI over TCP between network namespaces. Training runs as a user runs it
on a cluster, ``distnn train --procs N --hostfile FILE`` on the login node; the scripts
run under the mpiexec command ``--procs`` would use."""

import json
import os
import re
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from virtual_cluster import wait_for

from chrome_trace import check_trace, end, named, read_trace
from helpers import max_relative_difference, read_result, train_params

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
# Under Open MPI too (make test-openmpi): every test, but one or two cases of each family.
BOTH = pytest.mark.both_mpis
SCRIPTS = Path(__file__).parent.parent / "mpi_scripts"
# Float64, and a batch (37) that does not divide the 300 samples: uneven slices.
WORKLOAD = ["--samples-per-class", "100", "--dtype", "float64", "--lr", "0.5", "--eval-every", "5",
            "--epochs", "12", "--batch-size", "37"]
# A first checkpoint within 2 epochs (240 steps): the hosts share this machine's 2 cores.
LONG = ["--samples-per-class", "2000", "--batch-size", "50", "--epochs", "3000",
        "--eval-every", "2", "--dtype", "float64", "--quiet"]


def model_vector(run: Path) -> np.ndarray:
    with np.load(run / "model.npz", allow_pickle=False) as model:
        layers = sorted({name.rsplit(".", 1)[0] for name in model.files if name.startswith("layers.")})
        return np.concatenate([np.concatenate([model[f"{layer}.weight"].ravel(),
                                               model[f"{layer}.bias"]]) for layer in layers])


def train(hosts, placement: dict[str, int], out: Path, args: list[str], hosts_flag=False):
    done = hosts.run_command(hosts.train_command(placement, ["--quiet", "--out", str(out), *args],
                                                 hosts_flag))
    assert done.returncode == 0, done.stderr
    return model_vector(out)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """Final parameters of serial training on ``WORKLOAD``, on this machine."""
    return train_params(tmp_path_factory.mktemp("serial") / "run", WORKLOAD)


@BOTH
def test_ranks_on_different_hosts_are_on_different_nodes(hosts):
    done = hosts.run({"node1": 1, "node2": 2}, [sys.executable, str(SCRIPTS / "placement.py")])
    assert done.returncode == 0, done.stderr
    placed = json.loads(done.stdout)
    assert [(r["host"], r["node_size"]) for r in placed] == [("node1", 1), ("node2", 2),
                                                             ("node2", 2)]


@pytest.mark.parametrize("strategy, placement", [
    ("ps-sync", {"node1": 1, "node2": 1}),
    pytest.param("ps-sync", {"node1": 1, "node2": 2}, marks=BOTH),
    ("ps-sync", {"node1": 2, "node2": 1}),
    ("allreduce", {"node1": 1, "node2": 1}),
    pytest.param("allreduce", {"node1": 2, "node2": 1}, marks=BOTH),
    ("allreduce", {"node1": 1, "node2": 1, "node3": 1}),
])
def test_synchronous_strategies_across_hosts_equal_serial(hosts, tmp_path, serial, strategy, placement):
    """The flat path: every rank exchanges by messages."""
    params = train(hosts, placement, tmp_path / "run",
                   ["--strategy", strategy, "--sync", "flat", *WORKLOAD])
    assert max_relative_difference(params, serial) <= 1e-10
    result = read_result(tmp_path / "run")
    assert result["processes"] == sum(placement.values())
    assert result["shared_memory"] is False and result["sync"] == "flat"


@pytest.mark.parametrize("strategy, servers, placement", [
    pytest.param("allreduce", 1, {"node1": 2, "node2": 2}, marks=BOTH),
    ("allreduce", 1, {"node1": 2, "node2": 1, "node3": 1}),
    ("ps-sync", 1, {"node1": 2, "node2": 2}),      # server and a worker; two workers
    pytest.param("ps-sync", 2, {"node1": 2, "node2": 2}, marks=BOTH),   # both servers; 2 workers
    ("ps-sync", 1, {"node1": 1, "node2": 2, "node3": 1}),
    ("ps-sync", 2, {"node1": 1, "node2": 1, "node3": 2}),
])
def test_node_aware_equals_serial_and_the_flat_path(hosts, tmp_path, serial, strategy, servers,
                                                   placement):
    """Node-aware synchronisation, the default here (a host holds two ranks that combine):
    each host adds its ranks' parts in shared memory and one rank per host exchanges;
    the same learning as serial and as the flat path, to summation order."""
    common = ["--strategy", strategy, *(["--servers", str(servers)] if servers > 1 else []),
              *WORKLOAD]
    node_aware = train(hosts, placement, tmp_path / "node-aware", common)
    flat = train(hosts, placement, tmp_path / "flat", [*common, "--sync", "flat"])
    assert max_relative_difference(node_aware, serial) <= 1e-10
    assert max_relative_difference(node_aware, flat) <= 1e-10
    result = read_result(tmp_path / "node-aware")
    assert result["sync"] == "node-aware" and result["shared_memory"] is True
    assert result["config"]["sync"] == "auto"
    assert result["processes"] == sum(placement.values())
    assert read_result(tmp_path / "flat")["sync"] == "flat"


@BOTH
def test_ps_async_with_one_worker_on_another_host_is_serial_exactly(hosts, tmp_path, serial):
    params = train(hosts, {"node1": 1, "node2": 1}, tmp_path / "run",
                   ["--strategy", "ps-async", *WORKLOAD], hosts_flag=True)
    assert np.array_equal(params, serial)
    assert read_result(tmp_path / "run")["shared_memory"] is False


@pytest.mark.parametrize("strategy, placement", [
    ("ps-sync", {"node1": 1, "node2": 1, "node3": 2}),    # two workers on a third host
    ("ps-async", {"node1": 1, "node2": 1, "node3": 1}),   # one worker: serial exactly
])
def test_two_servers_on_two_hosts_equal_serial(hosts, tmp_path, serial, strategy, placement):
    """--servers 2: ranks 0 and 1, the servers, each on its own host, each with its shard;
    every shard travels by messages (ps-sync flat: node-aware, below, would combine node3's
    two workers first)."""
    flat = ["--sync", "flat"] if strategy == "ps-sync" else []
    params = train(hosts, placement, tmp_path / "run",
                   ["--strategy", strategy, "--servers", "2", *flat, *WORKLOAD])
    if strategy == "ps-async":
        assert np.array_equal(params, serial)
    else:
        assert max_relative_difference(params, serial) <= 1e-10
    result = read_result(tmp_path / "run")
    assert result["config"]["servers"] == 2 and result["shared_memory"] is False
    assert result["workers"] == sum(placement.values()) - 2


# Float32, where the plain path's sums would round differently at another process count.
DETERMINISTIC = ["--deterministic", "--samples-per-class", "100", "--lr", "0.5", "--epochs", "6",
                 "--batch-size", "37", "--kernels", "numpy"]


@pytest.mark.parametrize("strategy, placement", [
    ("allreduce", {"node1": 2, "node2": 1}),
    ("ps-sync", {"node1": 1, "node2": 2}),
    ("ps-sync", {"node1": 1, "node2": 1, "node3": 1}),
])
def test_deterministic_runs_across_hosts_are_serial_bit_for_bit(hosts, tmp_path, strategy,
                                                                placement):
    reference = train_params(tmp_path / "serial", DETERMINISTIC)
    params = train(hosts, placement, tmp_path / "run", ["--strategy", strategy, *DETERMINISTIC])
    assert params.dtype == np.float32
    assert np.array_equal(params, reference)
    result = read_result(tmp_path / "run")
    assert result["shared_memory"] is False
    assert result["sync"] == "flat"     # a host's sum first would change the order


# Node-aware: node2's two ranks combine there; rank 1 leads it, rank 2 does not.
@pytest.mark.parametrize("strategy, sync, rank", [
    pytest.param("ps-sync", "flat", 2, marks=BOTH), ("allreduce", "flat", 2),
    ("ps-sync", "node-aware", 2), pytest.param("allreduce", "node-aware", 1, marks=BOTH)])
def test_a_rank_that_raises_on_a_remote_host_ends_the_job(hosts, tmp_path, strategy, sync, rank):
    started = time.monotonic()
    done = hosts.run({"node1": 1, "node2": 2},
                     [sys.executable, str(SCRIPTS / "raise_on_rank.py"), str(rank), "5",
                      "--strategy", strategy, "--sync", sync, "--epochs", "50", "--quiet",
                      "--out", str(tmp_path)], timeout=60)
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert f"[rank {rank}/3]" in done.stderr and "injected failure in call 5" in done.stderr
    assert not (tmp_path / "model.npz").exists()


@pytest.mark.parametrize("strategy, sync", [
    ("ps-sync", "flat"), pytest.param("allreduce", "flat", marks=BOTH), ("ps-sync", "node-aware"),
    ("allreduce", "node-aware"), ("ps-async", None)])
def test_a_rank_killed_on_a_remote_host_ends_the_job(hosts, tmp_path, strategy, sync):
    out = tmp_path / "run"
    job = hosts.start(hosts.train_command({"node1": 1, "node2": 2}, [
        "--strategy", strategy, *(["--sync", sync] if sync else []), *LONG, "--out", str(out)]))
    try:
        wait_for(out / "checkpoint.npz")
        os.kill(hosts.rank_pid("node2", 2), signal.SIGKILL)
        killed = time.monotonic()
        job.communicate(timeout=60)
        assert time.monotonic() - killed < 30
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
    assert job.returncode != 0
    with np.load(out / "checkpoint.npz") as checkpoint:
        assert np.all(np.isfinite(checkpoint["params"]))


STALL_TIMEOUT_S = 5
STEPPING_S = 1.0    # after the checkpoint of an evaluation, the ranks are in the steps again
AGREEMENT = "the agreement on stopping"     # every 16 steps (interrupt.py)


def waited_for(stderr: str) -> str:
    """What rank 0's stall message says it waited for."""
    found = re.search(r"rank 0 waited \d+ s for (.*) \(epoch", stderr)
    return found[1] if found else ""


def segments() -> set[Path]:
    """Open MPI's shared-memory files of the cluster's hosts (their names hold the host's;
    MPICH's do not, and other jobs on this machine may hold some: test_lifecycle checks
    those on one node)."""
    return set(Path("/dev/shm").glob("sm_segment.node*"))


def stalled_job(hosts, tmp_path, strategy: str, placement: dict[str, int], stall,
                extra: list[str] = ()):
    """Start a long run through the launcher, ``stall(hosts)`` once it has checkpointed;
    returns its exit status, its stderr and the seconds from the stall to the job's end."""
    out = tmp_path / "run"
    before = segments()
    job = hosts.start(hosts.train_command(placement, [
        "--strategy", strategy, *LONG, *extra, "--stall-timeout", str(STALL_TIMEOUT_S), "--out",
        str(out)]))
    try:
        wait_for(out / "checkpoint.npz")
        stall(hosts)
        stalled = time.monotonic()
        _, stderr = job.communicate(timeout=STALL_TIMEOUT_S + 30)
        took = time.monotonic() - stalled
        hosts.end_all()                    # what a cut host still runs, it runs alone
        assert segments() - before == set()    # the hosts share this machine's /dev/shm
        return job.returncode, stderr, took
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            hosts.end_all()
        job.communicate(timeout=30)
        with np.load(out / "checkpoint.npz") as checkpoint:
            assert np.all(np.isfinite(checkpoint["params"]))


@pytest.mark.parametrize("strategy, sync, awaited", [
    pytest.param("ps-sync", "flat", None, marks=BOTH),
    ("allreduce", "flat", None),
    ("ps-async", None, None),
    ("ps-sync", "node-aware", "a host's gradient sum"),
    pytest.param("allreduce", "node-aware", "the other hosts' gradient sums", marks=BOTH),
])
def test_a_stopped_rank_on_another_host_ends_the_job_naming_it(hosts, tmp_path, strategy, sync,
                                                              awaited):
    """Node-aware, rank 0 (the server, or node1's only rank) reports what it waited for:
    the host sum that node2's leader cannot finish without the stopped rank."""
    def stop_last_rank(hosts):
        time.sleep(STEPPING_S)
        os.kill(hosts.rank_pid("node2", 2), signal.SIGSTOP)

    code, stderr, took = stalled_job(hosts, tmp_path, strategy, {"node1": 1, "node2": 2},
                                     stop_last_rank, ["--sync", sync] if sync else [])
    assert code == 4, stderr
    assert took < STALL_TIMEOUT_S + 10, stderr
    assert stderr.count("stalled:") == 1, stderr
    assert "rank 2 on host node2 has gone silent" in stderr
    if awaited:     # or, stopped just before one, the ranks' periodic agreement on stopping
        assert waited_for(stderr) in (awaited, AGREEMENT), stderr


def test_a_stopped_rank_of_a_host_ends_the_wait_of_its_neighbour(hosts, tmp_path):
    """Node-aware allreduce on 2 + 1 ranks: rank 1 stops; rank 0, on its host, waits for it
    in one of the host's fences, and says so. (MPICH's MPI_Abort then spins on that host:
    the watchdog's alarm ends it.)"""
    def stop_rank_1(hosts):
        time.sleep(STEPPING_S)
        os.kill(hosts.rank_pid("node1", 1), signal.SIGSTOP)

    code, stderr, took = stalled_job(hosts, tmp_path, "allreduce", {"node1": 2, "node2": 1},
                                     stop_rank_1)
    assert code == 4, stderr
    assert took < STALL_TIMEOUT_S + 10, stderr
    assert stderr.count("stalled:") == 1, stderr
    assert "rank 1 on host node1 has gone silent" in stderr
    assert "of this host" in waited_for(stderr) or waited_for(stderr) == AGREEMENT, stderr


@pytest.mark.parametrize("strategy, placement, roles", [
    ("ps-sync", {"node1": 1, "node2": 2}, ["server", "worker", "worker"]),
    ("allreduce", {"node1": 1, "node2": 1, "node3": 1}, ["worker"] * 3),
])
def test_a_timeline_across_hosts(hosts, tmp_path, strategy, placement, roles):
    """A process per host, ranks on it, clocks measured over TCP: the hosts share one clock
    here, so every measured offset must be within its uncertainty of 0, and the phases of
    ranks on different hosts keep their causal order within it."""
    out, steps = tmp_path / "run", range(5, 25)
    done = hosts.run_command(hosts.train_command(placement, [
        "--quiet", "--out", str(out), "--strategy", strategy, "--samples-per-class", "100",
        "--batch-size", "30", "--epochs", "3", "--timeline", "timeline.json",
        "--timeline-steps", "5:20"]))
    assert done.returncode == 0, done.stderr
    trace = read_trace(out / "timeline.json")
    ranks = check_trace(trace, roles, steps, steps_per_epoch=10)
    names = {event["pid"]: event["args"]["name"] for event in trace["traceEvents"]
             if event["name"] == "process_name"}
    rank_hosts = [node for node, count in placement.items() for _ in range(count)]
    assert [names[ranks[rank][0]["pid"]] for rank in range(len(roles))] == [
        f"host {host}" for host in rank_hosts]
    about = trace["otherData"]
    uncertainty = [float(value) for value in about["clock_uncertainty_us"]]
    for rank, host in enumerate(rank_hosts):
        assert (uncertainty[rank] == 0) == (host == "node1"), uncertainty
        for when in ("before", "after"):
            assert abs(float(about["clock_offset_us"][when][rank])) <= uncertainty[rank] + 1
    slack = Decimal(str(max(uncertainty)))
    workers = [rank for rank, role in enumerate(roles) if role == "worker"]
    appliers = [0] if strategy == "ps-sync" else workers
    for step in steps:
        computed = max(end(named(ranks[w], "compute")[step][0]) for w in workers)
        for rank in appliers:
            (update,) = named(ranks[rank], "update")[step]
            assert update["ts"] >= computed - slack
            # ps-sync's workers go on from the server's update; an allreduce rank from its own.
            for worker in (workers if strategy == "ps-sync" else [rank]):
                if step + 1 in steps:
                    assert named(ranks[worker], "compute")[step + 1][0]["ts"] >= end(update) - slack


@BOTH
def test_a_host_whose_link_is_cut_ends_the_job_and_the_run_resumes_once_it_is_back(hosts, tmp_path):
    placement = {"node1": 1, "node2": 2}
    code, stderr, took = stalled_job(hosts, tmp_path, "ps-sync", placement,
                                     lambda hosts: hosts.link("node2", "down"))
    assert code == 4, stderr
    assert took < STALL_TIMEOUT_S + 10, stderr
    assert stderr.count("stalled:") == 1, stderr
    assert "rank 1 on host node2, rank 2 on host node2 have gone silent" in stderr
    hosts.link("node2", "up")
    out = tmp_path / "run"
    with np.load(out / "checkpoint.npz") as checkpoint:
        epoch = int(checkpoint["epoch"])
    done = hosts.run_command(hosts.train_command(placement, [
        "--resume", str(out), "--epochs", str(epoch + 1), "--quiet"]))
    assert done.returncode == 0, done.stderr
    assert read_result(out)["resumed_from_epoch"] == epoch
