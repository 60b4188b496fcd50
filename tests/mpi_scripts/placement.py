"""Print, from rank 0, one JSON line: each rank's processor name and how many ranks share
its node (the size of its ``COMM_TYPE_SHARED`` communicator)."""

import json

from mpi4py import MPI

comm = MPI.COMM_WORLD
node = comm.Split_type(MPI.COMM_TYPE_SHARED)
placed = comm.gather({"rank": comm.Get_rank(), "host": MPI.Get_processor_name(),
                      "node_size": node.Get_size()}, root=0)
node.Free()
if comm.Get_rank() == 0:
    print(json.dumps(placed), flush=True)
