"""Ring all-reduce: ringfl over ZeroMQ (tcp loopback, ipc) vs torch.distributed gloo.

One process per peer (multiprocessing spawn, torch.set_num_threads(1) in each), the same
float32 buffers for every backend. For each N, every backend's N processes start once and
stay up; the parent then runs one all-reduce at a time, rotating through the backends
repetition by repetition (so all backends see the same background load on a shared box):
`--warmup` untimed repetitions, then `--reps` timed ones, each started by a barrier of its
group. A repetition's time is its slowest peer's; the table shows the median.
The first repetition of each cell is checked bit for bit against the exact sum.

    python experiments/bench_allreduce.py             # N ∈ {2,4,8} × 1e5,1e6,1e7
    python experiments/bench_allreduce.py --quick     # N ∈ {2,4} × 1e5,1e6, 3 reps
    python experiments/bench_allreduce.py --ns 4 --sizes 1e7 --backends tcp,gloo

Writes experiments/results/allreduce.csv and allreduce.png. Ports start at --base-port
(below 32768: above it they collide with the kernel's ephemeral ports, gloo's included).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # spawned peers import ringfl from this checkout
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "experiments" / "results"
BACKENDS = ("tcp", "ipc", "gloo")
#: short names of ringfl's all-reduce algorithms (ringfl.collective.choose.ALGORITHMS)
ALGOS = {
    "auto": "auto",
    "ring": "ring",
    "pring": "planned-ring",
    "bidi": "bidirectional-ring",
    "hd": "halving-doubling",
}


def parse_backend(spec: str) -> tuple[str, str, int, bool]:
    """ "tcp", "ipc:hd", "tcp:ring@4194304", "tcp+copy" → (transport, algorithm, segment
    bytes or 0, copy: send every payload that is not a received frame as a copy)."""
    spec, plus, flag = spec.partition("+")
    if plus and flag != "copy":
        raise ValueError(f"unknown flag +{flag}")
    head, _, size = spec.partition("@")
    transport, _, algo = head.partition(":")
    if transport not in BACKENDS or (transport == "gloo" and (algo or size)):
        raise ValueError(f"unknown backend {spec!r}")
    if transport != "gloo" and (algo or "auto") not in ALGOS:
        raise ValueError(f"unknown algorithm {algo!r} in {spec!r}; one of {', '.join(ALGOS)}")
    return transport, ALGOS[algo or "auto"], int(size) if size else 0, bool(plus)


def _buffer(peer: int, m: int):
    import numpy as np

    # small integers: float32 sums are exact, so every result can be checked bit for bit
    return (np.arange(m, dtype=np.int64) % 1000 + peer).astype(np.float32)


def _expected(n: int, m: int):
    import numpy as np

    return (n * (np.arange(m, dtype=np.int64) % 1000) + n * (n - 1) // 2).astype(np.float32)


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Gloo:
    def __init__(self, peer, n, port):
        import torch.distributed as dist

        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=peer, world_size=n
        )
        self.dist = dist
        self.peer, self.n = peer, n
        self.bufs = {}

    def prepare(self, m):
        import torch

        x = _buffer(self.peer, m)
        self.bufs[m] = (x, torch.from_numpy(x.copy()))

    def run(self, m, rnd):
        x, t = self.bufs[m]
        t.copy_(__import__("torch").from_numpy(x))  # all_reduce is in place: restore input
        return lambda: self.dist.all_reduce(t), lambda: t.numpy(), -1

    def close(self):
        self.dist.destroy_process_group()


class _Ringfl:
    def __init__(self, peer, n, endpoints, seg, algorithm, copy):
        import zmq

        from ringfl.transport.zmq import ZmqPeer

        self.ctx = zmq.Context()
        # copy: no zero-copy sends of Python memory (and so no pyzmq garbage-collector
        # thread waking up, taking the GIL, for every such message)
        extra = {"zero_copy_min_bytes": 1 << 62} if copy else {}
        self.zp = ZmqPeer(peer, endpoints, context=self.ctx, **extra)
        self.peer, self.ring, self.seg = peer, list(range(n)), seg
        self.algorithm = algorithm
        self.bufs = {}

    def prepare(self, m):
        import numpy as np

        x = _buffer(self.peer, m)
        self.bufs[m] = (x, np.empty_like(x))

    def run(self, m, rnd):
        from ringfl.collective.choose import make_allreduce

        x, out = self.bufs[m]
        mach = make_allreduce(
            self.peer,
            self.ring,
            x,
            algorithm=self.algorithm,
            out=out,
            round=rnd,
            segment_bytes=self.seg,
        )
        return lambda: self.zp.run(mach, timeout_s=120), lambda: out, mach

    def close(self):
        self.zp.close()
        self.ctx.term()


def worker(backend, peer, n, sizes, endpoints, port, seg, tune, barrier, conn):
    """One peer. Commands on `conn`: ("run", m, round) → (seconds, correct, bytes sent);
    ("quit",) → peak RSS in MiB. Errors come back as ("error", traceback)."""
    try:
        import numpy as np
        import torch

        from ringfl.transport.zmq import tune_malloc

        torch.set_num_threads(1)
        if tune:  # same process settings for every backend
            tune_malloc()
        if backend == "gloo":
            impl = _Gloo(peer, n, port)
        else:
            _, algorithm, custom, copy = parse_backend(backend)
            impl = _Ringfl(peer, n, endpoints, custom or seg, algorithm, copy)
        for m in sizes:
            impl.prepare(m)
        conn.send(("ready",))
        while True:
            cmd = conn.recv()
            if cmd[0] == "quit":
                barrier.wait(300)  # nobody closes while a neighbour still needs its segments
                impl.close()
                conn.send(("rss", _peak_rss_mib()))
                return
            _, m, rnd, check = cmd
            go, result, mach = impl.run(m, rnd)
            barrier.wait(300)
            c0 = time.process_time()
            t0 = time.perf_counter()
            go()
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            ok = bool(np.array_equal(result(), _expected(n, m))) if check else True
            conn.send(("done", dt, ok, mach.bytes_sent if mach != -1 else -1, cpu))
    except BaseException:
        import traceback

        conn.send(("error", traceback.format_exc()))


class Group:
    """N peer processes of one backend, driven one all-reduce at a time."""

    def __init__(self, backend, n, sizes, port, seg, tune, tmp):
        ctx = mp.get_context("spawn")
        self.backend, self.n = backend, n
        barrier = ctx.Barrier(n)
        if backend.startswith("tcp"):
            endpoints = {p: f"tcp://127.0.0.1:{port + p}" for p in range(n)}
        else:
            name = backend.replace("@", "-").replace(":", "-").replace("+", "-")
            endpoints = {p: f"ipc://{tmp}/{name}-{n}-p{p}.sock" for p in range(n)}
        self.conns, self.procs = [], []
        for p in range(n):
            a, b = ctx.Pipe()
            pr = ctx.Process(
                target=worker, args=(backend, p, n, sizes, endpoints, port, seg, tune, barrier, b)
            )
            pr.start()
            self.conns.append(a)
            self.procs.append(pr)
        self._gather("ready")

    def _gather(self, kind, timeout=600):
        out = []
        for p, c in enumerate(self.conns):
            if not c.poll(timeout):
                raise RuntimeError(f"{self.backend} N={self.n} peer {p}: no answer")
            msg = c.recv()
            if msg[0] == "error":
                raise RuntimeError(f"{self.backend} N={self.n} peer {p} failed:\n{msg[1]}")
            assert msg[0] == kind, msg
            out.append(msg[1:])
        return out

    def run(self, m, rnd, check):
        for c in self.conns:
            c.send(("run", m, rnd, check))
        return self._gather("done")

    def close(self):
        try:
            for c in self.conns:
                c.send(("quit",))
            return max(r[0] for r in self._gather("rss", timeout=60))
        finally:
            for pr in self.procs:
                pr.join(10)
                if pr.is_alive():
                    pr.kill()


def bench_n(n, sizes, backends, reps, warmup, port, seg, tune):
    """Start every backend's group for this N, then interleave them rep by rep, so that
    they all see the same background load. Returns {(backend, m): stats}."""
    tmp = tempfile.mkdtemp(prefix="ringfl-bench-")
    groups = {}
    try:
        for i, b in enumerate(backends):
            groups[b] = Group(b, n, sizes, port + 20 * i, seg, tune, tmp)
        times = {(b, m): [] for b in backends for m in sizes}
        cpus = {(b, m): [] for b in backends for m in sizes}
        sent, ok = {}, {}
        rnd = 0
        for m in sizes:
            for r in range(warmup + reps):
                order = backends[r % len(backends) :] + backends[: r % len(backends)]
                for b in order:
                    res = groups[b].run(m, rnd, check=r == 0)
                    rnd += 1
                    if r == 0:
                        ok[b, m] = all(x[1] for x in res)
                        sent[b, m] = max(x[2] for x in res)
                    if r >= warmup:
                        times[b, m].append(max(x[0] for x in res))
                        cpus[b, m].append(sum(x[3] for x in res) / n)
        rss = {}
        for b in backends:
            rss[b] = groups.pop(b).close()
    finally:
        for g in groups.values():
            for pr in g.procs:
                pr.kill()
    return {
        (b, m): dict(times=times[b, m], cpu=cpus[b, m], sent=sent[b, m], ok=ok[b, m], rss=rss[b])
        for b in backends
        for m in sizes
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="2,4,8", help="peer counts, comma-separated")
    ap.add_argument("--sizes", default="1e5,1e6,1e7", help="float32 elements, comma-separated")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per cell")
    ap.add_argument("--warmup", type=int, default=3, help="untimed repetitions per cell")
    ap.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="tcp, ipc, gloo; ringfl backends take an algorithm (tcp:ALG, ALG one of "
        "auto (default), ring (RingAllReduce), pring (planned ring), bidi, hd) and a "
        "segment size (tcp@BYTES, tcp:hd@BYTES)",
    )
    ap.add_argument(
        "--segment-bytes",
        type=int,
        default=None,
        help="ringfl message size (default: make_allreduce's: an eighth of the buffer "
        "within 1-8 MiB for the planned algorithms, 1 MiB for ring)",
    )
    ap.add_argument("--base-port", type=int, default=24000)
    ap.add_argument(
        "--no-tune-malloc",
        dest="tune_malloc",
        action="store_false",
        help="leave glibc malloc as it is (default: ringfl.transport.zmq.tune_malloc() "
        "in every peer process, gloo's included)",
    )
    ap.add_argument("--quick", action="store_true", help="N ∈ {2,4}, sizes 1e5,1e6, 3 reps")
    ap.add_argument("--out", default=str(RESULTS / "allreduce.csv"))
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # inherited by the spawned peers
    if args.quick:
        args.ns, args.sizes, args.reps, args.warmup = "2,4", "1e5,1e6", 3, 1
    ns = [int(x) for x in args.ns.split(",")]
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    for b in backends:
        try:
            parse_backend(b)
        except ValueError as exc:
            ap.error(str(exc))
    rows = []
    t_start = time.time()
    for i, n in enumerate(ns):
        port = args.base_port + 100 * i
        stats = bench_n(
            n, sizes, backends, args.reps, args.warmup, port, args.segment_bytes, args.tune_malloc
        )
        for (b, m), st in stats.items():
            med = statistics.median(st["times"])
            nbytes = 4 * m
            rows.append(
                dict(
                    backend="gloo" if b == "gloo" else f"ringfl-{b}",
                    n=n,
                    elements=m,
                    median_s=med,
                    min_s=min(st["times"]),
                    cpu_s_per_peer=statistics.median(st["cpu"]),
                    algbw_GBps=nbytes / med / 1e9,
                    busbw_GBps=nbytes * 2 * (n - 1) / n / med / 1e9,
                    bytes_sent_max=st["sent"],
                    bound_bytes=round(2 * (n - 1) / n * nbytes),
                    peak_rss_mib=st["rss"],
                    correct=st["ok"],
                    times=st["times"],
                )
            )
        print(f"  done N={n} ({time.time() - t_start:.0f} s)", file=sys.stderr, flush=True)
    gloo = {(r["n"], r["elements"]): r for r in rows if r["backend"] == "gloo"}
    for r in rows:
        g = gloo.get((r["n"], r["elements"]))
        r["ratio_vs_gloo"] = r["median_s"] / g["median_s"] if g else float("nan")
        # repetition by repetition (the same background load), then the median
        r["paired_ratio_vs_gloo"] = (
            statistics.median(a / b for a, b in zip(r["times"], g["times"], strict=True))
            if g
            else float("nan")
        )
    for r in rows:
        r["times"] = " ".join(f"{t:.6f}" for t in r["times"])
    print_table(rows)
    write(rows, Path(args.out))
    return 0 if all(r["correct"] for r in rows) else 1


def print_table(rows) -> None:
    head = (
        f"{'backend':16} {'N':>2} {'elements':>9} {'median ms':>10} {'algbw GB/s':>10} "
        f"{'busbw GB/s':>10} {'vs gloo':>7} {'paired':>6} {'cpu ms/peer':>11} {'sent/bound':>10} "
        f"{'RSS MiB':>8} ok"
    )
    print(head)  # paired: median over repetitions of (time ÷ gloo's time in that repetition)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["n"], r["elements"], r["backend"])):
        sb = r["bytes_sent_max"] / r["bound_bytes"] if r["bytes_sent_max"] >= 0 else float("nan")
        print(
            f"{r['backend']:16} {r['n']:>2} {r['elements']:>9.0e} {1e3 * r['median_s']:>10.2f} "
            f"{r['algbw_GBps']:>10.2f} {r['busbw_GBps']:>10.2f} {r['ratio_vs_gloo']:>7.2f} "
            f"{r['paired_ratio_vs_gloo']:>6.2f} "
            f"{1e3 * r['cpu_s_per_peer']:>11.2f} "
            f"{sb:>10.4f} {r['peak_rss_mib']:>8.0f} {'yes' if r['correct'] else 'NO'}"
        )


def write(rows, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(1, len(ns), figsize=(4.5 * len(ns), 3.8), squeeze=False)
    for ax, n in zip(axes[0], ns, strict=True):
        for b in sorted({r["backend"] for r in rows}):
            pts = sorted(
                (r["elements"], r["median_s"]) for r in rows if r["n"] == n and r["backend"] == b
            )
            ax.plot([p[0] for p in pts], [1e3 * p[1] for p in pts], "o-", label=b)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"N = {n}")
        ax.set_xlabel("float32 elements")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    raise SystemExit(main())
