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
    """Least-squares alpha (s) and beta (s/byte), both clipped at 0."""
    beta, alpha = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    return max(float(alpha), 0.0), max(float(beta), 0.0)


def measure_network(comm, repeats: int = 30) -> dict:
    """alpha/beta of ping-pong (half round trip), Allreduce and Bcast on ``comm``."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    timings = {"p2p": [], "allreduce": [], "bcast": []}
    for size in SIZES:
        buffer = np.zeros(size // 8, dtype=np.float64)
        for name in timings:
            comm.Barrier()
            best = math.inf
            for _ in range(repeats):
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


if __name__ == "__main__":
    from mpi4py import MPI

    result = measure_network(MPI.COMM_WORLD)
    if MPI.COMM_WORLD.Get_rank() == 0:
        with open(sys.argv[1], "w") as stream:
            json.dump(result, stream, indent=2)


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
        for s in STRATEGIES:
            stop = projection["efficiency_below_half_at"][s]
            where = (f"efficiency falls below 50% at {stop} workers" if stop
                     else f"efficiency stays above 50% up to {projection['workers'][-1]} workers")
            lines.append(f"- {s}: {where}; peak speedup {projection['peak_speedup'][s]:.1f}× "
                         f"at {projection['peak_workers'][s]} workers")
    return "\n".join(lines) + "\n"


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
