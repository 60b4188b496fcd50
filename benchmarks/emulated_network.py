"""Step times on an emulated network, beside the cost model's predictions.

    sudo .venv/bin/python benchmarks/emulated_network.py [--rates 50mbit,100mbit] [--json OUT]

Hosts are Linux network namespaces (``<prefix>-node1`` ... ``-nodeH``), each joined to a
bridge in ``<prefix>-login`` (where mpiexec runs) by a veth pair whose two directions are
both shaped with ``tc``: a token bucket (``tbf``) at ``--rate``, and with ``--delay`` a
``netem`` delay before it (where the kernel has ``sch_netem``). MPI (MPICH's Hydra, its
ssh launcher replaced by ``tests/cluster/netns_launcher.sh``) sees one node per namespace,
and talks TCP between them (``UCX_TLS=tcp,self``).

For every rate it first fits the cost model's network terms across two shaped hosts
(``python -m distnn.costmodel``, what ``distnn costmodel`` runs: point-to-point, Allreduce
and Bcast, a rank on each), then runs each configuration as a real ``distnn train`` job
and puts its step time (training time per global batch after the first epoch, from
``metrics.jsonl``) beside ``distnn.costmodel.host_step_time``'s prediction for the same
placement, and the slowest rank's compute/comm/wait split from ``result.json``. The
gradient and update terms are fitted here too (``measure_compute``), once per model.

The hosts share this machine's cores: ranks that compute at once on fewer cores take
longer, which the model counts (``cores``); the configurations at the lower rate are
link-bound (a 814 kB vector takes tens of milliseconds per link crossing, the gradient a
few), so their ratios measure the network path, not the contention.

Everything the script creates is deleted when it ends, also on an error or Ctrl-C, and
its namespaces carry a prefix of their own (``distnn-emu-<pid>``).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "cluster"))
from netns import link_hosts, remove_namespaces  # noqa: E402

import measured  # noqa: E402

# One BLAS thread, here (numpy is imported later) and in every rank, as distnn runs.
os.environ.update({name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "MKL_NUM_THREADS")})
ROOT = measured.ROOT
LAUNCHER = ROOT / "tests" / "cluster" / "netns_launcher.sh"
SUBNET = "10.200.0"        # inside the script's own namespaces: no clash with anyone's
LOGIN_ADDRESS = f"{SUBNET}.254"


def _tc(namespace: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "tc", *args], capture_output=True,
                   text=True, timeout=30, check=True)


def rate_bits(rate: str) -> float:
    """``tc``'s rate syntax (``100mbit``, ``1gbit``, ``500kbit``) in bits per second."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1.0}
    for unit, scale in units.items():
        if rate.endswith(unit):
            return float(rate[:-len(unit)]) * scale
    raise ValueError(f"--rate {rate!r}: give bits per second as tc does, e.g. 100mbit or 1gbit")


