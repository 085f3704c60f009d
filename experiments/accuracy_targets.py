"""The training issue's accuracy and simulator-speed targets, checked on MNIST at the same
sample budget (same data, model, seed and optimizer for every side of a comparison).

Accuracy (default: the CNN, R rounds x 1 local epoch, seed 0, full MNIST):

  A1  ring (secure), 8 peers, IID        vs centralized CNN   within 0.3 points (both ~99%)
  A2  ring (secure), 8 peers, Dir a=0.5  vs centralized CNN   within 1 point
  A3  gossip, 16-node torus              vs ring (secure), 16 peers, IID, same rounds: 1 point
  A4  gossip, exponential-16 graph       vs ring (secure), 16 peers, IID, same rounds: 1 point

The centralized baseline trains R epochs on the pooled data (R x 60,000 samples, what the
peers process together). IID and Dirichlet cells pool the same 60,000 images, so one
centralized run serves A1 and A2 (checked: same pooled set, same budget). Gossip accuracy
is the mean over the 16 peers' own models (the mean model's accuracy is shown too).

Speed:

  S1  examples/quickstart.py (10 peers, secure ring, MLP, 20 rounds): wall time < 30 s,
      run as a subprocess (imports and data loading included).
  S2  the largest N in one process (MLP, full MNIST split IID, secure ring and plain
      ring): wall time, peer-rounds per second, peak RSS (resource.getrusage in a child
      process per N, so each N's peak is its own).

    python experiments/accuracy_targets.py                    # everything
    python experiments/accuracy_targets.py --rounds 3 --skip-speed
    python experiments/accuracy_targets.py --quick --out /tmp/t   # tiny smoke run

Every finished run is appended to accuracy_targets.jsonl (rerunning skips it); the
verdicts go to accuracy_targets.md (and accuracy_targets_<model>_R<rounds>_G<gossip
rounds>.md) and are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from compare_training import (  # noqa: E402
    RESULTS,
    Run,
    Sweep,
    append_record,
    load_records,
    make_config,
    run_one,
)

STEM = "accuracy_targets"


class Store:
    """Finished runs by key, backed by a JSONL file (append-only, resumable)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = {r["key"]: r for r in load_records(path)}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def put(self, rec: dict[str, Any]) -> dict[str, Any]:
        append_record(self.path, rec)
        self.records[rec["key"]] = rec
        return rec


def _cell_data(cache: dict, sweep: Sweep, partition: str, n: int, seed: int):
    from ringfl.sim import prepare_data

    k = (partition, n, seed)
    if k not in cache:
        cache.clear()  # one cell at a time: CNN cells hold the whole training set
        cache[k] = prepare_data(make_config(sweep, partition, seed), n)
    return cache[k]


NEEDS = {
    "A1": ("ring8_iid", "central"),
    "A2": ("ring8_dir", "central"),
    "A3": ("ring16", "torus16"),
    "A4": ("ring16", "exp16"),
}


def accuracy_runs(
    sweep: Sweep,
    gossip_sweep: Sweep,
    seed: int,
    store: Store,
    log,
    targets: Sequence[str] = tuple(NEEDS),
) -> dict[str, dict[str, Any]]:
    """Train (or load) every run `targets` need (A3/A4 under `gossip_sweep`)."""
    needed = {name for t in targets for name in NEEDS[t]}
    wanted = {
        "ring8_iid": (Run("iid", 8, seed, "ring-secure"), sweep),
        "central": (Run("iid", 8, seed, "centralized"), sweep),
        "ring8_dir": (Run("dir0.5", 8, seed, "ring-secure"), sweep),
        "ring16": (Run("iid", 16, seed, "ring-secure"), gossip_sweep),
        "torus16": (Run("iid", 16, seed, "gossip-torus"), gossip_sweep),
        "exp16": (Run("iid", 16, seed, "gossip-exp"), gossip_sweep),
    }
    cache: dict = {}
    out = {}
    for name, (run, cell_sweep) in wanted.items():
        if name not in needed:
            continue
        rec = store.get(run.key(cell_sweep))
        if rec is None:
            log(f"{name}: training {run.method}, {run.partition}, N={run.n} ...")
            data = _cell_data(cache, cell_sweep, run.partition, run.n, run.seed)
            rec = store.put(run_one(run, cell_sweep, data, None))
            log(f"{name}: {100 * rec['accuracy']:.2f}% ({rec['wall_s']:.0f} s)")
        out[name] = rec
    if "A2" not in targets:
        return out
    # A2 compares with the same centralized run: check that it is the same computation.
    d_iid = _cell_data(cache, sweep, "iid", 8, seed)
    size_iid, budget_iid = len(d_iid.pooled), out["ring8_iid"]["budget_samples"]
    d_dir = _cell_data(cache, sweep, "dir0.5", 8, seed)
    if (len(d_dir.pooled), out["ring8_dir"]["budget_samples"]) != (size_iid, budget_iid):
        raise RuntimeError("Dirichlet cell pools other data than the IID cell")
    return out


