"""Shared fixtures: the serial reference runs the equivalence tests compare against."""

import pytest

from helpers import train_params

SPIRAL = ["--samples-per-class", "100", "--dtype", "float64", "--lr", "0.5", "--eval-every", "5"]
WORKLOADS = {
    "shuffled": [*SPIRAL, "--epochs", "12", "--batch-size", "37"],   # 37 does not divide 300
    "full": [*SPIRAL, "--epochs", "30", "--batch-size", "full"],
}


@pytest.fixture(scope="session")
def serial_params(tmp_path_factory):
    """Final float64 parameters of serial training on each workload."""
    base = tmp_path_factory.mktemp("serial")
    return {name: train_params(base / name, args) for name, args in WORKLOADS.items()}
