"""Per-thread CPU of one all-reduce: where a peer process spends its time, ringfl vs gloo.

Starts N peer processes (spawn, one torch thread each, `tune_malloc()` in each, as
`bench_allreduce.py`), runs 3 untimed all-reduces, then `--reps` timed ones, each started
by a barrier, and reads every thread's user and system CPU time and its voluntary and
involuntary context switches and minor page faults from /proc/self/task before and after (Linux only). Prints
the median wall time and, per thread name, the mean per peer per all-reduce. Threads of
the same name are added up ("python" is the main thread plus Python threads such as
pyzmq's garbage collector). The CPU includes the barrier, the same for every backend.

    python experiments/profile_allreduce_threads.py --backend gloo --n 4 --elements 1e7
    python experiments/profile_allreduce_threads.py --backend tcp --n 4 --elements 1e7
    python experiments/profile_allreduce_threads.py --backend ipc --n 4 --elements 1e7 --segment-bytes 1048576
"""

from __future__ import annotations

import argparse
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


def thread_times() -> dict[str, list[float]]:
    """{thread name: [user s, system s, voluntary switches, involuntary switches, minor
    page faults]}, summed over the threads of that name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, list[float]] = {}
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        try:
            with open(f"{base}/stat") as f:
                stat = f.read()
            with open(f"{base}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        row = [
            int(fields[11]) / tick,
            int(fields[12]) / tick,
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
            int(fields[7]),
        ]
        acc = out.setdefault(name, [0.0] * 5)
        for i, v in enumerate(row):
            acc[i] += v
    return out


def worker(backend, peer, n, m, reps, endpoints, port, seg, barrier, queue):
    import numpy as np
    import torch

    from ringfl.transport.zmq import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()
    x = (np.arange(m, dtype=np.int64) % 1000 + peer).astype(np.float32)
    if backend == "gloo":
        import torch.distributed as dist

        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=peer, world_size=n
        )
        t = torch.from_numpy(x.copy())

        def go(rnd: int) -> None:
            dist.all_reduce(t)  # values grow; the cost does not depend on them

        close = dist.destroy_process_group
    else:
        import zmq

        from ringfl.collective.choose import make_allreduce
        from ringfl.transport.zmq import ZmqPeer

        ctx = zmq.Context()
        zp = ZmqPeer(peer, endpoints, context=ctx)
        out = np.empty_like(x)

        def go(rnd: int) -> None:
            mach = make_allreduce(peer, list(range(n)), x, out=out, round=rnd, segment_bytes=seg)
            zp.run(mach, timeout_s=120)

        def close() -> None:
            zp.close()
            ctx.term()

    for r in range(3):
        barrier.wait(300)
        go(r)
    barrier.wait(300)
    before = thread_times()
    walls = []
    for r in range(3, 3 + reps):
        barrier.wait(300)
        t0 = time.perf_counter()
        go(r)
        walls.append(time.perf_counter() - t0)
    after = thread_times()
    per_op = {
        name: [(v - before.get(name, [0.0] * 5)[i]) / reps for i, v in enumerate(vals)]
        for name, vals in after.items()
    }
    barrier.wait(300)  # nobody closes while a neighbour still needs its messages
    close()
    queue.put((peer, walls, per_op))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("tcp", "ipc", "gloo"), default="tcp")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--elements", default="1e7", help="float32 elements")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument(
        "--segment-bytes", type=int, default=None, help="ringfl message size (default: library)"
    )
    ap.add_argument("--base-port", type=int, default=26000, help="below 32768")
    args = ap.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    n, m = args.n, int(float(args.elements))
    tmp = tempfile.mkdtemp(prefix="ringfl-prof-")
    if args.backend == "ipc":
        endpoints = {p: f"ipc://{tmp}/p{p}.sock" for p in range(n)}
    else:
        endpoints = {p: f"tcp://127.0.0.1:{args.base_port + 1 + p}" for p in range(n)}
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(
                args.backend,
                p,
                n,
                m,
                args.reps,
                endpoints,
                args.base_port,
                args.segment_bytes,
                barrier,
                queue,
            ),
        )  # fmt: skip
        for p in range(n)
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    walls = [max(r[1][i] for r in results) for i in range(args.reps)]
    print(
        f"{args.backend} N={n} elements={m:.0e}: median wall {1e3 * statistics.median(walls):.1f}"
        " ms; per peer per all-reduce:"
    )
    names = sorted({name for r in results for name in r[2]})
    total = [0.0, 0.0]
    for name in names:
        v = [sum(r[2].get(name, [0.0] * 5)[i] for r in results) / n for i in range(5)]
        total[0] += v[0]
        total[1] += v[1]
        print(
            f"  {name:18s} user {1e3 * v[0]:6.1f} ms  sys {1e3 * v[1]:6.1f} ms  "
            f"switches voluntary {v[2]:6.1f}  involuntary {v[3]:6.1f}  page faults {v[4]:7.1f}"
        )
    print(f"  {'all threads':18s} user {1e3 * total[0]:6.1f} ms  sys {1e3 * total[1]:6.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
