"""Fused kernels around the BLAS calls of a dense network, and the fused SGD update.

Every kernel does in one pass over memory what the NumPy path does in several: the bias
add with the ReLU after a forward GEMM; the bias add, softmax, cross-entropy gradient,
bias gradient (and, when asked, loss and accuracy) after the last GEMM; the ReLU mask
with the bias gradient after a backward GEMM; ``v = m v + s g; w += v`` over the whole
flat parameter vector. The GEMMs stay in NumPy (its BLAS is already at the machine's
limit for them). Gradients are *sums* over the rows given, as everywhere in distnn.

Importing this module imports numba (``distnn[fused]``); ``cache=True`` keeps the compiled
code on disk (``kernels.prepare_numba_cache``), so only a machine's first run compiles.
Reductions may be reassociated (``FAST``): results differ from NumPy's in the last bits
only. NaN and infinity are not assumed away (no ``nnan``/``ninf`` flags): a diverging
model still shows a NaN loss.
"""

import numpy as np
from numba import njit

FAST = {"reassoc", "contract", "nsz"}   # vectorised reductions and FMAs; NaN/inf kept

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01    # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_FLOOR = -708.0                      # exp below this is under float64's normal range


@njit(fastmath={"contract"}, cache=True)
def exp_nonpositive(x):
    """exp(x) for float64 x <= 0 (softmax after the max-shift); below -708 it returns
    exp(-708), 3.3e-308, which a softmax cannot tell from 0 next to its largest term's 1.

    numba calls libm's scalar ``exp``, which stops a loop from vectorising and is slow
    for the very negative arguments of a confident classifier; this reduction to
    ``2**k * exp(r)``, |r| <= ln2/2, with a degree-13 Taylor polynomial vectorises and
    is accurate to a few ulp. Not reassociated (``FAST``): that would undo the split of
    ln 2; LLVM inlines it into the callers' loops all the same.
    """
    x = _EXP_FLOOR if x < _EXP_FLOOR else x   # NaN stays NaN
    k = np.floor(x * _LOG2E + 0.5)
    r = x - k * _LN2_HI - k * _LN2_LO
    p = 1.0 / 6227020800.0
    for coefficient in (1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                        1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0,
                        1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0):
        p = p * r + coefficient
    return p * np.int64((np.int64(k) + 1023) << 52).view(np.float64)


@njit(fastmath=FAST, cache=True)
def standardize(x, shift, scale, out):
    """``out = (x - shift) * scale`` per feature; x, out (n, f)."""
    for r in range(x.shape[0]):
        row, target = x[r], out[r]
        for i in range(x.shape[1]):
            target[i] = (row[i] - shift[i]) * scale[i]


@njit(fastmath=FAST, cache=True)
def bias_relu(a, bias):
    """``a = max(a + bias, 0)`` in place; a (n, width), bias (width,)."""
    zero = a.dtype.type(0)
    for r in range(a.shape[0]):
        row = a[r]
        for j in range(a.shape[1]):
            value = row[j] + bias[j]
            row[j] = zero if value < zero else value


@njit(fastmath=FAST, cache=True)
def bias_add(a, bias):
    """``a += bias`` in place, row by row."""
    for r in range(a.shape[0]):
        row = a[r]
        for j in range(a.shape[1]):
            row[j] += bias[j]


@njit(fastmath=FAST, cache=True)
def softmax_cross_entropy(z, bias, labels, dz, bias_grad, want_grad, want_loss):
    """Last layer, from its GEMM's output ``z`` (n, k) without the bias.

    Adds ``bias`` to ``z`` (in place), writes ``dz = softmax(z) - onehot(labels)`` and
    ``bias_grad = sum over rows of dz`` when ``want_grad``, and returns
    ``(loss_sum, correct)`` when ``want_loss`` (else ``(0.0, 0)``). The softmax is computed
    in float64 whatever the dtype, with the max-shift, so it never overflows.
    """
    n, classes = z.shape
    loss, correct = 0.0, 0
    if want_grad:
        bias_grad[:] = 0
    for r in range(n):
        row, grad = z[r], dz[r]
        top, best = -np.inf, 0
        for k in range(classes):
            value = row[k] + bias[k]
            row[k] = value
            if value > top:
                top, best = value, k
        total = 0.0
        for k in range(classes):
            total += exp_nonpositive(np.float64(row[k]) - top)
        label = labels[r]
        if want_loss:
            loss += np.log(total) - (np.float64(row[label]) - top)
            correct += best == label
        if want_grad:
            inverse = 1.0 / total
            for k in range(classes):
                grad[k] = exp_nonpositive(np.float64(row[k]) - top) * inverse
            grad[label] -= 1
            for k in range(classes):
                bias_grad[k] += grad[k]
    return loss, correct


