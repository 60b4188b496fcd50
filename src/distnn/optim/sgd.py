"""Stochastic gradient descent with momentum (optionally Nesterov's) and L2 weight decay.

Convention (nnfs, and the original C++ code; it differs from PyTorch):

    lr_t = schedule(t)                   t = number of updates applied so far
    d    = -lr_t * (g + weight_decay * w)   the step direction; g the mean gradient
    v    = momentum * v + d              the learning rate is *inside* the velocity
    w    = w + v                         (Nesterov: w = w + momentum * v + d)

With ``momentum == 0`` this is plain ``w += d``. What travels between ranks is ``d``'s
part from each worker, ``-lr_t / B * g_k`` (``prepare``): the owner of the parameters
only accumulates.

Every ``FLUSH_EVERY`` updates, velocities that decayed into subnormal numbers are set to
zero: inputs whose gradient is always zero (Fashion-MNIST's border pixels) leave their
velocity decaying geometrically, and arithmetic on subnormals is slow on x86. A velocity
below the smallest normal number cannot change a parameter of normal size anyway.
Measured in ``benchmarks/subnormals.py``.
"""

import numpy as np

from distnn.optim.base import Optimizer, sum_into
from distnn.optim.schedule import Schedule

FLUSH_EVERY = 64


def flush_subnormals(values: np.ndarray) -> None:
    """Set entries smaller in magnitude than the dtype's smallest normal number to zero."""
    values[np.abs(values) < np.finfo(values.dtype).tiny] = 0


def sgd_step(params: np.ndarray, directions, velocity: np.ndarray, *, momentum: float) -> None:
    """``v = momentum * v + sum(directions); w += v`` in place (``w += sum(directions)``
    without momentum), adding the directions in order.

    Accumulating straight into the velocity needs no scratch vector and no separate sum: a
    parameter server's update of two workers' parts took 138 us instead of 205 us with
    ``np.sum`` first (784-256-10, float32).
    """
    target = velocity if momentum else params
    if momentum:
        velocity *= momentum
    for direction in directions:
        target += direction
    if momentum:
        params += velocity


class SGD(Optimizer):
    name = "sgd"
    state_names = ("velocity",)
    memory_vectors = 1     # the velocity (two work vectors more with Nesterov or weight decay)

    def __init__(self, params: np.ndarray, state: dict | None = None,
                 schedule: Schedule | None = None, *, lr: float = 1.0, lr_decay: float = 0.0,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        """Without ``schedule``, the original's: ``lr / (1 + lr_decay * t)``."""
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        super().__init__(params, state, schedule or Schedule(lr, decay=lr_decay))
        self.momentum, self.nesterov = float(momentum), bool(nesterov and momentum)
        self.weight_decay = float(weight_decay)
        # The direction and one product, for the updates sgd_step does not cover.
        plain = not (self.nesterov or self.weight_decay)
        self._work = None if plain or not self.holds_state else np.empty((2, params.size),
                                                                          dtype=params.dtype)
        self._one_pass = self._one_pass_parts = self._one_pass_flush = None   # (accelerate)

    @classmethod
    def from_config(cls, config, params, state, schedule) -> "SGD":
        return cls(params, state, schedule, momentum=config.momentum, nesterov=config.nesterov,
                   weight_decay=config.weight_decay)

    @property
    def velocity(self) -> np.ndarray:
        return self.state["velocity"]

    def accelerate(self, kernels) -> None:
        """Plain updates in one pass over memory, bit-identical: a whole step (scale,
        momentum, update: ``fused.sgd_momentum_step``) and the application of several
        prepared parts (``fused.sgd_apply_parts``), instead of three passes and more; and
        the flush of subnormal velocities without temporaries (``fused.flush_subnormals``)."""
        self._one_pass = kernels.sgd_momentum_step
        self._one_pass_parts = kernels.sgd_apply_parts
        self._one_pass_flush = kernels.flush_subnormals

    @property
    def folds_preparation(self) -> bool:
        """With the compiled update, plain SGD scales the sums as it adds them (the same
        answer on every rank: it depends on the configuration, not on the rank's role)."""
        return self._one_pass_parts is not None and not (self.nesterov or self.weight_decay)

    def apply(self, parts, part: slice = slice(None), counts: bool = True) -> None:
        self._apply_parts(parts, part, None, counts)

    def apply_sums(self, sums, batch_size: int, part: slice = slice(None),
                   counts: bool = True) -> None:
        """The sums prepared (``-lr_t / batch_size``) within the update's one pass when
        compiled; rounded as ``prepare`` then ``apply`` would, so bit-identical."""
        if (not self.folds_preparation or not self.holds_state
                or not isinstance(sums, np.ndarray) or sums.ndim != 2):
            super().apply_sums(sums, batch_size, part, counts)
            return
        self._apply_parts(sums, part, self.params.dtype.type(-self.current_lr / batch_size),
                          counts)

    def _apply_parts(self, parts, part: slice, scale, counts: bool = True) -> None:
        """The compiled one-pass update of ``parts`` (scaled by ``scale`` unless None)
        where it applies, else the optimizer contract's ``apply``."""
        if (self._one_pass is None or self._work is not None or not self.holds_state
                or not isinstance(parts, np.ndarray) or parts.ndim != 2):
            super().apply(parts, part, counts)
            return
        velocity = self.velocity[part]
        self._one_pass_parts(self.params[part], parts, velocity,
                             self.params.dtype.type(self.momentum), scale)
        self._flush_due(velocity)
        self.iterations += counts

    def step(self, grad_sum: np.ndarray, batch_size: int = 1) -> None:
        if self._one_pass is None or self._work is not None or not self.holds_state:
            super().step(grad_sum, batch_size)
            return
        value = self.params.dtype.type      # the scalars round as NumPy's would
        self._one_pass(self.params, grad_sum, self.velocity,
                       value(-self.current_lr / batch_size), value(self.momentum))
        self._flush_due(self.velocity)
        self.iterations += 1

    def prepare(self, grad_sum: np.ndarray, batch_size: int) -> np.ndarray:
        """``grad_sum <- -lr_t / batch_size * grad_sum`` (one pass); returns it."""
        return np.multiply(grad_sum, -self.current_lr / batch_size, out=grad_sum)

    def _update(self, parts: list[np.ndarray], part: slice) -> None:
        params, velocity = self.params[part], self.velocity[part]
        if self._work is None:
            sgd_step(params, parts, velocity, momentum=self.momentum)
        else:
            direction, product = self._work[0, part], self._work[1, part]
            sum_into(direction, parts)
            if self.weight_decay:
                direction += np.multiply(params, -self.current_lr * self.weight_decay, out=product)
            if not self.momentum:
                params += direction
            elif self.nesterov:
                velocity *= self.momentum
                velocity += direction
                params += direction
                params += np.multiply(velocity, self.momentum, out=product)
            else:
                velocity *= self.momentum
                velocity += direction
                params += velocity
        self._flush_due(velocity)

    def _flush_due(self, velocity: np.ndarray) -> None:
        """Every ``FLUSH_EVERY`` updates (counting the one being applied)."""
        if self.momentum and (self.iterations + 1) % FLUSH_EVERY == 0:
            if self._one_pass_flush is None:
                flush_subnormals(velocity)
            else:
                self._one_pass_flush(velocity, velocity.dtype.type(np.finfo(velocity.dtype).tiny))
