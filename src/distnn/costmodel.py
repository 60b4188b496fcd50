"""A latency-bandwidth (alpha-beta) cost model: how far each strategy scales.

Measured here:  T(m) = alpha + beta * m  for a point-to-point message, ``Allreduce`` and
``Bcast`` of m bytes (2 ranks, fitted by least squares), the gradient time per sample
and the update time per parameter. Projected for n workers, global batch B, model of
M bytes and P parameters (t_s = seconds per sample, t_u = update seconds per parameter):

    serial     T1 = t_s B + t_u P
    allreduce  T  = t_s B/n + t_u P + min(2 L alpha_ar + 2 (n-1)/n M beta_ar,
                                          L (alpha_ar + M beta_ar)),    L = ceil(log2 n)
               (Rabenseifner's reduce-scatter + allgather moves a ring's 2M per rank;
                recursive doubling wins for small models; MPI picks the cheaper)
    ps-sync    T  = t_s B/n + n (alpha_p2p + M/K beta_p2p) + t_u P (n+1) / K
                    + ceil(log2(n+K)) (alpha_bc + M/K beta_bc)
               (K servers, --servers: each server's link carries n M/K in and its shard
               out, a tree bcast each, the K of them at once; the update is split K ways)
    ps-async   per update: server 2 (alpha_p2p + M/K beta_p2p) + t_u P / K; worker cycle
               t_s B/n + 2 (K alpha_p2p + M beta_p2p) + t_u P / K (a message to and from
               each server); samples/s = B/n * min(n / cycle, 1 / server)

Speedup = serial time per global batch / strategy time per global batch; efficiency =
speedup / n. A strategy "stops scaling" where its efficiency first falls below 50%.

Hosts (``host_step_time``): where ranks share hosts, each host joined to the others by one
full-duplex link, the model counts the bytes every link carries in each direction in each
phase of a step, and a phase takes ``rounds * alpha + beta * (its busiest link's bytes)``:
the three fitted betas are seconds per byte of one link direction (two hosts, a rank on
each: a ping-pong, an Allreduce and a Bcast each move M bytes each way). The phases are
those of the code and of MPICH's algorithms for these sizes: an allreduce of a long vector
is a reduce-scatter by recursive halving then an allgather by recursive doubling (step k
exchanges M/2^k with the rank 2^(k-1) away; ranks past a power of two first fold into a
neighbour), a broadcast reaches every other host once per tree round (binomial over the
hosts), ps-sync's workers send each server M/K, ps-async's server link carries M/K in
and out per update. Node-aware (``--sync node-aware``): one rank per host does that
exchange, after the host's parts are added in memory ((L-1)/L P additions per rank,
counted like updates). Ranks that compute at once on fewer cores take longer by
ranks/cores.

Run as ``mpiexec -n 2 python -m distnn.costmodel OUT.json`` to measure the network terms.
"""

import json
import math
import sys
import time

import numpy as np

SIZES = [2**k for k in range(3, 23, 2)]   # 8 B .. 2 MiB
STRATEGIES = ("allreduce", "ps-sync", "ps-async")


