"""The command line's grammar. Every training flag is generated from ``TrainConfig``'s
declarations (``config.py``): its name, type, choices and help with the default."""

import argparse
import difflib
import re

from distnn import __version__
from distnn.config import DTYPES, FIELD_INFO, PRESETS, FieldInfo
from distnn.errors import UsageError

GROUPS = {"data": "data", "model": "model", "optimizer": "optimizer and schedule",
          "training": "training loop", "parallel": "processes and strategies",
          "run": "run directory and output"}
# Fields a benchmark sets itself for every configuration it runs, or leaves off (a trace
# would be written by every timed run).
BENCH_OWNS = ("strategy", "procs", "out", "timeline", "timeline_steps")


class Parser(argparse.ArgumentParser):
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


def widths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects widths like 64 or 256,128, got {text!r}") from None
    if any(width < 1 for width in values):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return values


def _value_parser(info: FieldInfo):
    """The argparse ``type`` of a field: its kind, with the word that stands for None."""
    if info.kind is tuple:
        return widths
    kind, none = info.kind, info.spec.none

    def parse(text: str):
        if none is not None and text == none:
            return None
        try:
            value = kind(text)
        except ValueError:
            value = None
        if none is not None and (value is None or value < 1):
            raise argparse.ArgumentTypeError(f"must be a positive integer or {none!r}, got {text!r}")
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}"
                                             f", got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _default_text(info: FieldInfo) -> str:
    if info.spec.default_text is not None:
        return info.spec.default_text
    if info.kind is bool:
        return "on" if info.default else "off"
    if info.kind is tuple:
        return ",".join(map(str, info.default))
    if info.default is None:
        return "none"
    return f"{info.default:g}" if info.kind is float else str(info.default)


def add_field_flag(add, info: FieldInfo) -> None:
    """One generated flag for ``info``; its value lands under the field's name."""
    spec = info.spec
    help_text = f"{spec.help} (default: {_default_text(info)})".replace("%", "%%")
    if info.kind is bool:
        add(info.flag, dest=info.name, action=argparse.BooleanOptionalAction, help=help_text)
        return
    add(info.flag, dest=info.name, type=_value_parser(info) if info.kind is not str else str,
        choices=spec.choices, metavar=spec.metavar, help=help_text)


def add_fields(parser: argparse.ArgumentParser, names) -> None:
    """Flags for ``names`` (field names), in ``--help`` groups."""
    groups = {}
    for name in names:
        info = FIELD_INFO[name]
        if info.spec.group not in groups:
            groups[info.spec.group] = parser.add_argument_group(GROUPS[info.spec.group])
        add_field_flag(groups[info.spec.group].add_argument, info)


def flag_fields(*groups: str, leave_out=()) -> list[str]:
    """Names of the fields with a flag, of ``groups`` (all when none given)."""
    return [name for name, info in FIELD_INFO.items()
            if info.spec.flag and (not groups or info.spec.group in groups)
            and name not in leave_out]


def _add_train(commands) -> None:
    train = commands.add_parser("train", help="train an MLP (serial or on MPI ranks)",
                                argument_default=argparse.SUPPRESS)
    add = train.add_argument
    add("--preset", choices=sorted(PRESETS), help="start from a named workload (default: none: "
        "the recipe the data calls for)")
    add("--config", metavar="FILE.toml", help="config values; flags override them (default: none)")
    add("--overwrite", action="store_true", help="replace the distnn run already in --out "
        "(refused if --out holds other files) (default: refuse a non-empty --out)")
    add("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR from its "
        "checkpoint, with its strategy and process count; only --epochs and --procs may "
        "change (default: a new run)")
    add("--threads", type=int, metavar="N", help="BLAS threads per process (default: 1, or "
        "OMP_NUM_THREADS: ranks fill the cores, and a serial baseline with all cores would "
        "make speedups look larger than they are)")
    add("--quiet", action="store_true", help="no progress output, only warnings and where the "
        "run was saved (default: progress on rank 0)")
    _add_host_flags(train)
    add_fields(train, flag_fields())


