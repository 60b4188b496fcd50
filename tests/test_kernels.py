"""The fused kernels (distnn[fused]) against the NumPy path, the gradient check, the
optimizer's fused update, the choice of path, and what happens without numba."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distnn.nn import MLP, kernels, mlp, rows
from distnn.optim import SGD
from distnn.optim.sgd import FLUSH_EVERY, flush_subnormals
from helpers import WORKLOADS, child_env, max_relative_difference, mpi_script, read_result, train_params

pytest.importorskip("numba", reason="the fused kernels need numba (pip install 'distnn[fused]')")
from distnn.nn import fused  # noqa: E402

# (sizes, dtype, path): the rows kernel at the original's shape and at odd ones, the BLAS
# path with one and two hidden layers, and a rows-sized model forced onto the BLAS path.
SHAPES = [([2, 64, 3], "float64", "fused-rows"), ([2, 7, 3], "float64", "fused-rows"),
          ([1, 5, 2], "float64", "fused-rows"), ([8, 13, 10], "float64", "fused-rows"),
          ([3, 9, 4], "float32", "fused-rows"), ([5, 8, 6, 3], "float64", "fused-blas"),
          ([20, 33, 10], "float64", "fused-blas"), ([12, 17, 5], "float32", "fused-blas"),
          ([2, 64, 3], "float64", "fused-blas")]
# Row counts around the rows kernel's blocks (4, 2, 1), its float64 flushes (256 rows)
# and the BLAS path's chunks (CHUNK_ROWS).
ROWS = [1, 3, 5, 257, 515]
TOLERANCE = {"float64": 1e-12, "float32": 2e-5}


def _pair(sizes, dtype, path, standardize, rng):
    reference = MLP(sizes, dtype=dtype, init="he", seed=1)
    candidate = MLP(sizes, dtype=dtype, init="he", seed=1, kernels=path)
    assert candidate.kernels == path
    if standardize:
        shift, scale = rng.normal(size=sizes[0]), rng.uniform(0.5, 2.0, size=sizes[0])
        for model in (reference, candidate):
            model.set_input_transform(shift, scale)
    return reference, candidate


def _close(a, b, dtype) -> bool:
    return float(np.max(np.abs(a - b))) <= TOLERANCE[dtype] * float(np.max(np.abs(a)))


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("sizes, dtype, path", SHAPES)
def test_fused_gradients_losses_and_outputs_equal_numpy(sizes, dtype, path, standardize):
    rng = np.random.default_rng(len(sizes) * 100 + sizes[0])
    reference, candidate = _pair(sizes, dtype, path, standardize, rng)
    for n in ROWS:
        x = rng.normal(size=(n, sizes[0])).astype(dtype)
        y = rng.integers(0, sizes[-1], size=n)
        loss, correct = reference.loss_and_gradient_sum(x, y)
        fused_loss, fused_correct = candidate.loss_and_gradient_sum(x, y)
        assert _close(reference.grads, candidate.grads, dtype), (n, sizes)
        assert fused_loss == pytest.approx(loss, rel=TOLERANCE[dtype]) and fused_correct == correct
        candidate.grads[:] = np.nan
        candidate.gradient_sum(x, y)     # the training step's path, without the loss
        assert _close(reference.grads, candidate.grads, dtype)
        assert candidate.evaluate_sum(x, y) == pytest.approx(reference.evaluate_sum(x, y),
                                                              rel=TOLERANCE[dtype])
        assert _close(reference.logits(x), candidate.logits(x), dtype)


def test_fused_blas_chunks_add_up(monkeypatch):
    """More rows than CHUNK_ROWS: later chunks go through the chunk buffer."""
    monkeypatch.setattr(mlp, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(2)
    reference, candidate = _pair([4, 6, 5, 3], "float64", "fused-blas", True, rng)
    x, y = rng.normal(size=(23, 4)), rng.integers(0, 3, size=23)
    assert candidate.loss_and_gradient_sum(x, y) == pytest.approx(
        reference.loss_and_gradient_sum(x, y), rel=1e-12)
    assert _close(reference.grads, candidate.grads, "float64")


def test_rows_kernel_sums_over_a_full_seed_batch_in_float32_keep_their_precision():
    """30,000 rows: the float32 sums are flushed into float64 every FLUSH_ROWS rows."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30_000, 2)), rng.integers(0, 3, size=30_000)
    exact = MLP([2, 64, 3], dtype="float64", init="uniform")
    exact.loss_and_gradient_sum(x, y)
    single = MLP([2, 64, 3], dtype="float32", init="uniform", kernels="fused-rows")
    single.loss_and_gradient_sum(x.astype(np.float32), y)
    assert max_relative_difference(single.grads.astype(np.float64), exact.grads) < 1e-5


