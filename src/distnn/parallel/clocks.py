"""Every rank's clock against rank 0's, so that a timeline puts all ranks on one time axis.

Ranks on one host read one clock (``time.perf_counter`` is the system's monotonic clock):
they need no correction. For every other host, rank 0 exchanges ``PINGS`` messages with
that host's lowest rank, as NTP does: rank 0 reads its clock (t0) and sends, the other
rank reads its own clock (t) and replies, rank 0 reads its clock again (t1). The other
rank read t somewhere between t0 and t1, so its offset (its clock minus rank 0's) lies
in ``[t - t1, t - t0]``: the estimate ``t - (t0 + t1) / 2`` is off by at most half the
round trip, and the exchange with the shortest round trip is kept. The other ranks of
that host take the same offset.

Measured before training and after it, and interpolated linearly in between: that
follows two clocks that drift apart at a steady rate (an NTP-disciplined clock drifts by
some parts per million, tens of microseconds per minute).
"""

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

PINGS = 16      # exchanges per host; the shortest round trip gives the estimate
PING_TAG = 0    # on a private duplicate of the communicator


@dataclass
class ClockOffsets:
    """One measurement, per rank: ``offset`` (seconds; the rank's clock minus rank 0's),
    ``uncertainty`` (the most ``offset`` can be off by), ``at`` (rank 0's clock then),
    and the rank's ``hosts`` name."""

    hosts: list[str]
    offset: np.ndarray
    uncertainty: np.ndarray
    at: np.ndarray


def estimate(exchanges: np.ndarray) -> tuple[float, float, float]:
    """``(offset, uncertainty, at)`` from ``exchanges``, rows of ``(t0, t, t1)``: the other
    clock's reading ``t`` between rank 0's ``t0`` and ``t1``. The row with the shortest
    round trip bounds the offset tightest."""
    t0, t, t1 = exchanges[np.argmin(exchanges[:, 2] - exchanges[:, 0])]
    middle = (t0 + t1) / 2
    return float(t - middle), float((t1 - t0) / 2), float(middle)


def measure(comm: MPI.Comm) -> ClockOffsets | None:
    """Every rank's clock offset, on rank 0 (collective; None elsewhere)."""
    rank = comm.Get_rank()
    hosts = comm.allgather(MPI.Get_processor_name())
    leaders = {}
    for other, host in enumerate(hosts):
        leaders.setdefault(host, other)
    remote = [leader for host, leader in leaders.items() if host != hosts[0]]
    link = comm.Dup()
    try:
        if rank == 0:
            return _ping(link, hosts, remote)
        if rank in remote:
            _answer(link)
        return None
    finally:
        link.Free()


def _ping(link: MPI.Comm, hosts: list[str], remote: list[int]) -> ClockOffsets:
    size = len(hosts)
    offsets = ClockOffsets(hosts, np.zeros(size), np.zeros(size),
                           np.full(size, time.perf_counter()))
    exchanges, reply = np.empty((PINGS, 3)), np.zeros(1)
    for leader in remote:
        for row in exchanges:
            row[0] = time.perf_counter()
            link.Send(reply, dest=leader, tag=PING_TAG)
            link.Recv(reply, source=leader, tag=PING_TAG)
            row[2] = time.perf_counter()
            row[1] = reply[0]
        same_host = [other for other in range(size) if hosts[other] == hosts[leader]]
        (offsets.offset[same_host], offsets.uncertainty[same_host],
         offsets.at[same_host]) = estimate(exchanges)
    return offsets


def _answer(link: MPI.Comm) -> None:
    reading = np.zeros(1)
    for _ in range(PINGS):
        link.Recv(reading, source=0, tag=PING_TAG)
        reading[0] = time.perf_counter()
        link.Send(reading, dest=0, tag=PING_TAG)


def on_reference_clock(times: np.ndarray, ranks: np.ndarray, before: ClockOffsets,
                       after: ClockOffsets) -> np.ndarray:
    """``times`` read on the clocks of ``ranks`` (same shapes), on rank 0's clock: less
    each rank's offset, interpolated between the measurements ``before`` and ``after``."""
    approximate = times - before.offset[ranks]     # near enough to place it between the two
    span = after.at[ranks] - before.at[ranks]
    share = np.divide(approximate - before.at[ranks], span, out=np.zeros_like(times),
                      where=span > 0)
    offset = before.offset[ranks] + share * (after.offset[ranks] - before.offset[ranks])
    return times - offset


def uncertainty(before: ClockOffsets, after: ClockOffsets) -> np.ndarray:
    """Per rank, the most its corrected times can be off from rank 0's clock (seconds)."""
    return np.maximum(before.uncertainty, after.uncertainty)
