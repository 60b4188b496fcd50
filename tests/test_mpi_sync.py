"""Synchronous strategies equal serial (DESIGN §3.2), run under mpiexec with timeouts."""

import time

import numpy as np
import pytest

from distnn.errors import UsageError
from helpers import (
    KERNELS,
    WORKLOADS,
    distnn,
    max_relative_difference,
    mpi_script,
    read_result,
    saved_params,
    train_params,
)


@pytest.mark.both_mpis
@pytest.mark.parametrize("procs", [2, 3, 4])
@pytest.mark.parametrize("workload", ["shuffled", "full"])
def test_ps_sync_equals_serial(tmp_path, serial_params, procs, workload):
    args = WORKLOADS[workload]
    params = train_params(tmp_path / "run", ["--strategy", "ps-sync", *args], procs=procs)
    assert max_relative_difference(params, serial_params[workload]) <= 1e-10
    result = read_result(tmp_path / "run")
    assert (result["processes"], result["workers"]) == (procs, procs - 1)
    assert [r["rank"] for r in result["ranks"]] == list(range(procs))


@pytest.mark.both_mpis
@pytest.mark.parametrize("procs", [2, 3])
def test_ps_sync_through_messages_also_equals_serial(tmp_path, serial_params, procs):
    params = train_params(tmp_path, ["--strategy", "ps-sync", "--no-shared-memory",
                                     *WORKLOADS["shuffled"]], procs=procs)
    assert max_relative_difference(params, serial_params["shuffled"]) <= 1e-10
    assert read_result(tmp_path)["shared_memory"] is False


@pytest.mark.both_mpis
def test_ps_sync_on_one_node_uses_shared_memory_and_leaves_no_pipes(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))        # where the doorbell pipes are made
    train_params(tmp_path / "run", ["--strategy", "ps-sync", *WORKLOADS["full"]], procs=3)
    assert read_result(tmp_path / "run")["shared_memory"] is True
    assert list(scratch.iterdir()) == []