class Network:
    """``hosts`` namespaces on a bridge, every host link shaped both ways (context manager:
    built on entry, deleted on exit whatever happened)."""

    def __init__(self, hosts: int, rate: str, delay_ms: float = 0.0, prefix: str | None = None):
        self.hosts, self.rate, self.delay_ms = hosts, rate, delay_ms
        self.prefix = prefix or f"distnn-emu-{os.getpid()}"
        self.nodes = [f"node{i}" for i in range(1, hosts + 1)]

    def namespace(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @staticmethod
    def address(node: str) -> str:
        return f"{SUBNET}.{node[4:]}"

    def __enter__(self) -> "Network":
        remove_namespaces(self.prefix)
        try:
            self._build()
        except BaseException:
            remove_namespaces(self.prefix)
            raise
        return self

    def __exit__(self, *exc) -> None:
        remove_namespaces(self.prefix)

    def _build(self) -> None:
        login = self.namespace("login")

        def shape(node: str, namespace: str) -> None:
            self._shape(namespace, "eth0")      # the host's uplink
            self._shape(login, node)            # its downlink, the bridge's port
        link_hosts(login, [(node, self.namespace(node), self.address(node))
                           for node in self.nodes], LOGIN_ADDRESS, each=shape)
        self._shape(login, "br0", shaped=False)

    def _shape(self, namespace: str, device: str, shaped: bool = True) -> None:
        """A token bucket at the rate, deep enough that TCP never loses a packet to it
        (a loss would add a retransmission timeout, not a rate), behind a netem delay."""
        if not shaped:
            return
        bits = rate_bits(self.rate)
        burst = max(4 * 1514, int(bits / 8 * 1e-4))     # 100 µs at the rate, 4 frames at least
        limit = max(4 * 1024 * 1024, int(bits / 8 * 0.5))     # half a second of queue
        parent = ["root"]
        if self.delay_ms:
            _tc(namespace, "qdisc", "add", "dev", device, "root", "handle", "1:", "netem",
                "delay", f"{self.delay_ms}ms", "limit", "100000")
            parent = ["parent", "1:"]
        _tc(namespace, "qdisc", "add", "dev", device, *parent, "handle", "2:", "tbf", "rate",
            self.rate, "burst", str(burst), "limit", str(limit))

    def hostfile(self, work: Path, hosts: list[int]) -> Path:
        """Hydra's hostfile for ``hosts`` (rank -> host index): in blocks (``:count`` per
        host, ranks filling hosts in order) or cyclic (``:1`` per host; Hydra deals the
        ranks round the list)."""
        counts = [hosts.count(h) for h in range(self.hosts)]
        blocks = sorted(hosts) == hosts
        cyclic = hosts == [r % len(set(hosts)) for r in range(len(hosts))]
        if not (blocks or cyclic):
            raise ValueError(f"placement {hosts}: ranks in blocks or dealt in turn only")
        path = work / ("hosts-" + "-".join(map(str, hosts)))
        path.write_text("".join(f"{self.address(node)}:{count if blocks else 1}\n"
                                for node, count in zip(self.nodes, counts) if count))
        return path

    def env(self) -> dict:
        return dict(os.environ, UCX_TLS="tcp,self", DISTNN_VC_PREFIX=self.prefix)

    def mpiexec(self, work: Path, hosts: list[int], program: list[str]) -> list[str]:
        mpiexec = str(Path(sys.executable).parent / "mpiexec")
        return ["ip", "netns", "exec", self.namespace("login"), mpiexec,
                "-f", str(self.hostfile(work, hosts)), "-launcher", "ssh",
                "-launcher-exec", str(LAUNCHER), "-localhost", LOGIN_ADDRESS,
                "-n", str(len(hosts)), *program]

    def run(self, work: Path, hosts: list[int], program: list[str], timeout: float = 900):
        """``program`` on ``len(hosts)`` ranks, rank r on host ``hosts[r]``."""
        done = subprocess.run(self.mpiexec(work, hosts, program), capture_output=True,
                              text=True, timeout=timeout, env=self.env(), cwd=work)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(program[:6])}... on hosts {hosts} failed "
                               f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
        return done


