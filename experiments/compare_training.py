"""Decentralized vs centralized training on MNIST: one table, every cell an honest match.

Methods (per cell = partition x N x seed):

    ring-secure     server-free FedAvg by secure (masked) ring all-reduce
    gossip-ring     D-PSGD, Metropolis-Hastings weights on the N-cycle
    gossip-torus    D-PSGD on the most square 2-D torus with N nodes
    gossip-exp      D-PSGD on the exponential-2 graph (i joined to i +- 2^k)
    server-fedavg   the classic hub-and-spoke parameter server (FedAvg)
    centralized     one model on the pooled data, same number of training samples
    standalone      every peer alone on its own data (mean test accuracy over peers)

Within a cell every method gets the same partition (one `prepare_data` call), the same
model and initial weights (seed), the same optimizer settings and the same sample budget
(rounds x local epochs x all peers' samples; the centralized baseline trains that many
samples on the pooled data, the standalone peers as many as in the federated run). Cells
of one seed that pool the same samples (IID and Dirichlet cells pool all of them) share
one centralized run: it is trained once and its record reused (`reused_from`). Gossip
accuracy is the mean over peers' own models (the mean model's accuracy and the consensus
distance are recorded too).

    python experiments/compare_training.py                       # the full sweep
    python experiments/compare_training.py --quick --out /tmp/q  # tiny smoke run
    python experiments/compare_training.py --seeds 0 1 2 --ns 8 --partitions iid dir0.1

Output (in --out, default experiments/results): compare_training.jsonl (one line per run,
final metrics; the sweep resumes from it: runs already there are skipped),
compare_training_summary.csv (mean +- std over seeds), compare_training_table.md,
compare_training_curves/<run>.csv (per-round metrics), and the plots
compare_training_accuracy_vs_round.png / compare_training_accuracy_vs_bytes.png.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # import ringfl from this checkout
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "experiments" / "results"
STEM = "compare_training"

# method -> (algorithm, topology kind, secure); None: a baseline outside the simulator
SIM_METHODS: dict[str, tuple[str, str, bool]] = {
    "ring-secure": ("ring", "ring", True),
    "gossip-ring": ("gossip", "ring", False),
    "gossip-torus": ("gossip", "torus", False),
    "gossip-exp": ("gossip", "exponential", False),
    "server-fedavg": ("server", "ring", False),
}
BASELINES = ("centralized", "standalone")
METHODS = (*SIM_METHODS, *BASELINES)
LABELS = {
    "ring-secure": "ring (secure)",
    "gossip-ring": "gossip, ring graph",
    "gossip-torus": "gossip, torus",
    "gossip-exp": "gossip, exponential graph",
    "server-fedavg": "server FedAvg",
    "centralized": "centralized",
    "standalone": "standalone (mean over peers)",
}


@dataclass(frozen=True)
class Sweep:
    """Settings shared by every run of a sweep (part of each run's resume key)."""

    model: str = "mlp"
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    train_subset: int | None = None  # None: the full 60,000 MNIST training images
    test_subset: int | None = None  # None: the full 10,000 test images
    eval_every: int = 1


@dataclass(frozen=True)
class Run:
    """One run: a method in one cell (partition, N, seed)."""

    partition: str  # "iid" or "dir<alpha>"
    n: int
    seed: int
    method: str

    def key(self, sweep: Sweep) -> str:
        fields = {**asdict(sweep), **asdict(self)}
        return "|".join(f"{k}={fields[k]}" for k in sorted(fields))

    def slug(self, sweep: Sweep) -> str:
        sub = "" if sweep.train_subset is None else f"_sub{sweep.train_subset}"
        return (
            f"{sweep.model}_R{sweep.rounds}E{sweep.local_epochs}{sub}_{self.partition}"
            f"_N{self.n}_s{self.seed}_{self.method}"
        )


def parse_partition(spec: str) -> tuple[str, float | None]:
    """'iid' -> ('iid', None); 'dir0.5' / 'dirichlet0.5' -> ('dirichlet', 0.5)."""
    s = spec.strip().lower()
    if s == "iid":
        return "iid", None
    for prefix in ("dirichlet", "dir"):
        if s.startswith(prefix):
            try:
                alpha = float(s[len(prefix) :])
            except ValueError:
                break
            if alpha > 0:
                return "dirichlet", alpha
    raise argparse.ArgumentTypeError(
        f"partition {spec!r}: expected 'iid' or 'dir<alpha>' (e.g. dir0.5)"
    )


def partition_label(spec: str) -> str:
    name, alpha = parse_partition(spec)
    return "IID" if name == "iid" else f"Dir α={alpha:g}"


def make_config(sweep: Sweep, partition: str, seed: int, algorithm: str = "ring", secure=False):
    from ringfl.config import (
        AlgorithmConfig,
        Config,
        DataConfig,
        ModelConfig,
        PartitionConfig,
        TrainConfig,
    )

    name, alpha = parse_partition(partition)
    return Config(
        seed=seed,
        eval_every=sweep.eval_every,
        data=DataConfig(
            dataset="mnist", train_subset=sweep.train_subset, test_subset=sweep.test_subset
        ),
        partition=PartitionConfig(name=name, alpha=0.5 if alpha is None else alpha),
        model=ModelConfig(name=sweep.model),
        train=TrainConfig(
            rounds=sweep.rounds,
            local_epochs=sweep.local_epochs,
            batch_size=sweep.batch_size,
            lr=sweep.lr,
            momentum=sweep.momentum,
        ),
        algorithm=AlgorithmConfig(name=algorithm, secure=secure),
    ).replace()  # validated


def fingerprint(*datasets) -> str:
    """BLAKE2b of the datasets' arrays: equal fingerprints, the same samples in order."""
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    for d in datasets:
        for a in (d.x, d.y):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _header(run: Run, sweep: Sweep, data) -> dict[str, Any]:
    from ringfl.baselines import sample_budget

    cfg = make_config(sweep, run.partition, run.seed)
    return {
        "key": run.key(sweep),
        **asdict(sweep),
        **asdict(run),
        "dataset": "mnist",
        "train_samples": len(data.pooled),
        "test_samples": len(data.test),
        "min_peer_samples": min(len(p) for p in data.parts),
        "budget_samples": sample_budget([len(p) for p in data.parts], cfg.train),
    }


def reuse_centralized(
    run: Run, sweep: Sweep, data, records: Iterable[dict[str, Any]]
) -> dict[str, Any] | None:
    """The centralized baseline is the same computation in every cell of a seed that pools
    the same samples (IID and Dirichlet cells pool all of them) with the same budget: reuse
    such a record (marked `reused_from`) instead of training it again."""
    if run.method != "centralized":
        return None
    head = _header(run, sweep, data)
    fp = fingerprint(data.pooled, data.test)
    same = {k: head[k] for k in (*asdict(sweep), "seed", "budget_samples")}
    for r in records:
        if (
            r.get("method") == "centralized"
            and r.get("data_fingerprint") == fp
            and all(r.get(k) == v for k, v in same.items())
        ):
            return {
                **r,
                **head,
                "reused_from": r.get("reused_from", r["key"]),
                "wall_s": 0.0,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
    return None


def run_one(run: Run, sweep: Sweep, data, curves_dir: Path | None) -> dict[str, Any]:
    """Train `run` on the cell's pre-split `data`; return its JSONL record."""
    from ringfl import topology
    from ringfl.baselines import centralized, standalone

    cfg = make_config(sweep, run.partition, run.seed)
    rec = _header(run, sweep, data)
    budget = rec["budget_samples"]
    t0 = time.perf_counter()
    if run.method in SIM_METHODS:
        from ringfl.config import AlgorithmConfig
        from ringfl.sim import simulate

        algo, kind, secure = SIM_METHODS[run.method]
        graph = topology.make(kind, run.n)
        cfg = cfg.replace(algorithm=AlgorithmConfig(name=algo, secure=secure))
        res = simulate(graph, cfg, data=data, baseline=False, progress=False)
        last = res.metrics[-1]
        gap = topology.spectral_gap(topology.mixing_matrix(graph)) if algo == "gossip" else None
        rec.update(
            algorithm=algo,
            topology=kind,
            secure=res.secure,
            accuracy=res.final_accuracy,
            loss=res.final_loss,
            mean_model_accuracy=last["mean_model_accuracy"],
            min_peer_accuracy=last["min_peer_accuracy"],
            consensus_distance=last["consensus_distance"],
            spectral_gap=gap,
            samples=budget,
            bytes_per_peer=res.bytes_per_peer,
            hub_bytes_per_round=last["hub_bytes_sent"],
            compute_s=res.compute_s,
            comm_s=res.comm_s,
        )
        if curves_dir is not None:
            write_curve(curves_dir / f"{run.slug(sweep)}.csv", res.metrics)
    elif run.method == "centralized":
        b = centralized(
            data.pooled, data.test, sweep.model, cfg.train, budget=budget, seed=run.seed
        )
        rec.update(
            algorithm="centralized",
            accuracy=b.accuracy,
            loss=b.loss,
            samples=b.samples,
            epochs=b.detail["epochs"],
            bytes_per_peer=0.0,
            data_fingerprint=fingerprint(data.pooled, data.test),
        )
    elif run.method == "standalone":
        b = standalone(data.parts, data.test, sweep.model, cfg.train, seed=run.seed)
        rec.update(
            algorithm="standalone",
            accuracy=b.accuracy,
            loss=b.loss,
            min_peer_accuracy=b.detail["min_accuracy"],
            max_peer_accuracy=b.detail["max_accuracy"],
            samples=b.samples,
            bytes_per_peer=0.0,
        )
    else:
        raise ValueError(f"unknown method {run.method!r} (known: {', '.join(METHODS)})")
    rec["wall_s"] = time.perf_counter() - t0
    rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return rec


def write_curve(path: Path, metrics: Sequence[dict[str, Any]]) -> None:
    from ringfl.sim import METRIC_FIELDS

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRIC_FIELDS))
        w.writeheader()
        for row in metrics:
            w.writerow({k: "" if row.get(k) is None else row[k] for k in METRIC_FIELDS})
    os.replace(tmp, path)