@pytest.mark.parametrize("sizes, path", [([4, 7, 3], "fused-rows"), ([4, 6, 5, 3], "fused-blas")])
def test_fused_gradient_matches_central_differences(sizes, path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(11, sizes[0])), rng.integers(0, sizes[-1], size=11)
    model = MLP(sizes, dtype="float64", init="he", seed=1, kernels=path)
    model.set_input_transform(rng.normal(size=sizes[0]), rng.uniform(0.5, 2, size=sizes[0]))
    model.loss_and_gradient_sum(x, y)
    analytic = model.grads.copy()
    numeric = np.empty_like(analytic)
    eps = 1e-6
    for i in range(model.n_params):
        saved = model.params[i]
        model.params[i] = saved + eps
        plus = model.evaluate_sum(x, y)[0]
        model.params[i] = saved - eps
        minus = model.evaluate_sum(x, y)[0]
        model.params[i] = saved
        numeric[i] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("path", ["fused-rows", "fused-blas"])
def test_fused_gradients_land_in_rebound_buffers_and_empty_slices_give_zero(path):
    rng = np.random.default_rng(4)
    model = MLP([2, 8, 3], dtype="float64", kernels=path)
    shared = np.full(model.n_params, 7.0)        # stands in for a shared-memory row
    model.rebind(grads=shared)
    x, y = rng.normal(size=(9, 2)), rng.integers(0, 3, size=9)
    model.gradient_sum(x, y)
    reference = MLP([2, 8, 3], dtype="float64")
    reference.loss_and_gradient_sum(x, y)
    assert model.grads is shared and _close(reference.grads, shared, "float64")
    assert model.loss_and_gradient_sum(np.empty((0, 2)), np.empty(0, dtype=np.intp)) == (0.0, 0)
    assert not shared.any()


@pytest.mark.parametrize("path", ["fused-rows", "fused-blas"])
def test_a_diverged_model_has_a_nan_loss(path):
    model = MLP([2, 8, 3], dtype="float64", kernels=path)
    model.params[-1] = np.nan
    x, y = np.ones((5, 2)), np.zeros(5, dtype=np.intp)
    assert np.isnan(model.evaluate_sum(x, y)[0])
    assert np.isnan(model.loss_and_gradient_sum(x, y)[0])


def test_exp_matches_numpy_to_a_few_ulp():
    x = np.concatenate([-np.geomspace(1e-12, 700, 5000), [0.0, -708.0, -1e4]])
    values = np.array([fused.exp_nonpositive(v) for v in x])
    np.testing.assert_allclose(values[:-1], np.exp(x[:-1]), rtol=4e-16 * 8)
    assert values[-1] < 4e-308 and np.isnan(fused.exp_nonpositive(np.nan))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fused_sgd_update_is_bit_identical_to_the_optimizers_update(dtype, momentum):
    """``sgd_momentum_step`` (one pass) against SGD.step (prepare, then sgd_step), past
    a subnormal flush: the same bits, so an optimizer can take it as it is."""
    rng = np.random.default_rng(5)
    start = rng.normal(size=1000).astype(dtype)
    optimizer = SGD(start.copy(), lr=0.3, lr_decay=1e-2, momentum=momentum)
    params, velocity = start.copy(), np.zeros_like(start)
    value = np.dtype(dtype).type
    for step in range(70):
        grads = rng.normal(size=1000).astype(dtype)
        if step == 3:
            grads[:10] = 1e-42 if dtype == "float64" else 1e-41
        scale = value(-optimizer.current_lr / 32)
        optimizer.step(grads.copy(), 32)
        fused.sgd_momentum_step(params, grads, velocity, scale, value(momentum))
        if momentum and (step + 1) % FLUSH_EVERY == 0:
            flush_subnormals(velocity)
    np.testing.assert_array_equal(optimizer.params, params)
    if momentum:
        np.testing.assert_array_equal(optimizer.velocity, velocity)