@njit(fastmath=FAST, cache=True)
def relu_backward_bias(grad, activation, bias_grad):
    """Zero ``grad`` where the ReLU's output ``activation`` was 0, and write the layer's
    bias gradient, the column sums of the masked ``grad``; grad, activation (n, width)."""
    zero = grad.dtype.type(0)
    bias_grad[:] = 0
    for r in range(grad.shape[0]):
        g, a = grad[r], activation[r]
        for j in range(grad.shape[1]):
            value = g[j] if a[j] > zero else zero
            g[j] = value
            bias_grad[j] += value


@njit(cache=True)
def sgd_momentum_step(params, grads, velocity, scale, momentum):
    """One SGD step over flat arrays in one pass: ``d = scale * g; v = momentum * v + d;
    w += v`` (``w += d`` when ``momentum == 0``), with ``scale = -lr_t / batch_size``.

    Pure: ``grads`` is only read. ``scale`` and ``momentum`` must be of the arrays' dtype;
    then every operation rounds as NumPy's ``sgd_step`` (no fast-math), so the parameters
    are bit-identical to the NumPy update's. One pass instead of three: the vectors of a
    784-256-10 model do not fit in cache, so each pass costs a trip to memory.
    """
    if momentum == 0:
        for i in range(params.size):
            params[i] += grads[i] * scale
        return
    for i in range(params.size):
        v = velocity[i] * momentum + grads[i] * scale
        velocity[i] = v
        params[i] += v


@njit(cache=True)
def flush_subnormals(values, tiny):
    """``values[abs(values) < tiny] = 0`` in one pass that allocates nothing (NumPy's
    takes a temporary of the vector's size and a mask, fresh pages each time: a spike in
    the step that flushes). ``tiny``: the dtype's smallest normal number, of its dtype."""
    for i in range(values.size):
        if abs(values[i]) < tiny:
            values[i] = 0


APPLY_BLOCK = 2048   # elements per block: a block's velocity stays in L1 across the passes


def sgd_apply_parts(params, parts, velocity, momentum, scale=None):
    """``v = momentum * v + s * parts[0] + s * parts[1] + ...; w += v`` (``w +=`` the scaled
    parts in order when ``momentum == 0``): a parameter server's (or a shard owner's)
    update from the workers' parts, ``parts`` of shape (n_parts, n), a 2-D array or its
    columns (a shard of each part). ``scale`` (``s``, of the arrays' dtype): 1 for parts
    already prepared (``-lr_t / B`` folded in: a product by 1 is exact), ``-lr_t / B`` for
    gradient sums, which this pass then prepares as it reads them, rounding each product
    as ``SGD.prepare`` would.

    NumPy's ``sgd_step`` makes one pass over the whole vector per part and two more; here
    each block of ``APPLY_BLOCK`` elements takes those passes while it is in cache, so
    memory is read once. The parts are added in order and every operation rounds as
    NumPy's (no fast-math), so the result is bit-identical.
    """
    one = params.dtype.type(1)
    _sgd_apply_parts(params, row_major(parts), velocity, momentum,
                     one if scale is None else scale)


def row_major(parts: np.ndarray) -> np.ndarray:
    """``parts``, columns of the contiguous rows of a larger array (a shard of every
    worker's part), as an array that numba types as C-contiguous: the same first element
    and row stride, each row running on into the next. A kernel given it reads only the
    first ``parts.shape[1]`` elements of each row, all inside ``parts``. Typed as a
    strided array instead, numba's loops over a row neither vectorise nor hoist the
    stride: three times slower (``tests/test_kernels.py`` checks the results are equal)."""
    if parts.flags.c_contiguous or parts.ndim != 2 or parts.strides[1] != parts.itemsize \
            or parts.strides[0] % parts.itemsize:
        return parts
    row = parts.strides[0] // parts.itemsize
    return np.lib.stride_tricks.as_strided(parts, shape=(parts.shape[0], row),
                                           strides=(parts.strides[0], parts.itemsize))


@njit(cache=True)
def _sgd_apply_parts(params, parts, velocity, momentum, scale):
    """``sgd_apply_parts`` on a C-contiguous ``parts`` (its rows may be longer than
    ``params``: only their first ``params.size`` elements are read)."""
    n, n_parts = params.size, parts.shape[0]
    for start in range(0, n, APPLY_BLOCK):
        stop = min(start + APPLY_BLOCK, n)
        target = params[start:stop] if momentum == 0 else velocity[start:stop]
        if momentum != 0:
            first = parts[0, start:stop]
            for i in range(stop - start):
                target[i] = target[i] * momentum + first[i] * scale
        for k in range(0 if momentum == 0 else 1, n_parts):
            part = parts[k, start:stop]
            for i in range(stop - start):
                target[i] += part[i] * scale
        if momentum != 0:
            block = params[start:stop]
            for i in range(stop - start):
                block[i] += target[i]