def fit(sizes, seconds) -> tuple[float, float]:
    """Alpha (s): the smallest message's time less its bytes' share; beta (s/byte): the
    least-squares slope over the larger half of the sizes, both clipped at 0. One line
    fitted to all six decades of sizes would let the largest messages alone set the
    intercept (often below 0 on a shaped link, whose token bucket lets a small message
    through at the wire's speed), and the latency would be their noise."""
    order = np.argsort(sizes)
    sizes, seconds = np.asarray(sizes, float)[order], np.asarray(seconds, float)[order]
    large = slice(len(sizes) // 2, None)
    beta = max(float(np.polyfit(sizes[large], seconds[large], 1)[0]), 0.0)
    return max(float(seconds[0] - beta * sizes[0]), 0.0), beta


def measure_network(comm, repeats: int = 30) -> dict:
    """alpha/beta of ping-pong (half round trip), Allreduce and Bcast on ``comm``."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    timings = {"p2p": [], "allreduce": [], "bcast": []}
    for size in SIZES:
        buffer = np.zeros(size // 8, dtype=np.float64)
        for name in timings:
            best = math.inf
            for _ in range(repeats):
                # Every repeat starts together: a receiver that came late would find the
                # data already there and time a copy, not a transfer.
                comm.Barrier()
                start = time.perf_counter()
                if name == "p2p":
                    if rank == 0:
                        comm.Send(buffer, dest=1)
                        comm.Recv(buffer, source=1)
                    elif rank == 1:
                        comm.Recv(buffer, source=0)
                        comm.Send(buffer, dest=0)
                elif name == "allreduce":
                    comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                else:
                    comm.Bcast(buffer, root=0)
                elapsed = time.perf_counter() - start
                best = min(best, elapsed / 2 if name == "p2p" else elapsed)
            timings[name].append(comm.allreduce(best, op=MPI.MAX))
    return {name: dict(zip(("alpha", "beta"), fit(SIZES, values)), sizes=SIZES, seconds=values)
            for name, values in timings.items()}


def measure_compute(sizes, batch: int = 256, dtype="float32", repeats: int = 20) -> dict:
    """Seconds per sample of a gradient and per parameter of an SGD update."""
    from distnn.nn import MLP
    from distnn.optim import SGD

    model = MLP(sizes, dtype=dtype)
    optimizer = SGD(model.params, lr=0.01, momentum=0.9)   # the update a parameter server makes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    model.gradient_sum(x, y)
    gradient, update = math.inf, math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.gradient_sum(x, y)
        middle = time.perf_counter()
        optimizer.step(model.grads)
        gradient = min(gradient, middle - start)
        update = min(update, time.perf_counter() - middle)
    return {"seconds_per_sample": gradient / batch,
            "seconds_per_param_update": update / model.n_params,
            "n_params": model.n_params, "bytes": model.params.nbytes}


def step_time(strategy: str, n: int, batch: int, compute: dict, network: dict,
              servers: int = 1) -> float:
    """Seconds per global batch of ``batch`` samples with ``n`` workers (and ``servers``
    parameter servers for ps-sync and ps-async)."""
    t_s, P = compute["seconds_per_sample"], compute["n_params"]
    update = compute["seconds_per_param_update"] * P
    M = compute["bytes"]

    def cost(name, size):
        return network[name]["alpha"] + network[name]["beta"] * size

    if strategy == "serial":
        return t_s * batch + update
    if strategy == "allreduce":
        fitted, rounds = network["allreduce"], math.ceil(math.log2(n)) if n > 1 else 0
        combine = min(2 * rounds * fitted["alpha"] + 2 * (n - 1) / n * M * fitted["beta"],
                      rounds * (fitted["alpha"] + M * fitted["beta"]))
        return t_s * batch / n + update + combine
    shard = M / servers
    if strategy == "ps-sync":
        return (t_s * batch / n + n * cost("p2p", shard) + update * (n + 1) / servers
                + math.ceil(math.log2(n + servers)) * cost("bcast", shard))
    if strategy == "ps-async":
        server = 2 * cost("p2p", shard) + update / servers
        # The reply follows the update; a worker talks to every server.
        cycle = t_s * batch / n + 2 * servers * cost("p2p", shard) + update / servers
        updates_per_s = min(n / cycle, 1 / server)
        return n / updates_per_s     # n updates of batch/n samples = one global batch
    raise ValueError(strategy)


def project(compute: dict, network: dict, batch: int, workers=None,
            scaling: str = "strong", servers: int = 1) -> dict:
    """Speedup per strategy and worker count. Strong: the global batch stays ``batch``;
    weak: each worker keeps ``batch`` samples (global batch n * batch), and speedup is the
    ratio of samples/s to serial on the same global batch. ``servers``: the parameter
    servers of ps-sync and ps-async (on top of the n workers)."""
    workers = workers or [2**k for k in range(11)]
    curves = {}
    for strategy in STRATEGIES:
        curve = []
        for n in workers:
            global_batch = batch * n if scaling == "weak" else batch
            serial = step_time("serial", 1, global_batch, compute, network)
            curve.append(serial / step_time(strategy, n, global_batch, compute, network,
                                            servers))
        curves[strategy] = curve
    peaks = {s: workers[int(np.argmax(curve))] for s, curve in curves.items()}
    below_half = {s: next((n for n, v in zip(workers, curve) if n > 1 and v / n < 0.5), None)
                  for s, curve in curves.items()}
    return {"scaling": scaling, "servers": servers, "workers": workers, "speedup": curves,
            "peak_workers": peaks,
            "efficiency_below_half_at": below_half,
            "peak_speedup": {s: max(curve) for s, curve in curves.items()}}


def markdown(projections: list[dict], compute: dict, network: dict, batch: int, sizes) -> str:
    lines = [f"# Projected speedup: {'-'.join(map(str, sizes))} MLP, batch {batch}", "",
             f"Measured: gradient {compute['seconds_per_sample'] * 1e6:.2f} µs/sample, update "
             f"{compute['seconds_per_param_update'] * 1e9:.2f} ns/parameter, model "
             f"{compute['bytes'] / 1e3:,.1f} kB."
             + (f" ps-sync and ps-async with {projections[0]['servers']} parameter servers "
                "(on top of the workers)." if projections[0].get("servers", 1) > 1 else ""), ""]
    lines += ["| primitive | alpha (µs) | beta (GB/s) |", "|---|---|---|"]
    for name, fitted in network.items():
        bandwidth = 1 / fitted["beta"] / 1e9 if fitted["beta"] > 0 else float("inf")
        lines.append(f"| {name} | {fitted['alpha'] * 1e6:.2f} | {bandwidth:.2f} |")
    for projection in projections:
        weak = projection["scaling"] == "weak"
        lines += ["", f"## {projection['scaling']} scaling: "
                  + (f"{batch} samples per worker" if weak else f"global batch {batch}"), "",
                  "| workers | " + " | ".join(STRATEGIES) + " |",
                  "|---|" + "---|" * len(STRATEGIES)]
        for i, n in enumerate(projection["workers"]):
            lines.append(f"| {n} | " + " | ".join(f"{projection['speedup'][s][i]:.2f}×"
                                                 for s in STRATEGIES) + " |")
        lines.append("")
        lines += [where_scaling_stops(projection, s) for s in STRATEGIES]
    return "\n".join(lines) + "\n"


def where_scaling_stops(projection: dict, name: str) -> str:
    """A line on curve ``name`` of a projection: where its efficiency falls below 50%, and
    its peak speedup (to two significant digits below 1×: a link-bound curve peaks far below)."""
    stop = projection["efficiency_below_half_at"][name]
    where = (f"efficiency falls below 50% at {stop} workers" if stop
             else f"efficiency stays above 50% up to {projection['workers'][-1]} workers")
    peak = projection["peak_speedup"][name]
    shown = f"{peak:.1f}" if peak >= 1 else f"{peak:.2g}"
    return (f"- {name}: {where}; peak speedup {shown}× at "
            f"{projection['peak_workers'][name]} workers")


def plot(projections: list[dict], out, measured: list[dict] | None = None) -> None:
    """One panel per scaling mode; measured bench points overlaid on the strong panel."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, panels = plt.subplots(1, len(projections), figsize=(6 * len(projections), 4.5),
                                  dpi=100, squeeze=False)
    for axes, projection in zip(panels[0], projections):
        workers = projection["workers"]
        axes.plot(workers, workers, "k--", linewidth=1, label="ideal")
        for strategy in STRATEGIES:
            line, = axes.plot(workers, projection["speedup"][strategy], label=f"{strategy} (model)")
            points = [r for r in measured or [] if r["strategy"] == strategy]
            if points and projection["scaling"] == "strong":
                axes.plot([r["workers"] for r in points], [r["speedup"] for r in points], "o",
                          color=line.get_color(), label=f"{strategy} (measured)")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log", base=2)
        axes.set_title(f"{projection['scaling']} scaling")
        axes.set_xlabel("workers")
        axes.set_ylabel("speedup vs serial")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "costmodel.png")
    plt.close(figure)