def test_the_fused_kernels_compute_relu_without_dropout_only(tmp_path):
    assert MLP([2, 8, 3], activation="tanh", kernels="auto").kernels == "numpy"
    assert MLP([2, 8, 3], dropout=0.5, kernels="auto").kernels == "numpy"
    assert MLP([2, 8, 3], label_smoothing=0.1, kernels="auto").kernels == "numpy"
    with pytest.raises(ValueError, match="ReLU networks without dropout"):
        MLP([2, 8, 3], activation="gelu", kernels="fused")
    done = _train(tmp_path, child_env(), "--kernels", "fused", "--activation", "tanh")
    assert done.returncode == 2 and "ReLU networks without dropout" in done.stderr


def test_the_path_follows_the_shape():
    assert kernels.resolve("fused", [2, 64, 3]) == "fused-rows"
    assert kernels.resolve("auto", [2, 64, 6]) == "fused-rows"
    assert kernels.resolve("auto", [2, 64, 10]) == "fused-blas"
    assert kernels.resolve("auto", [784, 256, 10]) == "fused-blas"
    assert kernels.resolve("auto", [2, 64, 64, 3]) == "fused-blas"
    assert kernels.resolve("auto", [2, 64, kernels.ROWS_MAX_CLASSES + 1]) == "fused-blas"
    assert kernels.resolve("numpy", [2, 64, 3]) == "numpy"
    assert MLP([2, 8, 3]).kernels == "numpy"     # the library default stays NumPy


def test_without_numba_auto_falls_back_and_fused_is_refused(monkeypatch):
    monkeypatch.setattr(kernels, "_fused_error", "numba is not usable here (simulated)")
    assert kernels.resolve("auto", [2, 64, 3]) == "numpy"
    with pytest.raises(kernels.KernelsUnavailable, match=r'pip install "distnn\[fused\]"'):
        kernels.resolve("fused", [2, 64, 3])


def test_generated_source_is_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(rows, "_loaded", {})
    rows.load(3, 2, "float64")
    (written,) = (tmp_path / "kernels").glob("distnn_rows_3x2_float64_*.py")
    stamp = written.stat().st_mtime_ns
    monkeypatch.setattr(rows, "_loaded", {})
    rows.load(3, 2, "float64")
    assert written.stat().st_mtime_ns == stamp
    assert written.read_text() == rows.rows_source(3, 2, "float64")
    assert not (tmp_path / "kernels").stat().st_mode & 0o022   # nobody else may write there


def test_a_cache_folder_others_may_write_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    assert kernels.cache_directory() == tmp_path / "home-cache" / "distnn"


def _without_numba(tmp_path) -> dict:
    """An environment in which ``import numba`` fails, as on a NumPy-only install."""
    fake = tmp_path / "no-numba" / "numba"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named numba (simulated)")\n')
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env.get("PYTHONPATH", "")])
    return env


