"""Model averaging (--combine models, the original's algorithm), the original's init and data.

Maths behind the equality test: with K = 1, every worker starts a step from the same
averaged w, so worker i steps v_i' = m v_i - lr_t g_i, w_i = w + v_i'. The mean model is
w' = w + mean(v_i'), and mean(v_i') = m mean(v_i) - lr_t mean(g_i). With equal slices,
mean(g_i) is the full batch's mean gradient, and with all v_i = 0 at the start, mean(v_i)
follows serial's velocity exactly: the parameters and the *mean* velocity equal serial's,
while each worker's own velocity does not.
"""

import json

import numpy as np
import pytest

from distnn.cli import main
from distnn.config import make_config
from distnn.data import load_dataset
from distnn.errors import UsageError
from distnn.nn import MLP
from distnn.nn.crand import RAND_MAX, CRand
from helpers import distnn, mpi_script, read_result


def averaging(strategy: str, procs: int, epochs: int = 20, *flags: str) -> dict:
    done = mpi_script("model_averaging.py", procs, [strategy, str(epochs), *flags])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("strategy, procs, flags", [
    ("allreduce", 2, []), ("ps-sync", 3, []), ("ps-sync", 4, []),
    ("ps-sync", 4, ["servers=2"]),               # each server averages its shard
])
def test_equal_shards_model_averaging_equals_gradient_averaging(strategy, procs, flags):
    result = averaging(strategy, procs, 20, *flags)     # 300 rows: 2 or 3 equal slices
    assert result["params"] <= 1e-10
    assert result["mean_velocity"] <= 1e-10
    assert result["own_velocity"] > 1e-3         # each worker's velocity is its own


def test_unequal_shards_model_averaging_differs_from_serial():
    result = averaging("allreduce", 2, 20, "samples_per_class=101")    # slices of 152 and 151
    assert result["params"] > 1e-6


@pytest.mark.parametrize("strategy, procs", [("allreduce", 2), ("ps-sync", 3)])
def test_local_steps_cut_communication_k_fold(strategy, procs):
    every = averaging(strategy, procs, 24)
    fourth = averaging(strategy, procs, 24, "local_steps=4")
    assert (every["averagings"], fourth["averagings"]) == (24, 6)
    assert every["bytes_sent_per_worker"] == 4 * fourth["bytes_sent_per_worker"] > 0


def test_drop_remainder_through_the_cli_reports_its_communication(tmp_path):
    done = distnn(["train", "--quiet", "--out", str(tmp_path), "--strategy", "ps-sync",
                   "--combine", "models", "--drop-remainder", "--local-steps", "2",
                   "--samples-per-class", "101", "--epochs", "10", "--eval-every", "10"], procs=3)
    assert done.returncode == 0, done.stderr
    result = read_result(tmp_path)
    assert (result["combine"], result["local_steps"], result["averagings"]) == ("models", 2, 5)
    assert result["shared_memory"] is False
    assert result["bytes_sent_per_worker"] == 5 * MLP([2, 64, 3]).params.nbytes   # float32


def test_resume_is_refused_for_model_averaging(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), "--strategy", "allreduce",
                 "--combine", "models", "--epochs", "3"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "5"]) == 2
    assert "--combine models" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    (dict(strategy="ps-async", combine="models"), "--combine models applies to"),
    (dict(strategy="allreduce", local_steps=2), "--local-steps 2 needs --combine models"),
    (dict(strategy="ps-sync", drop_remainder=True), "--drop-remainder needs --combine models"),
    (dict(strategy="allreduce", combine="models", local_steps=0), "--local-steps must be"),
])
def test_combine_options_are_validated(overrides, message):
    with pytest.raises(UsageError, match=message):
        make_config(**overrides)


def test_uniform_init_is_eigen_random_under_glibc_rand():
    assert CRand(1).rand(3).tolist() == [1804289383, 846930886, 1681692777]   # glibc, srand(1)
    assert CRand(0).rand(3).tolist() == CRand(1).rand(3).tolist()            # srand(0) == srand(1)
    model = MLP([2, 64, 4], dtype="float64", init="uniform", seed=0)
    first = model.layers[0].weight
    assert first[0, 0] == (-1.0 + 2.0 * 1804289383 / RAND_MAX) * 0.01
    assert first[1, 0] == (-1.0 + 2.0 * 846930886 / RAND_MAX) * 0.01        # column-major
    assert np.all(np.abs(model.params) <= 0.01) and not model.layers[1].bias.any()


def test_seed_final_is_the_originals_data_and_initial_accuracy():
    config = make_config("seed-final")
    data = load_dataset(config.data)
    assert data.x_train.shape == (40_000, 2) and data.x_test.shape == (4_000, 2)
    # The first rows of its committed X_train_large.csv (shuffled) and X_test_large.csv.
    assert data.x_train[0].tolist() == [-5.287875980138778687e-02, -3.255666494369506836e-01]
    assert data.x_test[1].tolist() == [3.707667056005448103e-04, 9.298037621192634106e-04]
    model = MLP([2, 64, 4], dtype="float64", init="uniform", seed=config.seed)
    _, correct = model.evaluate_sum(data.x_train, data.y_train)
    assert correct / 40_000 == 0.244125      # the report's serial "epoch: 0" accuracy


def test_original_timing_is_recorded(tmp_path):
    assert main(["train", "--quiet", "--out", str(tmp_path), "--timing", "original",
                 "--epochs", "5"]) == 0
    assert read_result(tmp_path)["timing"] == "original"
