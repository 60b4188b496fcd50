"""``--timeline FILE.json``: every rank's phases over a window of steps, as a Chrome trace.

Each rank keeps the laps of its ``RecordingTimer`` (``parallel/timing.py``) for the steps
of the window, in a buffer allocated once; at the end rank 0 gathers them (one
``Gatherv``), puts every rank's times on its own clock (``parallel/clocks.py``) and
writes the Chrome trace-event JSON that Perfetto and ``chrome://tracing`` open (the
Horovod timeline is the model): one "X" (complete) event per phase, ``ts`` and ``dur``
in microseconds, a process per host (``pid``, from 1: Perfetto reserves 0) and a thread
per rank (``tid`` = rank), named by ``process_name``/``thread_name`` metadata events.

A bare file name (``--timeline timeline.json``) is written inside the run directory; a
path with a folder is written there. Either is checked before any work, and written
atomically, by rank 0 alone.
"""

import json
from pathlib import Path

import numpy as np

from distnn import __version__
from distnn.config import timeline_steps
from distnn.data.sampler import BatchSampler
from distnn.errors import UsageError
from distnn.guards import output_file, write_output
from distnn.parallel import clocks
from distnn.parallel.timing import CATEGORY, END, FINE_PHASES, PHASE, START, STEP
from distnn.rundir import RUN_FILES

NAME = "timeline.json"    # the name for a trace inside the run directory (--overwrite replaces it)
DEFAULT_SKIP = 10         # the default window starts past the first steps' one-time costs
DEFAULT_STEPS = 100
MAX_EVENTS = 1 << 20      # laps one rank keeps (32 MiB); past it they are counted, not kept
# chrome://tracing's reserved colour names (Perfetto colours each name its own way).
COLOURS = {"compute": "thread_state_running", "update": "rail_response",
           "comm": "thread_state_iowait", "wait": "generic_work",
           "evaluation": "thread_state_uninterruptible", "checkpoint": "startup"}


def steps_per_epoch(config, n_train: int) -> int:
    return BatchSampler(n_train, config.batch_size, config.seed).steps_per_epoch


def window(steps: str | None, first_step: int, total_steps: int) -> tuple[int, int]:
    """``[first, stop)``: the global steps to record of a run that takes steps
    ``first_step .. total_steps - 1``. ``steps`` is ``--timeline-steps`` (``START:COUNT``);
    by default ``DEFAULT_STEPS`` steps after the run's first ``DEFAULT_SKIP``, earlier when
    the run is shorter. A window outside the run is refused."""
    if steps is None:
        count = min(DEFAULT_STEPS, total_steps - first_step)
        first = min(first_step + DEFAULT_SKIP, total_steps - count)
        return first, first + count
    start, count = timeline_steps(steps)
    if start + count <= first_step or start >= total_steps:
        taken = (f"steps {first_step} to {total_steps - 1}" if total_steps > first_step
                 else "no step")
        raise UsageError(f"--timeline-steps {steps} records no step of this run, which takes "
                         f"{taken} (steps count from 0 at the start of training)")
    return max(start, first_step), min(start + count, total_steps)


def capacity(steps: int, server: bool, workers: int) -> int:
    """Laps one rank may record in ``steps`` steps: a parameter server laps a few times per
    worker and step (ps-async: per gradient), a worker a few times per step; two more for
    an evaluation and a checkpoint."""
    per_step = 3 * workers + 4 if server else 8
    return min(MAX_EVENTS, steps * (per_step + 2) + 64)


def is_bare(timeline: str) -> bool:
    return Path(timeline).name == timeline and timeline not in ("", ".", "..")


def output_path(timeline: str, run_dir: Path | None) -> Path:
    """Where ``--timeline`` writes: inside ``run_dir`` for a bare name, else as given."""
    return Path(run_dir) / timeline if run_dir is not None and is_bare(timeline) else Path(timeline)


def check_output(timeline: str, run_dir: Path | None, inputs=()) -> Path | None:
    """Refuse a ``--timeline`` that cannot be written, or would replace a file of the run
    or one of its ``inputs``, before any work; creates nothing. ``run_dir`` is the
    ``--out`` given (None: a new default one)."""
    if is_bare(timeline):
        name_check(timeline)
        if run_dir is None or not Path(run_dir).is_dir():
            return None      # a new run directory, empty but for the run's own files
    path = output_file(output_path(timeline, run_dir), "--timeline", inputs)
    if run_dir is not None and path.resolve().parent == Path(run_dir).resolve():
        name_check(path.name)
    return path


