"""``distnn`` command line. The only module that reads argv or touches ``MPI.COMM_WORLD``.

Error policy (DESIGN §3.5):
- bad flags, bad data, unwritable output: every rank finds the same problem (or learns of
  it through one agreement step), rank 0 prints one message, every rank exits 2;
- any other exception on any rank: that rank prints ``[rank r/size]`` and its traceback,
  then ``MPI_Abort`` ends the whole job at once, so nobody waits forever in a collective.
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from distnn import __version__, recipes, threads
from distnn.config import (
    COMBINES,
    DTYPES,
    INITS,
    KERNELS,
    PRESETS,
    SERVER_STRATEGIES,
    SPIRAL_DRAWS,
    STRATEGIES,
    TIMINGS,
    make_config,
)
from distnn.errors import UsageError
from distnn.interrupt import EXIT_INTERRUPTED
from distnn.launch import (
    MPI_ENV_SIZE,
    binding_args,
    env_int,
    env_rank,
    find_mpiexec,
    forget_orphaned_job,
    note_launcher_residue,
    note_started,
    oversubscription_note,
    pin_blas_threads,
    relaunch,
    under_mpi,
)
from distnn.recipes import (
    EVALUATIONS,
    MAX_AUTO_EPOCHS,
    MIN_EPOCHS,
    MIN_STEPS,
    RECIPES,
    SMALL_BATCH,
    SMALL_DATA_ROWS,
)
from distnn.runs import data_settings, locate_model, locate_run

if (env_int(MPI_ENV_SIZE) or 1) > 1:
    pin_blas_threads(os.environ)


class _Parser(argparse.ArgumentParser):
    """Errors become one UsageError ("distnn: error: ..." once), with the nearest flag or
    value suggested for a typo. Abbreviated flags are refused: a week-long run should not
    depend on argparse guessing which flag a prefix meant."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise UsageError(f"{message}{_suggestion(self, message)} (see: {self.prog} --help)")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser`` and of its sub-commands."""
    found = []
    for action in parser._actions:
        found += [option for option in action.option_strings if option.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options(sub)
    return found


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """'; did you mean --epochs?' for an unknown flag or a mistyped choice, else ''."""
    import difflib
    import re

    unknown = re.match(r"unrecognized arguments: (\S+)", message)
    if unknown and unknown.group(1).startswith("-"):
        flag = unknown.group(1).split("=")[0]
        close = difflib.get_close_matches(flag, sorted(set(_options(parser))), n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        choices = re.findall(r"'([^']*)'", choice.group(2)) or choice.group(2).split(", ")
        close = difflib.get_close_matches(choice.group(1), choices, n=1, cutoff=0.5)
        return f"; did you mean {close[0]}?" if close else ""
    return ""


def _batch_size(text: str):
    if text == "full":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'full', got {text!r}")
    return value


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects widths like 64 or 256,128, got {text!r}") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def _add_data_flags(add) -> None:
    add("--dataset", help="spiral, fashion-mnist, mnist, a .csv or .npz file, or a directory "
        "with X_train.csv, y_train.csv (default: spiral)")
    add("--data-dir", help="folder of the IDX files (default for fashion-mnist: "
        "/usr/share/datasets/fashion-mnist)")
    add("--label-column", help="one-file CSV: first, last, a 0-based index or a header name "
        "(default: the one header column named label, target, class or y, else the last)")
    add("--samples-per-class", type=int, help="spiral: points per class (default: 1000)")
    add("--classes", type=int, help="spiral: number of classes (default: 3)")
    add("--test-samples-per-class", type=int, help="spiral: test points per class (default: "
        "--samples-per-class)")
    add("--spiral-draw", choices=SPIRAL_DRAWS, help="spiral: 'separate' draws the test set from "
        "seed+1; 'original' draws train then test from one float32 stream and shuffles the "
        "training rows, as the original's generate_data.py (default: separate)")
    add("--test-fraction", type=float, help="held-out share when a data file has no test split "
        "(default: 0.2)")
    add("--seed", type=int, help="data split, weights and sample order (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distnn", description="Data-parallel neural-network training on MPI.")
    parser.add_argument("--version", action="version", version=f"distnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    train = commands.add_parser("train", help="train an MLP (serial or on MPI ranks)",
                                argument_default=argparse.SUPPRESS)
    add = train.add_argument
    add("--preset", choices=sorted(PRESETS), help="start from a named workload (default: none: "
        "the recipe the data calls for)")
    add("--config", metavar="FILE.toml", help="config values; flags override them (default: none)")
    _add_data_flags(add)
    add("--hidden", type=_widths, help="hidden layer widths, e.g. 64 or 256,128 (default: 64)")
    add("--init", choices=INITS, help="weight init: he (N(0, 2/fan_in)), nnfs (0.01 N(0,1)), or "
        "uniform (U(-0.01, 0.01) from glibc rand(), the original's) (default: he)")
    add("--dtype", choices=DTYPES, help="parameters and data (default: float32)")
    add("--strategy", choices=STRATEGIES, help="gradient path (default: serial)")
    add("--epochs", type=int, help=f"passes over the training data (default, by the recipe: "
        f"{RECIPES['original']['epochs']} for the spiral at full batch; otherwise enough for "
        f"{MIN_STEPS} updates, {MIN_EPOCHS} to {MAX_AUTO_EPOCHS})")
    add("--batch-size", type=_batch_size, help="global batch size, or 'full' (default, by the "
        f"recipe: full for the spiral; otherwise {RECIPES['minibatch']['batch_size']}, or "
        f"{SMALL_BATCH} below {SMALL_DATA_ROWS} training rows)")
    add("--lr", type=float, help="initial learning rate (default, by the recipe: "
        f"{RECIPES['original']['lr']:g} for the spiral at full batch, "
        f"{RECIPES['minibatch']['lr']:g} otherwise)")
    add("--lr-decay", type=float, help="lr_t = lr / (1 + lr_decay * t) (default, by the recipe: "
        f"{RECIPES['original']['lr_decay']:g} for the spiral at full batch, "
        f"{RECIPES['minibatch']['lr_decay']:g} otherwise)")
    add("--momentum", type=float, help="v = momentum * v - lr_t * g (default: 0.9)")
    add("--no-shuffle", dest="shuffle", action="store_false", help="keep the stored order "
        "(default: reshuffle every epoch)")
    add("--standardize", action=argparse.BooleanOptionalAction,
        help="scale every input feature to zero mean and unit variance over the training rows; "
        "the statistics are stored in model.npz (default: on for data from files and images, "
        "off for the spiral at full batch)")
    add("--data-shards", type=int, metavar="K", help="draw worker k's part of every batch from "
        "shard k of the rows; set K to the number of workers so that each reads only its "
        "share of a memory-mapped .npy (default 1: one shuffle over all rows)")
    add("--combine", choices=COMBINES, help="ps-sync/allreduce: average the workers' gradients "
        "(== serial), or their models after local SGD steps, each worker with its own "
        "velocity (the original's algorithm; messages only) (default: gradients)")
    add("--local-steps", type=int, metavar="K", help="--combine models: local steps between "
        "averagings (K-fold less communication; 1 is the original) (default: 1)")
    add("--drop-remainder", action="store_true", help="--combine models: every worker takes "
        "floor(B/n) rows and the last B mod n rows of a batch go unused, as in the original "
        "(default: as-even-as-possible slices of every row)")
    add("--kernels", choices=KERNELS, help="compute path: numpy (one NumPy call per "
        "operation), fused (numba kernels, pip install 'distnn[fused]'), or auto (fused where "
        "numba is installed) (default: auto)")
    add("--timing", choices=TIMINGS, help="'original' times as the original did: every step "
        "also computes its training loss and accuracy, and evaluations count as training "
        "time (default: training, evaluations excluded)")
    add("--max-staleness", type=int, help="ps-async: no applied gradient staler than this "
        "(default: unbounded)")
    add("--no-shared-memory", dest="shared_memory", action="store_false",
        help="move gradients and parameters by MPI messages even when all ranks share a "
        "node (default: shared memory on one node)")
    add("--eval-every", type=int, help="epochs between evaluations, and always the last "
        f"(default, by the recipe: {RECIPES['original']['eval_every']} for the spiral at full "
        f"batch, about {EVALUATIONS} evaluations per run otherwise)")
    add("--checkpoint-every", type=int, help="epochs between checkpoints (default: every "
        "evaluation; always at the end)")
    add("--stall-timeout", type=float, metavar="SECONDS", help="end the job (exit 4) when a "
        "rank has waited this long for a silent peer (a dead host, a cut link, a stopped "
        "process), naming it; 0 waits forever (default: 120)")
    add("--out", help="run directory (default: runs/<time>-<strategy>)")
    add("--overwrite", action="store_true", help="replace the distnn run already in --out "
        "(refused if --out holds other files) (default: refuse a non-empty --out)")
    add("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR from its "
        "checkpoint, with its strategy and process count; only --epochs and --procs may "
        "change (default: a new run)")
    add("--procs", type=int, help="launch N MPI processes with mpiexec, unless already under "
        "MPI (default: 1, or the resumed run's)")
    add("--threads", type=int, metavar="N", help="BLAS threads per process (default: 1, or "
        "OMP_NUM_THREADS: ranks fill the cores, and a serial baseline with all cores would "
        "make speedups look larger than they are)")
    add("--quiet", action="store_true", help="no progress output, only warnings and where the "
        "run was saved (default: progress on rank 0)")

    evaluate = commands.add_parser("evaluate", help="loss, accuracy and confusion matrix of a "
                                   "model on a data set", argument_default=argparse.SUPPRESS)
    evaluate.add_argument("model", help="a run directory, or a model.npz written by distnn train; "
                          "the data flags default to the run's config.json")
    _add_data_flags(evaluate.add_argument)
    evaluate.add_argument("--split", choices=("test", "train"), default="test",
                          help="which rows to score (default: test)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON "
                          "(default: a table)")

    predict = commands.add_parser("predict", help="class and probabilities per input row")
    predict.add_argument("model", help="a run directory, or a model.npz written by distnn train")
    predict.add_argument("--input", required=True, help="features: CSV (optional header) or .npy")
    predict.add_argument("--output", required=True, help="CSV to write: class,p_0,...")

    plot = commands.add_parser("plot", help="loss and accuracy curves of a run as PNG")
    plot.add_argument("run_dir", help="a run directory (holds metrics.jsonl), or a model inside one")

    export = commands.add_parser("export", help="write a model in another format")
    export.add_argument("model", help="a run directory, or a model.npz written by distnn train")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="(default: onnx)")
    export.add_argument("--output", help="file to write (default: MODEL with .onnx)")

    bench = commands.add_parser("bench", help="speedup and efficiency of every strategy and "
                                "process count, with markdown/CSV/JSON tables and plots")
    bench.add_argument("--strategies", default="serial,ps-sync,ps-async,allreduce",
                       help="comma-separated; serial always runs as the baseline "
                       "(default: %(default)s)")
    bench.add_argument("--procs", default="1,2,3,4", help="comma-separated process counts "
                       "(default: %(default)s)")
    bench.add_argument("--scaling", choices=("strong", "weak"), default="strong",
                       help="strong: fixed global batch; weak: fixed batch per worker "
                       "(default: %(default)s)")
    bench.add_argument("--repeats", type=int, default=3, help="timed runs per configuration "
                       "(default: %(default)s)")
    bench.add_argument("--out", help="output folder (default: bench-out/<time>)")
    bench.add_argument("--table", choices=("seed",), help="the original's speedup table: the "
                       "seed workload, serial and ps-sync at 1..4 workers (default: none)")
    for flag in BENCH_WORKLOAD_FLAGS:
        bench.add_argument(flag, default=argparse.SUPPRESS, help="passed to distnn train "
                           "(default: distnn train's)")

    model = commands.add_parser("costmodel", help="fit latency/bandwidth and compute time here, "
                                "project speedup up to 1024 workers")
    model.add_argument("--sizes", type=_widths, default=(784, 256, 10),
                       help="layer widths, e.g. 784,256,10 (default: 784,256,10)")
    model.add_argument("--batch-size", type=int, default=128, help="global batch "
                       "(default: %(default)s)")
    model.add_argument("--dtype", choices=DTYPES, default="float32", help="(default: %(default)s)")
    model.add_argument("--bench", help="a bench output folder whose measured points to overlay "
                       "(default: none)")
    model.add_argument("--out", help="output folder (default: bench-out/costmodel-<time>)")

    commands.add_parser("info", help="versions, MPI library, BLAS and threads")
    return parser


BENCH_WORKLOAD_FLAGS = ("--preset", "--config", "--dataset", "--data-dir", "--samples-per-class",
                        "--classes", "--hidden", "--batch-size", "--epochs", "--lr",
                        "--lr-decay", "--momentum", "--dtype", "--seed", "--eval-every",
                        "--max-staleness", "--kernels")


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _bench(args) -> int:
    """Everything is checked before the first run: the workload (as ``distnn train`` would
    check it), the process counts and the output folder, which must be new or empty."""
    from distnn.bench import BenchFailed, run_bench
    from distnn.guards import new_output_directory

    train_args = []
    for flag in BENCH_WORKLOAD_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            train_args += [flag, value]
    strategies, procs = args.strategies.split(","), _int_list("--procs", args.procs)
    if args.table == "seed":
        strategies, procs = ["ps-sync"], [2, 3, 4, 5]
        train_args = ["--preset", "seed", *train_args]
    if any(not 1 <= p <= MAX_PROCS for p in procs):
        raise UsageError(f"--procs values must be in [1, {MAX_PROCS}], got {args.procs}")
    workload = build_parser().parse_args(["train", *train_args])
    _resolve_config({key: value for key, value in vars(workload).items()
                     if key not in ("max_staleness",)})
    out = Path(args.out) if args.out else Path("bench-out") / time.strftime("%Y%m%d-%H%M%S")
    new_output_directory(out, "--out")
    try:
        run_bench(strategies, procs, train_args, args.scaling, args.repeats, out,
                  log=lambda line: print(line, flush=True))
    except UsageError:
        shutil.rmtree(out, ignore_errors=True)     # new or empty before: nothing of the user's
        raise
    except BenchFailed as exc:
        _report(str(exc))
        return 1
    print((out / "bench.md").read_text())
    print(f"wrote {out}/bench.md, bench.csv, bench.json and plots")
    return 0


def _bench_rows(folder: str) -> list[dict]:
    """The measured rows of a ``distnn bench`` output folder, checked."""
    import json

    from distnn.guards import regular_file

    path = regular_file(Path(folder) / "bench.json", "--bench")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        for row in rows:
            if not (isinstance(row["strategy"], str) and isinstance(row["workers"], int)
                    and isinstance(row["speedup"], (int, float))):
                raise ValueError("a row without strategy, workers and speedup")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--bench {path} is damaged or not written by distnn bench ({exc}); "
                         "run distnn bench again") from None
    return rows


