"""Does a rank that waits in a shared-memory fence take CPU time from the ranks computing?

    mpiexec -n 2 python benchmarks/idle_wait.py [--steps 200] [--work-ms 5]

Every rank but 0 computes ``--work-ms`` per step (a busy loop); rank 0 computes nothing
and waits in ``SharedBuffers.fence``, as a rank that finished its share first does. Prints
steps/s and each rank's CPU seconds per wall second: a waiting rank that sleeps costs
rank 0 close to 0%; one that spins costs as much as a computing rank, and on a machine
with other work (or more ranks than cores) that time is taken from the computing ranks.
Run it under each MPI (the MPICH and the Open MPI venv) to compare them.
"""

import argparse
import time

from mpi4py import MPI

from distnn.parallel.shared_memory import SharedBuffers


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--work-ms", type=float, default=5.0)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    shared = SharedBuffers(comm)
    shared.array((1024,), "float64")
    comm.Barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        if comm.Get_rank() != 0:
            busy(args.work_ms / 1000)
        shared.fence()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shares = comm.gather(cpu / wall)
    if comm.Get_rank() == 0:
        library = " ".join(MPI.Get_library_version().splitlines()[0].split(",")[0].split())
        print(f"{library}: {comm.Get_size()} ranks, {args.steps / wall:.0f} steps/s (ideal "
              f"{1000 / args.work_ms:.0f}); CPU per wall second, rank 0 waiting: "
              + ", ".join(f"{share:.0%}" for share in shares))
    shared.free()


if __name__ == "__main__":
    main()
