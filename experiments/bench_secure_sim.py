"""Per-round cost of the secure ring sum in the simulator (one process, MemoryNetwork).

For each N and model, runs `ringfl.sim.simulate` for a few rounds with the secure ring
and with the plain ring, and reports the communication time per round (`comm_s` /
rounds: building the round's machines, key agreements, Shamir sharing, masking and the
in-memory all-reduce; the local training is not counted). Models: `logreg` on sklearn
digits (650 parameters) and `mlp` on the bundled MNIST (199,210 parameters).

    python experiments/bench_secure_sim.py                       # N ∈ {8, 32, 100}
    python experiments/bench_secure_sim.py --ns 8,32 --rounds 2
    python experiments/bench_secure_sim.py --root /path/to/other/checkout   # compare

Prints a table and writes experiments/results/secure_sim.csv (unless --out '').
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"

MODELS = {
    650: {"data": {"dataset": "digits"}, "model": {"name": "logreg"}},
    199_210: {"data": {"dataset": "mnist", "train_subset": 6000}, "model": {"name": "mlp"}},
}


def run_one(n: int, params: int, secure: bool, rounds: int) -> dict:
    import torch

    from ringfl.config import config_from_dict
    from ringfl.sim import simulate
    from ringfl.topology import make

    torch.set_num_threads(1)
    raw = {
        "seed": 1,
        "eval_every": 1000,
        "partition": {"name": "iid"},
        "train": {"rounds": rounds, "batch_size": 32, "lr": 0.05, "local_epochs": 1},
        "algorithm": {"name": "ring", "secure": secure},
        **MODELS[params],
    }
    res = simulate(make("ring", n), config_from_dict(raw), progress=False, baseline=False)
    got = res.learners[0].flat().shape[0]
    if got != params:
        raise SystemExit(f"model has {got} parameters, expected {params}")
    return {
        "n": n,
        "params": params,
        "secure": secure,
        "rounds": rounds,
        "comm_s_per_round": res.comm_s / rounds,
        "compute_s_per_round": res.compute_s / rounds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="8,32,100")
    ap.add_argument("--params", default="650,199210")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--plain", action="store_true", help="also time the plain ring")
    ap.add_argument("--root", default=str(ROOT), help="checkout whose ringfl is imported")
    ap.add_argument("--out", default=str(RESULTS / "secure_sim.csv"))
    args = ap.parse_args(argv)
    sys.path.insert(0, args.root)
    rows = []
    for n in (int(v) for v in args.ns.split(",")):
        for params in (int(v) for v in args.params.split(",")):
            for secure in (True, False) if args.plain else (True,):
                row = run_one(n, params, secure, args.rounds)
                rows.append(row)
                kind = "secure" if secure else "plain "
                print(
                    f"N={n:4d} params={params:7d} {kind}: "
                    f"{row['comm_s_per_round']:7.2f} s/round comm "
                    f"({row['compute_s_per_round']:.2f} s/round training)",
                    flush=True,
                )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
