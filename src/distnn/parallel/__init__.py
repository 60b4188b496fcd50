"""Strategies: how gradients become updates across ranks. One module per strategy."""

from distnn.parallel.allreduce import Allreduce
from distnn.parallel.ps_async import PSAsync
from distnn.parallel.ps_sync import PSSync
from distnn.parallel.serial import Serial

STRATEGIES = {cls.name: cls for cls in (Serial, PSSync, PSAsync, Allreduce)}

__all__ = ["STRATEGIES", "Allreduce", "PSAsync", "PSSync", "Serial"]
