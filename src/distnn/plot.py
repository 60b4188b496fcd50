"""Loss and accuracy curves of a run directory, as PNG (needs the ``plot`` extra)."""

import io
from pathlib import Path

from distnn.errors import UsageError
from distnn.guards import output_file, write_output
from distnn.metrics_log import METRICS_NAME, read_metrics


def run_metrics(run_dir: Path) -> list[dict]:
    """The checked records of ``run_dir``'s metrics log (a torn last line is skipped)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a run directory (not a directory); give the "
                         "folder distnn train wrote")
    path = run_dir / METRICS_NAME
    if not path.exists():
        raise UsageError(f"{run_dir} is not a run directory (no {METRICS_NAME})")
    records = read_metrics(path)
    if not records:
        raise UsageError(f"{path} holds no evaluations yet")
    return records


def plot_run(run_dir: Path) -> list[Path]:
    """Write ``loss.png`` and ``accuracy.png`` into ``run_dir``; returns their paths. Both
    paths are checked before either is drawn, so a refusal leaves nothing half-done."""
    records = run_metrics(run_dir)
    for metric in ("loss", "accuracy"):
        output_file(Path(run_dir) / f"{metric}.png", "plot")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
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
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"{Path(run_dir).name}: {label} per epoch")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        written.append(_save_png(figure, Path(run_dir) / f"{metric}.png"))
        plt.close(figure)
    return written


def _save_png(figure, path: Path) -> Path:
    """Render first, then write atomically: no half-written PNG is ever left behind."""
    image = io.BytesIO()
    figure.savefig(image, format="png")
    write_output(path, "plot", lambda stream: stream.write(image.getvalue()))
    return path