class Links:
    """Bytes each host's link carries in one phase: ``up`` leaves the host, ``down``
    enters it. Traffic between ranks of one host stays off the links."""

    def __init__(self, hosts: int):
        self.up, self.down = np.zeros(hosts), np.zeros(hosts)

    def send(self, source: int, destination: int, nbytes: float) -> "Links":
        if source != destination:
            self.up[source] += nbytes
            self.down[destination] += nbytes
        return self

    def __add__(self, other: "Links") -> "Links":
        total = Links(len(self.up))
        total.up, total.down = self.up + other.up, self.down + other.down
        return total

    @property
    def busiest(self) -> float:
        return float(max(self.up.max(initial=0), self.down.max(initial=0)))


def phases_seconds(phases: list[Links], fitted: dict) -> float:
    """Phases one after the other, each ``alpha + beta * busiest link``."""
    return sum(fitted["alpha"] + fitted["beta"] * phase.busiest for phase in phases)


def allreduce_phases(hosts: list[int], nbytes: float, n_hosts: int) -> list[Links]:
    """MPICH's allreduce of a long vector over ranks on ``hosts`` (rank -> host): ranks
    past the largest power of two first hand their vector to a neighbour (and take the
    result back at the end), then a reduce-scatter by recursive halving (step k: M/2^k
    with the rank 2^(k-1) away) and an allgather retracing it."""
    n = len(hosts)
    if n < 2:
        return []
    pof2 = 1 << (n.bit_length() - 1)
    extra = n - pof2
    fold_in = Links(n_hosts)
    for rank in range(0, 2 * extra, 2):
        fold_in.send(hosts[rank], hosts[rank + 1], nbytes)
    group = [hosts[rank] for rank in range(1, 2 * extra, 2)] + hosts[2 * extra:]
    halving, mask, size = [], 1, nbytes
    while mask < pof2:
        size /= 2
        step = Links(n_hosts)
        for rank in range(pof2):
            step.send(group[rank], group[rank ^ mask], size)
        halving.append(step)
        mask <<= 1
    fold_out = Links(n_hosts)
    for rank in range(0, 2 * extra, 2):
        fold_out.send(hosts[rank + 1], hosts[rank], nbytes)
    return ([fold_in] if extra else []) + halving + halving[::-1] + ([fold_out] if extra else [])


