"""Stochastic gradient descent with learning-rate decay and momentum.

Convention (nnfs, and the original C++ code; it differs from PyTorch):

    lr_t = lr / (1 + lr_decay * t)      t = number of updates applied so far
    v    = momentum * v - lr_t * g       the learning rate is *inside* the velocity
    w    = w + v

With ``momentum == 0`` this is plain ``w -= lr_t * g``.

Every ``FLUSH_EVERY`` updates, velocities that decayed into subnormal numbers are set to
zero: inputs whose gradient is always zero (Fashion-MNIST's border pixels) leave their
velocity decaying geometrically, and arithmetic on subnormals is slow on x86. A velocity
below the smallest normal number cannot change a parameter of normal size anyway.
Measured in ``benchmarks/subnormals.py``.
"""

import numpy as np

FLUSH_EVERY = 64


def flush_subnormals(values: np.ndarray) -> None:
    """Set entries smaller in magnitude than the dtype's smallest normal number to zero."""
    values[np.abs(values) < np.finfo(values.dtype).tiny] = 0


def sgd_step(params: np.ndarray, directions, velocity: np.ndarray, *, momentum: float) -> None:
    """``v = momentum * v + sum(directions); w += v`` in place (``w += sum(directions)``
    without momentum), adding the directions in order.

    A direction is ``-lr_t * mean gradient`` (see ``SGD.direction``), or a worker's part of
    it. Accumulating straight into the velocity needs no scratch vector and no separate
    sum: a parameter server's update of two workers' parts took 138 us instead of 205 us
    with ``np.sum`` first (784-256-10, float32).
    """
    target = velocity if momentum else params
    if momentum:
        velocity *= momentum
    for direction in directions:
        target += direction
    if momentum:
        params += velocity


class SGD:
    """Owns the schedule and the velocity buffer of one flat parameter vector."""

    def __init__(self, params: np.ndarray, lr: float = 1.0, lr_decay: float = 0.0,
                 momentum: float = 0.0):
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}.")
        if lr_decay < 0:
            raise ValueError(f"lr_decay must be >= 0, got {lr_decay}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.params = params
        self.lr, self.lr_decay, self.momentum = float(lr), float(lr_decay), float(momentum)
        self.iterations = 0
        self.velocity = np.zeros_like(params)
        # sgd_step fused with the direction's scaling, over whole flat arrays in one pass
        # (distnn.nn.fused.sgd_momentum_step); ``step`` uses it when set. Bit-identical.
        self.fused_update = None

    @property
    def current_lr(self) -> float:
        return self.lr / (1.0 + self.lr_decay * self.iterations)

    def direction(self, grads: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Turn a gradient *sum* over ``batch_size`` samples into this update's step,
        in place: ``grads <- -lr_t / batch_size * grads`` (one pass). Returns ``grads``.

        Split from ``apply`` so that workers can do this part in parallel and a parameter
        server only accumulates (``ps-sync``).
        """
        return np.multiply(grads, -self.current_lr / batch_size, out=grads)

    def apply(self, *directions: np.ndarray, part: slice = slice(None),
              scale: float | None = None) -> None:
        """Apply one step whose direction is the sum of ``directions``; count one update.

        With ``part``, each direction holds only that slice and only that slice of the
        parameters moves: ranks sharing one parameter vector each update a shard. With
        ``scale``, the one direction is a gradient sum that ``fused_update`` scales as it
        updates (``step``).
        """
        velocity = self.velocity[part]
        if scale is None:
            sgd_step(self.params[part], directions, velocity, momentum=self.momentum)
        else:
            (grads,) = directions
            value = self.params.dtype.type   # rounds as NumPy's scalar operations do
            self.fused_update(self.params[part], grads, velocity, value(scale),
                              value(self.momentum))
        self.advance()
        if self.momentum and self.iterations % FLUSH_EVERY == 0:
            flush_subnormals(velocity)

    def advance(self) -> None:
        """Count one update applied elsewhere (by a parameter server): keeps this copy of
        the schedule in step."""
        self.iterations += 1

    def step(self, grads: np.ndarray, batch_size: int = 1, part: slice = slice(None)) -> None:
        """One update from the gradient *sum* ``grads`` over ``batch_size`` samples.

        ``grads`` is consumed: it may be overwritten with the step direction.
        """
        if self.fused_update is not None and part == slice(None):
            self.apply(grads, scale=-self.current_lr / batch_size)
            return
        self.apply(self.direction(grads, batch_size), part=part)

    def rebind(self, params: np.ndarray, velocity: np.ndarray) -> None:
        """Use other buffers (e.g. shared memory) for the parameters and the velocity."""
        velocity[...] = self.velocity
        self.params, self.velocity = params, velocity

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "momentum": self.momentum,
            "iterations": self.iterations,
            "velocity": self.velocity.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        velocity = np.asarray(state["velocity"])
        if velocity.shape != self.velocity.shape:
            raise ValueError(
                f"optimizer velocity has shape {velocity.shape}, model needs {self.velocity.shape}"
            )
        self.lr = float(state["lr"])
        self.lr_decay = float(state["lr_decay"])
        self.momentum = float(state["momentum"])
        self.iterations = int(state["iterations"])
        self.velocity[...] = velocity