def read_curve(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


# ---------------------------------------------------------------- resume (JSONL)


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of `path` (a torn last line from an interrupted run is
    skipped; its run is simply done again)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "key" in rec:
            out.append(rec)
    return out


def append_record(path: Path, rec: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (starting a fresh line after a torn one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- sweep


def plan(
    partitions: Sequence[str], ns: Sequence[int], seeds: Sequence[int], methods: Sequence[str]
) -> list[Run]:
    """All runs, grouped by cell so that a cell's data is split once; seed by seed, so an
    interrupted sweep already holds whole tables for its first seeds. gossip-torus is left
    out for an N with no torus (a prime N: no rows x cols with both >= 2)."""
    return [
        Run(p, n, s, m)
        for s in seeds
        for p in partitions
        for n in ns
        for m in methods
        if m != "gossip-torus" or has_torus(n)
    ]


def has_torus(n: int) -> bool:
    from ringfl.errors import TopologyError
    from ringfl.topology import torus_shape

    try:
        torus_shape(n)
    except TopologyError:
        return False
    return True


def sweep_runs(runs: Sequence[Run], sweep: Sweep, out: Path, *, progress: bool = True) -> int:
    """Run every run of `runs` not yet in the JSONL; return how many were run."""
    from tqdm.auto import tqdm

    from ringfl.sim import prepare_data

    jsonl = out / f"{STEM}.jsonl"
    records = load_records(jsonl)
    done = {r["key"] for r in records}
    todo = [r for r in runs if r.key(sweep) not in done]
    bar = tqdm(
        total=len(runs),
        initial=len(runs) - len(todo),
        desc="runs",
        unit="run",
        disable=not progress,
    )
    cell, data = None, None
    for run in todo:
        if (run.partition, run.n, run.seed) != cell:
            cell = (run.partition, run.n, run.seed)
            data = prepare_data(make_config(sweep, run.partition, run.seed), run.n)
        bar.set_postfix_str(f"{run.partition} N={run.n} seed={run.seed} {run.method}")
        rec = reuse_centralized(run, sweep, data, records) or run_one(
            run, sweep, data, out / f"{STEM}_curves"
        )
        append_record(jsonl, rec)
        records.append(rec)
        bar.update(1)
        bar.write(
            f"{run.method:>13}  {run.partition:>6}  N={run.n:<3} seed={run.seed}  "
            f"acc {100 * rec['accuracy']:6.2f}%  ({rec['wall_s']:.1f} s)"
        )
    bar.close()
    return len(todo)


# ---------------------------------------------------------------- summary


def _stats(xs: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(xs)
    return mean, statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarize(
    records: Iterable[dict[str, Any]], runs: Sequence[Run], sweep: Sweep
) -> list[dict[str, Any]]:
    """Mean and std over seeds per (partition, N, method), for the runs of this sweep."""
    by_key = {r["key"]: r for r in records}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for run in runs:
        rec = by_key.get(run.key(sweep))
        if rec is not None:
            groups.setdefault((run.partition, run.n, run.method), []).append(rec)
    central = {
        (p, n): _stats([r["accuracy"] for r in g])[0]
        for (p, n, m), g in groups.items()
        if m == "centralized"
    }
    rows = []
    for (p, n, m), g in groups.items():
        acc, acc_sd = _stats([r["accuracy"] for r in g])
        mm = [r["mean_model_accuracy"] for r in g if r.get("mean_model_accuracy") is not None]
        cd = [r["consensus_distance"] for r in g if r.get("consensus_distance") is not None]
        mp = [r["min_peer_accuracy"] for r in g if r.get("min_peer_accuracy") is not None]
        rows.append(
            {
                "model": sweep.model,
                "rounds": sweep.rounds,
                "partition": p,
                "n": n,
                "method": m,
                "seeds": len(g),
                "accuracy_mean": acc,
                "accuracy_std": acc_sd,
                "gap_to_centralized_pp": 100 * (acc - central[(p, n)]) if (p, n) in central else "",
                "mean_model_accuracy_mean": _stats(mm)[0] if mm else "",
                "min_peer_accuracy_mean": _stats(mp)[0] if mp else "",
                "consensus_distance_mean": _stats(cd)[0] if cd else "",
                "bytes_per_peer_mean": _stats([r["bytes_per_peer"] for r in g])[0],
                "hub_bytes_mean": _stats([r["hub_bytes_per_round"] * r["rounds"] for r in g])[0]
                if g[0].get("hub_bytes_per_round") is not None
                else "",
                "samples": g[0]["samples"],
                "budget_samples": g[0]["budget_samples"],
                "wall_s_mean": _stats([r["wall_s"] for r in g])[0],
            }
        )
    return rows


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown_table(
    rows: Sequence[dict[str, Any]], partitions: Sequence[str], ns: Sequence[int]
) -> str:
    """Methods x (partition, N): test accuracy in %, mean ± std over seeds; then the MB
    each peer sends in total per method and N."""
    cell = {(r["partition"], r["n"], r["method"]): r for r in rows}
    cols = [(p, n) for p in partitions for n in ns]
    head = ["method", *(f"{partition_label(p)}, N={n}" for p, n in cols)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in METHODS:
        if not any((p, n, m) in cell for p, n in cols):
            continue
        vals = []
        for p, n in cols:
            r = cell.get((p, n, m))
            if r is None:
                vals.append("–")
            elif r["seeds"] > 1:
                vals.append(f"{100 * r['accuracy_mean']:.2f} ± {100 * r['accuracy_std']:.2f}")
            else:
                vals.append(f"{100 * r['accuracy_mean']:.2f}")
        lines.append(f"| {LABELS[m]} | " + " | ".join(vals) + " |")
    gossip = [m for m in SIM_METHODS if SIM_METHODS[m][0] == "gossip"]
    if any((p, n, m) in cell for p, n in cols for m in gossip):
        lines += ["", "Gossip: accuracy of the mean model (1/N Σ x_i), mean over seeds", ""]
        lines += [lines[0], lines[1]]
        for m in gossip:
            vals = [
                f"{100 * cell[(p, n, m)]['mean_model_accuracy_mean']:.2f}"
                if (p, n, m) in cell
                else "–"
                for p, n in cols
            ]
            lines.append(f"| {LABELS[m]} | " + " | ".join(vals) + " |")
    lines += ["", "| method | " + " | ".join(f"MB sent per peer, N={n}" for n in ns) + " |"]
    lines.append("|" + "---|" * (len(ns) + 1))
    for m in SIM_METHODS:
        vals = []
        for n in ns:
            mbs = [cell[(p, n, m)]["bytes_per_peer_mean"] for p in partitions if (p, n, m) in cell]
            vals.append(f"{statistics.fmean(mbs) / 1e6:.1f}" if mbs else "–")
        lines.append(f"| {LABELS[m]} | " + " | ".join(vals) + " |")
        if m == "server-fedavg":
            hub = []
            for n in ns:
                hs = [cell[(p, n, m)]["hub_bytes_mean"] for p in partitions if (p, n, m) in cell]
                hub.append(f"{statistics.fmean(hs) / 1e6:.1f}" if hs else "–")
            lines.append("| server FedAvg: the hub | " + " | ".join(hub) + " |")
    return "\n".join(lines)


def mean_curves(
    runs: Sequence[Run], sweep: Sweep, out: Path
) -> dict[tuple[str, int, str], list[dict[str, float]]]:
    """Per (partition, N, method): the per-round metrics averaged over seeds."""
    groups: dict[tuple[str, int, str], list[list[dict[str, float]]]] = {}
    for run in runs:
        if run.method not in SIM_METHODS:
            continue
        c = read_curve(out / f"{STEM}_curves" / f"{run.slug(sweep)}.csv")
        if c:
            groups.setdefault((run.partition, run.n, run.method), []).append(c)
    result = {}
    for k, cs in groups.items():
        length = min(len(c) for c in cs)
        result[k] = [
            {
                f: statistics.fmean(c[i][f] for c in cs)
                for f in ("round", "accuracy", "cum_bytes_per_peer")
            }
            for i in range(length)
        ]
    return result


def plot(
    rows: Sequence[dict[str, Any]],
    curves: dict[tuple[str, int, str], list[dict[str, float]]],
    partitions: Sequence[str],
    ns: Sequence[int],
    out: Path,
) -> list[Path]:
    """Grids (partition rows x N columns): accuracy vs round and vs MB sent per peer, one
    line per simulated method (mean over seeds), centralized and standalone as lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

    cell = {(r["partition"], r["n"], r["method"]): r for r in rows}
    colors = dict(zip(SIM_METHODS, ("C0", "C1", "C2", "C3", "C4"), strict=True))
    paths = []
    for name, xkey, xlabel in (
        ("accuracy_vs_round", "round", "round"),
        ("accuracy_vs_bytes", "cum_bytes_per_peer", "MB sent per peer (cumulative, log)"),
    ):
        fig = Figure(figsize=(4.2 * len(ns), 3.3 * len(partitions)), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(partitions), len(ns), squeeze=False)
        for i, p in enumerate(partitions):
            for j, n in enumerate(ns):
                ax = axes[i][j]
                lo = 100.0
                for m in SIM_METHODS:
                    c = curves.get((p, n, m))
                    if not c:
                        continue
                    xs = [r[xkey] / (1e6 if xkey != "round" else 1) for r in c]
                    ys = [100 * r["accuracy"] for r in c]
                    lo = min(lo, min(ys[1:] or ys))  # round 1 may sit far below
                    # ring and server FedAvg compute the same mean: draw the ring under
                    # a dashed server line so that both stay visible
                    style = (
                        {"lw": 3.0, "alpha": 0.6}
                        if m == "ring-secure"
                        else {"ls": "--"}
                        if m == "server-fedavg"
                        else {}
                    )
                    label = LABELS[m]
                    if m == "server-fedavg" and xkey != "round":
                        label += " (clients; the hub sends N×)"
                    ax.plot(xs, ys, marker="o", ms=2.5, color=colors[m], label=label, **style)
                for m, style in (("centralized", ("k", "--")), ("standalone", ("0.5", ":"))):
                    r = cell.get((p, n, m))
                    if r is not None:
                        acc = 100 * r["accuracy_mean"]
                        ax.axhline(acc, color=style[0], ls=style[1], label=f"{LABELS[m]}")
                        if m == "centralized":
                            lo = min(lo, acc)
                ax.set_ylim(max(0.0, lo - 3), 100.5)
                ax.set_title(f"{partition_label(p)}, N={n}", fontsize=10)
                if xkey == "round":
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                else:
                    ax.set_xscale("log")
                    ax.xaxis.set_major_formatter(ScalarFormatter())
                    ax.xaxis.set_minor_formatter(NullFormatter())
                if i == len(partitions) - 1:
                    ax.set_xlabel(xlabel)
                if j == 0:
                    ax.set_ylabel("test accuracy (%)")
                ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        ncol = min(4, 2 * len(ns))
        legend_in = 0.2 * -(-len(labels) // ncol) + 0.15  # legend height, inches
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
        fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
        path = out / f"{STEM}_{name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def report(runs: Sequence[Run], sweep: Sweep, out: Path, partitions, ns) -> str:
    """Write summary CSV, markdown table and plots from the JSONL; return the table."""
    rows = summarize(load_records(out / f"{STEM}.jsonl"), runs, sweep)
    write_summary(rows, out / f"{STEM}_summary.csv")
    table = markdown_table(rows, partitions, ns)
    (out / f"{STEM}_table.md").write_text(table + "\n")
    if rows:
        plot(rows, mean_curves(runs, sweep, out), partitions, ns, out)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (MNIST subset)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1)")
    ap.add_argument("--ns", type=int, nargs="+", help="peer counts (default 8 32)")
    ap.add_argument(
        "--partitions",
        nargs="+",
        type=str,
        help="iid and/or dir<alpha> (default iid dir0.1 dir0.5)",
    )
    ap.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    ap.add_argument("--rounds", type=int, help="rounds (default 10)")
    ap.add_argument("--local-epochs", type=int, help="local epochs per round (default 1)")
    ap.add_argument("--model", choices=("mlp", "cnn", "logreg"), help="default mlp")
    ap.add_argument("--train-subset", type=int, help="fixed random subset of the training set")
    ap.add_argument("--test-subset", type=int, help="fixed random subset of the test set")
    ap.add_argument("--eval-every", type=int, help="evaluate every k rounds (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, help="output directory (default experiments/results)")
    ap.add_argument("--report-only", action="store_true", help="only rebuild table and plots")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    for spec in a.partitions or ():
        try:
            parse_partition(spec)
        except argparse.ArgumentTypeError as exc:
            ap.error(str(exc))
    q = a.quick
    sweep = Sweep(
        model=a.model or "mlp",
        rounds=a.rounds or (2 if q else 10),
        local_epochs=a.local_epochs or 1,
        train_subset=a.train_subset or (1200 if q else None),
        test_subset=a.test_subset or (500 if q else None),
        eval_every=a.eval_every or 1,
    )
    if min(sweep.rounds, sweep.local_epochs, sweep.eval_every, a.threads) < 1:
        ap.error("--rounds, --local-epochs, --eval-every and --threads must be >= 1")
    seeds = a.seeds or ([0] if q else [0, 1])
    ns = a.ns or ([4] if q else [8, 32])
    if min(ns) < 1:
        ap.error("--ns: every N must be >= 1")
    partitions = a.partitions or (["iid", "dir0.5"] if q else ["iid", "dir0.1", "dir0.5"])
    methods = a.methods or list(METHODS)
    out = a.out or (RESULTS / "quick" if q else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(a.threads)
    runs = plan(partitions, ns, seeds, methods)
    t0 = time.perf_counter()
    if not a.report_only:
        ran = sweep_runs(runs, sweep, out, progress=not a.no_progress)
        print(f"ran {ran} of {len(runs)} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    table = report(runs, sweep, out, partitions, ns)
    print(
        f"\nMNIST, {sweep.model.upper()}, {sweep.rounds} rounds x {sweep.local_epochs} local "
        f"epoch(s), seeds {seeds}; test accuracy (%), mean ± std over seeds\n"
    )
    print(table)
    print(f"\nwrote {STEM}.jsonl, {STEM}_summary.csv, {STEM}_table.md, plots to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
