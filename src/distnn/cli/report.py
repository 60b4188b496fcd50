"""How the command line speaks of errors: one ``distnn: error: ...`` line on stderr."""

import sys


def report(message: str, rank: int | None = None, size: int | None = None) -> None:
    prefix = f"[rank {rank}/{size}] " if rank is not None and size and size > 1 else ""
    sys.stderr.write(f"{prefix}distnn: error: {message}\n")
    sys.stderr.flush()


def os_error(exc: OSError) -> str:
    """One line for an operating-system refusal of a path (too long, not a directory...)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"
