"""The figure regeneration and the regression check (benchmarks/figures.py), on made-up
measurements: blocks are replaced whole and alone, and a ratio is reported as fallen
exactly when it fell by more than its noise."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))

_environment = dict(os.environ)
import figures  # noqa: E402
import measured  # noqa: E402
import speed  # noqa: E402   (it pins BLAS threads in os.environ: put them back)

os.environ.clear()
os.environ.update(_environment)


def test_a_block_is_replaced_whole_and_alone():
    readme = ("intro\n<!-- figure: speed -->\nold table\n<!-- /figure: speed -->\nmiddle\n"
              "<!-- figure: kernels -->\nkept\n<!-- /figure: kernels -->\nend\n")
    out = figures.replace_block(readme, "speed", "new table\n")
    assert out == readme.replace("old table\n", "new table\n")
    assert figures.replace_block(out, "speed", "again\n").count("again") == 1


def test_a_block_whose_text_holds_backslashes_is_written_as_is():
    readme = "<!-- figure: speed -->\n<!-- /figure: speed -->\n"
    assert "a\\1b" in figures.replace_block(readme, "speed", "a\\1b\n")


def _ratios(**values):
    return {name: {"value": value, "rounds": [value]} for name, value in values.items()}


def test_a_ratio_that_fell_by_more_than_its_noise_is_reported():
    recorded = _ratios(a=2.0, b=1.0, c=1.0)
    fresh = _ratios(a=1.7, b=0.98, c=1.2)
    noise = {"a": {"noise": 0.05}, "b": {"noise": 0.05}}
    lines = figures.compare(recorded, fresh, noise)
    verdicts = {line.split()[1].rstrip(":"): line.split()[0] for line in lines}
    assert verdicts == {"a": "FELL", "b": "ok", "c": "ok"}


def test_without_recorded_noise_the_floor_applies():
    recorded = _ratios(a=1.0)
    just_inside = 1 - figures.NOISE_FLOOR / 2
    just_outside = 1 - figures.NOISE_FLOOR * 2
    assert figures.compare(recorded, _ratios(a=just_inside), {})[0].startswith("ok")
    assert figures.compare(recorded, _ratios(a=just_outside), {})[0].startswith("FELL")


def test_a_ratio_missing_from_the_rerun_is_named():
    assert figures.compare(_ratios(a=1.0), {}, {})[0].startswith("missing")


@pytest.fixture
def speed_result():
    rounds = 3
    fm = {label: [float(v)] * rounds for label, v in (
        (speed.CEILING, 120), ("bare NumPy loop, batch 128", 85), (speed.FMNIST_SERIAL[0], 90),
        (speed.FMNIST_SERIAL[1], 100), (speed.ALLREDUCE_SHM, 180), (speed.ALLREDUCE_MPI, 170),
        (speed.PS_SYNC, 185))}
    seed = {label: [float(v)] * rounds for label, v in (
        ("seed: bare NumPy loop", 1), (speed.SEED_SERIAL[0], 2), (speed.SEED_SERIAL[1], 10))}
    return {"dataset": "test", "rounds": rounds, "fmnist": fm, "seed": seed}


def test_speed_ratios_are_against_the_fastest_serial(speed_result):
    ratios = speed.ratios(speed_result)
    assert ratios["ps-sync 3 procs / fastest serial"]["value"] == pytest.approx(1.85)
    assert ratios["serial fused / GEMM ceiling (commands)"]["value"] == pytest.approx(100 / 120)
    assert ratios["seed: serial fused / serial numpy (commands)"]["value"] == pytest.approx(5)


def test_the_speed_figure_notes_the_hosts_state_before_each_parallel_run(speed_result):
    assert "host's state" not in speed.markdown(speed_result)    # not measured: not claimed
    noted = {**speed_result, "host_us": {speed.ALLREDUCE_SHM: [23.6, 24.0, 76.9],
                                         speed.ALLREDUCE_MPI: [24.1, None, 23.0],
                                         speed.PS_SYNC: [77.4, 23.8, 24.2]}}
    text = speed.markdown(noted)
    assert "allreduce with shared memory 24, 24, 77; allreduce by MPI 24, ?, 23; " \
           "ps-sync 77, 24, 24." in text
    # Each launch against its round's fastest serial (100 here), by the host's state.
    noted["fmnist"] = {**noted["fmnist"], speed.PS_SYNC: [140.0, 190.0, 185.0]}
    text = speed.markdown(noted)
    assert "allreduce with shared memory 1.80× in 2 fast, 1.80× in 1 slow" in text
    assert "allreduce by MPI 1.70× in 2 fast, none slow" in text
    assert "ps-sync 1.88× in 2 fast, 1.40× in 1 slow." in text


def test_speed_table_names_every_variant_with_its_ratio(speed_result):
    text = speed.markdown(speed_result)
    for label in speed_result["fmnist"]:
        assert label in text
    assert "**1.85×**" in text        # ps-sync against the fastest serial, in bold


def test_ps_sync_steps_table_gives_each_phase_and_every_launch():
    import ps_sync_steps

    def launch(scale, rate):
        variant = {"samples_per_s": rate,
                   "median_s": {phase: scale * 1e-6 for phase in ps_sync_steps.PHASES},
                   "p90_s": {phase: 2 * scale * 1e-6 for phase in ps_sync_steps.PHASES}}
        return {"variants": {label: variant for label in ps_sync_steps.VARIANTS}}

    text = ps_sync_steps.markdown([launch(10, 150_000), launch(30, 190_000),
                                   launch(20, 180_000)])
    rows = text.splitlines()
    assert len(rows) == 2 + len(ps_sync_steps.PHASES) + 1
    variants = len(ps_sync_steps.VARIANTS)
    assert rows[2] == "| worker compute | " + " | ".join(["20 (40)"] * variants) + " |"
    assert rows[-1].endswith(" | ".join(["**180,000** (150,000, 180,000, 190,000)"] * variants)
                             + " |")


@pytest.mark.parametrize("second_run, expected", [
    ({"a": 0.80, "b": 1.0}, True),       # a fell in both runs: a regression
    ({"a": 1.0, "b": 1.0}, False),       # a fell in one run only: a period of load
])
def test_the_check_reports_only_what_fell_in_two_runs(monkeypatch, capsys, second_run, expected):
    noise = {name: {"reference": 1.0, "noise": 0.05, "runs": [1.0]} for name in ("a", "b")}
    noise["seed: x / y"] = {"reference": 1.0, "noise": 0.05, "runs": [1.0]}
    monkeypatch.setattr(figures, "_load_record", lambda: {"noise": {"ratios": noise}})
    runs = iter([{**_ratios(a=0.80, b=0.99), **_ratios(**{"seed: x / y": 0.5})},
                 {**_ratios(**second_run), **_ratios(**{"seed: x / y": 0.5})}])
    monkeypatch.setattr(figures, "fresh_ratios", lambda rounds: next(runs))
    assert figures.check(3) == 1      # "seed: x / y" fell in both runs
    out = capsys.readouterr().out
    assert "measuring again" in out
    assert out.rstrip().endswith("in both runs: a, seed: x / y" if expected
                                 else "in both runs: seed: x / y")


def test_the_check_needs_recorded_references(monkeypatch):
    monkeypatch.setattr(figures, "_load_record", lambda: {})
    with pytest.raises(SystemExit, match="--noise 3"):
        figures.check(3)


def test_a_fall_in_one_run_only_passes_the_check(monkeypatch, capsys):
    noise = {"a": {"reference": 1.0, "noise": 0.05, "runs": [1.0]}}
    monkeypatch.setattr(figures, "_load_record", lambda: {"noise": {"ratios": noise}})
    runs = iter([_ratios(a=0.80), _ratios(a=0.99)])
    monkeypatch.setattr(figures, "fresh_ratios", lambda rounds: next(runs))
    assert figures.check(3) == 0
    assert "no ratio fell by more than its noise" in capsys.readouterr().out


def test_two_mpis_table_gives_each_variant_under_both():
    import two_mpis

    def runs(rates, wait):
        return [{"samples_per_s": rate, "wait_share": wait} for rate in rates]
    result = {"dataset": "test", "rounds": 3, "runs": {
        "MPICH": {variant: runs([100, 200, 150], 0.1) for variant in two_mpis.VARIANTS},
        "Open MPI": {variant: runs([90, 60, 75], 0.4) for variant in two_mpis.VARIANTS}}}
    rows = two_mpis.markdown(result).splitlines()
    assert len(rows) == 2 + len(two_mpis.VARIANTS)
    assert rows[2] == ("| allreduce, 2 processes | 150 (100–200) | 75 (60–90) | **0.50×** "
                       "| 10% | 40% |")


def test_a_stamp_says_the_hosts_state_where_it_was_measured():
    stamp = {"command": "python benchmarks/speed.py", "date": "2026-12-05 05:00 UTC",
             "machine": "AMD EPYC, 2 cores", "load": [0.5, 1.3], "commit": "abc1234"}
    plain = measured.describe(stamp)
    assert "cross_core" not in plain and "load average 0.5 at the start, 1.3 at the end" in plain
    slow = measured.describe({**stamp, "cross_core_us": [23.6, 77.2]})
    assert "in 24 µs at the start, 77 µs at the end" in slow and slow.endswith("commit abc1234).")
    assert measured.describe({**stamp, "cross_core_us": [23.6, None]}) == plain
