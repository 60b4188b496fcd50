"""Multilayer perceptron: Dense -> activation (-> dropout) -> ... -> Dense -> softmax
cross-entropy."""

import numpy as np

from distnn.nn import kernels as kernel_choice
from distnn.nn.crand import CRand, eigen_random
from distnn.nn.functional import dropout_scale, softmax_cross_entropy, softmax_cross_entropy_grad
from distnn.nn.layers import ACTIVATIONS, Dense

INITS = ("he", "nnfs", "uniform")
CHUNK_ROWS = 4096  # rows per forward/backward pass: keeps activations in cache (benchmarks/chunk_rows.py)


class MLP:
    """A dense network whose parameters live in one contiguous vector.

    ``params`` and ``grads`` are flat arrays of ``n_params`` elements; every layer's
    weight and bias are reshaped views into them, so one MPI call moves the whole model
    and the optimizer is one vector operation.

    Gradients are *sums* over the samples given (not means): data-parallel ranks add
    their sums and divide once by the global batch size, which keeps uneven splits exact.
    A batch larger than ``CHUNK_ROWS`` is processed in chunks whose activations stay in
    cache, their gradients accumulated through a second flat buffer.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``[n_features, hidden..., n_classes]``.
    dtype : "float32" or "float64".
    init : "he" (N(0, 2/fan_in) weights), "nnfs" (0.01 N(0, 1), as nnfs's Python book code),
        or "uniform" (U(-0.01, 0.01): the original C++ code's ``MatrixXd::Random * 0.01``,
        drawn from glibc's ``rand()`` stream, see ``crand.py``). Biases start at zero.
    seed : int
        Seed of the initial weights: NumPy ``RandomState`` for "he" and "nnfs", glibc's
        ``srand`` for "uniform" (0 and 1 give the original's unseeded stream); and of the
        dropout masks.
    activation : "relu", "tanh" or "gelu" (tanh approximation), after every hidden layer.
    dropout : float in [0, 1)
        In training, each hidden unit's output is zeroed with this probability and the
        others scaled by ``1 / (1 - dropout)``; the mask is a function of (seed, global
        batch number, layer, sample index, unit) only, so the ranks that split a batch draw
        serial's masks. Inference uses every unit.
    label_smoothing : float in [0, 1)
        Training's targets are ``(1 - s) onehot + s / K`` (Szegedy et al.); evaluations
        report the plain cross-entropy, so that runs stay comparable.
    params, grads : flat arrays of ``n_params``, optional
        Buffers placed by a strategy (e.g. in shared memory); new ones otherwise.
    kernels : "numpy", "fused", "auto", or a path ("fused-rows", "fused-blas")
        The compute path (``nn/kernels.py``); ``self.kernels`` names the one in use. The
        fused kernels compute ReLU networks without dropout or label smoothing.
    """

    def __init__(self, sizes, dtype="float32", init="he", seed=0, params=None, grads=None,
                 activation="relu", dropout=0.0, label_smoothing=0.0, kernels="numpy"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{activation!r}.")
        if not 0 <= dropout < 1 or not 0 <= label_smoothing < 1:
            raise ValueError(f"dropout and label_smoothing must be in [0, 1), got {dropout}, "
                             f"{label_smoothing}.")
        self.label_smoothing = float(label_smoothing)
        self.activation, self._activation = activation, ACTIVATIONS[activation]
        self.dropout, self.seed = float(dropout), int(seed)
        self.sizes = [int(s) for s in sizes]
        self.dtype = np.dtype(dtype)
        self.n_params = self.parameter_count(self.sizes)
        self.params = self._buffer("params", params)
        self.grads = self._buffer("grads", grads)
        self._chunk_grads = np.zeros(self.n_params, dtype=self.dtype)
        self.layers: list[Dense] = []
        self._chunk_views = []
        offset = 0
        for fan_in, fan_out in zip(self.sizes, self.sizes[1:]):
            end = offset + Dense.size(fan_in, fan_out)
            layer = Dense(self.params[offset:end], self.grads[offset:end], fan_in, fan_out)
            self.layers.append(layer)
            self._chunk_views.append(layer.views(self._chunk_grads[offset:end]))
            offset = end
        self.initialize(init, seed)
        self._rows = 0
        self.input_shift: np.ndarray | None = None   # standardisation: (x - shift) * scale
        self.input_scale: np.ndarray | None = None
        self._input = np.empty((0, self.sizes[0]), dtype=self.dtype)
        self.kernels = kernel_choice.resolve(
            kernels, self.sizes, plain=kernel_choice.computes(activation, dropout, label_smoothing))
        self._fused = self._rows_kernel = None
        if self.kernels != "numpy":
            from distnn.nn import fused

            self._fused = fused
        if self.kernels == "fused-rows":
            self._rows_kernel = _RowsKernel(self)
        self._early: tuple[int, object] | None = None
        self._split_now = False

    def announce_early_part(self, rows: int, signal) -> int:
        """From now on, every gradient computation calls ``signal()`` once, as soon as the
        gradient is final from the first layer's weight row ``rows`` on (that row onwards,
        and every later layer): the first layer's weight gradient, the backward pass's last
        GEMM, is computed in two, the rows from ``rows`` first. A parameter server's helpers
        update that part while this rank computes the rest. Returns where the part starts
        in the flat vector. (Batches of more than ``CHUNK_ROWS`` rows, and the fused-rows
        kernel, signal at the end.)"""
        fan_in, fan_out = self.sizes[0], self.sizes[1]
        if not 0 <= rows <= fan_in:
            raise ValueError(f"rows must be in [0, {fan_in}], got {rows}")
        self._early = (rows, signal)
        return rows * fan_out

    def withdraw_early_part(self) -> None:
        """Back to one GEMM and no signal (the strategy that asked is done)."""
        self._early = None

    @staticmethod
    def parameter_count(sizes) -> int:
        return sum(Dense.size(a, b) for a, b in zip(sizes, sizes[1:]))

    def _buffer(self, name: str, given: np.ndarray | None) -> np.ndarray:
        """A flat buffer of ``n_params``: ``given`` (placed by a strategy, e.g. in shared
        memory) or a new one."""
        if given is None:
            return np.zeros(self.n_params, dtype=self.dtype)
        if given.shape != (self.n_params,) or given.dtype != self.dtype:
            raise ValueError(f"{name} buffer must be ({self.n_params},) {self.dtype}, "
                             f"got {given.shape} {given.dtype}")
        return given

    def set_input_transform(self, shift: np.ndarray | None, scale: np.ndarray | None) -> None:
        """Standardise every input, in training and in inference alike: ``(x - shift) * scale``
        per feature (both None: inputs are used as they are). Part of the model, so that
        ``model.npz``, ``evaluate``, ``predict`` and the ONNX export apply the same statistics."""
        if (shift is None) != (scale is None):
            raise ValueError("input shift and scale come together")
        if shift is not None:
            shift = np.asarray(shift, dtype=self.dtype).reshape(self.n_features)
            scale = np.asarray(scale, dtype=self.dtype).reshape(self.n_features)
        self.input_shift, self.input_scale = shift, scale

    def _standardized(self, x: np.ndarray) -> np.ndarray:
        """``x`` transformed into a reused buffer (``x`` itself without a transform)."""
        if self.input_shift is None:
            return x
        n = x.shape[0]
        if self._input.shape[0] < n:
            self._input = np.empty((n, self.n_features), dtype=self.dtype)
        out = self._input[:n]
        if self._fused is not None:
            self._fused.standardize(np.ascontiguousarray(x), self.input_shift, self.input_scale,
                                    out)
            return out
        np.subtract(x, self.input_shift, out=out)
        out *= self.input_scale
        return out

    def rebind(self, params: np.ndarray | None = None, grads: np.ndarray | None = None) -> None:
        """Move the parameters and/or gradients into other flat buffers, copying the current
        values; the layers' views follow. For the end of a run whose buffers lived in
        shared memory that is about to be freed."""
        for name, buffer in (("params", params), ("grads", grads)):
            if buffer is None:
                continue
            if buffer.shape != (self.n_params,) or buffer.dtype != self.dtype:
                raise ValueError(f"{name} buffer must be ({self.n_params},) {self.dtype}, "
                                 f"got {buffer.shape} {buffer.dtype}")
            buffer[...] = getattr(self, name)
            setattr(self, name, buffer)
        offset = 0
        for i, layer in enumerate(self.layers):
            end = offset + Dense.size(layer.fan_in, layer.fan_out)
            self.layers[i] = Dense(self.params[offset:end], self.grads[offset:end],
                                   layer.fan_in, layer.fan_out)
            offset = end

    def gradient_buffer(self, flat: np.ndarray) -> tuple:
        """``flat`` (a vector of ``n_params``) with every layer's gradient views into it,
        made once, for ``use_gradients``."""
        flat = self._buffer("gradient", flat)
        views, offset = [], 0
        for layer in self.layers:
            end = offset + Dense.size(layer.fan_in, layer.fan_out)
            views.append(layer.views(flat[offset:end]))
            offset = end
        return flat, views

    def use_gradients(self, buffer: tuple) -> None:
        """Write the next gradients into ``buffer`` (from ``gradient_buffer``), without
        copying: ``--deterministic`` computes each micro-batch's sum into its own row."""
        self.grads, views = buffer
        for layer, (weight_grad, bias_grad) in zip(self.layers, views):
            layer.weight_grad, layer.bias_grad = weight_grad, bias_grad

    def initialize(self, init: str, seed: int) -> None:
        rng = np.random.RandomState(seed)
        crand = CRand(seed) if init == "uniform" else None
        for layer in self.layers:
            if crand is not None:
                layer.weight[...] = eigen_random(crand, layer.fan_in, layer.fan_out) * 0.01
            else:
                scale = 0.01 if init == "nnfs" else np.sqrt(2.0 / layer.fan_in)
                layer.weight[...] = scale * rng.randn(layer.fan_in, layer.fan_out)
            layer.bias[...] = 0

    @property
    def n_features(self) -> int:
        return self.sizes[0]

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    def _workspace(self, rows: int) -> None:
        """Grow the activation buffers to ``rows``; the hot path then only slices them."""
        if rows <= self._rows:
            return
        widths = self.sizes[1:]
        hidden = widths[:-1]
        self._act = [np.empty((rows, w), dtype=self.dtype) for w in widths]
        self._grad = [np.empty((rows, w), dtype=self.dtype) for w in widths]
        self._mask = [np.empty((rows, w), dtype=bool) for w in hidden]
        # The activation's derivative and scratch (not ReLU's: its mask comes from its output).
        extra = self._activation.buffers
        self._deriv = [[np.empty((rows, w), dtype=self.dtype) for _ in range(extra)]
                       for w in hidden]
        if self.dropout:
            self._keep = [np.empty((rows, w), dtype=self.dtype) for w in hidden]
            self._hashes = [np.empty((rows, w), dtype=np.uint64) for w in hidden]
        self._rows = rows

    def _forward(self, x: np.ndarray, samples=None, last_bias: bool = True) -> list[np.ndarray]:
        """Every layer's output for ``x``; in training (``samples`` given: ``(global batch
        number, the rows' sample indices)``) also the activations' derivatives and, with
        dropout, the masks applied. The fused path leaves the last layer's bias to the
        softmax kernel unless ``last_bias``."""
        n = x.shape[0]
        acts = [a[:n] for a in self._act]
        if self._fused is not None:
            return self._fused_forward(x, acts, last_bias)
        inputs = x
        for i, layer in enumerate(self.layers):
            layer.forward(inputs, out=acts[i])
            if i < len(self.layers) - 1:
                buffers = [d[:n] for d in self._deriv[i]]
                self._activation.forward(acts[i], buffers, training=samples is not None)
                if samples is not None and self.dropout:
                    keep = dropout_scale(self.seed, samples[0], i, samples[1], self.dropout,
                                         self._hashes[i][:n], self._mask[i][:n], self._keep[i][:n])
                    acts[i] *= keep
            inputs = acts[i]
        return acts

    def _fused_forward(self, x, acts, last_bias: bool) -> list[np.ndarray]:
        inputs = x
        for i, layer in enumerate(self.layers):
            np.matmul(inputs, layer.weight, out=acts[i])
            if i < len(self.layers) - 1:
                self._fused.bias_relu(acts[i], layer.bias)
            elif last_bias:
                self._fused.bias_add(acts[i], layer.bias)
            inputs = acts[i]
        return acts

    def loss_and_gradient_sum(self, x: np.ndarray, y: np.ndarray, samples=None) -> tuple[float, int]:
        """Forward and backward over ``x`` (n, n_features), labels ``y`` (n,).

        Fills ``self.grads`` with the gradient of the *summed* loss and returns
        ``(loss_sum, correct)``. With n = 0 the gradient is zero. ``samples``: ``(global
        batch number, sample index of each row)``, which the dropout masks depend on
        (needed with dropout; the batch number 0 and rows 0..n-1 otherwise).
        """
        return self._gradient_sum(x, y, True, samples)

    def gradient_sum(self, x: np.ndarray, y: np.ndarray, samples=None) -> None:
        """As ``loss_and_gradient_sum``, without computing the loss: a training step's path."""
        self._gradient_sum(x, y, False, samples)

    def _gradient_sum(self, x, y, with_loss: bool, samples) -> tuple[float, int]:
        if self._early is None:
            return self._whole_gradient_sum(x, y, with_loss, samples)
        self._split_now = 0 < x.shape[0] <= CHUNK_ROWS and self._rows_kernel is None
        try:
            found = self._whole_gradient_sum(x, y, with_loss, samples)
        finally:
            split, self._split_now = self._split_now, False
        if not split:
            self._early[1]()
        return found

    def _whole_gradient_sum(self, x, y, with_loss: bool, samples) -> tuple[float, int]:
        n = x.shape[0]
        if n == 0:
            self.grads[...] = 0
            return 0.0, 0
        if self._rows_kernel is not None:
            return self._rows_kernel(x, y, want_grad=True, want_loss=with_loss)
        batch, rows = samples if samples is not None else (0, np.arange(n))
        loss_sum, correct = self._chunk_gradient(x[:CHUNK_ROWS], y[:CHUNK_ROWS], True, with_loss,
                                                 (batch, rows[:CHUNK_ROWS]))
        for start in range(CHUNK_ROWS, n, CHUNK_ROWS):
            chunk = slice(start, start + CHUNK_ROWS)
            part_loss, part_correct = self._chunk_gradient(x[chunk], y[chunk], False, with_loss,
                                                           (batch, rows[chunk]))
            self.grads += self._chunk_grads
            loss_sum += part_loss
            correct += part_correct
        return loss_sum, correct

    def _chunk_gradient(self, x, y, first: bool, with_loss: bool, samples) -> tuple[float, int]:
        """Gradient sum of one chunk into ``grads`` (first chunk) or the chunk buffer."""
        x = self._standardized(x)
        n = x.shape[0]
        self._workspace(n)
        if self._fused is not None:
            return self._fused_chunk_gradient(x, y, first, with_loss)
        acts = self._forward(x, samples)
        grads = [g[:n] for g in self._grad]
        loss_sum, correct = 0.0, 0
        if with_loss:
            loss_sum, correct = softmax_cross_entropy(acts[-1], y, grads[-1], self.label_smoothing)
        else:
            softmax_cross_entropy_grad(acts[-1], y, grads[-1], self.label_smoothing)
        for i in range(len(self.layers) - 1, -1, -1):
            layer_input = x if i == 0 else acts[i - 1]
            grad_in = None if i == 0 else grads[i - 1]
            if i == 0 and self._split_now:
                np.sum(grads[0], axis=0, out=self.layers[0].bias_grad)
                self._first_weight_gradient(x, grads[0], self.layers[0].weight_grad)
                break
            self.layers[i].backward(layer_input, grads[i], grad_in,
                                    None if first else self._chunk_views[i])
            if grad_in is not None:
                self._activation.backward(grad_in, acts[i - 1], self._mask[i - 1][:n],
                                          [d[:n] for d in self._deriv[i - 1]])
                if self.dropout:
                    grad_in *= self._keep[i - 1][:n]
        return loss_sum, correct

    def _fused_chunk_gradient(self, x, y, first: bool, with_loss: bool) -> tuple[float, int]:
        """``_chunk_gradient`` on the fused-blas path: the same GEMMs, one fused kernel
        between each two of them."""
        fused, n = self._fused, x.shape[0]
        acts = self._forward(x, last_bias=False)
        grads = [g[:n] for g in self._grad]
        views = [(layer.weight_grad, layer.bias_grad) for layer in self.layers] if first \
            else self._chunk_views
        last = self.layers[-1]
        loss_sum, correct = fused.softmax_cross_entropy(acts[-1], last.bias, y, grads[-1],
                                                        views[-1][1], True, with_loss)
        for i in range(len(self.layers) - 1, -1, -1):
            layer_input = x if i == 0 else acts[i - 1]
            if i == 0 and self._split_now:
                self._first_weight_gradient(x, grads[0], views[0][0])
                break
            np.matmul(layer_input.T, grads[i], out=views[i][0])
            if i > 0:
                np.matmul(grads[i], self.layers[i].weight.T, out=grads[i - 1])
                fused.relu_backward_bias(grads[i - 1], acts[i - 1], views[i - 1][1])
        return loss_sum, correct

    def _first_weight_gradient(self, x, grad_out, weight_grad) -> None:
        """``x.T @ grad_out`` into ``weight_grad`` in two GEMMs, signalling in between (see
        ``announce_early_part``); every other gradient is final by now."""
        rows, signal = self._early
        np.matmul(x[:, rows:].T, grad_out, out=weight_grad[rows:])
        signal()
        np.matmul(x[:, :rows].T, grad_out, out=weight_grad[:rows])

    def warm_up(self, x: np.ndarray, y: np.ndarray) -> None:
        """Compile (or load from numba's disk cache) every kernel the training and the
        evaluations call, on two rows like ``x``, ``y``, so that the first step is not
        late; the gradient buffer is overwritten."""
        if self._fused is None:
            return
        x, y = x[:2], y[:2]
        self.loss_and_gradient_sum(x, y)
        self.evaluate_sum(x, y)
        self.logits(x)
        scratch = np.zeros((2, 2), dtype=self.dtype)   # the updates' kernels, on 2 elements
        self._fused.sgd_momentum_step(scratch[0], scratch[1], scratch[0].copy(),
                                      self.dtype.type(0), self.dtype.type(0.5))
        self._fused.sgd_apply_parts(scratch[0], scratch, scratch[1].copy(), self.dtype.type(0.5))
        self._fused.flush_subnormals(scratch[0], self.dtype.type(np.finfo(self.dtype).tiny))

    def logits(self, x: np.ndarray, chunk: int = CHUNK_ROWS) -> np.ndarray:
        """Logits (n, n_classes) computed in chunks to bound memory."""
        out = np.empty((x.shape[0], self.n_classes), dtype=self.dtype)
        for start in range(0, x.shape[0], chunk):
            block = self._standardized(np.asarray(x[start : start + chunk], dtype=self.dtype))
            self._workspace(block.shape[0])
            out[start : start + block.shape[0]] = self._forward(block)[-1]
        return out

    def evaluate_sum(self, x: np.ndarray, y: np.ndarray, chunk: int = CHUNK_ROWS) -> tuple[float, int]:
        """Summed loss and number correct over ``x``, without touching ``grads``."""
        loss_sum, correct = 0.0, 0
        for start in range(0, x.shape[0], chunk):
            if self._rows_kernel is not None:
                part_loss, part_correct = self._rows_kernel(
                    np.asarray(x[start : start + chunk], dtype=self.dtype),
                    y[start : start + chunk], want_grad=False, want_loss=True)
                loss_sum += part_loss
                correct += part_correct
                continue
            block = self._standardized(np.asarray(x[start : start + chunk], dtype=self.dtype))
            n = block.shape[0]
            self._workspace(n)
            scratch = self._grad[-1][:n]
            labels = y[start : start + n]
            if self._fused is not None:
                logits = self._forward(block, last_bias=False)[-1]
                last = self.layers[-1]
                part_loss, part_correct = self._fused.softmax_cross_entropy(
                    logits, last.bias, np.asarray(labels, dtype=np.intp), scratch, last.bias_grad,
                    False, True)
            else:
                logits = self._forward(block)[-1]
                part_loss, part_correct = softmax_cross_entropy(logits, labels, scratch)
            loss_sum += part_loss
            correct += part_correct
        return loss_sum, correct

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = self.logits(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Named copies of every layer's arrays (and of the input transform, if any), as
        stored in ``model.npz``."""
        arrays: dict[str, np.ndarray] = {}
        if self.input_shift is not None:
            arrays["input.shift"] = self.input_shift.copy()
            arrays["input.scale"] = self.input_scale.copy()
        for i, layer in enumerate(self.layers):
            arrays[f"layers.{i}.weight"] = layer.weight.copy()
            arrays[f"layers.{i}.bias"] = layer.bias.copy()
        return arrays

    def load_state_arrays(self, arrays) -> None:
        if "input.shift" in arrays:
            self.set_input_transform(arrays["input.shift"], arrays["input.scale"])
        for i, layer in enumerate(self.layers):
            layer.weight[...] = arrays[f"layers.{i}.weight"]
            layer.bias[...] = arrays[f"layers.{i}.bias"]


class _RowsKernel:
    """The ``fused-rows`` path of one model (``nn/rows.py``): its scratch buffers and the
    call; it reads the layers' views at every call, so ``MLP.rebind`` needs nothing here."""

    def __init__(self, model: MLP):
        from distnn.nn import rows

        features, hidden, classes = model.sizes
        self.model = model
        self.kernel = rows.load(features, classes, model.dtype.name)
        block = rows.block_rows(features, classes)
        self.work = np.zeros((block + classes, hidden), dtype=model.dtype)
        self.acc = np.zeros((features + 1 + classes, hidden), dtype=model.dtype)
        self.total = np.zeros(self.acc.shape)
        self.identity = (np.zeros(features, dtype=model.dtype), np.ones(features, dtype=model.dtype))

    def __call__(self, x, y, want_grad: bool, want_loss: bool) -> tuple[float, int]:
        model = self.model
        first, last = model.layers
        if model.input_shift is None:
            shift, scale = self.identity
        else:
            shift, scale = model.input_shift, model.input_scale
        loss, correct = self.kernel(
            np.ascontiguousarray(x, dtype=model.dtype), np.asarray(y, dtype=np.intp), shift, scale,
            first.weight, first.bias, last.weight, last.bias,
            first.weight_grad, first.bias_grad, last.weight_grad, last.bias_grad,
            self.work, self.acc, self.total, want_grad, want_loss)
        return float(loss), int(correct)
