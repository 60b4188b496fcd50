import math

import numpy as np
import pytest

from distnn.config import make_config
from distnn.optim import REGISTRY, SGD, Adam, AdamW, Schedule


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
    second = SGD(b, lr=0.3, lr_decay=0.01, momentum=0.5)   # hyperparameters come from the config
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
    worker = SGD(np.zeros(2), {}, lr=0.5, lr_decay=0.1, momentum=0.9)   # holds no state
    for _ in range(3):
        whole.step(grads.copy(), batch_size=2)
        direction = worker.prepare(grads.copy(), batch_size=2)
        worker.advance()
        split.apply([direction])
    np.testing.assert_array_equal(whole.params, split.params)
    assert whole.iterations == split.iterations == worker.iterations == 3
    assert worker.current_lr == whole.current_lr


def test_step_consumes_the_gradient_buffer():
    grads = np.array([4.0])
    SGD(np.zeros(1), lr=0.5).step(grads, batch_size=2)
    np.testing.assert_array_equal(grads, [-1.0])    # -lr * sum / batch, the applied direction


# ---- the optimizer contract: prepare where the gradient is, apply where the parameters are --


def reference_adam(w, g, m, v, t, *, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                   decoupled=False):
    """One Adam/AdamW step on scalars, written from the papers' formulas (PyTorch's form)."""
    if decoupled:
        w *= 1 - lr * weight_decay
    else:
        g += weight_decay * w
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denominator = math.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
    return w - lr / (1 - beta1 ** t) * m / denominator, m, v


def test_adam_first_step_moves_each_weight_by_lr_against_its_gradient_sign():
    params = np.array([1.0, 1.0])
    adam = Adam(params, lr=0.1)
    adam.step(np.array([0.5, -2.0]))
    # m_hat = g and v_hat = g^2 after one step, so the update is -lr * g / (|g| + eps)
    np.testing.assert_allclose(params, [0.9, 1.1], rtol=1e-7)
    assert adam.iterations == 1