@pytest.fixture(scope="module")
def wide_data(tmp_path_factory):
    """Twenty inputs: the first layer's weight gradient is split (``early_rows``)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(240, 20))
    y = (x[:, :3].sum(axis=1) > 0).astype(int) + (x[:, 3] > 1)
    data = tmp_path_factory.mktemp("wide") / "wide.npz"
    np.savez(data, X=x, y=y)
    args = ["--dataset", str(data), "--hidden", "32", "--dtype", "float64", "--epochs", "3",
            "--batch-size", "30", "--lr", "0.1", "--eval-every", "3", *KERNELS]
    return args, train_params(tmp_path_factory.mktemp("serial"), args)


@pytest.mark.parametrize("procs", [2, 3])
def test_helpers_updating_while_the_last_worker_computes_still_equal_serial(tmp_path, procs,
                                                                          wide_data):
    """The workers compute the first layer's weight gradient in two
    (``MLP.announce_early_part``) and the helpers update the rest meanwhile."""
    args, serial = wide_data
    params = train_params(tmp_path, ["--strategy", "ps-sync", *args], procs=procs)
    assert max_relative_difference(params, serial) <= 1e-10
    assert read_result(tmp_path)["update_helpers"]


@pytest.mark.parametrize("when", ["before its gradient", "after its early part"])
def test_helpers_wait_for_a_slow_worker_at_both_parts(tmp_path, wide_data, when):
    """Rank 2 (a worker that shares the server's core on 2 cores) sleeps 5 ms a step: a
    helper that updated a part before every worker's gradient of it was in would update
    it from a stale gradient."""
    args, serial = wide_data
    late = ["--late"] if when == "after its early part" else []
    done = mpi_script("slow_worker.py", 3, ["2", "0.005", *late, "--strategy",
                                            "ps-sync", "--quiet", "--out", str(tmp_path), *args])
    assert done.returncode == 0, done.stderr
    assert max_relative_difference(saved_params(tmp_path), serial) <= 1e-10


@pytest.mark.parametrize("slow_rank", [0, 1])
def test_the_servers_piece_moves_towards_an_even_finish(tmp_path, wide_data, slow_rank):
    """Each step the server moves the split between its piece of the update and the
    helpers' towards whichever side finished first: a server slow in every piece ends
    with none of the update, a slow helper (rank 1, a core of its own) leaves it all to
    the server; any split gives serial's parameters."""
    args, serial = wide_data
    split = tmp_path / "split"
    done = mpi_script("slow_update.py", 3, [str(slow_rank), "0.002", str(split), "--strategy",
                                            "ps-sync", "--quiet", "--out", str(tmp_path / "run"),
                                            *args])
    assert done.returncode == 0, done.stderr
    assert max_relative_difference(saved_params(tmp_path / "run"), serial) <= 1e-10
    end, n_params = map(int, split.read_text().split())
    assert end == (0 if slow_rank == 0 else n_params)


def test_same_config_and_processes_is_bit_identical(tmp_path):
    args = ["--strategy", "ps-sync", *WORKLOADS["shuffled"]]
    first = train_params(tmp_path / "a", args, procs=3)
    second = train_params(tmp_path / "b", args, procs=3)
    np.testing.assert_array_equal(first, second)
    assert read_result(tmp_path / "a")["params_sha256"] == read_result(tmp_path / "b")["params_sha256"]


def test_ps_sync_learns_in_float32(tmp_path):
    train_params(tmp_path / "run", ["--strategy", "ps-sync", "--epochs", "800"], procs=3)
    assert read_result(tmp_path / "run")["final"]["test_accuracy"] > 0.75


@pytest.mark.both_mpis
@pytest.mark.parametrize("rank", [0, 2])
def test_a_rank_that_raises_ends_the_job_quickly(tmp_path, rank):
    started = time.monotonic()
    done = mpi_script("raise_on_rank.py", 3, [str(rank), "5", "--strategy", "ps-sync",
                                             "--epochs", "50", "--quiet", "--out", str(tmp_path)],
                      timeout=30)
    assert time.monotonic() - started < 30
    assert done.returncode != 0
    assert f"[rank {rank}/3]" in done.stderr
    assert "injected failure in call 5" in done.stderr
    assert not (tmp_path / "model.npz").exists()


def test_bad_flag_under_mpi_is_reported_once_with_exit_2(tmp_path):
    done = distnn(["train", "--batch-size", "2", "--strategy", "ps-sync", "--out", str(tmp_path / "r")],
                  procs=4)
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1
    assert "--batch-size (2) must be at least the number of workers (3)" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.both_mpis
@pytest.mark.parametrize("strategy", ["ps-sync", "allreduce"])
def test_procs_flag_relaunches_under_mpiexec_and_the_library_prints_nothing(tmp_path, strategy):
    done = distnn(["train", "--procs", "3", "--strategy", strategy, "--epochs", "5",
                   "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert read_result(tmp_path)["processes"] == 3
    lines = done.stderr.splitlines()
    assert [line for line in lines if not line.startswith(("note: ", "recipe: ", "epoch "))] == []


def test_launchers_are_told_apart_by_their_version_text(tmp_path, monkeypatch):
    from distnn import launch
    from distnn.launchers import HYDRA, OPEN_MPI, OTHER

    versions = {"hydra": "HYDRA build details:\n    Version:   5.0.2", "ompi":
                "mpiexec (Open MPI) 5.0.11", "other": "some launcher 1.0"}
    for name, text in versions.items():
        script = tmp_path / name
        script.write_text(f"#!/bin/sh\nprintf '{text}\\n'\n")
        script.chmod(0o755)
    found = {}
    for name in (*versions, "missing"):
        monkeypatch.setenv("DISTNN_MPIEXEC", str(tmp_path / name))
        if name == "missing":
            with pytest.raises(UsageError, match="is not an executable file"):
                launch.find_launcher()
            continue
        found[name] = launch.find_launcher()
    assert [found[name].kind for name in versions] == [HYDRA, OPEN_MPI, OTHER]
    assert found["hydra"].version == "Version: 5.0.2"
    assert found["ompi"].version == "mpiexec (Open MPI) 5.0.11"


@pytest.mark.slow
def test_sharded_batches_equal_serial_with_the_same_shards(tmp_path):
    args = [*WORKLOADS["shuffled"], "--data-shards", "2"]
    serial = train_params(tmp_path / "serial", args)
    unsharded = train_params(tmp_path / "global", WORKLOADS["shuffled"])
    assert max_relative_difference(serial, unsharded) > 1e-6     # other batches, other result
    for strategy, procs in (("allreduce", 2), ("ps-sync", 3)):
        params = train_params(tmp_path / strategy, ["--strategy", strategy, *args], procs=procs)
        assert max_relative_difference(params, serial) <= 1e-10


ADAM = ["--optimizer", "adam", "--lr", "0.01"]     # after the workload's --lr: it wins


@pytest.fixture(scope="module")
def serial_adam(tmp_path_factory):
    return train_params(tmp_path_factory.mktemp("serial-adam") / "run",
                        [*WORKLOADS["shuffled"], *ADAM])


@pytest.mark.parametrize("transport", [[], ["--no-shared-memory"]], ids=["shared", "messages"])
@pytest.mark.parametrize("procs, servers", [(3, 2), (4, 2), (4, 3)])
def test_ps_sync_with_several_servers_equals_serial(tmp_path, serial_params, procs, servers,
                                                    transport):
    params = train_params(tmp_path, ["--strategy", "ps-sync", "--servers", str(servers),
                                     *transport, *WORKLOADS["shuffled"]], procs=procs)
    assert max_relative_difference(params, serial_params["shuffled"]) <= 1e-10
    result = read_result(tmp_path)
    assert (result["workers"], result["config"]["servers"]) == (procs - servers, servers)
    assert result["shared_memory"] is (transport == [])


@pytest.mark.parametrize("transport", [[], ["--no-shared-memory"]], ids=["shared", "messages"])
def test_ps_sync_with_two_servers_equals_serial_with_adam(tmp_path, serial_adam, transport):
    """Adam's state (two moments) sharded over two servers, two workers."""
    params = train_params(tmp_path, ["--strategy", "ps-sync", "--servers", "2", *transport,
                                     *WORKLOADS["shuffled"], *ADAM], procs=4)
    assert max_relative_difference(params, serial_adam) <= 1e-10


def test_shards_change_who_updates_not_the_update(tmp_path):
    """The update is element by element: two workers give the same bits with one server
    as with two."""
    args = ["--strategy", "ps-sync", *WORKLOADS["full"]]
    one = train_params(tmp_path / "one", args, procs=3)
    two = train_params(tmp_path / "two", [*args, "--servers", "2"], procs=4)
    np.testing.assert_array_equal(one, two)


def test_servers_leaving_no_worker_under_mpi_is_reported_once_with_exit_2(tmp_path):
    done = distnn(["train", "--strategy", "ps-async", "--servers", "3", "--out",
                   str(tmp_path / "r")], procs=3)
    assert done.returncode == 2
    assert done.stderr.count("error:") == 1
    assert "--servers 3 leaves no worker among the 3 processes" in done.stderr
    assert not (tmp_path / "r").exists()