def bcast_phases(root: int, receivers, nbytes: float, n_hosts: int) -> list[Links]:
    """A broadcast from host ``root`` that reaches each host of ``receivers`` once, by a
    binomial tree over the hosts (round j: the first 2^j hosts send to the next 2^j)."""
    order = [root] + sorted(set(receivers) - {root})
    rounds, reached = [], 1
    while reached < len(order):
        step = Links(n_hosts)
        for index in range(min(reached, len(order) - reached)):
            step.send(order[index], order[index + reached], nbytes)
        rounds.append(step)
        reached *= 2
    return rounds


def _together(trees: list[list[Links]], n_hosts: int) -> list[Links]:
    """Several broadcasts at once: their rounds share the links."""
    depth = max((len(tree) for tree in trees), default=0)
    return [sum((tree[j] for tree in trees if j < len(tree)), Links(n_hosts))
            for j in range(depth)]


def leaders(hosts: list[int], ranks) -> dict[int, int]:
    """Host -> the lowest of ``ranks`` on it (the rank that exchanges for it)."""
    first: dict[int, int] = {}
    for rank in ranks:
        first.setdefault(hosts[rank], rank)
    return first


def host_step_time(strategy: str, hosts: list[int], batch: int, compute: dict, network: dict,
                   servers: int = 1, sync: str = "flat", cores: int | None = None) -> dict:
    """Seconds per global batch of ``batch`` samples with rank r on host ``hosts[r]``
    (ps-sync and ps-async: ranks ``0..servers-1`` are the servers), by phase:
    ``{"compute", "update", "network", "total"}``. ``sync``: ``flat`` (every rank
    exchanges) or ``node-aware`` (allreduce, ps-sync: one rank per host). ``cores``: when
    the ranks share fewer cores than compute at once, their computing takes longer."""
    n_hosts, size = max(hosts) + 1, len(hosts)
    K = servers if strategy in ("ps-sync", "ps-async") else 0
    workers = list(range(K, size))
    n = len(workers)
    t_s, P, M = compute["seconds_per_sample"], compute["n_params"], compute["bytes"]
    t_u = compute["seconds_per_param_update"]
    crowding = max(1.0, n / cores) if cores else 1.0
    gradient = t_s * batch / n * crowding
    p2p, bcast = network["p2p"], network["bcast"]
    node_aware = sync == "node-aware"
    exchanging = list(leaders(hosts, workers).values()) if node_aware else workers
    counts = [hosts[K:].count(h) for h in set(hosts[K:])]       # workers per host
    # Node-aware: a host's L ranks add their parts, each (L-1)/L of a vector; allreduce's
    # ranks then update 1/L of it each (the host with fewest ranks is the slowest).
    adding = t_u * P * (max(counts) - 1) / max(counts) if node_aware else 0.0
    if strategy == "serial":
        return {"compute": t_s * batch, "update": t_u * P, "network": 0.0,
                "total": t_s * batch + t_u * P}
    if strategy == "allreduce":
        network_s = phases_seconds(allreduce_phases([hosts[r] for r in exchanging], M, n_hosts),
                                   network["allreduce"])
        update = (t_u * P / min(counts) if node_aware else t_u * P) + adding
    elif strategy == "ps-sync":
        gradients = Links(n_hosts)
        for rank in exchanging:
            for server in range(K):
                gradients.send(hosts[rank], hosts[server], M / K)
        receivers = [hosts[r] for r in (*range(K), *exchanging)] if node_aware else hosts
        parameters = _together([bcast_phases(hosts[server], receivers, M / K, n_hosts)
                                for server in range(K)], n_hosts)
        network_s = phases_seconds([gradients], p2p) + phases_seconds(parameters, bcast)
        update = t_u * P * (len(exchanging) + 1) / K + adding
    elif strategy == "ps-async":
        # A round: one update from each worker, its shards in and the parameters back out.
        links = Links(n_hosts)
        for rank in workers:
            for server in range(K):
                links.send(hosts[rank], hosts[server], M / K).send(hosts[server], hosts[rank],
                                                                   M / K)
        farthest = max(sum(M / K for server in range(K) if hosts[server] != hosts[rank])
                       for rank in workers)
        update = t_u * P / K
        cycle = gradient + 2 * (p2p["alpha"] + p2p["beta"] * farthest) + update
        total = max(cycle, phases_seconds([links], p2p), n * update)
        return {"compute": gradient, "update": update,
                "network": max(0.0, total - gradient - update), "total": total}
    else:
        raise ValueError(strategy)
    return {"compute": gradient, "update": update, "network": network_s,
            "total": gradient + update + network_s}


