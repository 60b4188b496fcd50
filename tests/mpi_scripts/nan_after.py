"""Run ``distnn train`` with the parameters turning NaN in the Nth optimizer step.

Usage: nan_after.py N distnn-train-args...   (simulates a numerical blow-up)
"""

import sys

import numpy as np

from distnn import cli
from distnn.optim import SGD

poison_at = int(sys.argv[1])
original = SGD.apply
calls = {"n": 0}


def apply(self, *args, **kwargs):
    original(self, *args, **kwargs)
    calls["n"] += 1
    if calls["n"] == poison_at:
        self.params[0] = np.nan


SGD.apply = apply
sys.exit(cli.main(["train", *sys.argv[2:]]))
