"""Every optimizer, schedule, activation and dropout on every strategy (the parameter
servers with every --servers that leaves a worker): equal to serial, and resumed
bit-identical, at several communicator sizes (one MPI job per size runs every case)."""

import json

import pytest

from helpers import mpi_script

OPTIMIZER_CASES = 6


@pytest.mark.parametrize("procs", [1, 2, pytest.param(3, marks=pytest.mark.slow)])
def test_every_optimizer_on_every_strategy_equals_serial_and_resumes_exactly(tmp_path, procs):
    done = mpi_script("every_optimizer.py", procs, [str(tmp_path)], timeout=240)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    # allreduce; ps-sync with 1..procs-1 servers; ps-async with procs-1 servers, one worker
    strategies = 1 + (procs - 1) + (procs >= 2)
    assert len(results) == OPTIMIZER_CASES * strategies * 2     # two transports each
    for case, result in results.items():
        assert result["resumed_exact"], case
        if "ps-async" in case:
            assert result["exact"], case                         # one worker: serial exactly
        else:
            assert result["difference"] <= 1e-10, case
