"""Export a trained model to ONNX (needs the ``onnx`` extra).

The graph is ``input → (MatMul, Add, Relu)* → MatMul, Add → Softmax``, with two outputs:
``probabilities`` (n, classes) and ``label`` (n,), so any ONNX runtime reproduces
``distnn predict``.
"""

from pathlib import Path

import numpy as np

from distnn.errors import UsageError
from distnn.nn import MLP

OPSET = 17


def export_onnx(model: MLP, path: Path) -> Path:
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise UsageError("distnn export --format onnx needs onnx: pip install 'distnn[onnx]'") from exc
    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    nodes, initializers = [], []
    current = "input"
    for i, layer in enumerate(model.layers):
        initializers += [numpy_helper.from_array(layer.weight.copy(), f"layers.{i}.weight"),
                         numpy_helper.from_array(layer.bias.copy(), f"layers.{i}.bias")]
        nodes += [helper.make_node("MatMul", [current, f"layers.{i}.weight"], [f"matmul{i}"]),
                  helper.make_node("Add", [f"matmul{i}", f"layers.{i}.bias"], [f"dense{i}"])]
        current = f"dense{i}"
        if i < len(model.layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
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
    path = Path(path)
    if not path.parent.is_dir():
        raise UsageError(f"--output {path}: the folder {path.parent} does not exist")
    path.write_bytes(onnx_model.SerializeToString())
    return path
