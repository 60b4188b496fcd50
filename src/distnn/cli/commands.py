"""The commands that run on one process: evaluate, predict, plot, export, info, and the two
that start MPI jobs of their own, bench and costmodel."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distnn.cli.parser import BENCH_OWNS
from distnn.cli.report import report
from distnn.config import FIELD_INFO, MAX_PROCS, flag_of, make_config
from distnn.errors import UsageError
from distnn.hosts import hosts_from
from distnn.launch import find_launcher, mpiexec_command, pin_blas_threads
from distnn.runs import data_settings, locate_model, locate_run


def run_command(args) -> int:
    """evaluate, predict, plot, export, bench, costmodel and info."""
    handlers = {"bench": _bench, "costmodel": _costmodel, "info": _info, "plot": _plot,
                "export": _export, "predict": _predict, "evaluate": _evaluate}
    return handlers[args.command](args)


def _info(args) -> int:
    from distnn.info import describe, format_info, launch_rows

    hosts = hosts_from(args.hosts, args.hostfile)
    if args.procs is not None and not 1 <= args.procs <= MAX_PROCS:
        raise UsageError(f"--procs must be in [1, {MAX_PROCS}], got {args.procs}")
    procs = args.procs or (hosts.total if hosts is not None else 2)
    info = describe()
    try:
        launcher = find_launcher()
    except UsageError as exc:
        rows = {"mpiexec": f"not found ({exc})"}
    else:
        rows = launch_rows(launcher, procs, hosts, info["mpi_library"])
    print(format_info(info, rows))
    return 0


def _plot(args) -> int:
    from distnn.plot import plot_run

    for path in plot_run(locate_run(args.run_dir)):
        print(f"wrote {path}")
    return 0


def _load(path: str):
    from distnn.model_file import load_model

    model_path, run_dir = locate_model(path)
    return load_model(model_path), model_path, run_dir


def _export(args) -> int:
    from distnn.export import export_onnx

    model, model_path, _ = _load(args.model)
    target = Path(args.output) if args.output else model_path.with_suffix(".onnx")
    print(f"wrote {export_onnx(model, target, sources=(model_path,))}")
    return 0


def _predict(args) -> int:
    from distnn.inference import predict_file

    model, model_path, _ = _load(args.model)
    rows = predict_file(model, Path(args.input), Path(args.output), sources=(model_path,))
    print(f"wrote {rows} predictions to {args.output}")
    return 0


def _evaluate(args) -> int:
    from distnn.data import load_dataset
    from distnn.inference import check_features, format_score, score

    model, _, run_dir = _load(args.model)
    given = {k: v for k, v in vars(args).items()
             if k not in ("command", "model", "split", "json")}
    saved = data_settings(run_dir)
    try:
        config = make_config(**{**saved, **given, "dtype": str(model.dtype)})
    except UsageError as exc:
        if not saved:
            raise
        raise UsageError(f"{exc} (from {run_dir / 'config.json'}; give the data flags to "
                         "override it)") from None
    dataset = load_dataset(config.data)
    overridden = [name for name in ("seed", "test_fraction", "label_column")
                  if name in given and name in saved and given[name] != saved[name]]
    if overridden and args.split == "test":
        flags = ", ".join(map(flag_of, overridden))
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


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _bench(args) -> int:
    """Everything is checked before the first run: the workload (as ``distnn train`` would
    check it), the process counts and the output folder, which must be new or empty."""
    from distnn.bench import BenchFailed, Workload, run_bench
    from distnn.guards import new_output_directory

    settings = vars(args)
    overrides = {name: settings[name] for name in FIELD_INFO
                 if name in settings and name not in BENCH_OWNS}
    workload = Workload(settings.get("preset"), settings.get("config"), overrides)
    strategies, procs = args.strategies.split(","), _int_list("--procs", args.procs)
    if args.table == "seed":
        strategies, procs = ["ps-sync"], [2, 3, 4, 5]
        workload = Workload("seed", workload.config_file, overrides)
    if any(not 1 <= p <= MAX_PROCS for p in procs):
        raise UsageError(f"--procs values must be in [1, {MAX_PROCS}], got {args.procs}")
    from distnn.cli.run import resolve_config

    # Options of some strategies only, which the default strategy would refuse.
    as_train_takes_it = {name: value for name, value in overrides.items()
                         if name not in ("max_staleness", "servers")}
    for name, value in (("preset", workload.preset), ("config", workload.config_file)):
        if value is not None:
            as_train_takes_it[name] = value
    resolve_config(as_train_takes_it)
    out = Path(args.out) if args.out else Path("bench-out") / time.strftime("%Y%m%d-%H%M%S")
    new_output_directory(out, "--out")
    try:
        run_bench(strategies, procs, workload, args.scaling, args.repeats, out,
                  log=lambda line: print(line, flush=True))
    except UsageError:
        shutil.rmtree(out, ignore_errors=True)     # new or empty before: nothing of the user's
        raise
    except BenchFailed as exc:
        report(str(exc))
        return 1
    print((out / "bench.md").read_text())
    print(f"wrote {out}/bench.md, bench.csv, bench.json and plots")
    return 0


def _bench_rows(folder: str) -> list[dict]:
    """The measured rows of a ``distnn bench`` output folder, checked."""
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


def _network_file(path: str) -> dict:
    """The network terms ``python -m distnn.costmodel FILE`` wrote (across two hosts, say),
    checked."""
    from distnn.guards import regular_file

    checked = regular_file(Path(path), "--network")
    try:
        network = json.loads(checked.read_text(encoding="utf-8"))
        for name in ("p2p", "allreduce", "bcast"):
            if not all(isinstance(network[name][term], (int, float)) and network[name][term] >= 0
                       for term in ("alpha", "beta")):
                raise ValueError(f"{name}: alpha and beta must be numbers >= 0")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--network {path} is not a network fit written by python -m "
                         f"distnn.costmodel ({exc}); fit one with mpiexec -n 2 python -m "
                         "distnn.costmodel FILE") from None
    return network


def _costmodel(args) -> int:
    from distnn import costmodel
    from distnn.guards import check_memory, model_memory_bytes, new_output_directory

    sizes = list(args.sizes)
    if len(sizes) < 2 or not 1 <= args.batch_size <= 10**6:
        raise UsageError(f"--sizes needs at least two widths and --batch-size an integer in "
                         f"[1, 1000000]; got {','.join(map(str, sizes))} and {args.batch_size}")
    if not 1 <= args.servers <= MAX_PROCS:
        raise UsageError(f"--servers must be in [1, {MAX_PROCS}], got {args.servers}")
    if args.ranks_per_host is not None and not 1 <= args.ranks_per_host <= MAX_PROCS:
        raise UsageError(f"--ranks-per-host must be in [1, {MAX_PROCS}], got "
                         f"{args.ranks_per_host}")
    network = _network_file(args.network) if args.network else None
    itemsize = 4 if args.dtype == "float32" else 8
    check_memory(model_memory_bytes(sizes, args.batch_size, itemsize)
                 + args.batch_size * sizes[0] * itemsize,
                 f"the {','.join(map(str, sizes))} model at batch {args.batch_size}",
                 "give smaller --sizes or --batch-size")
    measured = _bench_rows(args.bench) if args.bench else None
    out = Path(args.out) if args.out else Path("bench-out") / time.strftime("costmodel-%Y%m%d-%H%M%S")
    new_output_directory(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    if network is None:
        env = dict(os.environ)
        pin_blas_threads(env)
        network_run = subprocess.run([*mpiexec_command(2), sys.executable, "-m",
                                      "distnn.costmodel", str(out / "network.json")],
                                     env=env, timeout=600, stdin=subprocess.DEVNULL)
        if network_run.returncode != 0:
            report(f"measuring the network with mpiexec failed (exit "
                   f"{network_run.returncode}); see its output above")
            return 1
        network = json.loads((out / "network.json").read_text())
    compute = costmodel.measure_compute(sizes, dtype=args.dtype)
    projections = [costmodel.project(compute, network, args.batch_size, scaling=scaling,
                                     servers=args.servers) for scaling in ("strong", "weak")]
    text = costmodel.markdown(projections, compute, network, args.batch_size, sizes)
    hosts = None
    if args.ranks_per_host:
        hosts = costmodel.project_hosts(compute, network, args.batch_size, args.ranks_per_host,
                                        servers=args.servers)
        text += (f"\n## Weak scaling on hosts of {args.ranks_per_host} workers, a link each: "
                 f"{args.batch_size} samples per worker\n\n" + costmodel.hosts_markdown(hosts))
    (out / "costmodel.md").write_text(text)
    (out / "costmodel.json").write_text(json.dumps(
        {"sizes": sizes, "batch_size": args.batch_size, "compute": compute, "network": network,
         "projections": projections, "hosts": hosts}, indent=2) + "\n")
    costmodel.plot(projections, out, measured)
    print(text)
    print(f"wrote {out}/costmodel.md, costmodel.json, costmodel.png")
    return 0
