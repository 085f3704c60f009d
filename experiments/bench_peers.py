"""Real peers on one machine: how fast a ring comes up, and what a kill -9 costs.

    python experiments/bench_peers.py [--peers 8] [--rounds 12] [--kill-round 5] [--repeat 3]

Each repetition makes an N-peer ring topology on loopback tcp (ports the OS has free,
below 32768) with CURVE keys and secure masking (digits, logistic regression), then

1. start-up: runs `ringfl launch` and measures, from the moment the command starts, when
   every peer has begun round 0 and when every peer has finished it;
2. failure: runs it again with one peer SIGKILLing itself in the middle of round k's
   masked all-reduce (`--fault NODE:kill@k:3`) and compares the survivors' round k with
   their normal rounds, next to the deadline they had then.

Prints a table and writes experiments/results/peers.json. Times on a shared machine
drift: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = """
seed = 1
[data]
dataset = "digits"
[model]
name = "logreg"
[train]
rounds = {rounds}
local_steps = 5
batch_size = 32
lr = 0.1
[algorithm]
name = "ring"
secure = true
"""


def free_ports(n: int) -> list[int]:
    """n consecutive-free ports below 32768 (not in the kernel's ephemeral range)."""
    import random

    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        base = rng.randrange(20000, 32000 - n)
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return list(range(base, base + n))
    raise RuntimeError("no free ports")


def setup(folder: Path, n: int, rounds: int) -> None:
    from ringfl import topology
    from ringfl.peer.identity import generate_for_topology

    g = topology.make("ring", n)
    for node, port in zip(topology.peers(g), free_ports(n), strict=True):
        g.nodes[node]["address"] = f"tcp://127.0.0.1:{port}"
    generate_for_topology(g, folder / "keys")
    topology.save(g, folder / "ring.json")
    (folder / "run.toml").write_text(CONFIG.format(rounds=rounds))


def events(folder: Path, name: str) -> list[dict]:
    from ringfl.peer.eventlog import read_events

    p = folder / "out" / name / "events.jsonl"
    return read_events(p) if p.exists() else []


def run_launch(folder: Path, *extra: str, timeout: float = 300) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "ringfl", "launch", "--topology", str(folder / "ring.json"),
           "--config", str(folder / "run.toml"), "--keys", str(folder / "keys"),
           "--out", str(folder / "out"), "--fresh", *extra]  # fmt: skip
    t0 = time.time()
    with open(folder / "launch.log", "w") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    return t0, code.returncode


def startup(n: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="rflb") as d:
        folder = Path(d)
        setup(folder, n, rounds)
        t0, code = run_launch(folder)
        names = [str(i) for i in range(n)]
        first_start = [
            next(e["t"] for e in events(folder, x) if e["event"] == "round_start") for x in names
        ]
        first_done = [
            next(e["t"] for e in events(folder, x) if e["event"] == "round" and e["round"] == 0)
            for x in names
        ]
        ready = [next(e for e in events(folder, x) if e["event"] == "ready") for x in names]
        rows = [[e["round_s"] for e in events(folder, x) if e["event"] == "round"] for x in names]
        return {
            "exit": code,
            "all_in_round0_s": max(first_start) - t0,
            "all_done_round0_s": max(first_done) - t0,
            "peer_startup_s": max(r["startup_s"] for r in ready),
            "median_round_s": statistics.median(v for r in rows for v in r[1:]),
        }


def kill(n: int, rounds: int, k: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="rflb") as d:
        folder = Path(d)
        setup(folder, n, rounds)
        victim = str(n // 2)
        _, code = run_launch(folder, "--fault", f"{victim}:kill@{k}:3")
        alive = [str(i) for i in range(n) if str(i) != victim]
        per_round: dict[int, list[float]] = {}
        deadline = {}
        for x in alive:
            for e in events(folder, x):
                if e["event"] == "round":
                    per_round.setdefault(e["round"], []).append(e["round_s"])
                    deadline[e["round"]] = e.get("deadline_s")
        normal = [max(v) for r, v in per_round.items() if 0 < r < k]
        after = [max(v) for r, v in per_round.items() if r > k + 1]
        members = {
            e["round"]: len(e["members"]) for e in events(folder, alive[0]) if e["event"] == "round"
        }
        detector = [e for x in alive for e in events(folder, x) if e["event"] == "lost"]
        return {
            "exit": code,
            "normal_round_s": statistics.median(normal),
            "kill_round_s": max(per_round[k]),
            "deadline_before_kill_s": deadline.get(k - 1),
            "later_round_s": statistics.median(after) if after else None,
            "members_round_k": members.get(k),
            "declared_by": sorted({e["node"] for e in detector}),
            "ratio": max(per_round[k]) / statistics.median(normal),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--kill-round", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "peers.json"))
    a = ap.parse_args()
    ups = [startup(a.peers, a.rounds) for _ in range(a.repeat)]
    kills = [kill(a.peers, a.rounds, a.kill_round) for _ in range(a.repeat)]
    print(f"{a.peers} peers, CURVE links, secure masking, digits / logreg, loopback tcp")
    print("| run | all peers in round 0 (s from `ringfl launch`) | all finished round 0 (s) | "
          "peer start-up after fork (s) | median round (s) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for i, u in enumerate(ups):
        print(f"| {i} | {u['all_in_round0_s']:.2f} | {u['all_done_round0_s']:.2f} | "
              f"{u['peer_startup_s']:.2f} | {u['median_round_s']:.3f} |")  # fmt: skip
    print()
    print("| run | normal round (s) | kill round (s) | ratio | deadline then (s) | "
          "later rounds (s) | members in round k | declared by |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for i, k in enumerate(kills):
        later = "-" if k["later_round_s"] is None else f"{k['later_round_s']:.3f}"
        print(f"| {i} | {k['normal_round_s']:.3f} | {k['kill_round_s']:.3f} | {k['ratio']:.1f} | "
              f"{k['deadline_before_kill_s']:.2f} | {later} | {k['members_round_k']} | "
              f"{', '.join(map(str, k['declared_by']))} |")  # fmt: skip
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps({"peers": a.peers, "startup": ups, "kill": kills}, indent=1) + "\n"
    )
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
