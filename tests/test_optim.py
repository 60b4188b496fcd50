import numpy as np
import pytest

from distnn.optim import SGD


def test_one_hand_worked_step_with_momentum_and_decay():
    params = np.array([1.0, -2.0])
    sgd = SGD(params, lr=0.5, lr_decay=0.1, momentum=0.9)
    sgd.velocity[:] = [0.2, -0.1]
    sgd.iterations = 10                    # lr_t = 0.5 / (1 + 0.1 * 10) = 0.25
    sgd.step(np.array([0.4, 1.0]))
    # v = 0.9 * [0.2, -0.1] - 0.25 * [0.4, 1.0] = [0.08, -0.34]
    np.testing.assert_allclose(sgd.velocity, [0.08, -0.34])
    np.testing.assert_allclose(params, [1.08, -2.34])
    assert sgd.iterations == 11


def test_first_step_uses_the_undecayed_rate_and_no_momentum_is_plain_sgd():
    params = np.array([1.0])
    sgd = SGD(params, lr=1.0, lr_decay=1e-3)
    sgd.step(np.array([0.5]))
    assert params[0] == pytest.approx(0.5)
    assert sgd.current_lr == pytest.approx(1 / 1.001)


def test_state_dict_round_trip_continues_identically():
    a = np.arange(4.0)
    b = a.copy()
    first = SGD(a, lr=0.3, lr_decay=0.01, momentum=0.5)
    for _ in range(3):
        first.step(np.ones(4))
    second = SGD(b, lr=1.0)
    b[:] = a
    second.load_state_dict(first.state_dict())
    first.step(np.full(4, 2.0))
    second.step(np.full(4, 2.0))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=0), "lr must be > 0, got 0"),
    (dict(lr=1, momentum=1.0), "momentum must be in [0, 1), got 1.0"),
    (dict(lr=1, lr_decay=-1), "lr_decay must be >= 0, got -1"),
])
def test_bad_hyperparameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        SGD(np.zeros(2), **kwargs)


def test_direction_then_apply_is_one_step_and_workers_can_keep_the_schedule():
    grads = np.array([0.8, 2.0])                # summed over a batch of 2: mean [0.4, 1.0]
    whole = SGD(np.array([1.0, -2.0]), lr=0.5, lr_decay=0.1, momentum=0.9)
    split = SGD(np.array([1.0, -2.0]), lr=0.5, lr_decay=0.1, momentum=0.9)
    worker = SGD(np.zeros(2), lr=0.5, lr_decay=0.1, momentum=0.9)
    for _ in range(3):
        whole.step(grads.copy(), batch_size=2)
        direction = worker.direction(grads.copy(), batch_size=2)
        worker.advance()
        split.apply(direction)
    np.testing.assert_array_equal(whole.params, split.params)
    assert whole.iterations == split.iterations == worker.iterations == 3
    assert worker.current_lr == whole.current_lr


def test_step_consumes_the_gradient_buffer():
    grads = np.array([4.0])
    SGD(np.zeros(1), lr=0.5).step(grads, batch_size=2)
    np.testing.assert_array_equal(grads, [-1.0])    # -lr * sum / batch, the applied direction
