"""``distnn`` command line: the only package that reads argv or touches ``MPI.COMM_WORLD``.

- ``parser.py``: the grammar, its training flags generated from ``TrainConfig``;
- ``commands.py``: the one-process commands (evaluate, predict, plot, export, info, bench,
  costmodel);
- ``run.py``: ``distnn train`` on the ranks of an MPI job;
- here: ``main``, which parses, and for ``train --procs N`` outside MPI launches the job
  (``distnn.launch``) instead of training itself.
"""

import os
import sys

from distnn import threads
from distnn.cli.commands import run_command
from distnn.cli.parser import build_parser
from distnn.cli.report import os_error, report
from distnn.cli.run import check_process_count, resolve_config, train_on_ranks
from distnn.config import MAX_PROCS
from distnn.errors import UsageError
from distnn.hosts import hosts_from
from distnn.interrupt import EXIT_INTERRUPTED
from distnn.launch import MPI_ENV_SIZE, env_int, env_rank, pin_blas_threads, relaunch, under_mpi

__all__ = ["build_parser", "check_process_count", "main"]

if (env_int(MPI_ENV_SIZE) or 1) > 1:
    pin_blas_threads(os.environ)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command != "train":
            return run_command(args)
        settings = vars(args)
        procs = settings.pop("procs", None)
        blas_threads = threads.wanted(settings.pop("threads", None))
        hosts_text, hostfile = settings.pop("hosts", None), settings.pop("hostfile", None)
        if procs is not None and not 1 <= procs <= MAX_PROCS:
            raise UsageError(f"--procs must be in [1, {MAX_PROCS}], got {procs}")
        if not under_mpi():
            hosts = hosts_from(hosts_text, hostfile)
            config, _ = resolve_config(dict(settings))
            # --resume and --config keep the process count; hosts alone give one rank a slot.
            procs = procs or config.procs or (hosts.total if hosts is not None else None)
            if procs is not None and procs > MAX_PROCS:
                raise UsageError(f"{hosts.source} gives {procs} slots; at most {MAX_PROCS} "
                                 "processes: give --procs")
            check_process_count(config.strategy, procs or 1, config.servers)
            if procs is not None and (procs > 1 or hosts is not None):
                return relaunch(procs, argv, threads=blas_threads, hosts=hosts,
                                quiet=bool(settings.get("quiet")))
    except UsageError as exc:
        if env_rank() == 0:
            report(str(exc))
        return exc.exit_code
    except BrokenPipeError:        # the reader went away (`distnn ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:         # a path the user named that the system refuses
        if env_rank() == 0:
            report(os_error(exc))
        return UsageError.exit_code
    except KeyboardInterrupt:
        if env_rank() == 0:
            report("interrupted")
        return EXIT_INTERRUPTED
    return train_on_ranks(settings, procs, blas_threads)
