"""Layers whose parameters are views into a model's flat buffers."""

import numpy as np

from distnn.nn.functional import gelu_forward, relu, relu_backward, tanh_forward


class Dense:
    """Affine layer ``y = x @ W + b`` with ``W`` of shape (fan_in, fan_out).

    ``weight``/``bias`` view the model's parameter buffer and ``weight_grad``/``bias_grad``
    its gradient buffer, so the backward pass writes straight into the vector that
    MPI sends: no packing step.
    """

    def __init__(self, params: np.ndarray, grads: np.ndarray, fan_in: int, fan_out: int):
        self.fan_in, self.fan_out = fan_in, fan_out
        self.weight, self.bias = self.views(params)
        self.weight_grad, self.bias_grad = self.views(grads)

    def views(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This layer's (weight, bias) shaped views of its slice of a flat buffer."""
        n_weight = self.fan_in * self.fan_out
        return flat[:n_weight].reshape(self.fan_in, self.fan_out), flat[n_weight:]

    @staticmethod
    def size(fan_in: int, fan_out: int) -> int:
        return fan_in * fan_out + fan_out

    def forward(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.matmul(x, self.weight, out=out)
        out += self.bias
        return out

    def backward(self, x: np.ndarray, grad_out: np.ndarray, grad_in: np.ndarray | None,
                 param_grads: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Write summed parameter gradients into ``param_grads`` (default: the model's
        gradient views); fill ``grad_in`` unless it is None (first layer)."""
        weight_grad, bias_grad = param_grads or (self.weight_grad, self.bias_grad)
        np.matmul(x.T, grad_out, out=weight_grad)
        np.sum(grad_out, axis=0, out=bias_grad)
        if grad_in is not None:
            np.matmul(grad_out, self.weight.T, out=grad_in)


class ReLU:
    """Rectified linear unit, applied in place on the layer's pre-activation buffer; its
    backward pass needs no buffer of its own (the mask comes from its output)."""

    buffers = 0

    @staticmethod
    def forward(x: np.ndarray, buffers=(), training: bool = False) -> np.ndarray:
        return relu(x, out=x)

    @staticmethod
    def backward(grad: np.ndarray, activation: np.ndarray, mask: np.ndarray, buffers=()) -> None:
        relu_backward(grad, activation, mask)


class Tanh:
    """``tanh``, in place; in training its derivative is kept in the layer's buffer."""

    buffers = 1

    @staticmethod
    def forward(x: np.ndarray, buffers, training: bool = False) -> np.ndarray:
        return tanh_forward(x, buffers[0] if training else None)

    @staticmethod
    def backward(grad: np.ndarray, activation: np.ndarray, mask: np.ndarray, buffers) -> None:
        grad *= buffers[0]


class GELU:
    """GELU's tanh approximation, in place; buffers: its derivative and two scratch."""

    buffers = 3

    @staticmethod
    def forward(x: np.ndarray, buffers, training: bool = False) -> np.ndarray:
        derivative, t, scratch = buffers
        return gelu_forward(x, t, derivative if training else None, scratch)

    @staticmethod
    def backward(grad: np.ndarray, activation: np.ndarray, mask: np.ndarray, buffers) -> None:
        grad *= buffers[0]


ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "gelu": GELU}
