"""How long a core takes to read what another core has just written: the cost every
parallel strategy pays per step to move gradients and parameters between cores.

    mpiexec -bind-to core -n 2 python -m mpi4py benchmarks/cross_core.py [--repeats 200]

Two ranks bound to two cores share an MPI-3 window of two rows of 814 KB (784-256-10's
parameters in float32). Each step, rank 1 writes row 0 and rank 0 row 1; after a barrier
rank 0 copies row 0 (the other core's writing) and row 1 (its own) into private memory.
Prints the median time of each copy. On a virtual machine the first moves with where the
host runs the two virtual cores (periods of minutes), the second does not.
"""

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

N = 203_530      # 784-256-10's parameters


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    if comm.Get_size() != 2:
        raise SystemExit("run under mpiexec -bind-to core -n 2")
    window = MPI.Win.Allocate_shared(2 * N * 4 if rank == 0 else 0, 4, comm=comm)
    buffer, _ = window.Shared_query(0)
    rows = np.ndarray(buffer=buffer, dtype=np.float32, shape=(2, N))
    target = np.empty(N, np.float32)
    times = {"written by the other core": [], "written by this core": []}
    for _ in range(args.repeats):
        rows[1 - rank] += 1.0
        comm.Barrier()
        if rank == 0:
            for row, label in enumerate(times):
                start = time.perf_counter()
                np.copyto(target, rows[row])
                times[label].append(time.perf_counter() - start)
        comm.Barrier()
    if rank == 0:
        print(f"copying {N * 4 / 1e3:.0f} KB: " + ", ".join(
            f"{label} {statistics.median(values) * 1e6:.1f} µs" for label, values in times.items()))
    del rows
    window.Free()


if __name__ == "__main__":
    main()
