"""``--deterministic`` (DESIGN §3.10): parameters bit-identical for every process count and
placement; its micro-batches, its fixed-order sum, and what it refuses."""

import importlib.util

import numpy as np
import pytest

from distnn.config import make_config
from distnn.data import load_dataset
from distnn.errors import UsageError
from distnn.nn import MLP
from distnn.parallel.micro import fold, micro_batches_of, micro_range
from distnn.train import check_fits
from helpers import distnn, mpi_script, read_result

SIZES = (1, 2, 3, 4)
CASES = 6 + 2 * bool(importlib.util.find_spec("numba"))   # deterministic.py's, fused with numba


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case of ``mpi_scripts/deterministic.py`` at 1 to 4 processes."""
    out = tmp_path_factory.mktemp("deterministic")
    for size in SIZES:
        done = mpi_script("deterministic.py", size, [str(out)], timeout=300)
        assert done.returncode == 0, done.stderr
    return {size: dict(np.load(out / f"params-{size}.npz")) for size in SIZES}


def test_every_case_is_bit_identical_for_every_strategy_transport_and_process_count(runs):
    cases: dict[str, list[tuple[str, np.ndarray]]] = {}
    for size, results in runs.items():
        for key, params in results.items():
            if key not in ("plain", "uninterrupted", "resumed"):
                cases.setdefault(key.split()[0], []).append((f"{key} at {size}", params))
    assert len(cases) == CASES
    for case, runs_of_case in cases.items():
        # serial and allreduce at 1; allreduce and ps-sync, two transports, at 2, 3 and 4;
        # ps-sync with 2 servers, two transports, at 3 and 4
        assert len(runs_of_case) == 2 + 4 * 3 + 2 * 2, case
        first_name, first = runs_of_case[0]
        for name, params in runs_of_case[1:]:
            assert params.dtype == first.dtype
            assert np.array_equal(params, first), f"{name} differs from {first_name}"


def test_without_the_flag_float32_allreduce_differs_between_process_counts(runs):
    """What the test above would catch: the plain path adds each worker's slice first,
    and 2 and 3 slices round differently."""
    assert runs[2]["plain"].dtype == np.float32
    assert not np.array_equal(runs[2]["plain"], runs[3]["plain"])


def test_a_run_resumed_on_fewer_processes_is_bit_identical(runs):
    reference = runs[1]["uninterrupted"]
    for size, results in runs.items():
        assert np.array_equal(results["uninterrupted"], reference), size
        assert np.array_equal(results["resumed"], reference), size


def test_the_command_line_gives_the_same_bytes_on_one_process_and_on_three(tmp_path):
    args = ["train", "--quiet", "--deterministic", "--samples-per-class", "50", "--epochs", "4",
            "--batch-size", "40", "--kernels", "numpy"]
    hashes = []
    for name, procs, strategy in (("serial", 1, "serial"), ("ps-sync", 3, "ps-sync"),
                                  ("allreduce", 3, "allreduce")):
        done = distnn([*args, "--out", str(tmp_path / name), "--strategy", strategy], procs=procs)
        assert done.returncode == 0, done.stderr
        hashes.append(read_result(tmp_path / name)["params_sha256"])
    assert len(set(hashes)) == 1


@pytest.mark.parametrize("n, m", [(37, 8), (9, 8), (5, 8), (128, 8), (4096 * 3 + 1, 7)])
def test_micro_batches_cover_the_batch_in_order_and_depend_on_its_length_only(n, m):
    bounds = [micro_range(n, m, j) for j in range(m)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8])
def test_workers_take_contiguous_runs_of_every_micro_batch(workers):
    runs = [micro_batches_of(8, workers, w) for w in range(workers)]
    assert [j for run in runs for j in run] == list(range(8))
    assert all(len(run) >= 1 for run in runs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fixed_order_sum_is_the_same_over_any_cut_of_the_vector(dtype):
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((8, 1001)) * 10.0 ** rng.integers(-6, 6, (8, 1001))).astype(dtype)
    whole = fold(rows.copy()).copy()
    expected = rows[0].copy()
    for row in rows[1:]:
        expected = expected + row
    assert np.array_equal(whole, expected)
    for shards in (2, 3, 7):
        pieces = rows.copy()
        cuts = np.linspace(0, 1001, shards + 1).astype(int)
        for start, stop in zip(cuts, cuts[1:]):
            fold(pieces, slice(start, stop))
        assert np.array_equal(pieces[0], whole)
    # and another order of the same rows rounds differently: the order is what is fixed
    assert not np.array_equal(fold(rows[::-1].copy()), whole)


def test_a_gradient_written_into_another_buffer_is_the_same_gradient():
    model = MLP([5, 7, 3], dtype="float32", seed=1)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((11, 5)).astype(np.float32), rng.integers(0, 3, 11)
    model.gradient_sum(x, y)
    own = model.grads.copy()
    other = np.full(model.n_params, np.nan, dtype=np.float32)
    model.use_gradients(model.gradient_buffer(other))
    model.gradient_sum(x, y)
    assert model.grads is other
    assert np.array_equal(other, own)


@pytest.mark.parametrize("options, message", [
    (dict(strategy="ps-async"), "--deterministic needs --strategy serial, ps-sync or allreduce"),
    (dict(strategy="allreduce", combine="models"), "--deterministic combines gradients"),
])
def test_asynchronous_updates_and_model_averaging_are_refused(options, message):
    with pytest.raises(UsageError, match=message):
        make_config(deterministic=True, **options)


@pytest.mark.parametrize("options, size, message", [
    (dict(strategy="allreduce", micro_batches=2), 3,
     r"--micro-batches \(2\) must be at least the number of workers \(3\)"),
    (dict(strategy="ps-sync", micro_batches=3), 5,
     r"--micro-batches \(3\) must be at least the number of workers \(4\)"),
    (dict(batch_size=6, micro_batches=8), 1, r"--micro-batches \(8\) must be at most the "
     r"global batch \(6 samples\)"),
])
def test_micro_batches_that_workers_cannot_share_are_refused(options, size, message):
    config = make_config(deterministic=True, samples_per_class=20, **options)
    with pytest.raises(UsageError, match=message):
        check_fits(config, load_dataset(config.data), size)


def test_the_command_line_refuses_micro_batches_without_deterministic(tmp_path):
    done = distnn(["train", "--micro-batches", "4", "--out", str(tmp_path / "run")])
    assert done.returncode == 2
    assert "--micro-batches does not apply" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
