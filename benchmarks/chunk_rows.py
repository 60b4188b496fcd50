"""How many rows per forward/backward pass? Time one full-batch seed step per chunk size.

    OPENBLAS_NUM_THREADS=1 python benchmarks/chunk_rows.py

Big batches stream activations through memory many times per step; chunks that fit in
cache avoid that. The winner becomes ``distnn.nn.mlp.CHUNK_ROWS``.
"""

import time

import numpy as np

from distnn.data.spiral import spiral_data
from distnn.nn import mlp

x, y = spiral_data(10_000, 3, np.random.RandomState(0))
y = y.astype(np.intp)
for dtype in ("float64", "float32"):
    xd = x.astype(dtype)
    print(f"seed step, 30000 x 2-64-3, {dtype}")
    for rows in (256, 512, 1024, 2048, 4096, 8192, 30_000):
        mlp.CHUNK_ROWS = rows
        model = mlp.MLP([2, 64, 3], dtype=dtype, init="nnfs")
        model.loss_and_gradient_sum(xd, y)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                model.loss_and_gradient_sum(xd, y)
            times.append((time.perf_counter() - start) / 10)
        print(f"  {rows:6d} rows/chunk: {1e3 * min(times):6.2f} ms/step")