def _add_host_flags(parser) -> None:
    """Where ``--procs`` places its ranks: launcher flags, not part of what is trained."""
    parser.add_argument("--hosts", metavar="HOST:N,...", help="run the ranks on these hosts, "
                        "filling each with N ranks in order (default: this machine alone)")
    parser.add_argument("--hostfile", metavar="FILE", help="the hosts, one per line: HOST, "
                        "HOST:N or HOST slots=N (default: this machine alone)")


def _add_model_commands(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="loss, accuracy and confusion matrix of a "
                                   "model on a data set", argument_default=argparse.SUPPRESS)
    evaluate.add_argument("model", help="a run directory, or a model.npz written by distnn train; "
                          "the data flags default to the run's config.json")
    add_fields(evaluate, flag_fields("data"))
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


def _add_bench(commands) -> None:
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
    workload = bench.add_argument_group("the workload, as distnn train takes it")
    workload.add_argument("--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
                          help="start from a named workload (default: none)")
    workload.add_argument("--config", metavar="FILE.toml", default=argparse.SUPPRESS,
                          help="config values; flags override them (default: none)")
    for name in flag_fields(leave_out=BENCH_OWNS):
        info = FIELD_INFO[name]
        before = len(bench._actions)
        add_field_flag(workload.add_argument, info)
        for action in bench._actions[before:]:
            action.default = argparse.SUPPRESS


def _add_costmodel(commands) -> None:
    model = commands.add_parser("costmodel", help="fit latency/bandwidth and compute time here, "
                                "project speedup up to 1024 workers")
    model.add_argument("--sizes", type=widths, default=(784, 256, 10),
                       help="layer widths, e.g. 784,256,10 (default: 784,256,10)")
    model.add_argument("--batch-size", type=int, default=128, help="global batch "
                       "(default: %(default)s)")
    model.add_argument("--dtype", choices=DTYPES, default="float32", help="(default: %(default)s)")
    model.add_argument("--servers", type=int, default=1, metavar="K",
                       help="parameter servers of ps-sync and ps-async, each with 1/K of the "
                       "parameters (default: %(default)s)")
    model.add_argument("--bench", help="a bench output folder whose measured points to overlay "
                       "(default: none)")
    model.add_argument("--network", metavar="FILE", help="network terms fitted elsewhere, e.g. "
                       "across two hosts with `mpiexec -n 2 -hosts A,B python -m "
                       "distnn.costmodel FILE` (default: fit them here, 2 local ranks)")
    model.add_argument("--ranks-per-host", type=int, metavar="L", help="also project weak "
                       "scaling over hosts of L workers sharing a link, flat and node-aware "
                       "(default: not)")
    model.add_argument("--out", help="output folder (default: bench-out/costmodel-<time>)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="distnn", description="Data-parallel neural-network training on MPI.")
    parser.add_argument("--version", action="version", version=f"distnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(commands)
    _add_model_commands(commands)
    _add_bench(commands)
    _add_costmodel(commands)
    info = commands.add_parser("info", help="versions, MPI library and launcher, where --procs "
                               "places ranks, BLAS and threads")
    info.add_argument("--procs", type=int, metavar="N", help="show how N ranks would be placed "
                      "(default: one per slot of --hosts/--hostfile, else 2)")
    _add_host_flags(info)
    return parser


def to_argv(values: dict) -> list[str]:
    """Training flags that give ``values`` (field name -> value): what a benchmark passes to
    ``distnn train`` for each configuration, generated like the parser."""
    argv = []
    for name, value in values.items():
        info = FIELD_INFO[name]
        if info.kind is bool:
            argv.append(info.flag if value else "--no-" + info.flag[2:])
        elif value is None:
            if info.spec.none is not None:
                argv += [info.flag, info.spec.none]
        elif info.kind is tuple:
            argv += [info.flag, ",".join(map(str, value))]
        else:
            argv += [info.flag, repr(value) if info.kind is float else str(value)]
    return argv
