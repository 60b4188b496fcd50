"""Pure numeric kernels: no state, every output buffer passed in."""

import numpy as np


def relu(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """max(x, 0) into ``out`` (may be ``x``)."""
    return np.maximum(x, 0, out=out)


def relu_backward(grad: np.ndarray, activation: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero ``grad`` in place where the ReLU was inactive.

    ``activation`` is the ReLU's output; ``mask`` is a bool scratch of the same shape.
    """
    np.greater(activation, 0, out=mask)
    return np.multiply(grad, mask, out=grad)


def softmax_cross_entropy_grad(logits: np.ndarray, labels: np.ndarray, dlogits: np.ndarray) -> np.ndarray:
    """d(loss_sum)/d(logits) = softmax - onehot into ``dlogits``, without the loss.

    Training steps only need the gradient; skipping the log, the arg-max and the float64
    sums saves a fifth of a 784-256-10 step's non-BLAS time. ``logits`` is overwritten
    with the shifted logits. Returns the softmax row sums (before normalising), from which
    ``softmax_cross_entropy`` gets the loss.
    """
    n = logits.shape[0]
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=dlogits)
    sums = dlogits.sum(axis=1, keepdims=True)
    dlogits /= sums
    dlogits[np.arange(n), labels] -= 1
    return sums


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, dlogits: np.ndarray
) -> tuple[float, int]:
    """Fused softmax + categorical cross-entropy, summed over samples.

    Parameters
    ----------
    logits : (n, k) array, overwritten with the shifted logits.
    labels : (n,) integer class indices.
    dlogits : (n, k) array receiving d(loss_sum)/d(logits) = softmax - onehot.

    Returns
    -------
    loss_sum : float
        Sum over samples of -log softmax(logits)[label], computed with the max-shift
        and log-sum-exp so that it never overflows.
    correct : int
        Number of samples whose arg-max equals the label.
    """
    n = logits.shape[0]
    if n == 0:
        return 0.0, 0
    correct = int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
    sums = softmax_cross_entropy_grad(logits, labels, dlogits)
    loss_sum = float(np.sum(np.log(sums[:, 0]), dtype=np.float64)) - float(
        np.sum(logits[np.arange(n), labels], dtype=np.float64)
    )
    return loss_sum, correct


def tanh_forward(z: np.ndarray, derivative: np.ndarray | None) -> np.ndarray:
    """``z <- tanh(z)`` in place; ``derivative <- 1 - tanh(z)^2`` when given (training)."""
    np.tanh(z, out=z)
    if derivative is not None:
        np.multiply(z, z, out=derivative)
        np.subtract(1, derivative, out=derivative)
    return z


GELU_C = np.sqrt(2 / np.pi)
GELU_K = 0.044715


def gelu_forward(z: np.ndarray, t: np.ndarray, derivative: np.ndarray | None = None,
                 scratch: np.ndarray | None = None) -> np.ndarray:
    """The tanh approximation of GELU (GPT-2's; PyTorch's ``approximate="tanh"``) in place:
    ``z <- 0.5 z (1 + t)`` with ``t = tanh(c (z + k z^3))``; ``t`` is scratch of z's shape.
    With ``derivative`` (and ``scratch``, for training): ``0.5 (1 + t) + 0.5 z (1 - t^2) c
    (1 + 3k z^2)``."""
    np.multiply(z, z, out=t)
    if derivative is not None:
        np.multiply(t, 3 * GELU_K, out=derivative)
        derivative += 1
        derivative *= 0.5 * GELU_C
        derivative *= z
    t *= GELU_K
    t += 1
    t *= z
    t *= GELU_C
    np.tanh(t, out=t)
    if derivative is not None:
        np.multiply(t, t, out=scratch)
        np.subtract(1, scratch, out=scratch)
        derivative *= scratch
    t += 1
    z *= t
    z *= 0.5
    if derivative is not None:
        np.multiply(t, 0.5, out=scratch)
        derivative += scratch
    return z


_GOLDEN = 0x9E3779B97F4A7C15
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _splitmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array, in place: a well-mixed hash of each value."""
    z += np.uint64(_GOLDEN)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


def dropout_scale(seed: int, batch: int, layer: int, samples: np.ndarray, p: float,
                  hashes: np.ndarray, keep: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Inverted-dropout factors ``out`` (n, width): ``1 / (1 - p)`` for units kept, 0 for
    units dropped with probability ``p``.

    A pure function of (seed, global batch number, layer, sample index, unit): every rank
    that computes a sample's gradient draws the same mask for it, however the batch is
    split, so synchronous strategies still equal serial. ``hashes`` (uint64) and ``keep``
    (bool) are scratch of ``out``'s shape.
    """
    n, width = out.shape
    key = _splitmix(np.array([seed, batch, layer], dtype=np.uint64))
    rows = _splitmix(np.asarray(samples, dtype=np.uint64) ^ key[0])
    rows ^= key[1]
    _splitmix(rows)
    rows ^= key[2]
    np.add(rows[:, None], np.arange(width, dtype=np.uint64)[None, :], out=hashes)
    _splitmix(hashes)
    threshold = np.uint64(min(int(p * 2.0**64), 2**64 - 1))
    np.greater_equal(hashes, threshold, out=keep)
    return np.multiply(keep, 1.0 / (1.0 - p), out=out)
