"""Using a trained model: scores with a confusion matrix, and predictions to CSV."""

from pathlib import Path

import numpy as np

from distnn.atomic import atomic_write
from distnn.data.files import read_array
from distnn.errors import UsageError
from distnn.nn import MLP


def check_features(model: MLP, x: np.ndarray, source: str) -> None:
    if x.ndim != 2 or x.shape[1] != model.n_features:
        got = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
        raise UsageError(f"{source} has {got} features per row; the model expects "
                         f"{model.n_features}")


def score(model: MLP, x: np.ndarray, y: np.ndarray) -> dict:
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    if y.size and int(y.max()) >= model.n_classes:
        raise UsageError(f"labels go up to {int(y.max())}, the model has {model.n_classes} classes")
    loss_sum, correct = model.evaluate_sum(x, y)
    predicted = np.argmax(model.logits(x), axis=1)
    confusion = np.zeros((model.n_classes, model.n_classes), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    return {"samples": int(y.size), "loss": loss_sum / y.size, "accuracy": correct / y.size,
            "confusion": confusion.tolist()}


def format_score(result: dict) -> str:
    confusion = np.asarray(result["confusion"])
    width = max(5, len(str(confusion.max())) + 1)
    lines = [f"samples {result['samples']}  loss {result['loss']:.4f}  "
             f"accuracy {result['accuracy']:.4f}",
             "confusion matrix (rows: true class, columns: predicted)",
             "      " + "".join(f"{c:>{width}}" for c in range(confusion.shape[1]))]
    for true_class, row in enumerate(confusion):
        lines.append(f"{true_class:>5} " + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def predict_file(model: MLP, input_path: Path, output_path: Path) -> int:
    """Write ``class,p_0,...,p_{K-1}`` per input row to ``output_path``; returns the row count."""
    x = np.asarray(read_array(Path(input_path)), dtype=np.float64)
    check_features(model, x, str(input_path))
    if not np.all(np.isfinite(x)):
        raise UsageError(f"{input_path} holds NaN or infinite values")
    probabilities = model.predict_proba(x.astype(model.dtype))
    classes = np.argmax(probabilities, axis=1)
    header = "class," + ",".join(f"p_{k}" for k in range(model.n_classes))
    rows = [f"{c}," + ",".join(f"{p:.6g}" for p in row) for c, row in zip(classes, probabilities)]
    text = header + "\n" + "\n".join(rows) + "\n"
    output_path = Path(output_path)
    if not output_path.parent.is_dir():
        raise UsageError(f"--output {output_path}: the folder {output_path.parent} does not exist")
    atomic_write(output_path, lambda stream: stream.write(text.encode()))
    return len(rows)
