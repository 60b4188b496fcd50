"""Layers whose parameters are views into a model's flat buffers."""

import numpy as np

from distnn.nn.functional import relu, relu_backward


class Dense:
    """Affine layer ``y = x @ W + b`` with ``W`` of shape (fan_in, fan_out).

    ``weight``/``bias`` view the model's parameter buffer and ``weight_grad``/``bias_grad``
    its gradient buffer, so the backward pass writes straight into the vector that
    MPI sends: no packing step.
    """

    def __init__(self, params: np.ndarray, grads: np.ndarray, fan_in: int, fan_out: int):
        n_weight = fan_in * fan_out
        self.fan_in, self.fan_out = fan_in, fan_out
        self.weight = params[:n_weight].reshape(fan_in, fan_out)
        self.bias = params[n_weight : n_weight + fan_out]
        self.weight_grad = grads[:n_weight].reshape(fan_in, fan_out)
        self.bias_grad = grads[n_weight : n_weight + fan_out]

    @staticmethod
    def size(fan_in: int, fan_out: int) -> int:
        return fan_in * fan_out + fan_out

    def forward(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.matmul(x, self.weight, out=out)
        out += self.bias
        return out

    def backward(self, x: np.ndarray, grad_out: np.ndarray, grad_in: np.ndarray | None) -> None:
        """Write summed parameter gradients; fill ``grad_in`` unless it is None (first layer)."""
        np.matmul(x.T, grad_out, out=self.weight_grad)
        np.sum(grad_out, axis=0, out=self.bias_grad)
        if grad_in is not None:
            np.matmul(grad_out, self.weight.T, out=grad_in)


class ReLU:
    """Rectified linear unit, applied in place on the layer's pre-activation buffer."""

    @staticmethod
    def forward(x: np.ndarray) -> np.ndarray:
        return relu(x, out=x)

    @staticmethod
    def backward(grad: np.ndarray, activation: np.ndarray, mask: np.ndarray) -> None:
        relu_backward(grad, activation, mask)
