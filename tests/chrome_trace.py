"""Reading and checking a ``--timeline`` file: what every test of a trace asserts."""

import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

PHASES = {"compute": "compute", "update": "compute", "comm": "comm", "wait": "wait",
          "evaluation": "outside training", "checkpoint": "outside training"}
TRAINING = ("compute", "update", "comm", "wait")
FIELDS = ("name", "cat", "ph", "ts", "dur", "pid", "tid", "args")


def read_trace(path: Path) -> dict:
    """The trace, its times as exact decimals (the file writes whole nanoseconds)."""
    return json.loads(Path(path).read_text(), parse_float=Decimal)


def check_trace(trace: dict, roles: list[str], steps: range, steps_per_epoch: int) -> dict:
    """Assert that ``trace`` is a valid Chrome trace of ranks with ``roles`` over ``steps``;
    returns each rank's phases, in order: ``{rank: [event, ...]}``.

    Valid: every complete event has the fields and a known phase; every rank has a row
    (a thread of its host's process) named with its role; a rank's phases are in time
    order and never overlap; each rank's training phases cover exactly the window's steps.
    """
    events = trace["traceEvents"]
    assert isinstance(events, list)
    processes = {event["pid"]: event["args"]["name"] for event in events
                 if event["ph"] == "M" and event["name"] == "process_name"}
    threads = {(event["pid"], event["tid"]): event["args"]["name"] for event in events
               if event["ph"] == "M" and event["name"] == "thread_name"}
    by_rank = defaultdict(list)
    for event in events:
        assert event["ph"] in ("X", "M"), event
        if event["ph"] == "M":
            continue
        assert all(field in event for field in FIELDS), event
        assert PHASES[event["name"]] == event["cat"], event
        assert event["ts"] >= 0 and event["dur"] >= 0, event
        assert event["args"]["epoch"] == event["args"]["step"] // steps_per_epoch + 1, event
        assert (event["pid"], event["tid"]) in threads, event
        by_rank[event["tid"]].append(event)
    assert sorted(by_rank) == list(range(len(roles)))
    assert all(pid >= 1 and name.startswith("host ") for pid, name in processes.items())
    for rank, role in enumerate(roles):
        (pid,) = {event["pid"] for event in by_rank[rank]}
        assert pid in processes
        assert threads[(pid, rank)] == f"rank {rank} ({role})"
        phases = by_rank[rank]
        for before, after in zip(phases, phases[1:]):
            assert before["ts"] + before["dur"] <= after["ts"], (before, after)
        taken = {event["args"]["step"] for event in phases if event["name"] in TRAINING}
        assert taken == set(steps), (rank, sorted(taken))
    return dict(by_rank)


def phase_seconds(phases: list[dict]) -> dict:
    """Seconds per result.json category in a rank's recorded phases."""
    seconds = defaultdict(float)
    for event in phases:
        if event["name"] in TRAINING:
            seconds[PHASES[event["name"]]] += float(event["dur"]) / 1e6
    return seconds


def named(phases: list[dict], name: str) -> dict:
    """``{step: [event, ...]}`` of the phases called ``name``."""
    found = defaultdict(list)
    for event in phases:
        if event["name"] == name:
            found[event["args"]["step"]].append(event)
    return found


def end(event: dict) -> Decimal:
    return event["ts"] + event["dur"]
