"""Using a trained model: scores with a confusion matrix, and predictions to CSV."""

from pathlib import Path

import numpy as np

from distnn.data.files import read_array
from distnn.errors import UsageError
from distnn.guards import check_memory, output_file, regular_file, write_output
from distnn.nn import MLP


def check_features(model: MLP, x: np.ndarray, source: str) -> None:
    """``x`` must be a 2-D numeric array with the model's number of features per row."""
    if x.ndim != 2 or x.shape[1] != model.n_features:
        got = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
        raise UsageError(f"{source} has {got} features per row; the model expects "
                         f"{model.n_features}")
    if x.dtype.kind not in "iuf":
        raise UsageError(f"{source} holds {x.dtype} values; features must be numbers")


def check_labels(model: MLP, y: np.ndarray, source: str) -> None:
    """Integer class indices in [0, n_classes): a label the model cannot predict would
    make the confusion matrix and the accuracy silently wrong."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UsageError(f"{source} labels must be a 1-D integer array, got {y.ndim}-D {y.dtype}")
    if y.size == 0:
        raise UsageError(f"{source} holds no samples to score")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= model.n_classes:
        raise UsageError(f"{source} labels go from {low} to {high}; the model has "
                         f"{model.n_classes} classes (0 to {model.n_classes - 1}): is it the "
                         "model for this data set?")


def score(model: MLP, x: np.ndarray, y: np.ndarray, source: str = "the data") -> dict:
    """Mean loss, accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    check_labels(model, y, source)
    loss_sum, correct = model.evaluate_sum(x, y)
    predicted = np.argmax(model.logits(x), axis=1)
    confusion = np.zeros((model.n_classes, model.n_classes), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    return {"samples": int(y.size), "loss": loss_sum / y.size, "accuracy": correct / y.size,
            "confusion": confusion.tolist()}


def format_score(result: dict) -> str:
    """The scores and the confusion matrix as text; classes are numbered in the matrix and,
    where the data set names them (``class_names``), listed with their names below it."""
    confusion = np.asarray(result["confusion"])
    width = max(5, len(str(confusion.max())) + 1)
    where = f"{result['dataset']} ({result['split']} split): " if "dataset" in result else ""
    lines = [f"{where}samples {result['samples']}  loss {result['loss']:.4f}  "
             f"accuracy {result['accuracy']:.4f}",
             "confusion matrix (rows: true class, columns: predicted)",
             "      " + "".join(f"{c:>{width}}" for c in range(confusion.shape[1]))]
    for true_class, row in enumerate(confusion):
        lines.append(f"{true_class:>5} " + "".join(f"{v:>{width}}" for v in row))
    names = result.get("class_names")
    if names:
        lines.append("classes: " + ", ".join(f"{k} {name}" for k, name in enumerate(names)))
    return "\n".join(lines)


def predict_file(model: MLP, input_path: Path, output_path: Path, sources=()) -> int:
    """Write ``class,p_0,...,p_{K-1}`` per input row to ``output_path``; returns the row count.

    Both paths are checked before the work: ``--input`` a regular file, ``--output`` a
    writable file that is neither the input nor one of ``sources`` (the model file). The
    CSV appears whole or not at all.
    """
    input_path = regular_file(input_path, "--input")
    output_path = output_file(output_path, "--output", inputs=(input_path, *sources))
    raw = read_array(input_path, "--input")
    check_features(model, raw, f"--input {input_path}")
    check_memory(raw.size * (8 + model.dtype.itemsize) + raw.shape[0] * model.n_classes * 40,
                 f"predicting {raw.shape[0]:,} rows of {input_path}", "split the input file")
    x = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise UsageError(f"{input_path} holds NaN or infinite values")
    probabilities = model.predict_proba(x.astype(model.dtype))
    classes = np.argmax(probabilities, axis=1)
    header = "class," + ",".join(f"p_{k}" for k in range(model.n_classes))
    rows = [f"{c}," + ",".join(f"{p:.6g}" for p in row) for c, row in zip(classes, probabilities)]
    text = header + "\n" + "\n".join(rows) + "\n"
    write_output(output_path, "--output", lambda stream: stream.write(text.encode()))
    return len(rows)