def name_check(name: str) -> None:
    if name in RUN_FILES - {NAME}:
        raise UsageError(f"--timeline {name} would replace the run's own {name}; give another "
                         f"name, such as {NAME}")


def dataset_files(dataset: str) -> list[Path]:
    """The files a ``--dataset`` names (a file, or a directory's files), which an output
    must not replace."""
    path = Path(dataset)
    if path.is_file():
        return [path]
    if path.is_dir():
        return [entry for entry in path.iterdir() if entry.is_file()]
    return []


def write(path: Path, gathered, before: clocks.ClockOffsets, after: clocks.ClockOffsets,
          roles, steps_per_epoch: int, steps: tuple[int, int], strategy: str) -> dict:
    """Write the trace of ``gathered`` (``RecordingTimer.gather``'s) to ``path``; returns
    what ``result.json`` records of it."""
    events, counts, dropped = gathered
    size = len(counts)
    ranks = np.repeat(np.arange(size), counts)
    start = clocks.on_reference_clock(events[:, START], ranks, before, after)
    end = clocks.on_reference_clock(events[:, END], ranks, before, after)
    origin = start.min() if start.size else 0.0
    # Whole nanoseconds, so that one phase ends exactly where the next begins.
    start_ns = np.rint((start - origin) * 1e9).astype(np.int64)
    end_ns = np.maximum(np.rint((end - origin) * 1e9).astype(np.int64), start_ns)
    order = np.argsort(start_ns, kind="stable")
    hosts = {}
    for host in before.hosts:
        hosts.setdefault(host, len(hosts) + 1)
    pids = [hosts[host] for host in before.hosts]
    uncertainty_us = clocks.uncertainty(before, after) * 1e6

    lines = []
    for host, pid in hosts.items():
        lines.append(_metadata("process_name", pid, None, name=f"host {host}"))
        lines.append(_metadata("process_sort_index", pid, None, sort_index=pid))
    for rank in range(size):
        role = "server" if roles.is_server(rank) else "worker"
        lines.append(_metadata("thread_name", pids[rank], rank, name=f"rank {rank} ({role})"))
        lines.append(_metadata("thread_sort_index", pids[rank], rank, sort_index=rank))
    for index in order:
        phase = FINE_PHASES[int(events[index, PHASE])]
        rank, step = int(ranks[index]), int(events[index, STEP])
        lines.append(
            f'{{"name": "{phase}", "cat": "{CATEGORY[phase] or "outside training"}", '
            f'"ph": "X", "ts": {_micro(start_ns[index])}, '
            f'"dur": {_micro(end_ns[index] - start_ns[index])}, "pid": {pids[rank]}, '
            f'"tid": {rank}, "cname": "{COLOURS[phase]}", '
            f'"args": {{"step": {step}, "epoch": {step // steps_per_epoch + 1}}}}}')
    about = {"distnn": __version__, "strategy": strategy, "processes": size,
             "first_step": steps[0], "steps": steps[1] - steps[0],
             "clock_offset_us": {"before": _micros(before.offset), "after": _micros(after.offset)},
             "clock_uncertainty_us": _micros(uncertainty_us / 1e6),
             "dropped_laps": [int(value) for value in dropped]}
    text = ('{"traceEvents": [\n' + ",\n".join(lines) + '\n],\n"displayTimeUnit": "ms",\n'
            f'"otherData": {_json(about)}}}\n')
    write_output(path, "--timeline", lambda stream: stream.write(text.encode()))
    return {"path": str(path), "first_step": steps[0], "steps": steps[1] - steps[0],
            "events": int(counts.sum()), "dropped": int(dropped.sum()),
            "clock_uncertainty_us": float(uncertainty_us.max()) if size else 0.0}


def _micro(nanoseconds: int) -> str:
    """Microseconds, exactly, from whole nanoseconds (no float rounding in the file)."""
    return f"{nanoseconds // 1000}.{nanoseconds % 1000:03d}"


def _micros(seconds: np.ndarray) -> list[float]:
    return [round(float(value) * 1e6, 3) for value in seconds]


def _metadata(kind: str, pid: int, tid: int | None, **args) -> str:
    event = {"name": kind, "ph": "M", "pid": pid, **({} if tid is None else {"tid": tid}),
             "args": args}
    return _json(event)


def _json(value) -> str:
    return json.dumps(value)
