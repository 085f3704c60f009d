"""Simulator at scale: seconds per round split into training, masking and
communication, virtual seconds per round, and peak RSS, for one (N, task) per process.

    python experiments/bench_scale.py --n 1000 --task mlp --secure --rounds 2
    python experiments/bench_scale.py --n 10000 --task logreg --rounds 3

`mlp`: the MLP on MNIST (the bundled 60,000 training images split iid), 20 local steps of
batch 32 per round. `logreg`: logistic regression on MNIST, 5 local steps of batch 6.
Ring sums run in bulk (the simulator's default: the same bits as message by message,
tested); `--messages` runs them message by message. Appends one JSON line per run to
experiments/results/scale.jsonl (unless --out '').
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"

TASKS = {
    "mlp": {"model": {"name": "mlp"}, "train": {"local_steps": 20, "batch_size": 32}},
    "logreg": {"model": {"name": "logreg"}, "train": {"local_steps": 5, "batch_size": 6}},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--task", choices=sorted(TASKS), default="mlp")
    ap.add_argument("--secure", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--messages", action="store_true", help="no bulk sums")
    ap.add_argument("--backend", default="auto", help="inline, processes or auto (default)")
    ap.add_argument("--out", default=str(RESULTS / "scale.jsonl"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from ringfl.config import config_from_dict
    from ringfl.sim import simulate
    from ringfl.topology import make

    torch.set_num_threads(1)
    task = TASKS[args.task]
    raw = {
        "seed": 1,
        "eval_every": args.rounds,
        "data": {"dataset": "mnist", "test_subset": 2000},
        "partition": {"name": "iid"},
        "model": task["model"],
        "train": {"rounds": args.rounds, "lr": 0.05, **task["train"]},
        "algorithm": {"name": "ring", "secure": args.secure},
    }
    t0 = time.perf_counter()
    res = simulate(
        make("ring", args.n),
        config_from_dict(raw),
        progress=False,
        baseline=False,
        messages=args.messages,
        backend=args.backend,
    )
    wall = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # the largest training worker (processes backend), once the backend has waited for it
    worker_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    ph = res.phases
    mean = {
        k: sum(p.get(k, 0.0) for p in ph) / len(ph)
        for k in ("train_s", "masking_s", "comm_s", "wall_s")
    }
    row = {
        "n": args.n,
        "task": args.task,
        "secure": args.secure,
        "bulk": not args.messages,
        "rounds": args.rounds,
        "params": int(res.learners[0].flat().shape[0]),
        "train_s_per_round": mean["train_s"],
        "masking_s_per_round": mean["masking_s"],
        "comm_s_per_round": mean["comm_s"],
        "wall_s_per_round": mean["wall_s"],
        "setup_s": res.setup_s,
        "total_wall_s": wall,
        "virtual_s_per_round": sum(r["virtual_s"] for r in res.rounds) / len(res.rounds),
        "bytes_per_peer_per_round": res.bytes_per_peer / args.rounds,
        "backend": args.backend,
        "peak_rss_gb": rss_gb,
        "worker_peak_rss_gb": worker_gb,
        "final_accuracy": res.final_accuracy,
    }
    print(json.dumps(row))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
