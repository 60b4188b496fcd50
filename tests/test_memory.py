"""Memory: a long run does not grow, and a worker's data memory is its share (issue 4.5)."""

import json
import sys

import numpy as np
import pytest

from helpers import distnn, read_result

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="resident-memory figures come from Linux's /proc")


def test_peak_memory_stays_flat_over_a_long_run(tmp_path):
    out = tmp_path / "run"
    done = distnn(["train", "--strategy", "ps-sync", "--samples-per-class", "100",
                   "--batch-size", "30", "--epochs", "400", "--eval-every", "20", "--quiet",
                   "--out", str(out)], procs=3)                   # 4,000 steps
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    peaks = [record["peak_rss_mb"] for record in records]
    assert len(peaks) == 20
    # After the first evaluation has allocated what it needs, nothing may grow.
    assert peaks[-1] - peaks[1] < 1.0, peaks


@pytest.fixture(scope="module")
def npy_data(tmp_path_factory):
    """24,000 x 784 float32 training rows (73.5 MiB) as memory-mappable .npy files."""
    directory = tmp_path_factory.mktemp("npy")
    rng = np.random.default_rng(0)
    x = rng.random((24_500, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=24_500)
    np.save(directory / "X_train.npy", x[:24_000])
    np.save(directory / "y_train.npy", y[:24_000])
    np.save(directory / "X_test.npy", x[24_000:])
    np.save(directory / "y_test.npy", y[24_000:])
    return directory


def data_memory(tmp_path, data, procs: int, extra: list[str] = ()) -> list[float]:
    out = tmp_path / f"run-{procs}-{len(extra)}"
    done = distnn(["train", "--dataset", str(data), "--strategy", "allreduce", "--hidden", "16",
                   "--batch-size", "256", "--epochs", "1", "--quiet", "--out", str(out), *extra],
                  procs=procs, timeout=120)
    assert done.returncode == 0, done.stderr
    return [rank["data_rss_mb"] for rank in read_result(out)["ranks"]]


def test_each_worker_reads_only_its_share_of_memory_mapped_data(tmp_path, npy_data):
    [whole] = data_memory(tmp_path, npy_data, 1)
    assert whole > 0.9 * 73.5                      # one worker reads every training row
    sharded = data_memory(tmp_path, npy_data, 2, ["--data-shards", "2"])
    assert all(share < 0.55 * whole for share in sharded), (whole, sharded)
    # With one shuffle over all rows, every worker's batches come from the whole file.
    unsharded = data_memory(tmp_path, npy_data, 2)
    assert all(share > 0.8 * whole for share in unsharded), (whole, unsharded)
