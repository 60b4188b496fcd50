"""Adam (Kingma and Ba) and AdamW (Loshchilov and Hutter), as PyTorch's ``torch.optim`` has
them, so that a user's tuned values carry over:

    g    = mean gradient (+ weight_decay * w for Adam: an L2 penalty)
    m    = beta1 * m + (1 - beta1) * g
    v    = beta2 * v + (1 - beta2) * g^2
    w    = w - lr_t / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

AdamW decays the weights apart from the gradient, before the step: ``w *= 1 - lr_t *
weight_decay``. What travels between ranks is each worker's part of the mean gradient,
``g_k / B`` (``prepare``): Adam's update is not linear in the gradient, so the owner of
the parameters adds the parts first.
"""

import numpy as np

from distnn.optim.base import Optimizer, sum_into
from distnn.optim.schedule import Schedule


class Adam(Optimizer):
    name = "adam"
    state_names = ("exp_avg", "exp_avg_sq")
    memory_vectors = 4     # both moments, the summed gradient and one intermediate
    decoupled = False      # AdamW: weight decay apart from the gradient

    def __init__(self, params: np.ndarray, state: dict | None = None,
                 schedule: Schedule | None = None, *, lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}.")
        if eps <= 0 or weight_decay < 0:
            raise ValueError(f"eps must be > 0 and weight_decay >= 0, got {eps}, {weight_decay}.")
        super().__init__(params, state, schedule or Schedule(lr, "constant"))
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decay = float(weight_decay)
        # The gradient and one intermediate, allocated once by the rank that applies.
        self._work = np.empty((2, params.size), dtype=params.dtype) if self.state else None

    @classmethod
    def from_config(cls, config, params, state, schedule) -> "Adam":
        return cls(params, state, schedule, beta1=config.beta1, beta2=config.beta2,
                   eps=config.eps, weight_decay=config.weight_decay)

    def prepare(self, grad_sum: np.ndarray, batch_size: int) -> np.ndarray:
        """``grad_sum <- grad_sum / batch_size``: this worker's part of the mean gradient."""
        return np.multiply(grad_sum, 1.0 / batch_size, out=grad_sum)

    def _update(self, parts: list[np.ndarray], part: slice) -> None:
        params, m, v = self.params[part], self.state["exp_avg"][part], self.state["exp_avg_sq"][part]
        grad, work = sum_into(self._work[0, part], parts), self._work[1, part]
        lr, t = self.current_lr, self.iterations + 1
        if self.weight_decay and self.decoupled:
            params *= 1.0 - lr * self.weight_decay
        elif self.weight_decay:
            grad += np.multiply(params, self.weight_decay, out=work)
        m *= self.beta1
        m += np.multiply(grad, 1.0 - self.beta1, out=work)
        v *= self.beta2
        np.multiply(grad, grad, out=work)
        work *= 1.0 - self.beta2
        v += work
        np.sqrt(v, out=work)
        work *= 1.0 / np.sqrt(1.0 - self.beta2 ** t)
        work += self.eps
        np.divide(m, work, out=work)
        work *= -lr / (1.0 - self.beta1 ** t)
        params += work


class AdamW(Adam):
    name = "adamw"
    decoupled = True

    def __init__(self, params, state=None, schedule=None, *, lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, state, schedule, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                         weight_decay=weight_decay)
