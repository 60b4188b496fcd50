import json

import numpy as np
import pytest

from helpers import distnn, read_result


def test_serial_learns_spiral_and_writes_the_run_directory(tmp_path):
    done = distnn(["train", "--epochs", "800", "--eval-every", "200", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.npz", "config.json", "metrics.jsonl", "model.npz", "result.json"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [200, 400, 600, 800]
    assert records[-1]["test_accuracy"] > 0.75
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    result = read_result(tmp_path)
    assert result["strategy"] == "serial" and result["workers"] == 1
    assert result["train_time_s"] > 0 and set(result["ranks"][0]) >= {"compute_s", "comm_s", "wait_s"}
    with np.load(tmp_path / "model.npz", allow_pickle=False) as model:
        assert model["layers.0.weight"].shape == (2, 64)
        assert list(model["sizes"]) == [2, 64, 3]
        assert str(model["activation"]) == "relu"
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 800


def test_epochs_zero_writes_the_initialised_model(tmp_path):
    done = distnn(["train", "--epochs", "0", "--init", "nnfs", "--out", str(tmp_path), "--quiet"])
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "model.npz", allow_pickle=False) as model:
        np.testing.assert_allclose(model["layers.0.weight"],
                                   0.01 * np.random.RandomState(0).randn(2, 64), rtol=1e-6)


def test_seed_preset_resolves_to_the_original_workload_and_flags_override(tmp_path):
    done = distnn(["train", "--preset", "seed", "--epochs", "2", "--samples-per-class", "50",
                   "--out", str(tmp_path), "--quiet"])
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert {k: config[k] for k in ("hidden", "init", "batch_size", "lr", "lr_decay", "momentum",
                                   "eval_every", "classes")} == {
        "hidden": [64], "init": "uniform", "batch_size": None, "lr": 1.0, "lr_decay": 1e-3,
        "momentum": 0.9, "eval_every": 1000, "classes": 3}
    assert (config["epochs"], config["samples_per_class"]) == (2, 50)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "-1"], "--epochs must be an integer >= 0, got -1"),
    (["--batch-size", "0"], "--batch-size: must be a positive integer or 'full', got '0'"),
    (["--hidden", "64,x"], "--hidden: expects widths like 64 or 256,128, got '64,x'"),
    (["--lr", "0"], "--lr must be > 0, got 0.0"),
    (["--momentum", "1.5"], "--momentum must be in [0, 1), got 1.5"),
    (["--strategy", "magic"], "argument --strategy: invalid choice: 'magic'"),
    (["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
    (["--strategy", "ps-sync"], "--strategy ps-sync needs at least 2 processes"),
    (["--classes", "1"], "--classes must be in [2, 1000000], got 1"),
    (["--dataset", "/no/such/file.npz"], "--dataset '/no/such/file.npz': no such file or directory"),
    (["--servers", "0"], "--servers must be in [1, 4095], got 0"),
    (["--servers", "two"], "argument --servers: must be an integer, got 'two'"),
    (["--strategy", "allreduce", "--servers", "2"],
     "--servers applies to --strategy ps-sync or ps-async only, not allreduce"),
    (["--strategy", "allreduce", "--servers", "1"], "--servers does not apply to --strategy "
     "allreduce (only to ps-sync and ps-async); drop it"),
    (["--strategy", "ps-sync", "--procs", "3", "--servers", "3"],
     "--servers 3 leaves no worker among the 3 processes"),
])
def test_bad_input_gives_one_clear_message_and_exit_2(tmp_path, args, message):
    out = tmp_path / "run"
    done = distnn(["train", "--out", str(out), *args])
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.count("error:") == 1
    assert not out.exists()


def test_unwritable_output_directory_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = distnn(["train", "--out", str(blocker / "run")])
    assert done.returncode == 2
    assert f"--out {blocker / 'run'}: cannot create the run directory" in done.stderr


def test_divergence_stops_with_a_clear_message(tmp_path):
    done = distnn(["train", "--lr", "1e30", "--lr-decay", "0", "--epochs", "20", "--eval-every", "1",
                   "--out", str(tmp_path), "--quiet"])
    assert done.returncode == 3
    assert "training diverged at epoch" in done.stderr
    assert not (tmp_path / "model.npz").exists()


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    from distnn import rundir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda _: "20261125-101500")
    runs = [rundir.RunDirectory(None, "ps-sync") for _ in range(2)]
    first, second = (run.claim() for run in runs)
    assert first.name == "20261125-101500-ps-sync" and second.name == "20261125-101500-ps-sync-2"
    assert first.is_dir() and second.is_dir()
    for run in runs:
        run.release()


def test_every_train_flag_states_its_default():
    from distnn.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    silent = [action.option_strings[0] for action in train._actions
              if action.option_strings and action.dest != "help" and "default" not in (action.help or "")]
    assert silent == []


@pytest.mark.parametrize("args, hint", [
    (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
    (["train", "--strategy", "ps_sync"], "did you mean ps-sync?"),
    (["traim"], "did you mean train?"),
])
def test_typos_are_answered_with_the_nearest_flag_or_value(tmp_path, args, hint):
    done = distnn(args)
    assert done.returncode == 2 and hint in done.stderr
    assert done.stderr.count("distnn") == 2 and done.stderr.startswith("distnn: error: ")


def test_run_files_share_one_mode(tmp_path):
    assert distnn(["train", "--epochs", "2", "--quiet", "--out", str(tmp_path / "run")]).returncode == 0
    modes = {path.name: path.stat().st_mode & 0o777 for path in (tmp_path / "run").iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_the_readme_flags_table_names_every_training_flag():
    """The table is written by hand from the declarations in config.py: a new field without
    a row fails here."""
    from pathlib import Path

    from distnn.cli.parser import flag_fields
    from distnn.config import FIELD_INFO

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("### Flags"):readme.index("Presets: `seed`")]
    missing = [FIELD_INFO[name].flag for name in flag_fields()
               if f"`{FIELD_INFO[name].flag}" not in table
               and f"`--no-{FIELD_INFO[name].flag[2:]}" not in table
               and f", `{FIELD_INFO[name].flag}" not in table]
    assert missing == []