def accuracy_verdicts(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per target whose runs are in `runs`."""
    out = []
    for tid, row in _verdict_rows(runs).items():
        if all(name in runs for name in NEEDS[tid]):
            out.append(row())
    return out


def _verdict_rows(runs: dict[str, dict[str, Any]]):
    c = runs.get("central", {}).get("accuracy")

    def row(tid, what, acc, ref, ref_name, limit, extra=""):
        gap = 100 * (ref - acc)  # > 0: behind the reference
        return {
            "id": tid,
            "what": what,
            "accuracy": acc,
            "reference": ref,
            "reference_name": ref_name,
            "gap_pp": gap,
            "target_pp": limit,
            "met": gap <= limit,
            "note": extra,
        }

    r16 = runs.get("ring16", {}).get("accuracy")

    def mm(name):
        return f"mean model {100 * runs[name]['mean_model_accuracy']:.2f}%"

    # fmt: off
    return {
        "A1": lambda: row("A1", "ring (secure), 8 peers, IID", runs["ring8_iid"]["accuracy"], c, "centralized", 0.3),
        "A2": lambda: row("A2", "ring (secure), 8 peers, Dir α=0.5", runs["ring8_dir"]["accuracy"], c, "centralized", 1.0),
        "A3": lambda: row("A3", "gossip, torus 4×4, IID", runs["torus16"]["accuracy"], r16, "ring (secure), 16 peers", 1.0, mm("torus16")),
        "A4": lambda: row("A4", "gossip, exponential-16, IID", runs["exp16"]["accuracy"], r16, "ring (secure), 16 peers", 1.0, mm("exp16")),
    }
    # fmt: on


# ---------------------------------------------------------------- speed


def quickstart_time(threads: int, timeout: float) -> dict[str, Any]:
    """Run examples/quickstart.py as a fresh process; wall time and its last line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "quickstart.py")],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"quickstart failed ({p.returncode}):\n{p.stderr[-2000:]}")
    lines = p.stdout.strip().splitlines()
    return {
        "key": f"quickstart|threads={threads}|t={time.time():.0f}",
        "wall_s": wall,
        "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "threads": threads or "torch default",
        "load_avg_1min_before": load,
        "last_line": lines[-1] if lines else "",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def scale_child(n: int, rounds: int, secure: bool, train_subset: int | None) -> dict[str, Any]:
    """In this (child) process: N peers, MLP, IID MNIST, ring; timings and peak RSS."""
    import torch

    torch.set_num_threads(1)
    from ringfl import topology
    from ringfl.config import AlgorithmConfig
    from ringfl.sim import simulate

    sweep = Sweep(model="mlp", rounds=rounds, eval_every=rounds, train_subset=train_subset)
    cfg = make_config(sweep, "iid", 0).replace(
        algorithm=AlgorithmConfig(name="ring", secure=secure)
    )
    t0 = time.perf_counter()
    res = simulate(topology.make("ring", n), cfg, baseline=False, progress=False)
    wall = time.perf_counter() - t0
    return {
        "n": n,
        "rounds": rounds,
        "secure": secure,
        "train_subset": train_subset,
        "accuracy": res.final_accuracy,
        "wall_s": wall,
        "compute_s": res.compute_s,
        "comm_s": res.comm_s,
        "peer_rounds_per_s": n * rounds / wall,
        "s_per_round": wall / rounds,
        "bytes_per_peer": res.bytes_per_peer,
        "cpu_s": time.process_time(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def scale_run(n: int, rounds: int, secure: bool, train_subset, timeout: float) -> dict[str, Any]:
    """`scale_child` in a fresh process (its own peak RSS); {'error': ...} on failure."""
    cmd = [sys.executable, __file__, "--child-scale", str(n), str(rounds), str(int(secure))]
    if train_subset:
        cmd += ["--train-subset", str(train_subset)]
    key = f"scale|n={n}|rounds={rounds}|secure={secure}|train_subset={train_subset}"
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "key": key,
            "n": n,
            "rounds": rounds,
            "secure": secure,
            "error": f"> {timeout:.0f} s",
        }
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"key": key, "n": n, "rounds": rounds, "secure": secure, "error": tail}
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    return {"key": key, **rec, "load_avg_1min_after": os.getloadavg()[0]}


# ---------------------------------------------------------------- report


def markdown(verdicts, sweep: Sweep, runs, quick, scale) -> str:
    lines = []
    if verdicts:
        g = runs["ring16"]["rounds"] if "ring16" in runs else "–"
        lines += [
            f"Accuracy at the same sample budget: MNIST, {sweep.model.upper()}, {sweep.rounds} "
            f"rounds (A3/A4: {g} rounds) × {sweep.local_epochs} local epoch, "
            f"batch {sweep.batch_size}, "
            f"lr {sweep.lr}, momentum {sweep.momentum}, seed {next(iter(runs.values()))['seed']}"
            + ("" if sweep.train_subset is None else f", train subset {sweep.train_subset}")
            + (
                f"; centralized: {runs['central']['epochs']:.0f} epochs on the pooled data."
                if "central" in runs
                else "."
            ),
            "",
            "| id | run | accuracy | reference | gap (pp) | target | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in verdicts:
            note = f" ({v['note']})" if v["note"] else ""
            lines.append(
                f"| {v['id']} | {v['what']}{note} | {100 * v['accuracy']:.2f}% | "
                f"{v['reference_name']} {100 * v['reference']:.2f}% | {v['gap_pp']:+.2f} | "
                f"≤ {v['target_pp']} | {'yes' if v['met'] else '**no**'} |"
            )
        lines.append("")
    if quick:
        lines += [
            "| quickstart (examples/quickstart.py) | threads | wall | CPU | load (1 min) | target | met |"
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for q in quick:
            lines.append(
                f"| {q['last_line']} | {q['threads']} | {q['wall_s']:.1f} s | "
                f"{q.get('cpu_s', float('nan')):.1f} s | "
                f"{q['load_avg_1min_before']:.1f} | < 30 s | "
                f"{'yes' if q['wall_s'] < 30 else '**no**'} |"
            )
        lines.append("")
    if scale:
        lines += [
            "| peers | ring | rounds | wall | CPU | s / round | peer-rounds / s | peak RSS | accuracy |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in scale:
            kind = "secure" if s["secure"] else "plain"
            if "error" in s:
                lines.append(
                    f"| {s['n']} | {kind} | {s['rounds']} | failed: {s['error']} | | | | | |"
                )
                continue
            lines.append(
                f"| {s['n']} | {kind} | {s['rounds']} | {s['wall_s']:.0f} s | "
                f"{s.get('cpu_s', float('nan')):.0f} s | "
                f"{s['s_per_round']:.1f} | {s['peer_rounds_per_s']:.0f} | "
                f"{s['peak_rss_mb']:.0f} MB | {100 * s['accuracy']:.2f}% |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="cnn", choices=("cnn", "mlp", "logreg"))
    ap.add_argument("--rounds", type=int, default=6, help="A1/A2 rounds (1 local epoch each)")
    ap.add_argument("--gossip-rounds", type=int, default=4, help="A3/A4 rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-subset", type=int, help="fixed random subset of the training set")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument(
        "--targets", nargs="+", choices=tuple(NEEDS), default=list(NEEDS), help="accuracy targets"
    )
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--quickstart-threads",
        type=int,
        nargs="+",
        default=[1, 0],
        help="torch threads per quickstart timing (0: torch's default); default %(default)s",
    )
    ap.add_argument(
        "--scale",
        nargs="+",
        default=["100:20:1", "100:20:0", "300:3:0", "300:2:1", "1000:2:0"],
        metavar="N:ROUNDS:SECURE",
        help="scale runs (child processes), in order; default %(default)s",
    )
    ap.add_argument("--scale-timeout", type=float, default=1200.0, help="seconds per scale run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child-scale", nargs=3, type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child_scale:
        n, rounds, secure = a.child_scale
        print(json.dumps(scale_child(n, rounds, bool(secure), a.train_subset)))
        return 0

    import torch

    torch.set_num_threads(a.threads)
    out = a.out or (RESULTS / "quick" if a.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / f"{STEM}.jsonl")
    sweep = Sweep(
        model="mlp" if a.quick else a.model,
        rounds=2 if a.quick else a.rounds,
        train_subset=1200 if a.quick else a.train_subset,
        test_subset=500 if a.quick else None,
    )
    sweep = dataclasses.replace(sweep, eval_every=sweep.rounds)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    verdicts, runs, quick, scale = [], {}, [], []
    if not a.skip_accuracy:
        g_rounds = 2 if a.quick else a.gossip_rounds
        gossip_sweep = dataclasses.replace(sweep, rounds=g_rounds, eval_every=g_rounds)
        runs = accuracy_runs(sweep, gossip_sweep, a.seed, store, log, a.targets)
        verdicts = accuracy_verdicts(runs)
    if not a.skip_speed:
        for threads in a.quickstart_threads:
            log(f"timing examples/quickstart.py, threads={threads or 'default'} ...")
            quick.append(store.put(quickstart_time(threads, timeout=900)))
            log(f"quickstart: {quick[-1]['wall_s']:.1f} s")
        specs = ["20:2:1", "20:2:0"] if a.quick else a.scale
        for spec in specs:
            n, rounds, secure = (int(x) for x in spec.split(":"))
            ts = 600 if a.quick else None
            key = f"scale|n={n}|rounds={rounds}|secure={bool(secure)}|train_subset={ts}"
            rec = store.get(key)
            if rec is None or "error" in rec:
                log(f"scale: {n} peers x {rounds} rounds, secure={bool(secure)} ...")
                rec = store.put(scale_run(n, rounds, bool(secure), ts, a.scale_timeout))
                log(f"scale: {rec}")
            scale.append(rec)
    md = markdown(verdicts, sweep, runs, quick, scale)
    (out / f"{STEM}.md").write_text(md + "\n")
    if verdicts:  # keep each setting's verdicts beside the latest
        tag = (
            f"{sweep.model}_R{sweep.rounds}_G{runs['ring16']['rounds']}" if "ring16" in runs else ""
        )
        tag = tag or f"{sweep.model}_R{sweep.rounds}_{'_'.join(a.targets)}"
        (out / f"{STEM}_{tag}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
