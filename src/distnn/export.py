"""Export a trained model to ONNX (needs the ``onnx`` extra).

The graph is ``input → [(Sub, Mul): standardisation, if the model has one] → (MatMul, Add,
activation)* → MatMul, Add → Softmax``, with two outputs (the activation: Relu, Tanh, or
GELU's tanh approximation spelt in Mul, Add and Tanh, which every opset has; dropout is
training only):
``probabilities`` (n, classes) and ``label`` (n,), so any ONNX runtime reproduces
``distnn predict``.
"""

from pathlib import Path

import numpy as np

from distnn.errors import UsageError
from distnn.guards import output_file, write_output
from distnn.nn import MLP

OPSET = 17
ELEMENT_TYPES = {np.dtype(np.float32): "FLOAT", np.dtype(np.float64): "DOUBLE"}
PROTOBUF_LIMIT = 2**31 - 1   # bytes: one ONNX file without external data cannot be larger


def export_onnx(model: MLP, path: Path, sources=()) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically); returns ``path``.

    ``path`` is checked before anything is built (``--output``: not a directory, a
    writable folder, none of ``sources``, the files the model was read from).
    """
    path = output_file(path, "--output", inputs=sources)
    if model.dtype not in ELEMENT_TYPES:
        raise UsageError(f"ONNX export needs float32 or float64 parameters, the model has "
                         f"{model.dtype}")
    if model.params.nbytes > PROTOBUF_LIMIT:
        raise UsageError(f"the model's {model.params.nbytes:,} bytes of parameters exceed the "
                         f"{PROTOBUF_LIMIT:,} bytes one ONNX file can hold")
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise UsageError("distnn export --format onnx needs onnx: pip install 'distnn[onnx]'") from exc
    elem = getattr(TensorProto, ELEMENT_TYPES[model.dtype])
    nodes, initializers = [], []
    current = "input"
    if model.input_shift is not None:
        initializers += [numpy_helper.from_array(model.input_shift.copy(), "input.shift"),
                         numpy_helper.from_array(model.input_scale.copy(), "input.scale")]
        nodes += [helper.make_node("Sub", ["input", "input.shift"], ["centered"]),
                  helper.make_node("Mul", ["centered", "input.scale"], ["standardized"])]
        current = "standardized"
    for i, layer in enumerate(model.layers):
        initializers += [numpy_helper.from_array(layer.weight.copy(), f"layers.{i}.weight"),
                         numpy_helper.from_array(layer.bias.copy(), f"layers.{i}.bias")]
        nodes += [helper.make_node("MatMul", [current, f"layers.{i}.weight"], [f"matmul{i}"]),
                  helper.make_node("Add", [f"matmul{i}", f"layers.{i}.bias"], [f"dense{i}"])]
        current = f"dense{i}"
        if i < len(model.layers) - 1:
            activation_nodes, current = _activation(model.activation, current, i, elem,
                                                   initializers, model.dtype)
            nodes += activation_nodes
    nodes += [helper.make_node("Softmax", [current], ["probabilities"], axis=1),
              helper.make_node("ArgMax", [current], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "distnn_mlp",
        [helper.make_tensor_value_info("input", elem, ["n", model.n_features])],
        [helper.make_tensor_value_info("probabilities", elem, ["n", model.n_classes]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["n"])],
        initializers)
    onnx_model = helper.make_model(graph, producer_name="distnn",
                                   opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(onnx_model)
    data = onnx_model.SerializeToString()
    write_output(path, "--output", lambda stream: stream.write(data))
    return path


def _activation(name: str, x: str, layer: int, elem, initializers: list, dtype):
    """The nodes of a hidden layer's activation on tensor ``x``; returns them and the
    output's name."""
    from onnx import helper, numpy_helper

    out = f"{name}{layer}"
    if name in ("relu", "tanh"):
        return [helper.make_node(name.capitalize(), [x], [out])], out
    from distnn.nn.functional import GELU_C, GELU_K

    def constant(label: str, value: float) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype),
                                                    f"{out}.{label}"))
        return f"{out}.{label}"

    k, c, half, one = (constant("k", GELU_K), constant("c", GELU_C), constant("half", 0.5),
                       constant("one", 1.0))
    steps = [("Mul", [x, x], "square"), ("Mul", ["square", k], "k_square"),
             ("Add", ["k_square", one], "inner"), ("Mul", ["inner", x], "cubic"),
             ("Mul", ["cubic", c], "scaled"), ("Tanh", ["scaled"], "tanh"),
             ("Add", ["tanh", one], "gate"), ("Mul", [x, half], "half_x"),
             ("Mul", ["half_x", "gate"], None)]
    given = (x, k, c, half, one)
    nodes = []
    for op, inputs, result in steps:
        inputs = [tensor if tensor in given else f"{out}.{tensor}" for tensor in inputs]
        nodes.append(helper.make_node(op, inputs, [out if result is None else f"{out}.{result}"]))
    return nodes, out
