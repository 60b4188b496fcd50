"""The fmnist preset on real Fashion-MNIST (Debian's dataset-fashion-mnist; skipped without it)."""

from pathlib import Path

import pytest

from helpers import distnn, read_result

DATA = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte.gz").exists(),
                                reason="apt-get install dataset-fashion-mnist")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fmnist_preset_reaches_090_with_ps_sync_on_two_workers(tmp_path):
    done = distnn(["train", "--preset", "fmnist", "--strategy", "ps-sync", "--quiet",
                   "--out", str(tmp_path)], procs=3, timeout=900)
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path)
    assert (result["workers"], result["epochs"]) == (2, 30)
    assert result["config"]["optimizer"] == "adamw"
    assert result["final"]["test_accuracy"] >= 0.90