def _train(tmp_path, env, *flags):
    """``distnn train`` in a fresh process, with auto's minimum run length set to 0 so
    that auto would take the fused kernels if numba imported."""
    program = ("import sys; from distnn.nn import kernels; kernels.AUTO_MIN_FLOPS = 0; "
               "from distnn import cli; sys.exit(cli.main(sys.argv[1:]))")
    command = [sys.executable, "-c", program, "train", "--quiet", "--epochs", "3",
               "--out", str(tmp_path / "run"), *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_kernels_fused_without_numba_is_refused_with_the_remedy(tmp_path):
    done = _train(tmp_path, _without_numba(tmp_path), "--kernels", "fused")
    assert done.returncode == 2, done.stderr
    assert 'pip install "distnn[fused]"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_kernels_auto_without_numba_trains_with_numpy(tmp_path):
    done = _train(tmp_path, _without_numba(tmp_path))
    assert done.returncode == 0, done.stderr
    assert read_result(tmp_path / "run")["kernels"]["used"] == "numpy"
    done = _train(tmp_path, child_env(), "--overwrite")    # with numba: fused
    assert done.returncode == 0, done.stderr
    assert read_result(tmp_path / "run")["kernels"]["used"] == "fused-rows"


def test_result_records_the_kernels(tmp_path):
    train_params(tmp_path, ["--epochs", "2", "--kernels", "fused"])
    record = read_result(tmp_path)["kernels"]
    assert record["requested"] == "fused" and record["used"] == "fused-rows"
    assert record["numba"] and record["setup_s"] >= 0
    assert json.loads((tmp_path / "config.json").read_text())["kernels"] == "fused"


def test_ranks_agree_on_the_kernels(tmp_path):
    """A rank without numba: auto falls back to NumPy on every rank, fused is refused."""
    done = mpi_script("kernels_agree.py", 2, [str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr
    for rank in (0, 1):
        auto, refused = (tmp_path / f"out.{rank}").read_text().splitlines()
        assert auto == "auto numpy" and "rank(s) 1 cannot use it" in refused


@pytest.mark.parametrize("kernels_flag", ["numpy", "fused"])
def test_sync_strategies_equal_serial_with_either_kernels(tmp_path, kernels_flag):
    """The suite's equality tests run with the default (auto: fused where numba is
    installed); here both paths, explicitly."""
    args = [*WORKLOADS["shuffled"], "--kernels", kernels_flag]
    serial = train_params(tmp_path / "serial", args)
    assert read_result(tmp_path / "serial")["kernels"]["used"] == (
        "numpy" if kernels_flag == "numpy" else "fused-rows")
    for strategy, procs in (("allreduce", 2), ("ps-sync", 3)):
        params = train_params(tmp_path / strategy, ["--strategy", strategy, *args], procs=procs)
        assert max_relative_difference(params, serial) <= 1e-10
        assert read_result(tmp_path / strategy)["kernels"]["used"] == read_result(
            tmp_path / "serial")["kernels"]["used"]


def test_the_suites_equality_workloads_take_the_fused_path(tmp_path):
    train_params(tmp_path, WORKLOADS["full"])
    assert read_result(tmp_path)["kernels"]["used"] == "fused-rows"


def test_auto_keeps_runs_too_short_to_repay_numba_on_numpy(tmp_path):
    seed = [2, 64, 3]
    assert kernels.resolve("auto", seed, True, samples=300 * 12) == "numpy"
    assert kernels.resolve("auto", seed, True, samples=30_000 * 10_000) == "fused-rows"
    assert kernels.resolve("fused", seed, True, samples=300 * 12) == "fused-rows"
    train_params(tmp_path, ["--epochs", "3"])
    assert read_result(tmp_path)["kernels"]["used"] == "numpy"


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_an_accelerated_sgd_takes_the_same_steps(momentum):
    """SGD.accelerate(fused): its one-pass step leaves exactly the parameters and velocity
    of the NumPy step, flushes included; Nesterov and weight decay keep the NumPy path."""
    rng = np.random.default_rng(6)
    start = rng.normal(size=500).astype("float32")
    plain = SGD(start.copy(), lr=0.3, lr_decay=1e-2, momentum=momentum)
    fast = SGD(start.copy(), lr=0.3, lr_decay=1e-2, momentum=momentum)
    fast.accelerate(fused)
    for _ in range(70):
        grads = rng.normal(size=500).astype("float32")
        plain.step(grads.copy(), 16)
        fast.step(grads.copy(), 16)
    np.testing.assert_array_equal(fast.params, plain.params)
    np.testing.assert_array_equal(fast.velocity, plain.velocity)
    assert fast.iterations == plain.iterations == 70
    decayed = SGD(start.copy(), lr=0.3, momentum=0.9, weight_decay=0.1)
    decayed.accelerate(fused)
    decayed.step(np.ones(500, dtype="float32"))
    reference = SGD(start.copy(), lr=0.3, momentum=0.9, weight_decay=0.1)
    reference.step(np.ones(500, dtype="float32"))
    np.testing.assert_array_equal(decayed.params, reference.params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fused_flush_zeroes_exactly_what_numpys_does(dtype):
    """Subnormals to zero, the smallest normal number and everything above it kept."""
    rng = np.random.default_rng(8)
    tiny = np.finfo(dtype).tiny
    scales = rng.choice([1.0, 4 * tiny, tiny / 4, tiny / 1e6, 0.0], size=4000)
    values = (rng.normal(size=4000) * scales).astype(dtype)
    values[:4] = [tiny, -tiny, np.nextafter(np.dtype(dtype).type(tiny), 0), -tiny / 2]
    expected = values.copy()
    flush_subnormals(expected)
    fused.flush_subnormals(values, np.dtype(dtype).type(tiny))
    np.testing.assert_array_equal(values, expected)
    assert values[0] == tiny and values[1] == -tiny and values[2] == 0 and values[3] == 0
    assert 0 < np.count_nonzero(values) < values.size


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_accelerated_sgd_flushes_the_velocities_the_numpy_one_does(dtype):
    """Velocities that decay into subnormals (inputs whose gradient stays zero) are set to
    zero at the same update by the compiled flush as by NumPy's."""
    tiny = np.finfo(dtype).tiny
    start = np.ones(300, dtype=dtype)
    plain = SGD(start.copy(), lr=0.1, momentum=0.9)
    fast = SGD(start.copy(), lr=0.1, momentum=0.9)
    fast.accelerate(fused)
    for optimizer in (plain, fast):
        optimizer.velocity[:100] = tiny * 64      # decays below tiny within a few updates
    grads = np.ones(300, dtype=dtype)
    grads[:100] = 0
    for step in range(FLUSH_EVERY):
        plain.step(grads.copy(), 8)
        fast.step(grads.copy(), 8)
        np.testing.assert_array_equal(fast.velocity, plain.velocity)
        if step == FLUSH_EVERY - 2:
            assert np.all(plain.velocity[:100] != 0)    # subnormal, not yet flushed
    assert np.all(plain.velocity[:100] == 0)
    np.testing.assert_array_equal(fast.params, plain.params)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_one_pass_apply_of_parts_is_bit_identical(momentum):
    """What a parameter server or an allreduce shard owner applies: two workers' prepared
    parts, over a shard of the vector, 70 times (past a flush)."""
    rng = np.random.default_rng(7)
    start = rng.normal(size=600).astype("float32")
    plain = SGD(start.copy(), lr=0.2, momentum=momentum)
    fast = SGD(start.copy(), lr=0.2, momentum=momentum)
    fast.accelerate(fused)
    shard = slice(100, 450)
    for _ in range(70):
        parts = rng.normal(size=(2, 600)).astype("float32")
        plain.apply(parts[:, shard], part=shard)
        fast.apply(parts[:, shard], part=shard)
    np.testing.assert_array_equal(fast.params, plain.params)
    np.testing.assert_array_equal(fast.velocity, plain.velocity)
    assert fast.iterations == plain.iterations == 70


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_applying_sums_folds_the_preparation_in_bit_identically(momentum):
    """A ps-sync server on one node: the workers' gradient sums, scaled within the update's
    pass (``apply_sums``), against preparing each (``prepare``) and applying, over a shard,
    past a flush."""
    rng = np.random.default_rng(11)
    start = rng.normal(size=600).astype("float32")
    plain = SGD(start.copy(), lr=0.2, lr_decay=0.01, momentum=momentum)
    fast = SGD(start.copy(), lr=0.2, lr_decay=0.01, momentum=momentum)
    fast.accelerate(fused)
    assert fast.folds_preparation and not plain.folds_preparation
    shard = slice(100, 450)
    for _ in range(70):
        sums = rng.normal(size=(2, 600)).astype("float32")
        prepared = sums.copy()
        for row in prepared:
            plain.prepare(row, 37)
        plain.apply(prepared[:, shard], part=shard)
        fast.apply_sums(sums[:, shard], 37, part=shard)
    np.testing.assert_array_equal(fast.params, plain.params)
    np.testing.assert_array_equal(fast.velocity, plain.velocity)


def test_every_rank_agrees_whether_the_server_prepares():
    """Workers hold no state and servers do: the answer must not depend on it, or workers
    would send sums that the server takes for prepared parts."""
    params = np.zeros(10, dtype="float32")
    for options, folds in ((dict(), True), (dict(nesterov=True), False),
                           (dict(weight_decay=0.1), False)):
        for state in (None, {}):
            optimizer = SGD(params.copy(), state, momentum=0.9, **options)
            optimizer.accelerate(fused)
            assert optimizer.folds_preparation is folds, (options, state)
