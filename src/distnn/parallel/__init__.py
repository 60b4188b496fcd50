"""Strategies: how gradients become updates across ranks. One module per strategy."""

from distnn.parallel.ps_sync import PSSync
from distnn.parallel.serial import Serial

STRATEGIES = {cls.name: cls for cls in (Serial, PSSync)}

__all__ = ["STRATEGIES", "PSSync", "Serial"]