def host_placement(strategy: str, hosts: int, ranks_per_host: int, servers: int = 1) -> list[int]:
    """Rank -> host for a projection: ``hosts`` hosts of ``ranks_per_host`` workers each,
    in blocks; ps-sync's and ps-async's servers first, each alone on a host of its own."""
    K = servers if strategy in ("ps-sync", "ps-async") else 0
    return list(range(K)) + [K + h for h in range(hosts) for _ in range(ranks_per_host)]


def project_hosts(compute: dict, network: dict, batch: int, ranks_per_host: int,
                  hosts=None, servers: int = 1, scaling: str = "weak") -> dict:
    """Scaling over ``hosts`` hosts of ``ranks_per_host`` workers (a core each), flat and
    node-aware: weak, ``batch`` samples per worker; strong, a global batch of ``batch``.
    Speedup over serial on the same global batch, per ``strategy/sync``, and where
    efficiency (speedup / workers) first falls below 50%."""
    hosts = hosts or [2**k for k in range(10)]
    curves, workers = {}, [h * ranks_per_host for h in hosts]
    for strategy in STRATEGIES:
        for sync in ("flat", "node-aware") if strategy != "ps-async" else ("flat",):
            curve = []
            for count, n in zip(hosts, workers):
                placement = host_placement(strategy, count, ranks_per_host, servers)
                total = batch * n if scaling == "weak" else batch
                serial = host_step_time("serial", [0], total, compute, network)["total"]
                curve.append(serial / host_step_time(strategy, placement, total, compute,
                                                     network, servers, sync)["total"])
            curves[f"{strategy}/{sync}"] = curve
    below_half = {name: next((n for n, v in zip(workers, curve) if v / n < 0.5), None)
                  for name, curve in curves.items()}
    return {"scaling": scaling, "ranks_per_host": ranks_per_host, "servers": servers,
            "hosts": hosts,
            "workers": workers, "speedup": curves, "efficiency_below_half_at": below_half,
            "peak_speedup": {name: max(curve) for name, curve in curves.items()},
            "peak_workers": {name: workers[int(np.argmax(curve))]
                             for name, curve in curves.items()}}


def hosts_markdown(projection: dict) -> str:
    """The table of ``project_hosts`` and where each strategy stops scaling."""
    names = list(projection["speedup"])
    lines = [f"| hosts × {projection['ranks_per_host']} workers | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for i, (count, n) in enumerate(zip(projection["hosts"], projection["workers"])):
        lines.append(f"| {count} × {projection['ranks_per_host']} = {n} | "
                     + " | ".join(f"{projection['speedup'][name][i]:.2f}×" for name in names)
                     + " |")
    lines.append("")
    lines += [where_scaling_stops(projection, name) for name in names]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from mpi4py import MPI

    result = measure_network(MPI.COMM_WORLD)
    if MPI.COMM_WORLD.Get_rank() == 0:
        with open(sys.argv[1], "w") as stream:
            json.dump(result, stream, indent=2)
