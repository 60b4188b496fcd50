"""Shared fixtures: the serial reference runs the equivalence tests compare against."""

import pytest

from helpers import WORKLOADS, train_params


@pytest.fixture(scope="session")
def serial_params(tmp_path_factory):
    """Final float64 parameters of serial training on each workload."""
    base = tmp_path_factory.mktemp("serial")
    return {name: train_params(base / name, args) for name, args in WORKLOADS.items()}
