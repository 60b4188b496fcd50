"""Loss and accuracy curves of a run directory, as PNG (needs the ``plot`` extra)."""

import json
from pathlib import Path

from distnn.errors import UsageError


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UsageError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {number} is not JSON ({exc.msg})") from exc
    if not records:
        raise UsageError(f"{path} holds no evaluations yet")
    return records


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` into ``run_dir``; returns their paths."""
    records = read_metrics(run_dir)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("distnn plot needs matplotlib: pip install 'distnn[plot]'") from exc
    epochs = [r["epoch"] for r in records]
    written = []
    for metric, label in (("loss", "cross-entropy loss"), ("accuracy", "accuracy")):
        figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
        for split in ("train", "test"):
            axes.plot(epochs, [r[f"{split}_{metric}"] for r in records], marker="o",
                      markersize=3, label=split)
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.set_title(f"{Path(run_dir).name}: {label}")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = Path(run_dir) / f"{metric}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
