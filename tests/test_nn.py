import numpy as np
import pytest

from distnn.nn import MLP
from distnn.nn.functional import softmax_cross_entropy


def _loss_sum(model, x, y):
    return model.evaluate_sum(x, y)[0]


def _central_differences(model, loss) -> np.ndarray:
    """d loss() / d params, by central differences on every parameter."""
    numeric = np.empty_like(model.params)
    eps = 1e-6
    for i in range(model.n_params):
        saved = model.params[i]
        model.params[i] = saved + eps
        plus = loss()
        model.params[i] = saved - eps
        minus = loss()
        model.params[i] = saved
        numeric[i] = (plus - minus) / (2 * eps)
    return numeric


@pytest.mark.parametrize("hidden", [(7,), (6, 5)])
def test_gradient_matches_central_differences(hidden):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 4))
    y = rng.integers(0, 3, size=11)
    model = MLP([4, *hidden, 3], dtype="float64", init="he", seed=1)
    model.loss_and_gradient_sum(x, y)
    analytic = model.grads.copy()
    numeric = _central_differences(model, lambda: _loss_sum(model, x, y))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_layers_are_views_of_one_flat_buffer():
    model = MLP([2, 64, 3], dtype="float32")
    assert model.n_params == 2 * 64 + 64 + 64 * 3 + 3
    for layer in model.layers:
        assert np.shares_memory(layer.weight, model.params)
        assert np.shares_memory(layer.bias, model.params)
        assert np.shares_memory(layer.weight_grad, model.grads)
    model.layers[1].bias[:] = 7
    assert np.all(model.params[-3:] == 7)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 1e4, 0.0]])
    grad = np.empty_like(logits)
    loss, correct = softmax_cross_entropy(logits.copy(), np.array([0, 0]), grad)
    assert np.isfinite(loss) and loss == pytest.approx(1e4)
    assert correct == 1
    np.testing.assert_allclose(grad, [[0, 0, 0], [-1, 1, 0]], atol=1e-12)


def test_softmax_cross_entropy_matches_definition():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    grad = np.empty_like(logits)
    loss, _ = softmax_cross_entropy(logits.copy(), labels, grad)
    assert loss == pytest.approx(-np.log(probs[np.arange(5), labels]).sum())
    onehot = np.eye(4)[labels]
    np.testing.assert_allclose(grad, probs - onehot, atol=1e-12)


def test_empty_slice_gives_zero_gradient():
    model = MLP([2, 8, 3], dtype="float64")
    model.grads[:] = 5
    assert model.loss_and_gradient_sum(np.empty((0, 2)), np.empty(0, dtype=int)) == (0.0, 0)
    assert not model.grads.any()


def test_gradient_is_a_sum_so_splits_add_up():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(10, 2)), rng.integers(0, 3, size=10)
    model = MLP([2, 8, 3], dtype="float64")
    model.loss_and_gradient_sum(x, y)
    whole = model.grads.copy()
    model.loss_and_gradient_sum(x[:3], y[:3])
    part = model.grads.copy()
    model.loss_and_gradient_sum(x[3:], y[3:])
    np.testing.assert_allclose(part + model.grads, whole, rtol=1e-12)


def test_nnfs_init_scale_and_zero_biases():
    model = MLP([2, 64, 3], init="nnfs", seed=0, dtype="float64")
    rng = np.random.RandomState(0)
    np.testing.assert_array_equal(model.layers[0].weight, 0.01 * rng.randn(2, 64))
    assert not model.layers[0].bias.any()


