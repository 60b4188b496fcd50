"""The floor under a doorbell's hand-off: two Python processes bound to one core pass a
4-byte ring back and forth through two pipes (``os.write``, ``poll``, ``os.read``, the
calls ``parallel/doorbell.py`` makes), so that every ring is a context switch.

    python benchmarks/pipe_handoff.py [--rings 20000]

Prints the time of one hand-off (half a round trip). What ps-sync's server and the
worker that shares its core run around their rings (``ps_sync_steps.py``'s wake-ups) is
this floor plus their Python and their caches, cold after the other's work.
"""

import argparse
import os
import select
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rings", type=int, default=20_000)
    args = parser.parse_args()
    core = min(os.sched_getaffinity(0))
    downward = os.pipe()      # (read end, write end): parent to child
    upward = os.pipe()        # child to parent
    child = os.fork()
    os.sched_setaffinity(0, {core})
    mine, theirs = (downward[0], upward[1]) if child == 0 else (upward[0], downward[1])
    poller = select.poll()
    poller.register(mine, select.POLLIN)
    start = time.perf_counter()
    for _ in range(args.rings):
        if child == 0:
            poller.poll(10_000)
            os.read(mine, 4)
            os.write(theirs, b"ring")
        else:
            os.write(theirs, b"ring")
            poller.poll(10_000)
            os.read(mine, 4)
    if child == 0:
        os._exit(0)
    elapsed = time.perf_counter() - start
    os.waitpid(child, 0)
    print(f"one hand-off between two processes on core {core}: "
          f"{elapsed / args.rings / 2 * 1e6:.1f} µs (the mean over {args.rings} round trips)")


if __name__ == "__main__":
    main()
