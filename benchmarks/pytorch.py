"""distnn against PyTorch on the CPU: one process, and two processes (DDP over gloo).

    pip install torch==2.13.0        # the benchmark's own need, never a distnn dependency
    python benchmarks/pytorch.py [--rounds 3] [--epochs 1]

The same 784-256-10 MLP (ReLU, softmax cross-entropy), float32, SGD with momentum 0.9,
128 samples per process per step, shuffled every epoch, on Fashion-MNIST when Debian's
dataset-fashion-mnist is installed (synthetic data of the same size otherwise). One
thread per process for both (``torch.set_num_threads(1)``; one BLAS thread for distnn),
as for every other figure in ``benchmarks/``. PyTorch runs idiomatically: an
``nn.Sequential``, ``F.cross_entropy``, ``torch.optim.SGD``, and
``DistributedDataParallel`` whose bucketed allreduce overlaps the backward pass; each
DDP rank takes its contiguous slice of every global batch, as distnn's workers do.
Variants alternate within each round; the table gives median samples/s (training only:
start-up, data loading and evaluation excluded) and ratios to distnn.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")})

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402
from speedup import fashion_mnist_or_synthetic, run  # noqa: E402

LR, MOMENTUM, BATCH = 0.05, 0.9, 128


def torch_epochs(x: np.ndarray, y: np.ndarray, epochs: int, rank: int = 0, world: int = 1) -> float:
    """Train with PyTorch (under DDP when ``world`` > 1); returns samples/s of all ranks."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if world > 1:
        import torch.distributed as dist
        model = nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    features, labels = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    global_batch = BATCH * world
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator)
        for first in range(0, features.shape[0], global_batch):
            rows = order[first:first + global_batch][rank * BATCH:(rank + 1) * BATCH]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(features[rows]), labels[rows]).backward()
            optimizer.step()
    if world > 1:
        dist.barrier()
    return epochs * features.shape[0] / (time.perf_counter() - start)


def ddp_rank(rank: int, port: int, epochs: int, out: Path) -> None:
    """One DDP process (run as ``pytorch.py --ddp-rank R``)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    _, _, x, y = fashion_mnist_or_synthetic(out.parent)
    rate = torch_epochs(x, y, epochs, rank, 2)
    if rank == 0:
        out.write_text(str(rate))
    dist.destroy_process_group()


def torch_ddp(epochs: int, out: Path) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = [subprocess.Popen([sys.executable, __file__, "--ddp-rank", str(rank), "--port",
                               str(port), "--epochs", str(epochs), "--out", str(out)])
             for rank in range(2)]
    for process in ranks:
        if process.wait(timeout=900) != 0:
            raise RuntimeError("a DDP rank failed")
    return float(out.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ddp-rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the measurements and their stamp here")
    args = parser.parse_args()
    if args.ddp_rank is not None:
        ddp_rank(args.ddp_rank, args.port, args.epochs, args.out)
        return
    try:
        import torch
    except ImportError:
        sys.exit("PyTorch is not installed: pip install torch==2.13.0 (the benchmark's own need)")
    stamp = measured.Stamp("python benchmarks/pytorch.py " + " ".join(sys.argv[1:]))
    work = measured.scratch("distnn-pytorch-")
    dataset, name, x, y = fashion_mnist_or_synthetic(work)
    common = [*dataset, "--hidden", "256", "--lr", str(LR), "--lr-decay", "0",
              "--momentum", str(MOMENTUM), "--epochs", str(args.epochs),
              "--eval-every", str(args.epochs)]
    variants = {
        "distnn serial": lambda i: run([*common, "--batch-size", str(BATCH)], 1, "1",
                                       work / f"serial-{i}")["samples_per_s"],
        f"PyTorch {torch.__version__}, 1 process": lambda i: torch_epochs(x, y, args.epochs),
        "distnn allreduce, 2 processes": lambda i: run(
            [*common, "--strategy", "allreduce", "--batch-size", str(2 * BATCH)], 2, "1",
            work / f"allreduce-{i}")["samples_per_s"],
        "PyTorch DDP (gloo), 2 processes": lambda i: torch_ddp(args.epochs, work / f"ddp-{i}.txt"),
    }
    rates = {label: [] for label in variants}
    for i in range(args.rounds):
        for label, measure in variants.items():
            rates[label].append(measure(i))
    median = {label: statistics.median(values) for label, values in rates.items()}
    print(f"\n784-256-10 on {name}, {BATCH} samples per process per step, one thread per "
          f"process (median of {args.rounds} rounds, samples/s)")
    labels = list(variants)
    for label in labels:
        print(f"  {label:36s} {median[label]:10,.0f}   (min {min(rates[label]):,.0f}, "
              f"max {max(rates[label]):,.0f})")
    print(f"  distnn / PyTorch, 1 process:   {median[labels[0]] / median[labels[1]]:.2f}x")
    print(f"  distnn / PyTorch, 2 processes: {median[labels[2]] / median[labels[3]]:.2f}x")
    measured.write(args.json, {"dataset": name, "rounds": args.rounds, "torch": torch.__version__,
                               "rates": rates, "stamp": stamp.close()})


def markdown(result: dict) -> str:
    """The README's table: the four variants, with distnn's ratio to PyTorch beside each
    PyTorch row (the distnn row above it is its counterpart)."""
    rates = {label: statistics.median(values) for label, values in result["rates"].items()}
    labels = list(rates)
    lines = [f"| variant (median of {result['rounds']} rounds) | samples/s | distnn / PyTorch |",
             "|---|---|---|"]
    for i, label in enumerate(labels):
        ratio = f"**{rates[labels[i - 1]] / rates[label]:.2f}×**" if i % 2 else ""
        lines.append(f"| {label} | {rates[label]:,.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
