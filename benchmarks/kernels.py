"""Which compute path for which model shape: NumPy, fused-rows and fused-blas side by side.

    python benchmarks/kernels.py [--rounds 15]

One training step's gradient (``model.gradient_sum``) per path, in one process, one BLAS
thread, the paths alternating within every round; the table gives the minimum over rounds
(the least disturbed by other load) in ms and the ratio to NumPy. It is the measurement
behind ``distnn.nn.kernels``' rule (``fused_path``): the rows kernel for one hidden layer
with at most ``ROWS_MAX_INPUTS`` inputs and ``ROWS_MAX_CLASSES`` classes, BLAS otherwise.
Also: the first call's cost, cold (an empty numba cache: compiling) and warm (loading the
cache), each in a fresh process.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")})

import numpy as np  # noqa: E402

from distnn.nn import MLP  # noqa: E402
from distnn.nn.rows import MAX_UNROLLED  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import measured  # noqa: E402

# (sizes, rows per step, dtype)
SHAPES = [
    ((2, 64, 3), 30_000, "float64"),      # the seed preset
    ((2, 64, 4), 30_000, "float64"),      # seed-final
    ((2, 64, 6), 30_000, "float64"),      # ROWS_MAX_CLASSES
    ((2, 64, 8), 30_000, "float64"),      # past it
    ((2, 64, 10), 30_000, "float64"),     # seed-10
    ((2, 64, 16), 30_000, "float64"),
    ((8, 64, 3), 30_000, "float64"),      # ROWS_MAX_INPUTS
    ((16, 64, 3), 30_000, "float64"),     # past it
    ((2, 256, 3), 30_000, "float64"),
    ((2, 1024, 3), 4_096, "float64"),
    ((2, 64, 3), 128, "float32"),
    ((2, 64, 64, 3), 30_000, "float64"),  # two hidden layers: BLAS path only
    ((54, 128, 7), 128, "float32"),       # covertype-like tabular data
    ((784, 256, 10), 128, "float32"),     # Fashion-MNIST
]

FIRST_CALL = """
import os, time
os.environ["NUMBA_CACHE_DIR"] = {cache!r}
started = time.perf_counter()
import numpy as np
from distnn.nn import MLP
model = MLP([2, 64, 3], dtype="float64", kernels="fused")
x, y = np.zeros((30000, 2)), np.zeros(30000, dtype=np.intp)
model.warm_up(x, y)
setup = time.perf_counter() - started
started = time.perf_counter()
model.gradient_sum(x, y)
print(f"{{setup:.3f}} {{time.perf_counter() - started:.4f}}")
"""


def step_times(sizes, rows, dtype, paths, rounds) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=rows)
    models = {path: MLP(sizes, dtype=dtype, kernels=path) for path in paths}
    for model in models.values():
        model.warm_up(x, y)
        model.gradient_sum(x, y)
    times = {path: [] for path in paths}
    for _ in range(rounds):
        for path, model in models.items():
            started = time.perf_counter()
            model.gradient_sum(x, y)
            times[path].append(time.perf_counter() - started)
    return {path: min(values) for path, values in times.items()}


def first_call(cache: str) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", FIRST_CALL.format(cache=cache)],
                          capture_output=True, text=True, check=True)
    setup, step = done.stdout.split()
    return float(setup), float(step)


def markdown(result: dict) -> str:
    """The README's table of paths per shape, and the first-call sentence."""
    lines = ["| model | rows per step | dtype | numpy | fused-rows | fused-blas | auto |",
             "|---|---|---|---|---|---|---|"]
    for row in result["shapes"]:
        best, numpy_s = row["seconds"], row["seconds"]["numpy"]
        fastest = min(best, key=best.get)
        cells = []
        for path in ("fused-rows", "fused-blas"):
            if path not in best:
                cells.append("")
                continue
            bold = "**" if path == fastest else ""
            cells.append(f"{1e3 * best[path]:.3f} ms ({bold}{numpy_s / best[path]:.2f}×{bold})")
        lines.append(f"| {row['model']} | {row['rows']:,} | {row['dtype']} | {1e3 * numpy_s:.3f} ms "
                     f"| {cells[0]} | {cells[1]} | {row['auto']} |")
    cold, warm = result["first_call"]["cold"], result["first_call"]["warm"]
    lines += ["", "First use of the 2-64-3 float64 rows kernel in a fresh process (numba's "
              f"import, the kernels, the warm-up): {cold[0]:.2f} s with an empty cache "
              f"(compiling), {warm[0]:.2f} s with the cache; then the first full-batch step "
              f"takes {1e3 * warm[1]:.1f} ms."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="write the measurements and their stamp here")
    args = parser.parse_args()
    stamp = measured.Stamp("python benchmarks/kernels.py " + " ".join(sys.argv[1:]))
    print(f"gradient of one step, ms (minimum of {args.rounds} rounds; ratio to numpy)")
    print(f"  {'model':14s} {'rows':>6s} {'dtype':7s} {'numpy':>8s} {'fused-rows':>17s} "
          f"{'fused-blas':>17s}  auto")
    shapes = []
    for sizes, rows, dtype in SHAPES:
        rows_fits = len(sizes) == 3 and max(sizes[0], sizes[-1]) <= MAX_UNROLLED
        paths = ["numpy", "fused-blas"] + (["fused-rows"] if rows_fits else [])
        best = step_times(list(sizes), rows, dtype, paths, args.rounds)
        cells = []
        for path in ("fused-rows", "fused-blas"):
            cells.append(f"{1e3 * best[path]:8.3f} ({best['numpy'] / best[path]:5.2f}x)"
                         if path in best else f"{'-':>17s}")
        auto = MLP(list(sizes), dtype=dtype, kernels="auto").kernels
        model = "-".join(map(str, sizes))
        shapes.append({"model": model, "rows": rows, "dtype": dtype, "seconds": best, "auto": auto})
        print(f"  {model:14s} {rows:6d} {dtype:7s} "
              f"{1e3 * best['numpy']:8.3f} {cells[0]} {cells[1]}  {auto}", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        cold = first_call(cache)
        warm = first_call(cache)
    print("\nfirst use of the 2-64-3 float64 rows kernel in a fresh process "
          "(numba import, kernels compiled or loaded, warm-up), then its first full-batch step:")
    print(f"  cold cache: {cold[0]:.2f} s, first step {1e3 * cold[1]:.1f} ms")
    print(f"  warm cache: {warm[0]:.2f} s, first step {1e3 * warm[1]:.1f} ms")
    measured.write(args.json, {"rounds": args.rounds, "shapes": shapes,
                               "first_call": {"cold": cold, "warm": warm},
                               "stamp": stamp.close()})


if __name__ == "__main__":
    main()
