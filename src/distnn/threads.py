"""BLAS threads: one per process unless the user says otherwise, in every mode.

Ranks fill the cores, so more than one BLAS thread per rank only contends; and a serial
run that used every core beside ``--procs`` ranks pinned to one thread each would make
hand-measured speedups compare unlike with unlike. So every ``distnn train`` uses
``--threads`` BLAS threads per process, else the count the environment sets
(``OMP_NUM_THREADS`` and friends), else 1, and records it in ``result.json``.
"""

import os

from distnn.errors import UsageError

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MAX_THREADS = 1024


def wanted(requested: int | None) -> int:
    """``--threads`` if given, else the environment's count, else 1."""
    if requested is not None:
        if not 1 <= requested <= MAX_THREADS:
            raise UsageError(f"--threads must be in [1, {MAX_THREADS}], got {requested}")
        return requested
    for name in THREAD_VARS:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return 1


def limit(threads: int) -> int:
    """Limit this process's BLAS (already loaded with NumPy) to ``threads``; returns the
    count in force (threadpoolctl), or ``threads`` if it cannot be read."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else threads