@pytest.mark.parametrize("cls, decay", [(Adam, 0.0), (Adam, 0.1), (AdamW, 0.1)])
def test_adam_and_adamw_follow_the_hand_worked_reference(cls, decay):
    gradients = [[0.5, -2.0, 0.0], [1.0, 1.0, 3.0], [-0.25, 0.5, 1.0]]
    params = np.array([1.0, -0.5, 2.0])
    optimizer = cls(params, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=decay)
    expected = [[w, 0.0, 0.0] for w in (1.0, -0.5, 2.0)]
    for t, gradient in enumerate(gradients, start=1):
        optimizer.step(np.array(gradient) * 4, batch_size=4)       # a sum over 4 rows
        expected = [reference_adam(w, g, m, v, t, lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6,
                                   weight_decay=decay, decoupled=cls is AdamW)
                    for (w, m, v), g in zip(expected, gradient)]
        np.testing.assert_allclose(params, [w for w, _, _ in expected], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(optimizer.state["exp_avg"], [m for _, m, _ in expected], rtol=1e-12)


def test_sgd_weight_decay_and_nesterov_by_hand():
    # lr 0.5 constant, momentum 0.9, weight decay 0.1, w = 1, gradient 0.4:
    # d = -0.5 * (0.4 + 0.1 * 1) = -0.25; v = -0.25; plain w = 0.75, Nesterov w = 1 - 0.225 - 0.25
    for nesterov, expected in ((False, 0.75), (True, 0.525)):
        params = np.array([1.0])
        sgd = SGD(params, schedule=Schedule(0.5, "constant"), momentum=0.9, nesterov=nesterov,
                  weight_decay=0.1)
        sgd.step(np.array([0.4]))
        assert params[0] == pytest.approx(expected) and sgd.velocity[0] == pytest.approx(-0.25)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_parts_prepared_by_workers_and_applied_by_shard_owners_equal_one_step(name):
    """The contract as the strategies use it: two workers prepare their parts of a gradient
    sum, two owners (sharing one parameter vector and state, as ranks in shared memory do)
    each apply their shard of the parts; the result is one ordinary step."""
    rng = np.random.default_rng(3)
    config = make_config(optimizer=name, weight_decay=0.05, momentum=0.9, nesterov=True,
                         dtype="float64") if name == "sgd" else make_config(optimizer=name)
    schedule = Schedule(0.1, "cosine", total=10)
    cls = REGISTRY[name]
    whole_params = rng.normal(size=11)
    whole = cls.from_config(config, whole_params, None, schedule)
    shared_params = whole_params.copy()
    shared_state = {state: np.zeros(11) for state in cls.state_names}
    owners = [cls.from_config(config, shared_params, shared_state, schedule) for _ in range(2)]
    worker = cls.from_config(config, np.zeros(11), {}, schedule)
    shards = [slice(0, 6), slice(6, 11)]
    for _ in range(4):
        halves = rng.normal(size=(2, 11))
        whole.step(halves.sum(axis=0), batch_size=8)
        parts = np.stack([worker.prepare(half.copy(), 8) for half in halves])
        worker.advance()
        for owner, shard in zip(owners, shards):
            owner.apply(parts[:, shard], part=shard)
    np.testing.assert_allclose(shared_params, whole_params, rtol=1e-12)
    assert whole.iterations == worker.iterations == owners[0].iterations == 4


def test_a_rank_without_state_prepares_but_does_not_apply():
    worker = Adam(np.zeros(2), {})
    worker.prepare(np.ones(2), 2)
    with pytest.raises(RuntimeError, match="holds no adam state"):
        worker.apply([np.ones(2)])


def test_schedules_by_hand():
    assert Schedule(1.0, decay=0.1)(10) == pytest.approx(0.5)
    assert Schedule(0.3, "constant")(999) == 0.3
    step = Schedule(1.0, "step", step_every=5, gamma=0.1)
    assert [step(t) for t in (0, 4, 5, 10)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    cosine = Schedule(1.0, "cosine", lr_min=0.2, total=100)
    assert [cosine(0), cosine(50), cosine(100), cosine(150)] == pytest.approx([1.0, 0.6, 0.2, 0.2])
    warm = Schedule(1.0, "cosine", total=110, warmup=10)
    assert [warm(0), warm(9), warm(10), warm(60), warm(110)] == pytest.approx(
        [0.1, 1.0, 1.0, 0.5, 0.0])


def test_schedule_from_config_scales_lr_linearly_and_warms_up_over_epochs():
    config = make_config(lr=0.1, lr_scaling="linear", lr_base_batch=256, schedule="constant",
                         warmup_epochs=2, epochs=10, batch_size=512)
    schedule = Schedule.from_config(config, updates_per_epoch=30, global_batch=512)
    assert schedule.lr == pytest.approx(0.2) and schedule.warmup == 60
    assert schedule(59) == pytest.approx(0.2) and schedule(29) == pytest.approx(0.1)


@pytest.mark.parametrize("compiled", [False, True])
def test_an_update_applied_in_pieces_counts_once_and_equals_one_apply(compiled):
    """A helper of ps-sync applies its share of an update in two pieces: only the last
    counts (the schedule's next rate), and the pieces give the bits of one ``apply``."""
    if compiled:
        fused = pytest.importorskip("distnn.nn.fused")
    rng = np.random.default_rng(11)
    start = rng.normal(size=20)
    whole, pieces = (SGD(start.copy(), None, Schedule(0.1, "inverse-decay", decay=0.01),
                         momentum=0.9) for _ in range(2))
    if compiled:
        for optimizer in (whole, pieces):
            optimizer.accelerate(fused)
    for _ in range(3):
        sums = rng.normal(size=(2, 20))
        whole.apply_sums(sums.copy(), 8)
        copy = sums.copy()
        pieces.apply_sums(copy[:, 12:], 8, part=slice(12, 20), counts=False)
        assert pieces.iterations == whole.iterations - 1
        pieces.apply_sums(copy[:, :12], 8, part=slice(0, 12))
    assert pieces.iterations == whole.iterations == 3
    np.testing.assert_array_equal(pieces.params, whole.params)
    np.testing.assert_array_equal(pieces.velocity, whole.velocity)
