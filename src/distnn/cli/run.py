"""``distnn train`` on the ranks of ``MPI.COMM_WORLD``: resolve the config, agree that the run
can start, train, save, and end every rank with the same exit status.

Error policy (DESIGN §3.5):
- bad flags, bad data, unwritable output: every rank finds the same problem (or learns of
  it through one agreement step), rank 0 prints one message, every rank exits 2;
- any other exception on any rank: that rank prints ``[rank r/size]`` and its traceback,
  then ``MPI_Abort`` ends the whole job at once, so nobody waits forever in a collective.
"""

import os
import sys
import threading
import time
import traceback
from pathlib import Path

from distnn import recipes, threads
from distnn.cli.report import os_error, report
from distnn.config import SERVER_STRATEGIES, check_given_apply, flag_of, make_config
from distnn.errors import UsageError
from distnn.interrupt import EXIT_INTERRUPTED
from distnn.launch import forget_orphaned_job, note_launcher_residue, note_started
from distnn.roles import Roles

ABORT_GRACE_S = 0.5       # lets mpiexec forward a failing rank's message before MPI_Abort
FINALIZE_TIMEOUT_S = 10   # a rank whose peers never reach MPI_Finalize exits anyway
# None changes what is trained (ps-sync's servers only cut the same update into shards;
# --sync only adds the same parts in another order; a trace is written only by the run that
# asks for one).
RESUMABLE_CHANGES = {"epochs", "stall_timeout", "servers", "sync", "timeline", "timeline_steps"}


def check_process_count(strategy: str, size: int, servers: int = 1) -> None:
    """Refuse a process count the strategy cannot use (``servers``: ``--servers``), before
    any work."""
    if strategy == "serial" and size > 1:
        raise UsageError(
            f"--strategy serial runs on one process, but this job has {size}: pick --strategy "
            f"allreduce ({size} workers), ps-sync or ps-async (1 server + {size - 1} "
            f"worker{'s' if size > 2 else ''}), "
            "or run without --procs")
    if strategy in SERVER_STRATEGIES and size < 2:
        raise UsageError(
            f"--strategy {strategy} needs at least 2 processes (1 server + 1 worker); "
            f"got {size}: use --procs 2 or more")
    if strategy in SERVER_STRATEGIES and servers >= size:
        raise UsageError(
            f"--servers {servers} leaves no worker among the {size} processes: --strategy "
            f"{strategy} needs at least one worker; use --servers {size - 1} or fewer, or "
            f"--procs {servers + 1} or more")


def _resumed_config(resume_dir: str, settings: dict):
    """The checkpoint in ``resume_dir`` and its config, with ``--epochs`` overridden if given."""
    from distnn.checkpoint import load_checkpoint

    if "out" in settings and Path(settings.pop("out")).resolve() != Path(resume_dir).resolve():
        raise UsageError("--resume writes into the run directory it continues; drop --out or "
                         "give the same directory")
    if settings.pop("overwrite", False):
        raise UsageError(f"--resume continues the run in {resume_dir} and --overwrite would "
                         "replace it; give one of them")
    changed = sorted(set(settings) - RESUMABLE_CHANGES)
    if changed:
        flags = ", ".join(map(flag_of, changed))
        raise UsageError(f"--resume continues the saved configuration; only --epochs, --procs, "
                         f"--servers (ps-sync), --sync, --threads, --stall-timeout, "
                         f"--timeline, --timeline-steps and --quiet may be given (got {flags})")
    checkpoint = load_checkpoint(Path(resume_dir))
    saved = dict(checkpoint["config"])
    saved["hidden"] = tuple(saved.get("hidden", ()))
    for name in ("timeline", "timeline_steps"):
        saved.pop(name, None)
    try:
        config = make_config(saved.pop("preset", "default"), **{**saved, **settings,
                                                                 "out": resume_dir})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--resume: {checkpoint['path']} holds a config this version cannot "
                         f"read ({exc})") from exc
    servers = checkpoint["config"].get("servers", 1)
    if config.strategy == "ps-async" and config.servers != servers:
        raise UsageError(f"--resume: {checkpoint['path']} was written by ps-async with "
                         f"{servers} server{'s' if servers > 1 else ''}, which keep their update "
                         f"and staleness counters per shard; resume with --servers {servers} "
                         "(ps-sync runs may change --servers)")
    if config.combine == "models":
        raise UsageError(f"--resume cannot continue {resume_dir}: it averaged models "
                         "(--combine models), where every worker keeps its own velocity, and a "
                         "checkpoint holds only one; start a new run, or use --combine gradients")
    epoch, epoch_step = checkpoint["epoch"], checkpoint.get("epoch_step", 0)
    if config.epochs < epoch or (epoch_step and config.epochs == epoch):
        reached = f"epoch {epoch}" + (f" and {epoch_step} steps of the next" if epoch_step else "")
        raise UsageError(f"--epochs {config.epochs} is before the checkpoint, which reached "
                         f"{reached}; give --epochs {epoch + 1} or more")
    return config, checkpoint


