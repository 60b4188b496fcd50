"""``--timeline``: a valid Chrome trace of every rank over the window's steps, for every
strategy; ranks on another clock put on rank 0's; bad paths and windows refused before
any work; and without the flag, nothing recorded."""

from types import SimpleNamespace

import numpy as np
import pytest

from chrome_trace import check_trace, end, named, phase_seconds, read_trace
from distnn.errors import UsageError
from distnn.parallel import clocks
from distnn.parallel.timing import PHASE, STEP, PhaseTimer, RecordingTimer
from distnn.timeline import window
from helpers import distnn, mpi_script, read_result

# 300 rows in batches of 30: 10 steps per epoch, 40 in all; evaluations (and checkpoints)
# after steps 19 and 39.
PER_EPOCH = 10
RUN = ["--samples-per-class", "100", "--batch-size", "30", "--epochs", "4", "--eval-every", "2",
       "--quiet"]
WINDOW = ["--timeline-steps", "5:20"]
STEPS = range(5, 25)
ROLES = {"serial": ["worker"], "ps-sync": ["server", "worker", "worker"],
         "ps-async": ["server", "worker", "worker"], "allreduce": ["worker"] * 3}


def traced(tmp_path, strategy: str, procs: int, args=(), timeline: str = "timeline.json"):
    """Train with ``--timeline``; returns the trace, result.json and the run directory."""
    out = tmp_path / "run"
    done = distnn(["train", "--out", str(out), "--strategy", strategy, "--timeline", timeline,
                   *RUN, *args], procs=procs)
    assert done.returncode == 0, done.stderr
    return read_trace(out / "timeline.json"), read_result(out), out


def check_against_result(ranks: dict, result: dict, steps: range) -> None:
    """The window's phases are part of the time result.json splits, rank by rank."""
    for record in result["ranks"]:
        recorded = phase_seconds(ranks[record["rank"]])
        for category in ("compute", "comm", "wait"):
            assert recorded[category] <= record[f"{category}_s"] + 1e-6, (record, recorded)
    written = result["timeline"]
    assert (written["first_step"], written["steps"], written["dropped"]) == (
        steps.start, len(steps), 0)
    assert written["events"] == sum(map(len, ranks.values()))


def test_a_ps_sync_trace_on_3_processes(tmp_path):
    trace, result, out = traced(tmp_path, "ps-sync", 3, WINDOW)
    ranks = check_trace(trace, ROLES["ps-sync"], STEPS, PER_EPOCH)
    server, updates = ranks[0], named(ranks[0], "update")
    # The server waits for the gradients, and for the helping workers' pieces if any.
    waits = 1 + bool(result["update_helpers"])
    for step in STEPS:
        assert [len(named(server, name)[step]) for name in ("update", "wait")] == [1, waits]
        for worker in (1, 2):
            (compute,) = named(ranks[worker], "compute")[step]
            # The server updates once every worker's gradient is in; a worker's next
            # gradient starts from the updated parameters.
            assert updates[step][0]["ts"] >= end(compute)
            if step > STEPS.start:
                assert compute["ts"] >= end(updates[step - 1][0])
    for phases in ranks.values():    # the evaluation and checkpoint after epoch 2
        assert [(e["name"], e["args"]["step"]) for e in phases if e["cat"] == "outside training"] \
            == [("evaluation", 19), ("checkpoint", 19)]
    check_against_result(ranks, result, STEPS)
    assert result["timeline"]["path"] == str(out / "timeline.json")


@pytest.mark.parametrize("strategy", ["allreduce", "ps-async"])
def test_allreduce_and_ps_async_traces_on_3_processes(tmp_path, strategy):
    trace, result, _ = traced(tmp_path, strategy, 3, WINDOW)
    ranks = check_trace(trace, ROLES[strategy], STEPS, PER_EPOCH)
    workers = [1, 2] if strategy == "ps-async" else [0, 1, 2]
    appliers = [0] if strategy == "ps-async" else workers
    for step in STEPS:
        computed = sorted(end(named(ranks[w], "compute")[step][0]) for w in workers)
        assert all(len(named(ranks[w], "compute")[step]) == 1 for w in workers)
        for rank in appliers:
            applied = sorted(event["ts"] for event in named(ranks[rank], "update")[step])
            if strategy == "ps-async":
                # One update per worker's gradient of the step, each after its gradient.
                assert len(applied) == len(workers)
                assert all(start >= done for start, done in zip(applied, computed))
            else:
                # Every rank applies its shard once every rank's gradient is in.
                assert len(applied) == 1 and applied[0] >= computed[-1]
    check_against_result(ranks, result, STEPS)