def _costmodel(args) -> int:
    import json

    from distnn import costmodel
    from distnn.guards import check_memory, model_memory_bytes, new_output_directory

    sizes = list(args.sizes)
    if len(sizes) < 2 or not 1 <= args.batch_size <= 10**6:
        raise UsageError(f"--sizes needs at least two widths and --batch-size an integer in "
                         f"[1, 1000000]; got {','.join(map(str, sizes))} and {args.batch_size}")
    itemsize = 4 if args.dtype == "float32" else 8
    check_memory(model_memory_bytes(sizes, args.batch_size, itemsize)
                 + args.batch_size * sizes[0] * itemsize,
                 f"the {','.join(map(str, sizes))} model at batch {args.batch_size}",
                 "give smaller --sizes or --batch-size")
    measured = _bench_rows(args.bench) if args.bench else None
    out = Path(args.out) if args.out else Path("bench-out") / time.strftime("costmodel-%Y%m%d-%H%M%S")
    new_output_directory(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    pin_blas_threads(env)
    network_run = subprocess.run([find_mpiexec(), "-n", "2", sys.executable, "-m",
                                  "distnn.costmodel", str(out / "network.json")],
                                 env=env, timeout=600, stdin=subprocess.DEVNULL)
    if network_run.returncode != 0:
        _report(f"measuring the network with mpiexec failed (exit {network_run.returncode}); "
                "see its output above")
        return 1
    network = json.loads((out / "network.json").read_text())
    compute = costmodel.measure_compute(sizes, dtype=args.dtype)
    projections = [costmodel.project(compute, network, args.batch_size, scaling=scaling)
                   for scaling in ("strong", "weak")]
    text = costmodel.markdown(projections, compute, network, args.batch_size, sizes)
    (out / "costmodel.md").write_text(text)
    (out / "costmodel.json").write_text(json.dumps(
        {"sizes": sizes, "batch_size": args.batch_size, "compute": compute, "network": network,
         "projections": projections}, indent=2) + "\n")
    costmodel.plot(projections, out, measured)
    print(text)
    print(f"wrote {out}/costmodel.md, costmodel.json, costmodel.png")
    return 0


ABORT_GRACE_S = 0.5       # lets mpiexec forward a failing rank's message before MPI_Abort
FINALIZE_TIMEOUT_S = 10   # a rank whose peers never reach MPI_Finalize exits anyway
MAX_PROCS = 4096


def _report(message: str, rank: int | None = None, size: int | None = None) -> None:
    prefix = f"[rank {rank}/{size}] " if rank is not None and size and size > 1 else ""
    sys.stderr.write(f"{prefix}distnn: error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.command != "train":
            return _single_process_command(args)
        settings = vars(args)
        procs = settings.pop("procs", None)
        blas_threads = threads.wanted(settings.pop("threads", None))
        if procs is not None and not 1 <= procs <= MAX_PROCS:
            raise UsageError(f"--procs must be in [1, {MAX_PROCS}], got {procs}")
        if not under_mpi():
            config, _ = _resolve_config(dict(settings))
            procs = procs or config.procs    # --resume and --config keep the process count
            check_process_count(config.strategy, procs or 1)
            if procs is not None and procs > 1:
                note = oversubscription_note(procs)
                if note and not settings.get("quiet"):
                    print(note, file=sys.stderr, flush=True)
                return relaunch(procs, argv, threads=blas_threads)
    except UsageError as exc:
        if env_rank() == 0:
            _report(str(exc))
        return exc.exit_code
    except BrokenPipeError:        # the reader went away (`distnn ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:         # a path the user named that the system refuses
        if env_rank() == 0:
            _report(_os_error(exc))
        return UsageError.exit_code
    except KeyboardInterrupt:
        if env_rank() == 0:
            _report("interrupted")
        return EXIT_INTERRUPTED
    return _train(settings, procs, blas_threads)


def _os_error(exc: OSError) -> str:
    """One line for an operating-system refusal of a path (too long, not a directory...)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


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


def check_process_count(strategy: str, size: int) -> None:
    """Refuse a process count the strategy cannot use, before any work."""
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


def _single_process_command(args) -> int:
    """evaluate, predict, plot, export, bench and info: rank 0 alone (bench launches jobs)."""
    if args.command == "bench":
        return _bench(args)
    if args.command == "costmodel":
        return _costmodel(args)
    if args.command == "info":
        from distnn.info import describe, format_info

        try:
            mpiexec = find_mpiexec()
            binding = " ".join(binding_args(mpiexec)) or "the launcher's default"
            mpiexec += f" (--procs binds ranks: {binding})"
        except UsageError:
            mpiexec = "not found"
        print(format_info(describe(), mpiexec))
        return 0
    if args.command == "plot":
        from distnn.plot import plot_run

        for path in plot_run(locate_run(args.run_dir)):
            print(f"wrote {path}")
        return 0
    from distnn.model_file import load_model

    model_path, run_dir = locate_model(args.model)
    model = load_model(model_path)
    if args.command == "export":
        from distnn.export import export_onnx

        target = Path(args.output) if args.output else model_path.with_suffix(".onnx")
        print(f"wrote {export_onnx(model, target, sources=(model_path,))}")
        return 0
    if args.command == "predict":
        from distnn.inference import predict_file

        rows = predict_file(model, Path(args.input), Path(args.output), sources=(model_path,))
        print(f"wrote {rows} predictions to {args.output}")
        return 0
    import json

    from distnn.data import load_dataset
    from distnn.inference import check_features, format_score, score

    given = {k: v for k, v in vars(args).items()
             if k not in ("command", "model", "split", "json")}
    saved = data_settings(run_dir)
    try:
        config = make_config(dtype=str(model.dtype), **{**saved, **given})
    except UsageError as exc:
        if not saved:
            raise
        raise UsageError(f"{exc} (from {run_dir / 'config.json'}; give the data flags to "
                         "override it)") from None
    dataset = load_dataset(config)
    overridden = [name for name in ("seed", "test_fraction", "label_column")
                  if name in given and name in saved and given[name] != saved[name]]
    if overridden and args.split == "test":
        flags = ", ".join("--" + name.replace("_", "-") for name in overridden)
        verb = "differs" if len(overridden) == 1 else "differ"
        sys.stderr.write(f"distnn: warning: {flags} {verb} from the run's: these test rows are "
                         "not the ones it held out, and may include rows it trained on\n")
    x, y = ((dataset.x_test, dataset.y_test) if args.split == "test"
            else (dataset.x_train, dataset.y_train))
    check_features(model, x, f"--dataset {dataset.name}")
    result = score(model, x, y, f"--dataset {dataset.name}")
    result = {"dataset": dataset.name, "split": args.split, **result,
              "class_names": list(dataset.class_names) if dataset.class_names else None}
    print(json.dumps(result) if getattr(args, "json", False) else format_score(result))
    return 0


RESUMABLE_CHANGES = {"epochs", "stall_timeout"}   # neither changes what is trained


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
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise UsageError(f"--resume continues the saved configuration; only --epochs, --procs, "
                         f"--threads, --stall-timeout and --quiet may be given "
                         f"(got {flags})")
    checkpoint = load_checkpoint(Path(resume_dir))
    saved = dict(checkpoint["config"])
    saved["hidden"] = tuple(saved.get("hidden", ()))
    try:
        config = make_config(saved.pop("preset", "default"), **{**saved, **settings,
                                                                 "out": resume_dir})
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--resume: {checkpoint['path']} holds a config this version cannot "
                         f"read ({exc})") from exc
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


def _resolve_config(settings: dict):
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
    config = make_config(preset, **{**from_file, **settings})
    _check_data_flags_apply(config, {**from_file, **settings})
    return config, None


def _check_data_flags_apply(config, given: dict) -> None:
    """Refuse data flags the chosen data set would silently ignore."""
    spiral = config.dataset == "spiral"
    images = config.dataset in ("fashion-mnist", "mnist")
    one_csv = config.dataset.lower().endswith((".csv", ".txt"))
    ignored = {"samples_per_class": not spiral, "classes": not spiral,
               "data_dir": not images, "label_column": not one_csv,
               "test_fraction": spiral or images}
    unused = [name for name, unused in ignored.items() if unused and name in given]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise UsageError(f"{flags} {'does' if len(unused) == 1 else 'do'} not apply to "
                         f"--dataset {config.dataset}; drop {'it' if len(unused) == 1 else 'them'}")


def _setup(settings: dict, comm, procs: int | None):
    """Config, data, checkpoint and (rank 0) the unclaimed run directory; raises UsageError
    with the first problem. Creates nothing."""
    from distnn.data import load_dataset
    from distnn.rundir import RunDirectory, check_target
    from distnn.train import check_fits

    config, checkpoint = _resolve_config(settings)
    if procs is not None and procs != comm.Get_size():
        raise UsageError(f"--procs {procs} but this MPI job has {comm.Get_size()} processes")
    config = config.replace(procs=comm.Get_size())
    check_process_count(config.strategy, comm.Get_size())
    if not config.shared_memory and comm.Get_size() == 1:
        raise UsageError("--no-shared-memory applies to runs on several processes; drop it")
    dataset = load_dataset(config, share=_value_check_share(config, comm))
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
        run = RunDirectory(out, config.strategy,
                           resume_epoch=checkpoint["epoch"] if resume else None,
                           overwrite=overwrite)
    return config, dataset, run, checkpoint


def _value_check_share(config, comm) -> tuple[int, int] | None:
    """Which rows' values this rank checks: a worker its share, a parameter server none."""
    from distnn.parallel import STRATEGIES

    strategy, rank, size = STRATEGIES[config.strategy], comm.Get_rank(), comm.Get_size()
    if not strategy.has_server or size < 2:
        return rank, size
    return None if rank == 0 else (rank - 1, size - 1)


def _first_failure(comm, failure: UsageError | None):
    """Agreement step: every rank learns the first rank's refusal (message, exit code)."""
    failures = comm.allgather(None if failure is None else (str(failure), failure.exit_code))
    return next((item for item in failures if item is not None), None)


def _agreed_exit(code: int) -> int:
    """Every rank stops with ``code`` (after an agreement step, or on an error every rank
    raised alike): finalize MPI first, so that ``python -m mpi4py`` does not turn the
    non-zero exit into ``MPI_Abort``. If a peer never reaches ``MPI_Finalize`` (it died),
    this rank exits anyway after ``FINALIZE_TIMEOUT_S``."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() > 1 and not MPI.Is_finalized():
        watchdog = threading.Timer(FINALIZE_TIMEOUT_S, os._exit, args=(code,))
        watchdog.daemon = True
        watchdog.start()
        MPI.Finalize()
        watchdog.cancel()
    return code


def _train(settings: dict, procs: int | None, blas_threads: int) -> int:
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
        stop.restore()
        if rank == 0:
            forget_orphaned_job()


def _run(settings: dict, procs: int | None, comm, stop, blas_threads: int) -> int:
    rank, size = comm.Get_rank(), comm.Get_size()
    quiet = bool(settings.get("quiet"))
    failure = run = None
    try:
        config, dataset, run, checkpoint = _setup(settings, comm, procs)
    except UsageError as exc:
        failure = exc
    except OSError as exc:
        failure = UsageError(_os_error(exc))
    first = _first_failure(comm, failure)
    if first is None and run is not None:
        try:
            config = config.replace(out=str(run.claim()))
        except UsageError as exc:
            failure = exc
        except OSError as exc:
            failure = UsageError(f"--out: {_os_error(exc)}")
        first = _first_failure(comm, failure)
    else:
        first = first or _first_failure(comm, None)
    if first is not None:
        if rank == 0:
            _report(first[0])
        return _agreed_exit(first[1])

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
            final = result["final"]
            summary = (f"{config.strategy} on {size} process{'es' if size > 1 else ''} "
                       f"({result['workers']} worker{'s' if result['workers'] > 1 else ''}): "
                       f"{_epochs_run(result, config.epochs)} in {result['train_time_s']:.2f} s, "
                       f"test accuracy {final['test_accuracy']:.4f}; ")
            print(("" if quiet else summary) + f"run saved in {run.path}", flush=True)
        return _agreed_exit(0) if size > 1 else 0
    except Interrupted as stopped:
        if run is not None:
            run.save_model(stopped.model)
            sys.stderr.write(f"distnn: {stopped}; the model is saved in {run.path}; continue "
                             f"with: distnn train --resume {run.path}\n")
        return _agreed_exit(EXIT_INTERRUPTED)
    except UsageError as exc:
        # Raised inside training on every rank alike (divergence is seen in reduced
        # metrics; a checkpoint that does not fit the data, by every rank).
        if rank == 0:
            _report(str(exc))
        return _agreed_exit(exc.exit_code)
    except KeyboardInterrupt:
        if rank == 0:
            where = f"; the last checkpoint in {run.path} is kept" if run is not None else ""
            _report(f"interrupted again: stopped at once{where}")
        if size > 1:
            comm.Abort(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = f"the run directory {run.path}" if run is not None else "a file"
        _report(f"{where} cannot be written any more ({_os_error(exc)}); training stopped, "
                "the last checkpoint is kept if the directory still exists", rank, size)
        if size > 1:
            time.sleep(ABORT_GRACE_S)
            comm.Abort(1)
        return 1
    except BaseException:
        _report("unexpected failure\n" + traceback.format_exc(), rank, size)
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


if __name__ == "__main__":
    sys.exit(main())