def test_chunked_batches_give_the_unchunked_gradient(monkeypatch):
    from distnn.nn import mlp

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(23, 3)), rng.integers(0, 4, size=23)
    model = MLP([3, 9, 4], dtype="float64", seed=2)
    whole_loss, whole_correct = model.loss_and_gradient_sum(x, y)
    whole = model.grads.copy()
    monkeypatch.setattr(mlp, "CHUNK_ROWS", 5)
    loss, correct = model.loss_and_gradient_sum(x, y)
    np.testing.assert_allclose(model.grads, whole, rtol=1e-12)
    assert loss == pytest.approx(whole_loss, rel=1e-12) and correct == whole_correct


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_every_activation_with_and_without_dropout_matches_central_differences(activation,
                                                                               dropout):
    """With dropout the loss is a function of the masks, which are fixed by (batch number,
    sample indices): the same masks in every evaluation of the difference quotient."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 5))
    y = rng.integers(0, 3, size=9)
    samples = (4, np.arange(100, 109))
    model = MLP([5, 7, 6, 3], dtype="float64", seed=1, activation=activation, dropout=dropout)
    model.loss_and_gradient_sum(x, y, samples)
    analytic = model.grads.copy()
    numeric = _central_differences(model, lambda: model.loss_and_gradient_sum(x, y, samples)[0])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_dropout_masks_depend_on_batch_and_sample_not_on_how_rows_are_split():
    from distnn.nn.functional import dropout_scale

    def masks(batch, samples):
        n = len(samples)
        out = np.empty((n, 256))
        return dropout_scale(7, batch, 0, samples, 0.25, np.empty((n, 256), dtype=np.uint64),
                             np.empty((n, 256), dtype=bool), out)

    whole = masks(3, np.arange(1000))
    assert abs((whole == 0).mean() - 0.25) < 0.01 and set(np.unique(whole)) == {0, 1 / 0.75}
    np.testing.assert_array_equal(masks(3, np.arange(500, 510)), whole[500:510])
    assert not np.array_equal(masks(4, np.arange(1000)), whole)      # a new mask every batch


def test_dropout_is_for_training_only():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 4)), rng.integers(0, 3, size=50)
    plain = MLP([4, 16, 3], dtype="float64", seed=5)
    dropped = MLP([4, 16, 3], dtype="float64", seed=5, dropout=0.5)
    assert plain.evaluate_sum(x, y) == dropped.evaluate_sum(x, y)
    plain.gradient_sum(x, y)
    dropped.gradient_sum(x, y)
    assert not np.allclose(plain.grads, dropped.grads)


def test_label_smoothing_trains_against_smoothed_targets_and_evaluates_plainly():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(9, 5)), rng.integers(0, 3, size=9)
    model = MLP([5, 7, 3], dtype="float64", seed=1, label_smoothing=0.1)
    loss, _ = model.loss_and_gradient_sum(x, y)
    logits = model.logits(x)
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    target = np.full((9, 3), 0.1 / 3)
    target[np.arange(9), y] += 0.9
    assert loss == pytest.approx(-(target * log_p).sum(), rel=1e-12)
    assert model.evaluate_sum(x, y)[0] == pytest.approx(-log_p[np.arange(9), y].sum(), rel=1e-12)
    analytic = model.grads.copy()
    numeric = _central_differences(model, lambda: model.loss_and_gradient_sum(x, y)[0])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kernels", ["numpy", "fused"])
@pytest.mark.parametrize("rows, chunk", [(40, 4096), (40, 16), (0, 4096)])
def test_the_early_part_is_signalled_once_and_final_when_signalled(monkeypatch, kernels, rows,
                                                                   chunk):
    """``announce_early_part``: one signal per gradient, when every element from the
    split on already holds its final value; the gradient is the unsplit one."""
    pytest.importorskip("numba") if kernels == "fused" else None
    from distnn.nn import mlp

    monkeypatch.setattr(mlp, "CHUNK_ROWS", chunk)
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(rows, 12)), rng.integers(0, 3, size=rows)
    plain = MLP([12, 16, 3], dtype="float64", seed=4, kernels=kernels)
    plain.gradient_sum(x, y)
    split = MLP([12, 16, 3], dtype="float64", seed=4, kernels=kernels)
    seen = []
    start = split.announce_early_part(5, lambda: seen.append(split.grads[start:].copy()))
    assert start == 5 * 16
    for _ in range(2):
        split.loss_and_gradient_sum(x, y)
    assert len(seen) == 2
    for early in seen:
        np.testing.assert_array_equal(early, split.grads[start:])
    np.testing.assert_allclose(split.grads, plain.grads, rtol=1e-13, atol=1e-300)
    split.withdraw_early_part()
    split.gradient_sum(x, y)
    assert len(seen) == 2


def test_the_early_part_must_be_a_row_range_of_the_first_layer():
    with pytest.raises(ValueError, match=r"rows must be in \[0, 12\]"):
        MLP([12, 16, 3]).announce_early_part(13, lambda: None)
