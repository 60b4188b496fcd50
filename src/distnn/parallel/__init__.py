"""Strategies: how gradients become updates across ranks. One module per strategy.

``STRATEGIES`` (name -> class) is loaded on first use: importing ``distnn.parallel.x``
for a module that needs no MPI must not initialise MPI.
"""

__all__ = ["STRATEGIES"]


def __getattr__(name: str):
    if name != "STRATEGIES":
        raise AttributeError(f"module 'distnn.parallel' has no attribute {name!r}")
    from distnn.parallel.allreduce import Allreduce
    from distnn.parallel.ps_async import PSAsync
    from distnn.parallel.ps_sync import PSSync
    from distnn.parallel.serial import Serial

    return {cls.name: cls for cls in (Serial, PSSync, PSAsync, Allreduce)}