def synthetic_data(path: Path, rows: int, features: int, classes: int, seed: int = 0) -> Path:
    """A data file of ``rows`` random samples: step times do not depend on the values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    np.savez(path, X_train=rng.normal(size=(rows, features)).astype(np.float32),
             y_train=rng.integers(0, classes, rows),
             X_test=rng.normal(size=(256, features)).astype(np.float32),
             y_test=rng.integers(0, classes, 256))
    return path


@dataclass
class Workload:
    """A model and how each configuration trains it (``batch``: per worker, or None for
    the full batch of ``rows``)."""

    name: str
    sizes: tuple
    dtype: str
    batch: int | None
    args: list = field(default_factory=list)


MNIST_LIKE = Workload("784-256-10", (784, 256, 10), "float32", 128)
SEED = Workload("seed 2-64-3", (2, 64, 3), "float64", None, ["--preset", "seed"])


@dataclass
class Config:
    """One measured job: rank r on host ``hosts[r]``."""

    workload: Workload
    strategy: str
    hosts: list
    servers: int = 1
    sync: str | None = None          # None: the strategy has no --sync (ps-async)

    @property
    def workers(self) -> int:
        return len(self.hosts) - (self.servers if self.strategy.startswith("ps-") else 0)

    @property
    def placement(self) -> str:
        """``2+2 blocks``, ``2+2 cyclic``, ``1+1+1+1``: ranks per host, and how dealt."""
        counts = "+".join(str(self.hosts.count(h)) for h in range(max(self.hosts) + 1))
        if sorted(self.hosts) == self.hosts:
            return counts + (" blocks" if max(map(self.hosts.count, self.hosts)) > 1 else "")
        return counts + " cyclic"


def configurations() -> list[Config]:
    """Four processes at most (two cores); the servers on separate hosts where K = 2."""
    blocks, cyclic, spread = [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 2, 3]
    mnist = [Config(MNIST_LIKE, "allreduce", placement, sync=sync)
             for placement in (blocks, cyclic) for sync in ("flat", "node-aware")]
    mnist += [Config(MNIST_LIKE, "ps-sync", placement, 1, sync)
              for placement in (blocks, cyclic) for sync in ("flat", "node-aware")]
    mnist += [Config(MNIST_LIKE, "ps-sync", cyclic, 2, "flat"),
              Config(MNIST_LIKE, "ps-sync", spread, 1, "flat"),
              Config(MNIST_LIKE, "ps-sync", spread, 2, "flat"),
              Config(MNIST_LIKE, "ps-async", cyclic, 1),
              Config(MNIST_LIKE, "ps-async", cyclic, 2)]
    # The seed model moves 3 kB a step: it is compute-bound on any of these links, and its
    # four-rank rows measure four ranks sharing two cores; its two-rank rows do not.
    seed = [Config(SEED, "allreduce", [0, 1], sync="flat"), Config(SEED, "ps-sync", [0, 1]),
            Config(SEED, "ps-async", [0, 1])]
    seed += [Config(SEED, "allreduce", cyclic, sync=sync) for sync in ("flat", "node-aware")]
    seed += [Config(SEED, "ps-sync", blocks, 1, sync) for sync in ("flat", "node-aware")]
    return mnist + seed


STEPS_PER_EPOCH = 8     # 784-256-10: global batches per epoch (synthetic rows)
EPOCHS = 4              # the first is warm-up; the steps of the rest are measured
SEED_EPOCHS = 12        # the seed model: one full-batch step per epoch


def train_args(config: Config, work: Path) -> tuple[list[str], int, int]:
    """``distnn train`` flags, the global batch and the epochs of ``config``."""
    workload = config.workload
    args = ["--strategy", config.strategy, "--kernels", "numpy", "--eval-every", "1",
            *workload.args]
    if config.servers > 1:
        args += ["--servers", str(config.servers)]
    if config.sync:
        args += ["--sync", config.sync]
    if workload.batch is None:
        return [*args, "--epochs", str(SEED_EPOCHS)], 30_000, SEED_EPOCHS
    batch = workload.batch * config.workers
    data = work / f"data-{batch}.npz"
    if not data.exists():
        synthetic_data(data, batch * STEPS_PER_EPOCH, workload.sizes[0], workload.sizes[-1])
    return [*args, "--dataset", str(data), "--hidden", str(workload.sizes[1]), "--dtype",
            workload.dtype, "--batch-size", str(batch), "--epochs", str(EPOCHS), "--lr",
            "0.01"], batch, EPOCHS


def measure(net: "Network", work: Path, config: Config, name: str) -> dict:
    """Run ``config``: the time per global batch after the first epoch, and the slowest
    rank's compute, comm and wait per step (whole run)."""
    args, batch, epochs = train_args(config, work)
    out = work / name
    net.run(work, config.hosts, [sys.executable, "-m", "mpi4py", "-m", "distnn", "train",
                                 "--quiet", "--out", str(out), *args])
    result = json.loads((out / "result.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_epoch = 1 if config.workload.batch is None else STEPS_PER_EPOCH
    steps = (records[-1]["epoch"] - records[0]["epoch"]) * per_epoch
    step_s = (records[-1]["elapsed_s"] - records[0]["elapsed_s"]) / steps
    split = {phase: max(rank[f"{phase}_s"] for rank in result["ranks"]) / (epochs * per_epoch)
             for phase in ("compute", "comm", "wait")}
    shutil.rmtree(out, ignore_errors=True)
    return {"step_s": step_s, "steps": steps, "batch": batch, "sync": result.get("sync"),
            "split_s": split}


def fit_compute(workload: Workload, fits: int = 3) -> dict:
    """``distnn costmodel``'s compute terms (each the fastest of its repeats), the median
    of ``fits`` fits: one fit can land in a burst of the machine's other load."""
    from distnn.costmodel import measure_compute

    fitted = sorted((measure_compute(list(workload.sizes), batch=workload.batch or 256,
                                     dtype=workload.dtype) for _ in range(fits)),
                    key=lambda terms: terms["seconds_per_sample"])
    return fitted[fits // 2]


def fit_network(net: "Network", work: Path) -> dict:
    """The cost model's network terms across hosts 1 and 2, as ``distnn costmodel`` fits
    them (``python -m distnn.costmodel``, a rank on each)."""
    path = work / "network.json"
    net.run(work, [0, 1], [sys.executable, "-m", "distnn.costmodel", str(path)])
    return json.loads(path.read_text())


def run_rate(rate: str, delay_ms: float, configs: list[Config], computes: dict, cores: int,
             work: Path, log) -> dict:
    from distnn.costmodel import host_step_time, project_hosts

    hosts = max(max(config.hosts) for config in configs) + 1
    rows = []
    with Network(hosts, rate, delay_ms) as net:
        network = fit_network(net, work)
        log(f"{rate}: " + ", ".join(f"{name} alpha {fitted['alpha'] * 1e6:.0f} us, "
                                     f"{8 / fitted['beta'] / 1e6:.0f} Mbit/s"
                                     for name, fitted in network.items()))
        for index, config in enumerate(configs):
            got = measure(net, work, config, f"run-{index}")
            predicted = host_step_time(config.strategy, config.hosts, got["batch"],
                                       computes[config.workload.name], network,
                                       servers=config.servers, sync=got["sync"] or "flat",
                                       cores=cores)
            row = {**asdict(config), "workload": config.workload.name,
                   "placement": config.placement, "workers": config.workers, **got,
                   "predicted_s": predicted["total"], "predicted": predicted,
                   "ratio": got["step_s"] / predicted["total"]}
            rows.append(row)
            log(f"  {row_text(row)}")
    projections = {}
    for workload in {config.workload.name: config.workload for config in configs}.values():
        strong = workload.batch is None
        projections[workload.name] = project_hosts(
            computes[workload.name], network, 30_000 if strong else workload.batch,
            ranks_per_host=2, scaling="strong" if strong else "weak")
    return {"rate": rate, "delay_ms": delay_ms, "network": network, "rows": rows,
            "projections": projections}


def row_text(row: dict) -> str:
    split = row["split_s"]
    servers = f" K={row['servers']}" if row["strategy"] != "allreduce" else ""
    return (f"{row['workload']} {row['strategy']}{servers} {row['sync'] or '-'} "
            f"{row['placement']}: {row['step_s'] * 1e3:.1f} ms measured, "
            f"{row['predicted_s'] * 1e3:.1f} ms predicted ({row['ratio']:.2f}); slowest rank "
            f"{split['compute'] * 1e3:.1f}/{split['comm'] * 1e3:.1f}/{split['wait'] * 1e3:.1f} ms")


def find(rows, **match) -> dict | None:
    return next((row for row in rows if all(row[k] == v for k, v in match.items())), None)


def targets(run: dict) -> dict:
    """The ratios the issue asks for, from one rate's rows."""
    rows = [row for row in run["rows"] if row["workload"] == MNIST_LIKE.name]
    one = find(rows, strategy="ps-sync", servers=1, hosts=[0, 1, 0, 1], sync="node-aware")
    two = find(rows, strategy="ps-sync", servers=2, hosts=[0, 1, 0, 1])
    flat = find(rows, strategy="allreduce", hosts=[0, 1, 0, 1], sync="flat")
    aware = find(rows, strategy="allreduce", hosts=[0, 1, 0, 1], sync="node-aware")
    ratios = [row["ratio"] for row in run["rows"]]
    return {"two_servers_vs_one": one["step_s"] / two["step_s"] if one and two else None,
            "node_aware_vs_flat": flat["step_s"] / aware["step_s"] if flat and aware else None,
            "model_ratio_range": [min(ratios), max(ratios)]}


def markdown(result: dict) -> str:
    """The README block: one table per rate, the targets, and where the model fitted to
    that link says each strategy stops scaling."""
    from distnn.costmodel import hosts_markdown

    lines = []
    for run in result["runs"]:
        network = run["network"]
        fitted = ", ".join(f"{name} {8 / f['beta'] / 1e6:.0f} Mbit/s, alpha "
                           f"{f['alpha'] * 1e6:.0f} µs" for name, f in network.items())
        lines += [f"**{run['rate']} per host link**, both directions"
                  + (f", {run['delay_ms']:g} ms delay" if run["delay_ms"] else "")
                  + f" (fitted across two hosts: {fitted}).", "",
                  "| model | strategy | K | sync | ranks per host | global batch | measured "
                  "ms/step | predicted | measured/predicted | slowest rank compute/comm/wait "
                  "ms |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in run["rows"]:
            split, servers = row["split_s"], row["servers"] if row["strategy"] != "allreduce" else ""
            lines.append(
                f"| {row['workload']} | {row['strategy']} | {servers} "
                f"| {row['sync'] or ''} | {row['placement']} | {row['batch']:,} | "
                f"{row['step_s'] * 1e3:.1f} | {row['predicted_s'] * 1e3:.1f} | "
                f"{row['ratio']:.2f} | {split['compute'] * 1e3:.1f} / "
                f"{split['comm'] * 1e3:.1f} / {split['wait'] * 1e3:.1f} |")
        got = targets(run)
        low, high = got["model_ratio_range"]
        lines += ["", f"At {run['rate']}: ps-sync with 2 servers on 2 hosts "
                  + (f"{got['two_servers_vs_one']:.2f}× " if got["two_servers_vs_one"] else "")
                  + "the steps per second of 1 server (2+2 cyclic, node-aware); node-aware "
                  "allreduce "
                  + (f"{got['node_aware_vs_flat']:.2f}× " if got["node_aware_vs_flat"] else "")
                  + f"flat's (2+2 cyclic); measured/predicted from {low:.2f} to {high:.2f}.", ""]
        for name, projection in run.get("projections", {}).items():
            lines += [f"Projected on this link, hosts of 2 workers with a core each, {name} "
                      f"({projection['scaling']} scaling):", "",
                      *hosts_markdown(projection).split("\n\n", 1)[1].rstrip().splitlines(), ""]
    return "\n".join(lines)


def why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux (network namespaces and tc)"
    for tool in ("ip", "tc", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (iproute2, util-linux)"
    if not (Path(sys.executable).parent / "mpichversion").exists():
        return "needs MPICH's mpiexec (Hydra) beside Python: pip install 'distnn[mpich]'"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50mbit,100mbit",
                        help="link rates to emulate, tc's syntax (default: %(default)s)")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="one-way delay added to every link direction, by netem "
                        "(default: none, the links' own latency)")
    parser.add_argument("--only", help="comma-separated words a configuration's row must "
                        "contain (e.g. allreduce), for a quick look")
    parser.add_argument("--json", help="write the measurements, predictions and stamp here")
    args = parser.parse_args()
    reason = why_not()
    if reason:
        raise SystemExit(f"emulated_network.py {reason}")
    for rate in args.rates.split(","):
        rate_bits(rate)
    stamp = measured.Stamp("python benchmarks/emulated_network.py " + " ".join(sys.argv[1:]))
    # Ctrl-C (even where a shell started us with SIGINT ignored), SIGTERM and SIGHUP end
    # through the same cleanups: the namespaces and the work folder go.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda number, _: sys.exit(128 + number))
    configs = configurations()
    if args.only:
        words = args.only.split(",")
        configs = [c for c in configs if all(w in f"{c.workload.name} {c.strategy} {c.sync} "
                                                  f"K={c.servers} {c.placement}" for w in words)]
    cores = len(os.sched_getaffinity(0))
    computes = {workload.name: fit_compute(workload)
                for workload in {c.workload.name: c.workload for c in configs}.values()}
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"distnn-emu-{os.getpid()}"
    work.mkdir(parents=True)
    try:
        runs = [run_rate(rate, args.delay_ms, configs, computes, cores, work,
                         lambda line: print(line, flush=True))
                for rate in args.rates.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"runs": runs, "compute": computes, "cores": cores, "stamp": stamp.close()}
    print()
    print(markdown(result))
    measured.write(args.json, result)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: the emulated hosts and the work folder are removed", file=sys.stderr)
        sys.exit(130)