def test_a_serial_trace_takes_the_default_window(tmp_path):
    """150 steps: the default window is the 100 after the first 10."""
    trace, result, _ = traced(tmp_path, "serial", 1, ["--epochs", "15"])
    ranks = check_trace(trace, ROLES["serial"], range(10, 110), PER_EPOCH)
    assert {event["name"] for event in ranks[0]} == {"compute", "evaluation", "checkpoint"}
    check_against_result(ranks, result, range(10, 110))


def test_a_rank_on_another_hosts_clock_is_put_on_rank_0s(tmp_path):
    """Rank 2 reads a clock 1000 s ahead, under another host name: its measured offset is
    1000 s within the stated uncertainty, and after the correction its phases keep their
    order with the server's (before the correction they would lie 1000 s later)."""
    out, skew = tmp_path / "run", 1000.0
    done = mpi_script("other_host_clock.py", 3, ["2", str(skew), "--out", str(out),
                                                 "--strategy", "ps-sync", "--timeline",
                                                 "timeline.json", *RUN, *WINDOW])
    assert done.returncode == 0, done.stderr
    trace = read_trace(out / "timeline.json")
    ranks = check_trace(trace, ROLES["ps-sync"], STEPS, PER_EPOCH)
    about = trace["otherData"]
    uncertainty = about["clock_uncertainty_us"][2]
    for measured in (about["clock_offset_us"]["before"][2], about["clock_offset_us"]["after"][2]):
        assert abs(float(measured) - skew * 1e6) <= float(uncertainty) + 1
    assert about["clock_uncertainty_us"][:2] == [0, 0] and 0 < uncertainty < 1e6
    hosts = {event["pid"] for event in ranks[2]} | {event["pid"] for event in ranks[0]}
    assert len(hosts) == 2
    updates = named(ranks[0], "update")
    for step in STEPS:
        (compute,) = named(ranks[2], "compute")[step]
        assert updates[step][0]["ts"] >= end(compute) - uncertainty
        if step > STEPS.start:
            assert compute["ts"] >= end(updates[step - 1][0]) - uncertainty


def test_a_straggler_shows_in_the_trace(tmp_path):
    """Worker 2 sleeps 20 ms in every gradient: its compute phases last that long, and the
    server waits for it: from ringing the workers (its ``comm`` phase) to the end of its
    next ``wait``, at least that long."""
    out, delay = tmp_path / "run", 0.02
    done = mpi_script("slow_worker.py", 3, ["2", str(delay), "--out", str(out), "--strategy",
                                            "ps-sync", "--timeline", "timeline.json", *RUN,
                                            *WINDOW])
    assert done.returncode == 0, done.stderr
    ranks = check_trace(read_trace(out / "timeline.json"), ROLES["ps-sync"], STEPS, PER_EPOCH)
    rings, waits = named(ranks[0], "comm"), named(ranks[0], "wait")
    for step in STEPS:
        assert named(ranks[2], "compute")[step][0]["dur"] >= delay * 1e6
        if step > STEPS.start:
            assert end(waits[step][0]) - rings[step - 1][0]["ts"] >= delay * 1e6


