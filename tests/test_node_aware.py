"""Node-aware synchronisation (``--sync``) on one machine: what it resolves to, the flags it
refuses, and its maths on nodes that MPICH emulates (``MPIR_CVAR_NUM_CLIQUES`` cuts one
machine's ranks into "nodes", rank by rank in turn, so the shared-memory split sees them
apart). Across real hosts, over TCP: tests/cluster."""

import sys
from pathlib import Path

import pytest

from distnn.parallel.node_aware import chosen
from helpers import WORKLOADS, distnn, max_relative_difference, read_result, train_params

MPICH = (Path(sys.executable).parent / "mpichversion").exists()


@pytest.mark.parametrize("sync, hosts, most, expected", [
    ("auto", 1, 4, None),               # one host: the one-node paths, whatever --sync says
    ("node-aware", 1, 4, None),
    ("auto", 2, 2, "node-aware"),       # a host with two ranks that combine
    ("auto", 3, 1, "flat"),             # one rank per host: nothing to combine
    ("node-aware", 3, 1, "node-aware"),
    ("flat", 2, 2, "flat"),
])
def test_what_sync_resolves_to(sync, hosts, most, expected):
    assert chosen(sync, hosts, most) == expected


@pytest.mark.parametrize("args, message", [
    (["--strategy", "allreduce", "--sync", "node-aware", "--no-shared-memory"],
     "--sync node-aware adds the parts of a host's ranks in shared memory"),
    (["--strategy", "ps-sync", "--sync", "node-aware", "--combine", "models"],
     "--combine models averages each worker's model by messages"),
    (["--strategy", "allreduce", "--sync", "node-aware", "--deterministic"],
     "out of the order of the micro-batch sums that --deterministic fixes"),
    (["--strategy", "ps-async", "--sync", "flat"],
     "--sync does not apply to --strategy ps-async"),
    (["--sync", "star"], "argument --sync: invalid choice: 'star'"),
])
def test_sync_values_that_cannot_run_are_refused(tmp_path, args, message):
    done = distnn(["train", *args, "--out", str(tmp_path / "run")])
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_on_one_node_sync_changes_nothing(tmp_path):
    train_params(tmp_path / "run", ["--strategy", "allreduce", "--sync", "node-aware",
                                    *WORKLOADS["shuffled"]], procs=2)
    result = read_result(tmp_path / "run")
    assert result["sync"] is None and result["shared_memory"] is True


@pytest.mark.skipif(not MPICH, reason="emulated nodes are MPICH's (MPIR_CVAR_NUM_CLIQUES)")
@pytest.mark.parametrize("strategy, extra", [
    ("allreduce", []),                                  # nodes {0, 2} and {1, 3}
    ("ps-sync", []),                                    # {server, worker 2}, {workers 1, 3}
    ("ps-sync", ["--servers", "2", "--sync", "node-aware"]),    # a worker on each node
])
def test_node_aware_on_emulated_nodes_equals_serial(tmp_path, monkeypatch, serial_params,
                                                    strategy, extra):
    monkeypatch.setenv("MPIR_CVAR_NUM_CLIQUES", "2")
    args = ["--strategy", strategy, *extra, *WORKLOADS["shuffled"]]
    node_aware = train_params(tmp_path / "node-aware", args, procs=4)
    flat = train_params(tmp_path / "flat", [*args, "--sync", "flat"], procs=4)
    assert max_relative_difference(node_aware, serial_params["shuffled"]) <= 1e-10
    assert max_relative_difference(node_aware, flat) <= 1e-10
    assert read_result(tmp_path / "node-aware")["sync"] == "node-aware"
    assert read_result(tmp_path / "flat")["sync"] == "flat"


@pytest.mark.skipif(not MPICH, reason="emulated nodes are MPICH's (MPIR_CVAR_NUM_CLIQUES)")
def test_deterministic_runs_keep_the_flat_path_across_nodes(tmp_path, monkeypatch):
    """A host's sum first would add the micro-batch sums out of their order: auto stays
    flat, and the run is serial's bits."""
    args = ["--deterministic", "--samples-per-class", "100", "--lr", "0.5", "--epochs", "6",
            "--batch-size", "37", "--kernels", "numpy"]
    reference = train_params(tmp_path / "serial", args)
    monkeypatch.setenv("MPIR_CVAR_NUM_CLIQUES", "2")
    params = train_params(tmp_path / "run", ["--strategy", "allreduce", *args], procs=4)
    assert (params == reference).all()
    assert read_result(tmp_path / "run")["sync"] == "flat"
