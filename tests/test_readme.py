"""The README's examples run as written, and every training example learns.

Every ``distnn``/``mpiexec`` command in the README's "Train" and "Use a trained model"
sections is listed in ``EXAMPLES``; a command that is in the README but not here fails the
test, so the two cannot drift apart. Long workloads get ``--epochs`` appended (flags given
later win): their full runs are measured in the README.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import child_env

README = Path(__file__).parent.parent / "README.md"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# README command -> flags appended to shorten it (None: run exactly as written).
EXAMPLES = {
    "distnn train": None,
    "distnn train --procs 3 --strategy ps-sync --out runs/spiral": None,
    "distnn train --resume runs/spiral --epochs 1500": None,
    "mpiexec -n 3 python -m mpi4py -m distnn train --strategy ps-sync": None,
    "distnn train --preset seed --procs 3 --strategy ps-sync": ["--epochs", "300"],
    "distnn train --preset seed-10 --epochs 2000": ["--epochs", "100", "--samples-per-class", "1000"],
    "distnn train --procs 2 --strategy allreduce --batch-size 100 --lr 0.1 --epochs 100":
        ["--epochs", "20"],
    "distnn train --procs 4 --strategy ps-async --max-staleness 2 --batch-size 100 --lr 0.1":
        ["--epochs", "40"],
    "distnn train --procs 4 --strategy ps-sync --servers 2 --batch-size 100 --lr 0.1 "
    "--epochs 100": None,
    "distnn train --procs 3 --strategy allreduce --batch-size 100 --lr 0.1 --deterministic":
        ["--epochs", "20"],
    "distnn train --hidden 256,128 --batch-size 128 --epochs 50 --dtype float64": None,
    "distnn train --dataset mydata/ --hidden 64 --epochs 100 --batch-size 32 --out runs/mydata": None,
    "distnn train --dataset mydata/ --optimizer adamw --schedule cosine --warmup-epochs 2 "
    "--dropout 0.1 --epochs 40": None,
    "distnn train --dataset mydata/ --activation gelu --optimizer sgd --nesterov --weight-decay 1e-4 "
    "--epochs 40": None,
    "distnn train --dataset big_npy/ --procs 4 --strategy allreduce --batch-size 512 --data-shards 4":
        ["--epochs", "3"],
    "distnn train --dataset fashion-mnist --procs 2 --strategy allreduce": ["--epochs", "2"],
    "distnn train --preset fmnist --procs 3 --strategy ps-sync --out runs/fmnist": ["--epochs", "2"],
    "distnn train --config myrun.toml --epochs 50": None,
    "distnn train --procs 3 --strategy ps-sync --timeline timeline.json --out runs/traced": None,
    "distnn evaluate runs/fmnist": None,
    "distnn evaluate runs/mydata --split train --json": None,
    "distnn predict runs/mydata --input x.csv --output y.csv": None,
    "distnn plot runs/fmnist": None,
    "distnn export runs/fmnist --format onnx": None,
    "distnn info": None,
}
LEARNED = 0.6   # test accuracy every full-length training example reaches (chance is 1/K)


def readme_commands() -> list[str]:
    """The commands of the README's "Train" and "Use a trained model" code blocks."""
    text = README.read_text()
    commands = []
    for section in ("## Train\n", "## Use a trained model\n"):
        block = re.search(r"```bash\n(.*?)```", text[text.index(section):], re.S).group(1)
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The files the examples name: mydata/ (digits as CSV), big_npy/, myrun.toml, x.csv."""
    datasets = pytest.importorskip("sklearn.datasets")
    here = tmp_path_factory.mktemp("readme")
    x, y = datasets.load_digits(return_X_y=True)
    (here / "mydata").mkdir()
    np.savetxt(here / "mydata" / "X_train.csv", x, delimiter=",", fmt="%g")
    np.savetxt(here / "mydata" / "y_train.csv", y, fmt="%d")
    np.savetxt(here / "x.csv", x[:20], delimiter=",", fmt="%g")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 100)) * 3
    labels = rng.integers(0, 5, size=20_000)
    (here / "big_npy").mkdir()
    np.save(here / "big_npy" / "X_train.npy",
            (centers[labels] + 4 * rng.normal(size=(20_000, 100))).astype(np.float32))
    np.save(here / "big_npy" / "y_train.npy", labels)
    (here / "myrun.toml").write_text('strategy = "allreduce"\nprocs = 2\nhidden = [128]\n'
                                     'batch-size = 64\nlr = 0.05\n')
    return here


def test_every_readme_example_is_covered():
    assert readme_commands() == list(EXAMPLES)


def run_example(command: str, extra: list[str] | None, cwd: Path) -> subprocess.CompletedProcess:
    env = child_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    full = command + ("" if extra is None else " " + " ".join(extra))
    return subprocess.run(["bash", "-c", full], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_the_readme_examples_run_and_learn(workdir):
    for command, extra in EXAMPLES.items():
        if "fashion-mnist" in command or "fmnist" in command:
            if not FASHION_MNIST.is_dir():
                continue
        done = run_example(command, extra, workdir)
        assert done.returncode == 0, f"{command}\n{done.stderr}"
        assert "Traceback" not in done.stderr, command
        saved = re.search(r"run saved in (\S+)", done.stdout)
        if " train" not in command or saved is None:
            continue
        run = workdir / saved.group(1)
        result = json.loads((run / "result.json").read_text())
        with np.load(run / "model.npz") as model:
            chance = 1 / int(model["sizes"][-1])
        accuracy = result["final"]["test_accuracy"]
        assert math.isfinite(result["final"]["train_loss"]), command
        if extra is None:      # shortened runs may stop before they learn: not judged
            assert result["warnings"] == [], (command, result["warnings"])
            assert accuracy >= LEARNED, (command, accuracy)
        else:
            assert accuracy > chance, (command, accuracy)
    if FASHION_MNIST.is_dir():
        assert (workdir / "runs" / "fmnist" / "model.onnx").exists()
    assert (workdir / "y.csv").read_text().startswith("class,p_0,")
    trace = json.loads((workdir / "runs" / "traced" / "timeline.json").read_text())
    assert {event["tid"] for event in trace["traceEvents"] if event["ph"] == "X"} == {0, 1, 2}