def resolve_config(settings: dict):
    """The run's config from flags, ``--config`` and presets, or from the checkpoint of
    ``--resume``; returns ``(config, checkpoint or None)``."""
    settings = dict(settings)
    for name in ("command", "quiet"):
        settings.pop(name, None)
    resume_dir = settings.pop("resume", None)
    if resume_dir is not None:
        return _resumed_config(resume_dir, settings)
    from distnn.config import read_config_file

    settings.pop("overwrite", None)
    from_file = read_config_file(settings.pop("config")) if "config" in settings else {}
    preset = settings.pop("preset", from_file.pop("preset", "default"))
    given = {**from_file, **settings}
    config = make_config(preset, **given)
    check_given_apply(config, given)
    return config, None


def _setup(settings: dict, comm, procs: int | None):
    """Config, data, checkpoint and (rank 0) the unclaimed run directory; raises UsageError
    with the first problem. Creates nothing."""
    from distnn.data import load_dataset
    from distnn.rundir import RunDirectory, check_target
    from distnn.train import check_fits

    config, checkpoint = resolve_config(settings)
    if procs is not None and procs != comm.Get_size():
        raise UsageError(f"--procs {procs} but this MPI job has {comm.Get_size()} processes")
    config = config.replace(procs=comm.Get_size())
    check_process_count(config.strategy, comm.Get_size(), config.servers)
    if not config.shared_memory and comm.Get_size() == 1:
        raise UsageError("--no-shared-memory applies to runs on several processes; drop it")
    roles = Roles.of(config.strategy, comm.Get_size(), config.servers)
    dataset = load_dataset(config.data, share=roles.share_of(comm.Get_rank()))
    config = recipes.fit_to_data(config, dataset.x_train.shape[0])
    check_fits(config, dataset, comm.Get_size())
    if checkpoint is not None:
        from distnn.checkpoint import check_resumable

        check_resumable(checkpoint, config, dataset, comm.Get_size())
    run = None
    if comm.Get_rank() == 0:
        resume = checkpoint is not None
        overwrite = bool(settings.get("overwrite"))
        out = Path(config.out) if config.out else None
        check_target(out, resume=resume, overwrite=overwrite)
        if config.timeline is not None:
            _check_timeline(config, dataset, checkpoint, out, settings.get("config"))
        run = RunDirectory(out, config.strategy,
                           resume_epoch=checkpoint["epoch"] if resume else None,
                           overwrite=overwrite)
    return config, dataset, run, checkpoint


def _check_timeline(config, dataset, checkpoint, out: Path | None, config_file) -> None:
    """``--timeline``'s path and window, before any work (rank 0)."""
    from distnn import timeline

    inputs = timeline.dataset_files(config.dataset) + ([config_file] if config_file else [])
    timeline.check_output(config.timeline, out, inputs)
    per_epoch = timeline.steps_per_epoch(config, dataset.x_train.shape[0])
    first = 0 if checkpoint is None else (checkpoint["epoch"] * per_epoch
                                          + checkpoint.get("epoch_step", 0))
    timeline.window(config.timeline_steps, first, config.epochs * per_epoch)


def _first_failure(comm, failure: UsageError | None):
    """Agreement step: every rank learns the first rank's refusal (message, exit code)."""
    failures = comm.allgather(None if failure is None else (str(failure), failure.exit_code))
    return next((item for item in failures if item is not None), None)


def _agreed_exit(code: int, stop) -> int:
    """Every rank stops with ``code`` (after an agreement step, or on an error every rank
    raised alike): finalize MPI first, so that ``python -m mpi4py`` does not turn the
    non-zero exit into ``MPI_Abort``. If a peer never reaches ``MPI_Finalize`` (it died),
    this rank exits anyway after ``FINALIZE_TIMEOUT_S``. The stop signals are ignored from
    here on (``StopRequest.settle``)."""
    from mpi4py import MPI

    stop.settle()

    if MPI.COMM_WORLD.Get_size() > 1 and not MPI.Is_finalized():
        watchdog = threading.Timer(FINALIZE_TIMEOUT_S, os._exit, args=(code,))
        watchdog.daemon = True
        watchdog.start()
        MPI.Finalize()
        watchdog.cancel()
    return code


def train_on_ranks(settings: dict, procs: int | None, blas_threads: int) -> int:
    """``distnn train`` on every rank of ``MPI.COMM_WORLD``; returns the exit status."""
    from mpi4py import MPI

    from distnn.interrupt import StopRequest
    from distnn.parallel.shared_memory import unlink_job_segments

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    unlink_job_segments(comm)
    if rank == 0:
        note_started()
        note_launcher_residue()
    stop = StopRequest().install()
    try:
        return _run(settings, procs, comm, stop, threads.limit(blas_threads))
    finally:
        if not stop.settled:    # settled: the process is ending, the signals stay ignored
            stop.restore()
        if rank == 0:
            forget_orphaned_job()


