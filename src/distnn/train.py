"""The training loop every strategy shares.

The distributed differences live entirely in ``strategy.step``; everything here is the
same for one process or many: epochs, evaluation, metrics, timing, the result record.
"""

import hashlib
import math
import time

import numpy as np
from mpi4py import MPI

from distnn import recipes
from distnn.checkpoint import CHECKPOINT_NAME, save_checkpoint
from distnn.config import TrainConfig
from distnn.data import BatchSampler, Dataset, worker_range
from distnn.data.standardize import feature_statistics
from distnn.errors import UsageError
from distnn.interrupt import CHECK_EVERY, Interrupted, NoStop, StopRequest
from distnn.learning import LearningMonitor
from distnn.memory import mapped_npy_rss_mb, peak_rss_mb
from distnn.nn import MLP
from distnn.nn import kernels as kernel_choice
from distnn.optim import SGD
from distnn.parallel import STRATEGIES
from distnn.parallel.comm import allreduce_sum, mpi_type, wait_politely
from distnn.parallel.stall import StallWatch, attach, detach, watch_of
from distnn.parallel.timing import PHASES, PhaseTimer
from distnn.progress import Progress


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite; nothing after that point is worth keeping."""

    exit_code = 3


def check_fits(config: TrainConfig, dataset: Dataset, size: int) -> None:
    """Errors that need the data and the process count; identical on every rank, but for
    ``--kernels fused`` where a rank cannot import numba (the callers agree on the first
    rank's refusal before anything is created)."""
    if config.kernels == "fused" and kernel_choice.fused_error() is not None:
        raise UsageError(f"--kernels fused needs numba, and {kernel_choice.fused_error()}: "
                         f"install it with {kernel_choice.INSTALL}, or use --kernels numpy "
                         "or auto")
    strategy = STRATEGIES[config.strategy]
    if strategy.has_server and size < 2:
        raise UsageError(
            f"--strategy {config.strategy} needs at least 2 processes (1 server + 1 worker); "
            f"got {size}: use --procs 2 or more"
        )
    workers = strategy.n_workers(size)
    n_train = dataset.x_train.shape[0]
    if n_train < workers:
        raise UsageError(f"the training set has {n_train} samples, fewer than the {workers} workers")
    if config.batch_size is not None and config.batch_size < workers:
        raise UsageError(
            f"--batch-size ({config.batch_size}) must be at least the number of workers ({workers})"
        )
    if workers > 1 and config.data_shards not in (1, workers):
        raise UsageError(f"--data-shards {config.data_shards} must be 1 or the number of "
                         f"workers ({workers}), so that each worker reads one shard")
    if config.data_shards > min(n_train, config.batch_size or n_train):
        raise UsageError(f"--data-shards {config.data_shards} is more than the "
                         f"{min(n_train, config.batch_size or n_train)} samples of a batch")
    # A model that cannot fit is refused before any rank allocates it: a width of 10**8,
    # or a label of 10**6 (one output per class), would end in a MemoryError mid-setup.
    from distnn.guards import check_memory, local_processes, model_memory_bytes

    sizes = (dataset.n_features, *config.hidden, dataset.n_classes)
    rows = config.batch_size or n_train
    check_memory(model_memory_bytes(sizes, rows, np.dtype(config.dtype).itemsize),
                 f"the model {'-'.join(map(str, sizes))} ({config.dtype}, batches of {rows})",
                 "use smaller --hidden widths, fewer classes, or fewer processes per machine",
                 processes=local_processes(size))


def evaluate(comm: MPI.Comm, model: MLP, dataset: Dataset, worker: int | None = None,
             n_workers: int | None = None) -> dict:
    """Loss and accuracy on train and test data, each worker scoring an equal, contiguous
    share (by default every rank is a worker; a parameter server, ``worker=None`` with
    ``n_workers`` given, scores nothing). Contiguous shares keep the rows a worker reads
    close to its data shard (``--data-shards``)."""
    if n_workers is None:
        worker, n_workers = comm.Get_rank(), comm.Get_size()
    sums = []
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        start, stop = (0, 0) if worker is None else worker_range(x.shape[0], n_workers, worker)
        sums.extend(model.evaluate_sum(x[start:stop], y[start:stop]))
    train_loss, train_correct, test_loss, test_correct = allreduce_sum(
        comm, sums, watch_of(comm), "the evaluation's sums")
    n_train, n_test = dataset.x_train.shape[0], dataset.x_test.shape[0]
    return {
        "train_loss": train_loss / n_train,
        "train_accuracy": train_correct / n_train,
        "test_loss": test_loss / n_test,
        "test_accuracy": test_correct / n_test,
    }


def train(config: TrainConfig, comm: MPI.Comm, dataset: Dataset, **options) -> tuple[MLP, dict]:
    """Train on every rank of ``comm`` (see ``_train`` for ``options``). NumPy's overflow
    and invalid-value warnings are silenced: a diverging run is detected from its loss
    and parameters and reported once, not as a screenful of warnings from every rank."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _train(config, comm, dataset, **options)


def _train(config: TrainConfig, comm: MPI.Comm, dataset: Dataset, run=None,
          progress: Progress | None = None, checkpoints: bool = False,
          resume: dict | None = None, stop: StopRequest | None = None) -> tuple[MLP, dict]:
    """Train on every rank of ``comm``; returns the model and (on rank 0) the result record.

    ``run`` (a RunDirectory, rank 0 only) receives one metrics record per evaluation and,
    when ``checkpoints`` is set (on every rank), a checkpoint every
    ``config.checkpoint_every`` epochs and at the end. ``resume`` (a loaded checkpoint,
    identical on every rank) continues a run exactly where it stopped. ``stop`` (installed
    by the caller) ends training at a step boundary all ranks agree on: the strategy is
    finished, a checkpoint written (with ``checkpoints``) and ``Interrupted`` raised, carrying
    the model.
    """
    config = recipes.fit_to_data(config, dataset.x_train.shape[0])
    check_fits(config, dataset, comm.Get_size())
    sizes = [dataset.n_features, *config.hidden, dataset.n_classes]
    kernels_s = time.perf_counter()    # importing numba and loading the kernels: not training
    model = MLP(sizes, dtype=config.dtype, init=config.init, seed=config.seed,
                kernels=agreed_kernels(comm, config.kernels, sizes,
                                       config.epochs * dataset.x_train.shape[0]))
    optimizer = SGD(model.params, lr=config.lr, lr_decay=config.lr_decay,
                    momentum=config.momentum)
    if model.kernels != "numpy":
        from distnn.nn.fused import sgd_momentum_step

        optimizer.fused_update = sgd_momentum_step
    kernels_s = time.perf_counter() - kernels_s
    n_train = dataset.x_train.shape[0]
    batch_size = config.batch_size if config.batch_size and config.batch_size < n_train else None
    sampler = BatchSampler(n_train, batch_size, config.seed,
                           shuffle=config.shuffle and batch_size is not None,
                           shards=config.data_shards)
    progress = progress or Progress(enabled=False)
    progress.configure(config.epochs, sampler.steps_per_epoch, n_train)
    timer = PhaseTimer()
    watch = StallWatch(comm, config.stall_timeout)
    attach(comm, watch)              # every wait of the strategy is bounded by it
    strategy = STRATEGIES[config.strategy].from_config(config, comm, model, optimizer, dataset,
                                                       timer)
    if config.standardize:
        model.set_input_transform(*feature_statistics(
            comm, dataset.x_train, strategy.worker_index, strategy.n_workers(comm.Get_size())))
    warm_up = time.perf_counter()
    model.warm_up(dataset.x_train, dataset.y_train)   # compiles, or loads numba's cache
    kernels_s = comm.allreduce(kernels_s + time.perf_counter() - warm_up, op=MPI.MAX)
    first_epoch, first_step = 0, 0
    if resume is not None:
        first_epoch, first_step = restore(resume, model, optimizer, strategy)
    comm.Bcast([model.params, mpi_type(model.dtype)], root=0)

    records = []
    updates_per_epoch = strategy.updates_per_epoch(sampler)
    overhead_s = 0.0   # evaluation and checkpoints: not training time
    checkpoint_every = config.checkpoint_every or config.eval_every

    saved = [first_epoch] if resume is not None else []   # epochs checkpointed

    def kept() -> str:
        if not checkpoints:
            return "nothing was saved"
        if not saved:
            return "no checkpoint was written before it"
        return f"the last good checkpoint, from epoch {saved[-1]}, is kept"

    def record_evaluation(epoch: int, elapsed: float) -> None:
        # Rank 0, the only rank that records, holds the optimizer that stepped.
        record = {"epoch": epoch, "step": optimizer.iterations, "lr": optimizer.current_lr,
                  **evaluate(comm, model, dataset, strategy.worker_index,
                             strategy.n_workers(comm.Get_size())),
                  "elapsed_s": elapsed,
                  "peak_rss_mb": comm.allreduce(peak_rss_mb(), op=MPI.MAX),
                  **strategy.statistics()}
        records.append(record)
        if run is not None:
            run.append_metrics(record)
        progress.evaluation(record)
        warning = learning.check(record)
        if warning is not None and comm.Get_rank() == 0:
            progress.warn(warning)
        if not math.isfinite(record["train_loss"]):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the train loss is {record['train_loss']}; "
                f"lower --lr or raise --lr-decay ({kept()})"
            )

    def write_checkpoint(epoch: int, epoch_step: int = 0) -> None:
        if not np.all(np.isfinite(model.params)):
            raise TrainingDiverged(f"training diverged before epoch {epoch}: the parameters "
                                   f"hold NaN or infinity ({kept()})")
        if run is not None:
            save_checkpoint(run.path / CHECKPOINT_NAME, config=config, epoch=epoch, model=model,
                            optimizer=optimizer, strategy_state=strategy.state_dict(),
                            epoch_step=epoch_step)
        saved.append(epoch)
        wait_politely(comm.Ibarrier(), watch, "rank 0 to write the checkpoint")

    stop = stop or NoStop()
    steps_per_epoch = sampler.steps_per_epoch

    def before_step(epoch: int, step: int) -> bool:
        """Called before every step (ps-async: every update on the server): shows progress
        and, every ``CHECK_EVERY`` global steps, agrees whether to stop (collective)."""
        progress.step(epoch, step)
        watch.epoch, watch.step = epoch, step
        if strategy.recent_loss is not None:
            progress.batch_loss(strategy.recent_loss)
            strategy.recent_loss = None
        # --timing original: every step's forward pass also yields its loss and accuracy,
        # as the original's serial loop computed them every epoch inside its timer.
        strategy.measure_loss = progress.wants_loss or original_timing
        if not strategy.stops_mid_epoch:
            return False
        global_step = epoch * steps_per_epoch + step
        return global_step % CHECK_EVERY == 0 and stop.agreed(comm)

    def interrupt(epoch: int, epoch_step: int) -> None:
        progress.close()
        strategy.synchronize()
        if checkpoints:
            write_checkpoint(epoch, epoch_step)
        strategy.finish()
        detach(comm)
        error = Interrupted(epoch, epoch_step)
        error.model = model
        raise error

    learning = LearningMonitor(dataset.n_classes, config)
    original_timing = config.timing == "original"
    comm.Barrier()
    started = time.perf_counter()
    timer.restart()
    progress.start(first_epoch, first_step)
    if config.epochs == first_epoch:
        record_evaluation(first_epoch, 0.0)
        if checkpoints:
            write_checkpoint(first_epoch, first_step)
    for epoch in range(first_epoch + 1, config.epochs + 1):
        stopped_at = strategy.run_epoch(
            sampler, epoch - 1, first_step if epoch == first_epoch + 1 else 0,
            (lambda step, epoch=epoch: before_step(epoch - 1, step)))
        if stopped_at is not None:
            interrupt(epoch - 1, stopped_at)
        if not strategy.stops_mid_epoch and epoch < config.epochs and stop.agreed(comm):
            interrupt(epoch, 0)
        evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
        checkpoint_now = checkpoints and (epoch % checkpoint_every == 0 or epoch == config.epochs)
        if evaluate_now or checkpoint_now:
            pause = time.perf_counter()
            strategy.synchronize()
            if evaluate_now:
                record_evaluation(epoch, pause - started - overhead_s)
            if original_timing:
                pause = time.perf_counter()    # the original timed its evaluations too
            if checkpoint_now:
                write_checkpoint(epoch)
            overhead_s += time.perf_counter() - pause
            timer.restart()
        training_s = time.perf_counter() - started - overhead_s
        progress.epoch_done(epoch, (epoch - first_epoch) * n_train / max(training_s, 1e-9))
    train_time = time.perf_counter() - started - overhead_s
    progress.close()
    stats = strategy.finish()
    detach(comm)
    digest = check_replicas_agree(comm, model)

    times = comm.gather({"rank": comm.Get_rank(), "train_time_s": train_time,
                         **{f"{phase}_s": timer.seconds[phase] for phase in PHASES},
                         "peak_rss_mb": peak_rss_mb(), "data_rss_mb": mapped_npy_rss_mb()},
                         root=0)
    slowest = comm.allreduce(train_time, op=MPI.MAX)
    if comm.Get_rank() != 0:
        return model, {}
    epochs_run = config.epochs - first_epoch
    result = {
        "strategy": config.strategy,
        "processes": comm.Get_size(),
        "workers": strategy.n_workers(comm.Get_size()),
        "epochs": config.epochs,
        "resumed_from_epoch": first_epoch if resume is not None else None,
        "steps": config.epochs * updates_per_epoch,
        "train_time_s": slowest,
        "timing": config.timing,
        "samples_per_s": epochs_run * n_train / slowest if slowest > 0 else None,
        "final": records[-1],
        "ranks": times,
        "params_sha256": digest,
        "kernels": {"requested": config.kernels, "used": model.kernels,
                    "numba": kernel_choice.numba_version() if model.kernels != "numpy" else None,
                    "setup_s": kernels_s},
        "warnings": learning.warnings,
        **stats,
    }
    return model, result


def agreed_kernels(comm: MPI.Comm, requested: str, sizes, samples: float | None = None) -> str:
    """The compute path every rank will take (collective): the same on all of them, or
    the synchronous strategies would no longer equal serial. ``auto`` falls back to NumPy
    unless every rank can import numba (and for runs of few ``samples``, see
    ``kernels.resolve``); ``fused`` is refused if any rank cannot."""
    if requested == "numpy" or kernel_choice.resolve(requested, sizes, True, samples) == "numpy":
        return "numpy"
    errors = comm.allgather(kernel_choice.fused_error())
    missing = [rank for rank, error in enumerate(errors) if error is not None]
    if missing and requested == "fused":
        ranks = ", ".join(map(str, missing))
        raise UsageError(f"--kernels fused needs numba on every rank; rank(s) {ranks} cannot "
                         f"use it ({errors[missing[0]]}): install it with "
                         f"{kernel_choice.INSTALL}, or use --kernels numpy or auto")
    return kernel_choice.resolve(requested, sizes, available=not missing, samples=samples)


def restore(checkpoint: dict, model: MLP, optimizer: SGD, strategy) -> tuple[int, int]:
    """Load a checkpoint into this rank's objects; returns the epochs it completed and the
    steps it took into the next one (non-zero after an interrupt)."""
    if checkpoint["sizes"] != model.sizes:
        raise UsageError(f"--resume: {checkpoint['path']} holds a {checkpoint['sizes']} model, "
                         f"this data and config need {model.sizes}")
    model.params[...] = checkpoint["params"]
    optimizer.load_state_dict({"lr": optimizer.lr, "lr_decay": optimizer.lr_decay,
                               "momentum": optimizer.momentum,
                               "iterations": checkpoint["iterations"],
                               "velocity": checkpoint["velocity"]})
    strategy.load_state_dict(checkpoint["strategy"])
    return checkpoint["epoch"], checkpoint.get("epoch_step", 0)



def check_replicas_agree(comm: MPI.Comm, model: MLP) -> str:
    """SHA-256 of the final parameters, which must be the same on every rank."""
    digest = hashlib.sha256(np.ascontiguousarray(model.params).tobytes()).hexdigest()
    digests = comm.allgather(digest)
    if len(set(digests)) != 1:
        differing = [rank for rank, other in enumerate(digests) if other != digests[0]]
        raise RuntimeError(f"replicas diverged: ranks {differing} hold parameters that differ "
                           "from rank 0's")
    return digest
