"""Time to accuracy on the virtual clock: a secure ring and a gossip run on the same
heterogeneous network (per-link latency and bandwidth, per-node speed) with the same
churn trace, accuracy against simulated seconds.

    python experiments/time_to_accuracy.py            # 16 peers, 30 rounds each

Writes experiments/results/time_to_accuracy.png, time_to_accuracy.csv (both curves),
the topology (tta_topology.json) and the trace (tta_churn.csv) it used.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def network(n: int, seed: int):
    """A small-world graph with a ring (ring order = node order), seeded heterogeneous
    links (1-40 ms, 10-1000 Mbit/s, log-uniform) and speeds (0.5-2)."""
    import numpy as np

    from ringfl.topology import make

    g = make("small-world", n, seed=seed, k=4)
    rng = np.random.default_rng(seed)
    g.graph.update(latency_ms=10.0, bandwidth_mbps=100.0)
    for u, v in g.edges:
        g.edges[u, v]["latency_ms"] = round(float(np.exp(rng.uniform(np.log(1), np.log(40)))), 2)
        g.edges[u, v]["bandwidth_mbps"] = round(
            float(np.exp(rng.uniform(np.log(10), np.log(1000)))), 1
        )
    for v in g.nodes:
        g.nodes[v]["speed"] = round(float(rng.uniform(0.5, 2.0)), 2)
    return g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ringfl.config import config_from_dict
    from ringfl.sim import simulate
    from ringfl.sim_clock import random_churn, write_availability
    from ringfl.topology import peers, save

    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    g = network(args.n, args.seed)
    names = [str(v) for v in peers(g)]
    save(g, RESULTS / "tta_topology.json")
    # a quarter of the peers churn: online ~60 s, offline ~20 s on average
    trace = random_churn(
        args.n, 3600.0, mean_up_s=60.0, mean_down_s=20.0, fraction=0.25, seed=args.seed
    )
    write_availability(trace, RESULTS / "tta_churn.csv", names)
    curves = {}
    for name, secure in (("ring", True), ("gossip", False)):
        raw = {
            "seed": 1,
            "data": {"dataset": "mnist", "train_subset": 12000, "test_subset": 2000},
            "partition": {"name": "iid"},
            "model": {"name": "mlp"},
            "train": {"rounds": args.rounds, "local_steps": 20, "batch_size": 32, "lr": 0.05},
            "algorithm": {"name": name, "secure": secure},
            "clock": {
                "step_s": 0.05,
                "deadlines": "engine",
                "availability": str(RESULTS / "tta_churn.csv"),
            },
        }
        res = simulate(g, config_from_dict(raw), progress=False, baseline=False)
        label = f"{name}{' (secure)' if secure else ''}"
        curves[label] = [(m["time_s"], m["round"], m["accuracy"]) for m in res.metrics]
        dropped = sum(len(r["dropped"]) for r in res.rounds)
        print(
            f"{label}: final accuracy {res.final_accuracy:.4f} after {res.metrics[-1]['time_s']:.1f} "
            f"simulated s; {dropped} drops over {args.rounds} rounds",
            flush=True,
        )
    with open(RESULTS / "time_to_accuracy.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "round", "time_s", "accuracy"])
        for label, pts in curves.items():
            for t, r, a in pts:
                w.writerow([label, r, t, a])
    fig = Figure(figsize=(6.4, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, pts in curves.items():
        ax.plot([p[0] for p in pts], [100 * p[2] for p in pts], marker="o", ms=2.5, label=label)
    tmax = max(p[0] for c in curves.values() for p in c)
    for _, off, on in trace.rows(names):  # shade while some peer is offline
        if off < tmax:
            ax.axvspan(off, min(on, tmax), color="0.88", lw=0, zorder=0)
    ax.set_xlim(0, tmax * 1.02)
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"MNIST MLP, {args.n} peers, heterogeneous links, churn (grey: a peer offline)", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "time_to_accuracy.png")
    print(f"wrote {RESULTS / 'time_to_accuracy.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