def _agree_to_start(settings: dict, procs: int | None, comm):
    """Set up on every rank and claim the run directory; returns ``(config, dataset, run,
    checkpoint)``, or the first rank's refusal as ``(message, exit code)``."""
    failure = run = config = dataset = checkpoint = None
    try:
        config, dataset, run, checkpoint = _setup(settings, comm, procs)
    except UsageError as exc:
        failure = exc
    except OSError as exc:
        failure = UsageError(os_error(exc))
    first = _first_failure(comm, failure)
    if first is None and run is not None:
        try:
            config = config.replace(out=str(run.claim()))
        except UsageError as exc:
            failure = exc
        except OSError as exc:
            failure = UsageError(f"--out: {os_error(exc)}")
        first = _first_failure(comm, failure)
    else:
        first = first or _first_failure(comm, None)
    return (config, dataset, run, checkpoint), first


def _run(settings: dict, procs: int | None, comm, stop, blas_threads: int) -> int:
    rank, size = comm.Get_rank(), comm.Get_size()
    quiet = bool(settings.get("quiet"))
    (config, dataset, run, checkpoint), first = _agree_to_start(settings, procs, comm)
    if first is not None:
        if rank == 0:
            report(first[0])
        return _agreed_exit(first[1], stop)

    from distnn.interrupt import Interrupted
    from distnn.progress import Progress
    from distnn.train import train

    try:
        progress = Progress(enabled=rank == 0 and not quiet)
        if run is not None:
            run.write_config(config)
            progress.message(recipes.describe(config))
            empty = _classes_without_rows(dataset)
            if empty:
                progress.warn(f"classes {empty} have no training rows (do the labels start at "
                              "1? they are taken as 0..K-1); the model still has an output for "
                              "each")
        model, result = train(config, comm, dataset, run=run, progress=progress,
                              checkpoints=True, resume=checkpoint, stop=stop)
        if run is not None:
            run.save_model(model)
            run.write_result({"config": config.to_dict(), "blas_threads": blas_threads, **result})
            print(("" if quiet else _summary(config, result, size)) + f"run saved in {run.path}",
                  flush=True)
        return _agreed_exit(0, stop) if size > 1 else 0
    except Interrupted as stopped:
        if run is not None:
            run.save_model(stopped.model)
            sys.stderr.write(f"distnn: {stopped}; the model is saved in {run.path}; continue "
                             f"with: distnn train --resume {run.path}\n")
        return _agreed_exit(EXIT_INTERRUPTED, stop)
    except UsageError as exc:
        # Raised inside training on every rank alike (divergence is seen in reduced
        # metrics; a checkpoint that does not fit the data, by every rank).
        if rank == 0:
            report(str(exc))
        return _agreed_exit(exc.exit_code, stop)
    except KeyboardInterrupt:
        # Rank 0 explains (it alone knows the run directory). Another rank waits first: its
        # abort ends every rank, rank 0 too, maybe before rank 0 has said a word; if rank 0
        # was not interrupted itself, that rank says it.
        if rank == 0:
            where = f"; the last checkpoint in {run.path} is kept" if run is not None else ""
            report(f"interrupted again: stopped at once{where}")
        else:
            time.sleep(ABORT_GRACE_S)
            report("interrupted again: stopped at once", rank, size)
        if size > 1:
            comm.Abort(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = f"the run directory {run.path}" if run is not None else "a file"
        report(f"{where} cannot be written any more ({os_error(exc)}); training stopped, "
               "the last checkpoint is kept if the directory still exists", rank, size)
        if size > 1:
            time.sleep(ABORT_GRACE_S)
            comm.Abort(1)
        return 1
    except BaseException:
        report("unexpected failure\n" + traceback.format_exc(), rank, size)
        if size > 1:
            # Hydra kills every rank and exits as soon as one aborts; output still in the
            # pipe to its proxy is lost (2 runs in 80 here lost the whole traceback; with
            # this pause, none in 155).
            time.sleep(ABORT_GRACE_S)
            comm.Abort(1)
        return 1
    finally:
        if run is not None:
            run.release()


def _summary(config, result: dict, size: int) -> str:
    final = result["final"]
    return (f"{config.strategy} on {size} process{'es' if size > 1 else ''} "
            f"({result['workers']} worker{'s' if result['workers'] > 1 else ''}): "
            f"{_epochs_run(result, config.epochs)} in {result['train_time_s']:.2f} s, "
            f"test accuracy {final['test_accuracy']:.4f}; ")


def _epochs_run(result: dict, epochs: int) -> str:
    """'500 epochs', or 'epochs 1000 to 1500' for a resumed run (the time covers those)."""
    first = result.get("resumed_from_epoch")
    if first is None:
        return f"{epochs} epoch{'s' if epochs != 1 else ''}"
    return f"epochs {first} to {epochs}"


def _classes_without_rows(dataset) -> str:
    """'0' or '0, 3, ...' for the classes below the largest label with no training row."""
    import numpy as np

    counts = np.bincount(np.asarray(dataset.y_train), minlength=dataset.n_classes)
    empty = np.flatnonzero(counts == 0)
    return ", ".join(map(str, empty[:5])) + (", ..." if empty.size > 5 else "")