def test_a_resumed_run_records_its_own_steps(tmp_path):
    """The window counts global steps; the default one starts 10 steps into the resumed run.
    A resumed run writes a trace only when asked again."""
    run = tmp_path / "run"
    first = distnn(["train", "--out", str(run), "--timeline", "timeline.json", *RUN,
                    "--epochs", "2"])
    assert first.returncode == 0, first.stderr
    written = (run / "timeline.json").read_bytes()
    again = distnn(["train", "--resume", str(run), "--epochs", "3", "--quiet"])
    assert again.returncode == 0, again.stderr
    assert (run / "timeline.json").read_bytes() == written
    assert "timeline" not in read_result(run)
    last = distnn(["train", "--resume", str(run), "--epochs", "4", "--timeline", "timeline.json",
                   "--quiet"])
    assert last.returncode == 0, last.stderr
    check_trace(read_trace(run / "timeline.json"), ROLES["serial"], range(30, 40), PER_EPOCH)


def test_without_the_flag_nothing_is_recorded(tmp_path):
    out = tmp_path / "run"
    done = distnn(["train", "--out", str(out), "--strategy", "ps-sync", *RUN], procs=3)
    assert done.returncode == 0, done.stderr
    assert "timeline.json" not in {path.name for path in out.iterdir()}
    assert "timeline" not in read_result(out)


def test_without_the_flag_the_timer_keeps_no_laps():
    from mpi4py import MPI

    from distnn.config import make_config
    from distnn.data import load_dataset
    from distnn.parallel.stall import detach
    from distnn.train import setup

    config = make_config(samples_per_class=20, epochs=1)
    job = setup(config, MPI.COMM_SELF, load_dataset(config.data))
    assert type(job.timer) is PhaseTimer
    traced_job = setup(config.replace(timeline="t.json"), MPI.COMM_SELF, load_dataset(config.data))
    assert type(traced_job.timer) is RecordingTimer and traced_job.timer.events.size == 0
    detach(MPI.COMM_SELF)


def test_the_recording_timer_keeps_the_window_and_counts_what_does_not_fit():
    source = SimpleNamespace(batch_number=0)
    timer = RecordingTimer()
    timer.follow(source)
    timer.record(2, 5, capacity=5)
    for step in range(7):
        source.batch_number = step
        timer.lap("compute")
        timer.lap("update")
    steps = timer.events[:timer.recorded, STEP].tolist()
    assert steps == [2, 2, 3, 3, 4] and timer.dropped == 1
    assert timer.events[:timer.recorded, PHASE].tolist() == [0, 1, 0, 1, 0]
    starts, ends = timer.events[:timer.recorded, 0], timer.events[:timer.recorded, 1]
    assert np.all(ends >= starts) and np.all(starts[1:] == ends[:-1])
    totals = timer.category_seconds()
    assert totals["compute"] == pytest.approx(timer.seconds["compute"] + timer.seconds["update"])


def test_result_json_keeps_its_three_categories():
    timer = PhaseTimer()
    timer.seconds.update(compute=1.0, update=2.0, comm=4.0, wait=8.0, evaluation=16.0,
                         checkpoint=32.0)
    assert timer.category_seconds() == {"compute": 3.0, "comm": 4.0, "wait": 8.0}


@pytest.mark.parametrize("steps, first, total, expected", [
    (None, 0, 1000, (10, 110)),     # the 100 steps after the first 10
    (None, 0, 40, (0, 40)),         # a shorter run: all of it
    (None, 0, 60, (0, 60)),
    (None, 0, 150, (10, 110)),
    (None, 500, 1000, (510, 610)),  # a resumed run: 10 steps into it
    (None, 0, 0, (0, 0)),           # --epochs 0: nothing to record
    ("5:20", 0, 40, (5, 25)),
    ("30:50", 0, 40, (30, 40)),     # cut at the run's end
    ("15:10", 20, 40, (20, 25)),    # and at a resumed run's start
])
def test_the_window(steps, first, total, expected):
    assert window(steps, first, total) == expected


@pytest.mark.parametrize("steps, first, total", [("40:1", 0, 40), ("0:10", 20, 40),
                                                 ("0:1", 0, 0)])
def test_a_window_outside_the_run_is_refused(steps, first, total):
    with pytest.raises(UsageError, match="records no step of this run"):
        window(steps, first, total)


