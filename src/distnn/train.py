"""The training loop every strategy shares, in three parts: ``setup`` builds one rank's
objects, ``Loop`` runs epochs (evaluation, metrics, checkpoints, stopping), ``summary``
makes the result record.

The distributed differences live entirely in the strategy; everything here is the same
for one process or many.
"""

import hashlib
import math
import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from distnn import recipes, timeline
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
from distnn.nn.layers import ACTIVATIONS
from distnn.optim import REGISTRY, Optimizer, Schedule
from distnn.parallel import STRATEGIES, clocks
from distnn.parallel.comm import allreduce_max, allreduce_sum, mpi_type, wait_politely
from distnn.parallel.stall import StallWatch, attach, detach, watch_of
from distnn.parallel.strategy import Strategy
from distnn.parallel.timing import PhaseTimer, RecordingTimer
from distnn.progress import Progress
from distnn.roles import Roles


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite; nothing after that point is worth keeping."""

    exit_code = 3


def check_fits(config: TrainConfig, dataset: Dataset, size: int) -> None:
    """Errors that need the data and the process count; identical on every rank, but for
    ``--kernels fused`` where a rank cannot import numba (the callers agree on the first
    rank's refusal before anything is created)."""
    if config.kernels == "fused":
        if not kernel_choice.computes(config.activation, config.dropout, config.label_smoothing):
            raise UsageError(f"--kernels fused: {kernel_choice.NOT_PLAIN} (got --activation "
                             f"{config.activation}, --dropout {config.dropout:g}, "
                             f"--label-smoothing {config.label_smoothing:g}); use "
                             "--kernels numpy or auto")
        if kernel_choice.fused_error() is not None:
            raise UsageError(f"--kernels fused needs numba, and {kernel_choice.fused_error()}: "
                             f"install it with {kernel_choice.INSTALL}, or use --kernels "
                             "numpy or auto")
    roles = Roles.of(config.strategy, size, config.servers)
    if config.strategy in ("ps-sync", "ps-async") and size < 2:
        raise UsageError(
            f"--strategy {config.strategy} needs at least 2 processes (1 server + 1 worker); "
            f"got {size}: use --procs 2 or more"
        )
    if roles.servers and roles.n_workers < 1:
        raise UsageError(f"--servers {config.servers} leaves no worker among the {size} "
                         f"processes; use --servers {size - 1} or fewer")
    workers = roles.n_workers
    n_train = dataset.x_train.shape[0]
    if n_train < workers:
        raise UsageError(f"the training set has {n_train} samples, fewer than the {workers} workers")
    if config.batch_size is not None and config.batch_size < workers:
        raise UsageError(
            f"--batch-size ({config.batch_size}) must be at least the number of workers ({workers})"
        )
    if config.deterministic:
        batch = min(config.batch_size or n_train, n_train)
        if config.micro_batches < workers:
            raise UsageError(
                f"--micro-batches ({config.micro_batches}) must be at least the number of "
                f"workers ({workers}) with --deterministic: each micro-batch is computed whole "
                f"on one worker; raise it to {workers} or more (the results depend on it: keep "
                "the same value for every run you compare)")
        if config.micro_batches > batch:
            raise UsageError(f"--micro-batches ({config.micro_batches}) must be at most the "
                             f"global batch ({batch} samples) with --deterministic")
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
    if roles.servers > MLP.parameter_count(sizes):
        raise UsageError(f"--servers {config.servers} is more than the "
                         f"{MLP.parameter_count(sizes)} parameters of the model "
                         f"{'-'.join(map(str, sizes))}: every server needs a shard of them")
    rows = config.batch_size or n_train
    itemsize = np.dtype(config.dtype).itemsize
    vectors = REGISTRY[config.optimizer].memory_vectors
    if config.deterministic:
        # Serial adds the micro-batches' sums as it goes (one vector more); the other
        # strategies hold a row per micro-batch (shared by a node's ranks, or not).
        vectors += 1 if config.strategy == "serial" else config.micro_batches
    # An activation's own buffers; dropout's factors and its 8-byte hashes.
    layer_buffers = ACTIVATIONS[config.activation].buffers + (1 + 8 // itemsize) * (config.dropout > 0)
    check_memory(model_memory_bytes(sizes, rows, itemsize, vectors, layer_buffers),
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


@dataclass
class Job:
    """One rank's objects for one run, built by ``setup``."""

    config: TrainConfig
    comm: MPI.Comm
    dataset: Dataset
    roles: Roles
    model: MLP
    optimizer: Optimizer
    strategy: Strategy
    sampler: BatchSampler
    timer: PhaseTimer
    watch: StallWatch
    updates_per_epoch: int
    kernels_s: float = 0.0   # importing numba, compiling or loading the kernels (max over ranks)


def setup(config: TrainConfig, comm: MPI.Comm, dataset: Dataset) -> Job:
    """Build this rank's model, optimizer and strategy (collective).

    The strategy first places the flat buffers (``Strategy.place``: shared memory on one
    node, the optimizer state only where updates are applied), then the model and the
    optimizer are built on them, so nothing is allocated twice or moved afterwards.
    """
    config = recipes.fit_to_data(config, dataset.x_train.shape[0])
    check_fits(config, dataset, comm.Get_size())
    roles = Roles.of(config.strategy, comm.Get_size(), config.servers)
    n_train = dataset.x_train.shape[0]
    batch_size = config.batch_size if config.batch_size and config.batch_size < n_train else None
    sampler = BatchSampler(n_train, batch_size, config.seed,
                           shuffle=config.shuffle and batch_size is not None,
                           shards=config.data_shards)
    strategy_class, optimizer_class = STRATEGIES[config.strategy], REGISTRY[config.optimizer]
    watch = StallWatch(comm, config.stall_timeout)
    attach(comm, watch)              # every wait of the strategy is bounded by it
    sizes = [dataset.n_features, *config.hidden, dataset.n_classes]
    placement = strategy_class.place(comm, roles, MLP.parameter_count(sizes), config.dtype,
                                     optimizer_class.state_names, config)
    kernels_s = time.perf_counter()
    plain = kernel_choice.computes(config.activation, config.dropout, config.label_smoothing)
    model = MLP(sizes, dtype=config.dtype, init=config.init, seed=config.seed,
                params=placement.params, grads=placement.grads, activation=config.activation,
                dropout=config.dropout, label_smoothing=config.label_smoothing,
                kernels=agreed_kernels(comm, config.kernels, sizes, config.epochs * n_train,
                                       plain))
    kernels_s = time.perf_counter() - kernels_s
    if placement.shared is not None:
        # Every rank initialises the shared parameters alike; all those writes must land
        # before any rank restores a checkpoint into them or broadcasts them.
        placement.shared.fence()
    updates_per_epoch = strategy_class.updates_per_epoch(sampler, roles)
    schedule = Schedule.from_config(config, updates_per_epoch, sampler.batch_size)
    # A parameter server's optimizer owns its shard of the parameters alone.
    optimizer = optimizer_class.from_config(config, placement.params[placement.owned],
                                            placement.state, schedule)
    if model.kernels != "numpy":
        from distnn.nn import fused

        optimizer.accelerate(fused)
    timer = RecordingTimer() if config.timeline is not None else PhaseTimer()
    strategy = strategy_class(comm, roles, model, optimizer, dataset, timer, placement, config)
    if config.timeline is not None:
        timer.follow(strategy)
    if config.standardize:
        model.set_input_transform(*feature_statistics(
            comm, dataset.x_train, strategy.worker_index, roles.n_workers))
    warm_up = time.perf_counter()
    model.warm_up(dataset.x_train, dataset.y_train)   # compiles, or loads numba's cache
    kernels_s = comm.allreduce(kernels_s + time.perf_counter() - warm_up, op=MPI.MAX)
    return Job(config, comm, dataset, roles, model, optimizer, strategy, sampler, timer, watch,
               updates_per_epoch, kernels_s)


def agreed_kernels(comm: MPI.Comm, requested: str, sizes, samples: float | None = None,
                   plain: bool = True) -> str:
    """The compute path every rank will take (collective): the same on all of them, or
    the synchronous strategies would no longer equal serial. ``auto`` falls back to NumPy
    unless every rank can import numba (and for short runs and models the fused kernels
    do not compute, see ``kernels.resolve``); ``fused`` is refused if any rank cannot."""
    if kernel_choice.resolve(requested, sizes, True, samples, plain) == "numpy":
        return "numpy"
    errors = comm.allgather(kernel_choice.fused_error())
    missing = [rank for rank, error in enumerate(errors) if error is not None]
    if missing and requested == "fused":
        ranks = ", ".join(map(str, missing))
        raise UsageError(f"--kernels fused needs numba on every rank; rank(s) {ranks} cannot "
                         f"use it ({errors[missing[0]]}): install it with "
                         f"{kernel_choice.INSTALL}, or use --kernels numpy or auto")
    return kernel_choice.resolve(requested, sizes, not missing, samples, plain)


def restore(checkpoint: dict, job: Job) -> tuple[int, int]:
    """Load a checkpoint into this rank's objects; returns the epochs it completed and the
    steps it took into the next one (non-zero after an interrupt)."""
    if checkpoint["sizes"] != job.model.sizes:
        raise UsageError(f"--resume: {checkpoint['path']} holds a {checkpoint['sizes']} model, "
                         f"this data and config need {job.model.sizes}")
    job.model.params[...] = checkpoint["params"]
    job.optimizer.load_state_dict({"iterations": checkpoint["iterations"],
                                   "state": checkpoint["optimizer"]},
                                  part=job.strategy.placement.owned)
    job.strategy.load_state_dict(checkpoint["strategy"])
    return checkpoint["epoch"], checkpoint.get("epoch_step", 0)


def train(config: TrainConfig, comm: MPI.Comm, dataset: Dataset, run=None,
          progress: Progress | None = None, checkpoints: bool = False,
          resume: dict | None = None, stop: StopRequest | None = None) -> tuple[MLP, dict]:
    """Train on every rank of ``comm``; returns the model and (on rank 0) the result record.

    ``run`` (a RunDirectory, rank 0 only) receives one metrics record per evaluation and,
    when ``checkpoints`` is set (on every rank), a checkpoint every
    ``config.checkpoint_every`` epochs and at the end; with ``config.timeline``, rank 0
    writes the trace there (a bare name; without ``run``, in the working directory).
    ``resume`` (a loaded checkpoint, identical on every rank) continues a run exactly where
    it stopped. ``stop`` (installed by the caller) ends training at a step boundary all
    ranks agree on: the strategy is finished, a checkpoint written (with ``checkpoints``)
    and ``Interrupted`` raised, carrying the model.

    NumPy's overflow and invalid-value warnings are silenced: a diverging run is detected
    from its loss and parameters and reported once, not as a screenful from every rank.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        built = setup(config, comm, dataset)
        first_epoch, first_step = (0, 0) if resume is None else restore(resume, built)
        comm.Bcast([built.model.params, mpi_type(built.model.dtype)], root=0)
        progress = progress or Progress(enabled=False)
        clock_before = None
        if config.timeline is not None:
            clock_before = begin_timeline(built, first_epoch * built.sampler.steps_per_epoch
                                          + first_step)
        loop = Loop(built, run, progress, checkpoints, stop or NoStop(), first_epoch,
                    resumed=resume is not None)
        train_time = loop.run(first_epoch, first_step)
        result = summary(built, loop, train_time, first_epoch, resume is not None)
        if config.timeline is not None:
            written = end_timeline(built, clock_before, run, progress)
            if written:
                result["timeline"] = written
        return built.model, result


def begin_timeline(job: Job, first_step: int):
    """``--timeline``: record the window's steps of a run that starts at global step
    ``first_step``, and measure every rank's clock (collective; rank 0 gets the offsets)."""
    config, rank = job.config, job.comm.Get_rank()
    first, stop = timeline.window(config.timeline_steps, first_step,
                                  config.epochs * job.sampler.steps_per_epoch)
    job.timer.record(first, stop, timeline.capacity(stop - first, job.roles.is_server(rank),
                                                    job.roles.n_workers))
    return clocks.measure(job.comm)


def end_timeline(job: Job, clock_before, run, progress: Progress) -> dict:
    """Gather every rank's laps and the clocks again (collective); rank 0 writes the trace
    and returns what result.json records of it ({} elsewhere, or when it cannot be written:
    the path was checked at the start, and the run's own files matter more than a trace)."""
    clock_after = clocks.measure(job.comm)
    gathered = job.timer.gather(job.comm)
    if job.comm.Get_rank() != 0:
        return {}
    path = timeline.output_path(job.config.timeline, None if run is None else run.path)
    first, stop = job.timer.first, job.timer.stop
    try:
        written = timeline.write(path, gathered, clock_before, clock_after, job.roles,
                                 job.sampler.steps_per_epoch, (first, stop), job.config.strategy)
    except UsageError as exc:
        progress.warn(f"{exc}; the trace is lost, the run's other files are saved")
        return {}
    steps = f"steps {first} to {stop - 1}" if stop > first else "no step (the run took none)"
    progress.message(f"timeline of {steps}: {path}")
    if written["dropped"]:
        progress.warn(f"--timeline: {written['dropped']} phases did not fit the buffer "
                      f"({timeline.MAX_EVENTS:,} per rank) and are not in {path}; record "
                      "fewer steps with --timeline-steps")
    return written


class Loop:
    """Epochs, and around them evaluations, checkpoints, progress and stop requests."""

    def __init__(self, job: Job, directory, progress: Progress, checkpoints: bool,
                 stop: StopRequest, first_epoch: int, resumed: bool):
        self.job, self.directory, self.progress = job, directory, progress
        self.checkpoints, self.stop = checkpoints, stop
        self.records: list[dict] = []
        self.saved = [first_epoch] if resumed else []      # epochs checkpointed
        self.learning = LearningMonitor(job.dataset.n_classes, job.config)
        self.original_timing = job.config.timing == "original"
        progress.configure(job.config.epochs, job.sampler.steps_per_epoch,
                           job.dataset.x_train.shape[0])

    def run(self, first_epoch: int, first_step: int) -> float:
        """All epochs from ``first_epoch`` (and ``first_step`` into it); returns the training
        time, evaluations and checkpoints excluded (``--timing original``: evaluations
        included, as the original timed them)."""
        job, comm, config = self.job, self.job.comm, self.job.config
        strategy, timer = job.strategy, job.timer
        checkpoint_every = config.checkpoint_every or config.eval_every
        overhead_s = 0.0
        comm.Barrier()
        started = time.perf_counter()
        timer.restart()
        self.progress.start(first_epoch, first_step)
        if config.epochs == first_epoch:
            self.record_evaluation(first_epoch, 0.0)
            if self.checkpoints:
                self.write_checkpoint(first_epoch, first_step)
        for epoch in range(first_epoch + 1, config.epochs + 1):
            stopped_at = strategy.run_epoch(
                job.sampler, epoch - 1, first_step if epoch == first_epoch + 1 else 0,
                (lambda step, epoch=epoch: self.before_step(epoch - 1, step)))
            if stopped_at is not None:
                self.interrupt(epoch - 1, stopped_at)
            if (not strategy.stops_mid_epoch and epoch < config.epochs
                    and strategy.stop_agreed(self.stop)):
                self.interrupt(epoch, 0)
            evaluate_now = epoch % config.eval_every == 0 or epoch == config.epochs
            checkpoint_now = self.checkpoints and (epoch % checkpoint_every == 0
                                                   or epoch == config.epochs)
            if evaluate_now or checkpoint_now:
                pause = time.perf_counter()
                timer.restart()
                strategy.synchronize()
                if evaluate_now:
                    self.record_evaluation(epoch, pause - started - overhead_s)
                    timer.lap("evaluation")     # outside the training time, like checkpoints
                if self.original_timing:
                    pause = time.perf_counter()    # the original timed its evaluations too
                if checkpoint_now:
                    self.write_checkpoint(epoch)
                    timer.lap("checkpoint")
                overhead_s += time.perf_counter() - pause
            training_s = time.perf_counter() - started - overhead_s
            self.progress.epoch_done(epoch, (epoch - first_epoch) * job.dataset.x_train.shape[0]
                                     / max(training_s, 1e-9))
        train_time = time.perf_counter() - started - overhead_s
        self.progress.close()
        return train_time

    def kept(self) -> str:
        if not self.checkpoints:
            return "nothing was saved"
        if not self.saved:
            return "no checkpoint was written before it"
        return f"the last good checkpoint, from epoch {self.saved[-1]}, is kept"

    def record_evaluation(self, epoch: int, elapsed: float) -> None:
        job, comm = self.job, self.job.comm
        # Rank 0, the only rank that records, holds the optimizer that stepped.
        record = {"epoch": epoch, "step": job.optimizer.iterations, "lr": job.optimizer.current_lr,
                  **evaluate(comm, job.model, job.dataset, job.strategy.worker_index,
                             job.roles.n_workers),
                  "elapsed_s": elapsed,
                  "peak_rss_mb": float(allreduce_max(comm, [peak_rss_mb()], job.watch,
                                                     "the ranks' peak memory use")[0]),
                  **job.strategy.statistics()}
        self.records.append(record)
        if self.directory is not None:
            self.directory.append_metrics(record)
        self.progress.evaluation(record)
        warning = self.learning.check(record)
        if warning is not None and comm.Get_rank() == 0:
            self.progress.warn(warning)
        if not math.isfinite(record["train_loss"]):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the train loss is {record['train_loss']}; "
                f"lower --lr or raise --lr-decay ({self.kept()})"
            )

    def write_checkpoint(self, epoch: int, epoch_step: int = 0) -> None:
        job = self.job
        if not np.all(np.isfinite(job.model.params)):
            raise TrainingDiverged(f"training diverged before epoch {epoch}: the parameters "
                                   f"hold NaN or infinity ({self.kept()})")
        state = job.strategy.checkpoint_state()     # collective: whole on rank 0
        if self.directory is not None:
            optimizer_state, strategy_state = state
            save_checkpoint(self.directory.path / CHECKPOINT_NAME, config=job.config, epoch=epoch,
                            model=job.model, optimizer_state=optimizer_state,
                            strategy_state=strategy_state, epoch_step=epoch_step)
        self.saved.append(epoch)
        wait_politely(job.comm.Ibarrier(), job.watch, "rank 0 to write the checkpoint")

    def before_step(self, epoch: int, step: int) -> bool:
        """Called before every step (ps-async: every update on the server): shows progress
        and, every ``CHECK_EVERY`` global steps, agrees whether to stop (collective)."""
        job, strategy = self.job, self.job.strategy
        self.progress.step(epoch, step)
        job.watch.epoch, job.watch.step = epoch, step
        if strategy.recent_loss is not None:
            self.progress.batch_loss(strategy.recent_loss)
            strategy.recent_loss = None
        # --timing original: every step's forward pass also yields its loss and accuracy,
        # as the original's serial loop computed them every epoch inside its timer.
        strategy.measure_loss = self.progress.wants_loss or self.original_timing
        if not strategy.stops_mid_epoch:
            return False
        global_step = epoch * job.sampler.steps_per_epoch + step
        return global_step % CHECK_EVERY == 0 and strategy.stop_agreed(self.stop)

    def interrupt(self, epoch: int, epoch_step: int) -> None:
        job = self.job
        self.progress.close()
        job.strategy.synchronize()
        if self.checkpoints:
            self.write_checkpoint(epoch, epoch_step)
        job.strategy.finish()
        detach(job.comm)
        error = Interrupted(epoch, epoch_step)
        error.model = job.model
        raise error


def summary(job: Job, loop: Loop, train_time: float, first_epoch: int, resumed: bool) -> dict:
    """Finish the strategy and gather the result record (rank 0; ``{}`` elsewhere)."""
    comm, config = job.comm, job.config
    stats = job.strategy.finish()
    detach(comm)
    digest = check_replicas_agree(comm, job.model)
    times = comm.gather({"rank": comm.Get_rank(), "train_time_s": train_time,
                         **{f"{phase}_s": seconds
                            for phase, seconds in job.timer.category_seconds().items()},
                         "peak_rss_mb": peak_rss_mb(), "data_rss_mb": mapped_npy_rss_mb()},
                        root=0)
    slowest = comm.allreduce(train_time, op=MPI.MAX)
    if comm.Get_rank() != 0:
        return {}
    epochs_run = config.epochs - first_epoch
    return {
        "strategy": config.strategy,
        "processes": comm.Get_size(),
        "workers": job.roles.n_workers,
        "epochs": config.epochs,
        "resumed_from_epoch": first_epoch if resumed else None,
        "steps": config.epochs * job.updates_per_epoch,
        "train_time_s": slowest,
        "timing": config.timing,
        "samples_per_s": epochs_run * job.dataset.x_train.shape[0] / slowest if slowest > 0 else None,
        "final": loop.records[-1],
        "ranks": times,
        "params_sha256": digest,
        "kernels": {"requested": config.kernels, "used": job.model.kernels,
                    "numba": kernel_choice.numba_version() if job.model.kernels != "numpy"
                    else None, "setup_s": job.kernels_s},
        "warnings": loop.learning.warnings,
        **stats,
    }


def check_replicas_agree(comm: MPI.Comm, model: MLP) -> str:
    """SHA-256 of the final parameters, which must be the same on every rank."""
    digest = hashlib.sha256(np.ascontiguousarray(model.params).tobytes()).hexdigest()
    digests = comm.allgather(digest)
    if len(set(digests)) != 1:
        differing = [rank for rank, other in enumerate(digests) if other != digests[0]]
        raise RuntimeError(f"replicas diverged: ranks {differing} hold parameters that differ "
                           "from rank 0's")
    return digest
