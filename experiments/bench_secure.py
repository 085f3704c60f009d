"""Secure vs plain ring all-reduce over ZeroMQ (tcp loopback, one process per peer), plus
the pure compute costs of secure aggregation.

Part 1 (one process): fixed-point encode/decode, mask expansion per 10^6 words per mask
neighbour (AES-256-CTR `update_into`, alone and with the modular add), X25519 + HKDF per
pair, Shamir split of a 32-byte secret, AES-GCM sealing of a share.

Part 2 (N processes, spawn, `tune_malloc()` and one `ZmqPeer` each on 127.0.0.1, ports chosen by the OS): for every N and
size the peers run, repetition by repetition and alternating the order, a plain float32
`RingAllReduce` and a `SecureRingAllReduce` (k = 32, default masking: complete graph for
N ≤ 8, t = ⌊N/2⌋+1) of the same float32 deltas (std 0.01), each started by a barrier. A
repetition's time is its slowest peer's, from building the machine (key agreement,
Shamir sharing) to its result; the table shows medians. The plain sum writes into a
warm preallocated buffer (as in bench_allreduce.py). The first repetition of each cell is
checked: the secure sum bit for bit against the fixed-point reference, its average
against the float64 average (relative error), the plain sum against numpy.

The protocol's floor: after the repetitions every peer does, all at once, the local work
that no implementation of this protocol can skip (`floor_work`: encode, its k pairwise
masks and its self mask if on the committee, the committee's |C| self masks off the whole
sum, decode) with the machine's own primitives. "floor ratio" = (plain CPU + floor) ÷
plain CPU per peer: the secure ÷ plain ratio that a secure sum would reach if its
messages, key agreement and Shamir sharing cost nothing (on two cores shared by N peers
the wall time follows the CPU).

    python experiments/bench_secure.py                 # N ∈ {3,4,8} × 1e5,1e6,1e7 (a secure sum needs ≥ 3 peers)
    python experiments/bench_secure.py --quick         # N ∈ {3,4} × 1e5,1e6, 3 reps

Writes experiments/results/secure.csv, secure_compute.csv and secure.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # spawned peers import ringfl from this checkout
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "experiments" / "results"
SESSION = 4242


def _delta(peer: int, m: int):
    import numpy as np

    return (np.random.default_rng([peer, m]).standard_normal(m) * 0.01).astype(np.float32)


def _keys(peer: int):
    from ringfl.secure.keys import PeerKeys

    return PeerKeys.from_private_bytes(hashlib.sha256(f"bench-secure/{peer}".encode()).digest())


def _best(fn, reps: int = 7) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# -- part 1: compute ----------------------------------------------------------------------


def compute_costs() -> list[dict]:
    import numpy as np

    from ringfl.secure import shamir
    from ringfl.secure.fixedpoint import FixedPoint
    from ringfl.secure.keys import PeerKeys, pairwise_secret
    from ringfl.secure.prg import MaskStreamer

    rows = []

    def row(what, seconds, per, unit):
        rows.append(dict(what=what, ms=1e3 * seconds, per=per, unit=unit))

    codec = FixedPoint.for_peers(8)
    for m in (10**6, 10**7):
        x = _delta(0, m)
        words = np.empty(m, dtype=np.uint32)
        out = np.empty(m, dtype=np.float32)
        row(
            "fixed-point encode float32→uint32",
            _best(lambda x=x, words=words: codec.encode(x, words)),
            m,
            "elements",
        )
        row(
            "fixed-point decode uint32→float32",
            _best(lambda words=words, out=out: codec.decode(words, out)),
            m,
            "elements",
        )
    s = MaskStreamer()
    key = os.urandom(32)
    w = np.zeros(10**6, dtype=np.uint32)
    row(
        "mask expansion AES-256-CTR (fill)",
        _best(lambda: s.fill(key, w, 0)),
        10**6,
        "words/neighbour",
    )
    row(
        "mask expansion + add mod 2^32",
        _best(lambda: s.apply(w, 0, add=[key])),
        10**6,
        "words/neighbour",
    )
    a, b = PeerKeys.generate(), PeerKeys.generate()
    row(
        "X25519 + HKDF-SHA256 pairwise secret",
        _best(
            lambda: pairwise_secret(a, 1, b.public_bytes, 2, session=1, round=1, purpose="mask"), 50
        ),
        1,
        "pair",
    )
    for n in (8, 32, 100, 1000):
        t = n // 2 + 1
        row(
            f"Shamir split 32 B, t={t} of n={n}",
            _best(lambda n=n, t=t: shamir.split_secret(key, t, n), 5),
            1,
            "secret",
        )
    row(
        "AES-256-GCM seal of a share",
        _best(
            lambda: shamir.seal_share(
                key, key + key[:4], session=1, round=1, sender=1, recipient=2
            ),
            50,
        ),
        1,
        "share",
    )
    return rows


# -- part 2: ZeroMQ -----------------------------------------------------------------------


def floor_work(peer: int, n: int, x) -> float:
    """CPU seconds of the local work that this protocol cannot skip at `peer`, done with
    the machine's own primitives in its own order: encode x segment by segment, add the
    peer's k pairwise masks (and its self mask when it sits on the committee), then remove
    the committee's |C| self masks from the whole sum and decode it. No message, no key
    agreement, no Shamir sharing: what is left of the secure sum's cost when the network
    is free. (Subtracting a mask costs what adding one does, so all are added here.)"""
    import numpy as np

    from ringfl.collective.base import segment_elements
    from ringfl.secure.aggregate import Masking, committee
    from ringfl.secure.fixedpoint import CHUNK_ELEMENTS
    from ringfl.secure.prg import MaskStreamer

    masking = Masking()
    members = list(range(n))
    graph = masking.graph(members, session=SESSION, round=0, attempt=0)
    comm = committee(members, graph, masking.threshold_for(n), session=SESSION, round=0, attempt=0)
    own = [os.urandom(32) for _ in range(len(graph[peer]) + (peer in comm))]
    unmask = [os.urandom(32) for _ in comm]
    codec = masking.codec(n)
    m = x.shape[0]
    words = np.empty(m, dtype=codec.word_dtype)
    out = np.empty(m, dtype=x.dtype)
    scratch = np.empty(min(m, CHUNK_ELEMENTS), dtype=np.float32)
    streamer = MaskStreamer()
    seg = segment_elements(masking.segment_bytes, codec.word_dtype)
    words.fill(0)  # first touch outside the timing: the machine reuses warm buffers
    out.fill(0)
    c0 = time.process_time()
    for a in range(0, m, seg):
        b = min(m, a + seg)
        codec.encode_into(x[a:b], words[a:b], scratch)
        streamer.apply(words[a:b], a, own)
    for a in range(0, m, CHUNK_ELEMENTS):
        b = min(m, a + CHUNK_ELEMENTS)
        streamer.apply(words[a:b], a, unmask)
        codec.decode(words[a:b], out=out[a:b])
    return time.process_time() - c0


def worker(peer, n, sizes, barrier, conn):
    """One peer process. Binds a port the OS picks, reports it, learns the others';
    then ("run", kind, m, round, check) → (seconds, bytes, cpu, extra)."""
    try:
        import numpy as np
        import zmq

        from ringfl.collective.allreduce import RingAllReduce
        from ringfl.secure.aggregate import SecureRingAllReduce
        from ringfl.transport.zmq import ZmqPeer, tune_malloc

        tune_malloc()  # as `ringfl peer` does at its entry point
        ctx = zmq.Context()
        zp = ZmqPeer(peer, {peer: "tcp://127.0.0.1:0"}, context=ctx, session=SESSION)
        conn.send(("bound", zp.address))
        zp.set_endpoints(conn.recv())
        keys = _keys(peer)
        pubs = {p: _keys(p).public_bytes for p in range(n)}
        data = {m: _delta(peer, m) for m in sizes}
        # the plain sum writes into a warm buffer, as bench_allreduce.py's does: a fresh
        # 10^7-element result costs page faults (THP compaction) that swung the plain
        # side's CPU per peer by 3× between runs
        warm = {m: np.zeros(m, dtype=np.float32) for m in sizes}
        ring = list(range(n))
        conn.send(("ready",))
        while True:
            cmd = conn.recv()
            if cmd[0] == "quit":
                barrier.wait(300)
                zp.close()
                ctx.term()
                conn.send(("bye",))
                return
            if cmd[0] == "floor":
                barrier.wait(300)
                conn.send(("floor", floor_work(peer, n, data[cmd[1]])))
                continue
            _, kind, m, rnd, check = cmd
            barrier.wait(300)
            c0 = time.process_time()
            t0 = time.perf_counter()
            if kind == "plain":
                mach = RingAllReduce(peer, ring, data[m], session=SESSION, round=rnd, out=warm[m])
            else:
                mach = SecureRingAllReduce(
                    peer, ring, data[m], keys, pubs, session=SESSION, round=rnd
                )
            res = zp.run(mach, timeout_s=300)
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
            extra = {}
            if check:
                extra["sha"] = hashlib.sha256(np.ascontiguousarray(res).tobytes()).hexdigest()
                if kind == "secure":
                    extra["frac_bits"] = mach.codec.frac_bits
                    extra["members"] = list(mach.members)
                else:
                    extra["plain"] = res.copy() if m <= 10**6 else None
            conn.send(("done", dt, mach.bytes_sent, cpu, extra))
            # freed before the next sum: with tune_malloc its buffers come back warm
            del mach, res
    except BaseException:
        import traceback

        conn.send(("error", traceback.format_exc()))


class Group:
    def __init__(self, n, sizes):
        ctx = mp.get_context("spawn")
        self.n = n
        barrier = ctx.Barrier(n)
        self.conns, self.procs = [], []
        for p in range(n):
            a, b = ctx.Pipe()
            pr = ctx.Process(target=worker, args=(p, n, sizes, barrier, b))
            pr.start()
            self.conns.append(a)
            self.procs.append(pr)
        addresses = {p: r[0] for p, r in enumerate(self._gather("bound"))}
        for c in self.conns:
            c.send(addresses)
        self._gather("ready")

    def _gather(self, kind, timeout=900):
        out = []
        for p, c in enumerate(self.conns):
            if not c.poll(timeout):
                raise RuntimeError(f"N={self.n} peer {p}: no answer")
            msg = c.recv()
            if msg[0] == "error":
                raise RuntimeError(f"N={self.n} peer {p} failed:\n{msg[1]}")
            assert msg[0] == kind, msg
            out.append(msg[1:])
        return out

    def run(self, kind, m, rnd, check):
        for c in self.conns:
            c.send(("run", kind, m, rnd, check))
        return self._gather("done")

    def floor(self, m):
        """Every peer's `floor_work` for m elements, all at once (as they share the cores
        during a sum)."""
        for c in self.conns:
            c.send(("floor", m))
        return [r[0] for r in self._gather("floor")]

    def close(self):
        try:
            for c in self.conns:
                c.send(("quit",))
            self._gather("bye", timeout=60)
        finally:
            for pr in self.procs:
                pr.join(10)
                if pr.is_alive():
                    pr.kill()


def verify(n, m, res_secure, res_plain) -> dict:
    import numpy as np

    from ringfl.secure.fixedpoint import FixedPoint

    f = res_secure[0][3]["frac_bits"]
    codec = FixedPoint(n, f)
    xs = [_delta(p, m) for p in range(n)]
    ints = sum(codec.quantize_reference(x) for x in xs)
    want = ints.astype(np.float32) * np.float32(2.0**-f)
    sha = hashlib.sha256(want.tobytes()).hexdigest()
    exact = all(r[3]["sha"] == sha for r in res_secure) and all(
        r[3]["members"] == list(range(n)) for r in res_secure
    )
    avg_true = np.mean([x.astype(np.float64) for x in xs], axis=0)
    avg = want.astype(np.float64) / n
    rel = float(np.linalg.norm(avg - avg_true) / np.linalg.norm(avg_true))
    plain_ok = len({r[3]["sha"] for r in res_plain}) == 1
    if res_plain[0][3].get("plain") is not None:
        plain_ok &= bool(np.allclose(res_plain[0][3]["plain"], avg_true * n, rtol=1e-4, atol=1e-5))
    return dict(exact=exact, rel_err=rel, plain_ok=plain_ok)


def bench_n(n, sizes, reps, warmup):
    g = Group(n, sizes)
    rows = []
    try:
        rnd = 0
        for m in sizes:
            t = {"plain": [], "secure": []}
            cpu = {"plain": [], "secure": []}
            sent = {}
            checks = {}
            for r in range(warmup + reps):
                order = ["plain", "secure"] if r % 2 == 0 else ["secure", "plain"]
                for kind in order:
                    res = g.run(kind, m, rnd, check=r == 0)
                    rnd += 1
                    if r == 0:
                        checks[kind] = res
                        sent[kind] = max(x[1] for x in res)
                    if r >= warmup:
                        t[kind].append(max(x[0] for x in res))
                        cpu[kind].append(sum(x[2] for x in res) / n)
            v = verify(n, m, checks["secure"], checks["plain"])
            med = {k: statistics.median(t[k]) for k in t}
            floor = statistics.median(statistics.mean(g.floor(m)) for _ in range(max(3, reps // 2)))
            plain_cpu = statistics.median(cpu["plain"])
            rows.append(
                dict(
                    n=n,
                    elements=m,
                    plain_ms=1e3 * med["plain"],
                    secure_ms=1e3 * med["secure"],
                    ratio=med["secure"] / med["plain"],
                    plain_cpu_ms_per_peer=1e3 * plain_cpu,
                    secure_cpu_ms_per_peer=1e3 * statistics.median(cpu["secure"]),
                    floor_cpu_ms_per_peer=1e3 * floor,
                    floor_ratio=(plain_cpu + floor) / plain_cpu,
                    plain_bytes=sent["plain"],
                    secure_bytes=sent["secure"],
                    bytes_ratio=sent["secure"] / sent["plain"],
                    secure_exact=v["exact"],
                    avg_rel_err=v["rel_err"],
                    plain_ok=v["plain_ok"],
                    reps=reps,
                )
            )
            print(
                f"  N={n} m={m:.0e}: plain {rows[-1]['plain_ms']:.1f} ms, "
                f"secure {rows[-1]['secure_ms']:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    finally:
        g.close()
    return rows


def print_tables(rows, comp) -> None:
    print("\ncompute (one core, best of several):")
    for c in comp:
        per = c["per"]
        scale = 1e6 / per if per >= 1e6 else 1.0
        unit = f"per 1e6 {c['unit']}" if per >= 1e6 else f"per {c['unit']}"
        print(f"  {c['what']:42} {c['ms'] * scale:9.3f} ms {unit}  (n = {per:.0e})")
    head = (
        f"{'N':>2} {'elements':>9} {'plain ms':>9} {'secure ms':>10} {'ratio':>6} "
        f"{'cpu/peer plain':>14} {'secure':>7} {'floor':>6} {'floor ratio':>11} "
        f"{'bytes ratio':>11} {'exact':>5} {'avg rel err':>11}"
    )
    print("\nZeroMQ tcp loopback, one process per peer (median):")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['n']:>2} {r['elements']:>9.0e} {r['plain_ms']:>9.1f} {r['secure_ms']:>10.1f} "
            f"{r['ratio']:>6.2f} {r['plain_cpu_ms_per_peer']:>14.1f} "
            f"{r['secure_cpu_ms_per_peer']:>7.1f} {r['floor_cpu_ms_per_peer']:>6.1f} "
            f"{r['floor_ratio']:>11.2f} {r['bytes_ratio']:>11.4f} "
            f"{'yes' if r['secure_exact'] else 'NO':>5} {r['avg_rel_err']:>11.2e}"
        )


def write(rows, comp, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with out.with_name(out.stem + "_compute.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(comp[0]))
        w.writeheader()
        w.writerows(comp)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(1, len(ns) + 1, figsize=(4.3 * (len(ns) + 1), 3.8), squeeze=False)
    for ax, n in zip(axes[0], ns, strict=False):
        pts = sorted((r["elements"], r["plain_ms"], r["secure_ms"]) for r in rows if r["n"] == n)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="plain float32")
        ax.plot([p[0] for p in pts], [p[2] for p in pts], "s-", label="secure (k=32)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"N = {n}, ZeroMQ tcp loopback")
        ax.set_xlabel("elements")
        ax.set_ylabel("median time (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax = axes[0][-1]
    for n in ns:
        pts = sorted((r["elements"], r["ratio"]) for r in rows if r["n"] == n)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"N = {n}")
    ax.axhline(1.5, color="grey", ls="--", lw=1, label="target 1.5×")
    ax.set_xscale("log")
    ax.set_title("secure / plain time")
    ax.set_xlabel("elements")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out}, {out.with_name(out.stem + '_compute.csv')} and {out.with_suffix('.png')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="3,4,8")
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="N ∈ {3,4}, sizes 1e5,1e6, 3 reps")
    ap.add_argument("--out", default=str(RESULTS / "secure.csv"))
    args = ap.parse_args(argv)
    if args.quick:
        args.ns, args.sizes, args.reps = "3,4", "1e5,1e6", 3
    ns = [int(x) for x in args.ns.split(",")]
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    comp = compute_costs()
    rows = []
    t0 = time.time()
    for n in ns:
        rows += bench_n(n, sizes, args.reps, args.warmup)
        print(f"  done N={n} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    print_tables(rows, comp)
    write(rows, comp, Path(args.out))
    ok = all(r["secure_exact"] and r["plain_ok"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