def test_the_clock_offset_is_within_its_uncertainty():
    """Exchanges with uneven delays each way: the estimate is off by at most its stated
    uncertainty, half the shortest round trip, and that exchange is the one taken."""
    rng = np.random.default_rng(0)
    offset = 1234.5
    t0 = np.cumsum(rng.uniform(1e-3, 2e-3, 16))
    there, back = rng.uniform(5e-6, 500e-6, 16), rng.uniform(5e-6, 500e-6, 16)
    exchanges = np.column_stack([t0, t0 + there + offset, t0 + there + back])
    estimate, uncertainty, at = clocks.estimate(exchanges)
    assert abs(estimate - offset) <= uncertainty + 1e-9
    assert uncertainty == pytest.approx((there + back).min() / 2)
    assert t0.min() <= at <= (t0 + there + back).max()


def test_a_steady_drift_is_followed_between_the_two_measurements():
    hosts = ["a", "b"]
    before = clocks.ClockOffsets(hosts, np.array([0.0, 5.0]), np.zeros(2), np.array([100.0, 100.0]))
    after = clocks.ClockOffsets(hosts, np.array([0.0, 5.01]), np.zeros(2), np.array([200.0, 200.0]))
    times = np.array([150.0, 155.005, 105.0])     # rank 0; rank 1 at 150 and at 100
    ranks = np.array([0, 1, 1])
    assert clocks.on_reference_clock(times, ranks, before, after) == pytest.approx(
        [150.0, 150.0, 100.0], abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--timeline", "t.json", "--timeline-steps", "10"], "START:COUNT"),
    (["--timeline", "t.json", "--timeline-steps", "5:0"], "COUNT must be at least 1"),
    (["--timeline", "t.json", "--timeline-steps", "x:5"], "START:COUNT"),
    (["--timeline-steps", "0:5"], "--timeline-steps needs --timeline"),
    (["--timeline", "t.json", "--timeline-steps", "40:5"], "records no step of this run"),
])
def test_a_bad_window_is_refused_before_any_work(tmp_path, args, message):
    out = tmp_path / "run"
    done = distnn(["train", "--out", str(out), *RUN, *args])
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("procs", [1, 2])
@pytest.mark.parametrize("case", ["missing folder", "a directory", "virtual", "run file",
                                  "the data"])
def test_a_bad_path_is_refused_with_exit_2_and_nothing_written(tmp_path, case, procs):
    data = tmp_path / "data.csv"
    data.write_text("x1,x2,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    path, expected = {
        "missing folder": (str(tmp_path / "missing" / "t.json"), "does not exist"),
        "a directory": (str(tmp_path), "is a directory"),
        "virtual": ("/proc/t.json", "virtual file system"),
        "run file": ("result.json", "would replace the run's own result.json"),
        "the data": (str(data), "also an input"),
    }[case]
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--dataset", str(data), "--epochs", "2",
            "--timeline", path]
    if procs > 1:
        args += ["--strategy", "ps-sync"]
    done = distnn(args, procs=procs)
    assert done.returncode == 2, done.stderr
    assert f"--timeline {path}" in done.stderr and expected in done.stderr, done.stderr
    assert done.stderr.count("distnn: error") == 1 and "Traceback" not in done.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_overwrite_replaces_a_runs_timeline(tmp_path):
    trace, _, out = traced(tmp_path, "serial", 1)
    done = distnn(["train", "--out", str(out), "--overwrite", *RUN])
    assert done.returncode == 0, done.stderr
    assert not (out / "timeline.json").exists()


def test_a_trace_that_cannot_be_written_at_the_end_loses_only_itself(tmp_path, capsys):
    """The path was checked at the start; if it goes bad during the run (here: its folder
    is gone), rank 0 warns and the run's result stands."""
    from mpi4py import MPI

    from distnn.config import make_config
    from distnn.data import load_dataset
    from distnn.train import train

    config = make_config(samples_per_class=20, epochs=3,
                         timeline=str(tmp_path / "gone" / "timeline.json"))
    model, result = train(config, MPI.COMM_SELF, load_dataset(config.data))
    assert result["final"]["epoch"] == 3 and "timeline" not in result
    warning = capsys.readouterr().err
    assert "--timeline" in warning and "the trace is lost" in warning
    assert not (tmp_path / "gone").exists()
