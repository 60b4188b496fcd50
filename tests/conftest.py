"""Shared fixtures: the serial reference runs the equivalence tests compare against."""

import pytest

from helpers import WORKLOADS, train_params


@pytest.fixture(scope="session")
def serial_params(tmp_path_factory):
    """Final float64 parameters of serial training on each workload."""
    base = tmp_path_factory.mktemp("serial")
    return {name: train_params(base / name, args) for name, args in WORKLOADS.items()}


@pytest.fixture(scope="session", autouse=True)
def no_hydra_leftovers():
    """Tests abort plain ``mpiexec`` jobs on purpose, and Hydra then leaves its hwloc file
    in /tmp (``--procs`` removes it; plain ``mpiexec`` cannot): the suite removes those its
    own jobs left, so that a test run leaves /tmp as it found it."""
    from pathlib import Path

    pattern = "hydra_hwloc_xmlfile_*"
    before = set(Path("/tmp").glob(pattern))
    yield
    for leftover in set(Path("/tmp").glob(pattern)) - before:
        leftover.unlink(missing_ok=True)
