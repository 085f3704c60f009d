"""ringfl's simulator vs Flower's simulation engine, side by side on this machine.

    python experiments/bench_flower.py --cell 8-plain --flower-python PATH [--reps 1]
    python experiments/bench_flower.py --cell 100-plain --sides ringfl-processes,ringfl-inline,flower
    python experiments/bench_flower.py --table          # table + plot from results/flower.jsonl

Cells: `8-plain`, `8-secure` (8 clients, Dirichlet(0.5) split of MNIST, 20 rounds x 1
local epoch) and `100-plain`, `100-secure` (100 clients, 5 rounds x 20 local steps); MLP
784-200-200-10, batch 64, SGD lr 0.05 without momentum, seed 0, evaluation on the MNIST
test set after every round. Both sides share ringfl's data split, initial model, local
trainer and evaluation (see flower_side.py): only the framework differs.

- ringfl: `simulate` on a ring, plain or secure (masked ring all-reduce), local training on
  the `processes` backend (2 workers, one torch thread each) or `inline` (one thread).
- Flower: `flwr.simulation.run_simulation` (Ray backend, 2 CPUs, one client actor per
  CPU, one torch thread each), FedAvg, plain or under the SecAgg+ workflow.

Each run is a separate process started with `nice`; sides alternate within a repetition.
Measured from outside: wall time from start to exit (imports, data, Ray start-up
included) and peak memory, sampled every 0.25 s as the sums of PSS and of RSS over every
process of the run (its process tree and session), from /proc/PID/smaps_rollup.
Bytes per client per round: ringfl, payload bytes a peer sends (mean over peers);
Flower, the protobuf bytes a client sends (client mod), and what it receives.
Appends one JSON line per run to results/flower.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

CELLS = {
    "8-plain": dict(clients=8, rounds=20, epochs=1, steps=None, secure=False),
    "8-secure": dict(clients=8, rounds=20, epochs=1, steps=None, secure=True),
    "100-plain": dict(clients=100, rounds=5, epochs=None, steps=20, secure=False),
    "100-secure": dict(clients=100, rounds=5, epochs=None, steps=20, secure=True),
    # a quick check that both sides run (not in the table)
    "smoke": dict(clients=4, rounds=2, epochs=None, steps=5, secure=True),
}


# -- memory of a process tree ---------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(d))
    return kids


def tree(root: int) -> set[int]:
    """`root`, its descendants, and every process in its session."""
    kids = _children()
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(kids.get(p, []))
    try:
        sid = os.getsid(root)
        for ps in kids.values():
            for p in ps:
                try:
                    if os.getsid(p) == sid:
                        out.add(p)
                except OSError:
                    pass
    except OSError:
        pass
    return out


def memory(pids: set[int]) -> tuple[int, int]:
    """(PSS, RSS) summed over `pids`, in bytes."""
    pss = rss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return pss, rss


def measure(cmd: list[str], env: dict[str, str], log: Path, limit_s: float) -> dict:
    """Run `cmd` (niced, in its own session); wall time and peak PSS/RSS sums."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["nice", *cmd], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    peak = {"pss": 0, "rss": 0, "procs": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            pids = tree(proc.pid)
            pss, rss = memory(pids)
            if pss > peak["pss"]:
                peak["pss"] = pss
            peak["rss"] = max(peak["rss"], rss)
            peak["procs"] = max(peak["procs"], len(pids))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # wait4: the run's CPU time (user + system, its own and its waited-for descendants')
    deadline = t0 + limit_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, 9)
        time.sleep(0.05)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    cpu = usage.ru_utime + usage.ru_stime
    stop.set()
    sampler.join()
    # Ray leaves daemons behind when its driver is killed: end the whole session
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, 9)
    return {
        "code": code,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_pss": peak["pss"],
        "peak_rss": peak["rss"],
        "peak_procs": peak["procs"],
    }


# -- ringfl's side --------------------------------------------------------------------------


def ringfl_side(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # as the CLI does: this process's setting, at its entry point
    sys.path.insert(0, str(HERE))
    from flower_side import bench_config

    from ringfl.compute import Inline, Processes
    from ringfl.sim import simulate
    from ringfl.topology import make

    c = CELLS[args.cell]
    cfg = bench_config(c["clients"], c["rounds"], c["epochs"], c["steps"], args.seed)
    if c["secure"]:
        import dataclasses

        cfg = dataclasses.replace(cfg, algorithm=dataclasses.replace(cfg.algorithm, secure=True))
    backend = Processes(workers=2) if args.backend == "processes" else Inline()
    t0 = time.perf_counter()
    r = simulate(make("ring", c["clients"]), cfg, progress=False, baseline=False, backend=backend)
    Path(args.out).write_text(
        json.dumps(
            {
                "side": f"ringfl-{args.backend}",
                "final_accuracy": r.final_accuracy,
                "final_loss": r.final_loss,
                "history": [{"round": m["round"], "accuracy": m["accuracy"]} for m in r.metrics],
                "inner_s": time.perf_counter() - t0,
                "compute_s": r.compute_s,
                "comm_s": r.comm_s,
                "setup_s": r.setup_s,
                "sim_wall_s": r.wall_s,
                "bytes_sent_per_client_round": r.bytes_per_peer / cfg.train.rounds,
                "setup_bytes_per_client": r.setup_bytes_per_peer,
            }
        )
    )
    return 0


# -- the runs -------------------------------------------------------------------------------


def run_one(side: str, args: argparse.Namespace, rep: int) -> dict:
    c = CELLS[args.cell]
    tmp = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    out = tmp / "result.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if side.startswith("ringfl"):
        backend = side.split("-", 1)[1]
        cmd = [sys.executable, __file__, "--ringfl-side", "--cell", args.cell]
        cmd += ["--backend", backend, "--seed", str(args.seed), "--out", str(out)]
    else:
        (tmp / "bytes").mkdir()
        env["BENCH_BYTES_DIR"] = str(tmp / "bytes")
        cmd = [args.flower_python, str(HERE / "flower_side.py"), "--clients", str(c["clients"])]
        cmd += ["--rounds", str(c["rounds"]), "--seed", str(args.seed), "--out", str(out)]
        cmd += ["--epochs", str(c["epochs"])] if c["epochs"] else ["--steps", str(c["steps"])]
        cmd += ["--secure"] if c["secure"] else []
    m = measure(cmd, env, tmp / "log.txt", args.limit)
    row = {"cell": args.cell, "side": side, "rep": rep, **c, **m, "log": str(tmp / "log.txt")}
    if out.exists():
        row.update(json.loads(out.read_text()))
        row.pop("side", None)
        row["side"] = side
    if side == "flower" and (tmp / "bytes").exists():
        sent = received = 0
        for f in (tmp / "bytes").glob("*.jsonl"):
            for line in f.read_text().splitlines():
                x = json.loads(line)
                sent += x["out"]
                received += x["in"]
        row["bytes_sent_per_client_round"] = sent / (c["clients"] * c["rounds"])
        row["bytes_received_per_client_round"] = received / (c["clients"] * c["rounds"])
    return row


def table(rows: list[dict]) -> str:
    """Markdown: medians per (cell, side), ratios against Flower."""
    import statistics

    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("code") == 0:
            cells.setdefault((r["cell"], r["side"]), []).append(r)

    def med(rs, k):
        vals = [r[k] for r in rs if r.get(k) is not None]
        return statistics.median(vals) if vals else float("nan")

    lines = [
        "| cell | side | runs | wall s | CPU s | peak PSS MB | peak RSS MB | procs | accuracy % "
        "| sent per client per round | wall vs Flower | PSS vs Flower | train s | comm+mask s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in CELLS:
        fl = cells.get((cell, "flower"), [])
        for side in ("flower", "ringfl-processes", "ringfl-inline"):
            rs = cells.get((cell, side))
            if not rs:
                continue
            wall, pss = med(rs, "wall_s"), med(rs, "peak_pss")
            ratio_w = f"{wall / med(fl, 'wall_s'):.2f}x" if fl and side != "flower" else "-"
            ratio_m = f"{pss / med(fl, 'peak_pss'):.2f}x" if fl and side != "flower" else "-"
            # Flower's Ray workers are not the driver's to wait for: their CPU is not seen
            cpu = "-" if side == "flower" else f"{med(rs, 'cpu_s'):.0f}"
            train = med(rs, "compute_s") if side != "flower" else None
            comm = med(rs, "comm_s") + med(rs, "setup_s") if side != "flower" else None
            lines.append(
                f"| {cell} | {side} | {len(rs)} | {wall:.1f} | {cpu} "
                f"| {pss / 2**20:.0f} "
                f"| {med(rs, 'peak_rss') / 2**20:.0f} | {max(r['peak_procs'] for r in rs)} "
                f"| {100 * med(rs, 'final_accuracy'):.2f} "
                f"| {med(rs, 'bytes_sent_per_client_round') / 1e6:.2f} MB "
                f"| {ratio_w} | {ratio_m} "
                f"| {'-' if train is None else f'{train:.1f}'} "
                f"| {'-' if comm is None else f'{comm:.1f}'} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = ("flower", "ringfl-processes", "ringfl-inline")
    cells = [c for c in CELLS if any(r["cell"] == c and r.get("code") == 0 for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    for i, side in enumerate(sides):
        walls, mems = [], []
        for cell in cells:
            rs = [r for r in rows if r["cell"] == cell and r["side"] == side and r.get("code") == 0]
            walls.append(statistics.median([r["wall_s"] for r in rs]) if rs else 0)
            mems.append(statistics.median([r["peak_pss"] / 2**20 for r in rs]) if rs else 0)
        xs = [j + (i - 1) * width for j in range(len(cells))]
        axes[0].bar(xs, walls, width, label=side)
        axes[1].bar(xs, mems, width, label=side)
    for ax, title in zip(axes, ("wall time (s)", "peak PSS, all processes (MB)"), strict=True):
        ax.set_xticks(range(len(cells)), cells)
        ax.set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3)
    fig.suptitle("ringfl simulate vs Flower simulation (MNIST MLP), same task, this machine")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", choices=list(CELLS))
    ap.add_argument("--sides", default="ringfl-processes,flower")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flower-python", default=os.environ.get("FLOWER_PYTHON", sys.executable))
    ap.add_argument("--limit", type=float, default=900, help="seconds per run before it is killed")
    ap.add_argument("--results", default=str(RESULTS / "flower.jsonl"))
    ap.add_argument("--table", action="store_true", help="print the table, write the plot")
    ap.add_argument("--ringfl-side", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="processes", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ringfl_side:
        return ringfl_side(args)
    results = Path(args.results)
    if args.table:
        rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
        text = table(rows)
        print(text)
        plot(rows, results.with_suffix(".png"))
        print(f"wrote {results.with_suffix('.png')}")
        return 0
    if args.cell is None:
        ap.error("--cell is required (or --table)")
    sides = args.sides.split(",")
    results.parent.mkdir(parents=True, exist_ok=True)
    for rep in range(args.reps):
        order = sides if rep % 2 == 0 else list(reversed(sides))  # interleave A/B
        for side in order:
            row = run_one(side, args, rep)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{args.cell} {side} rep {rep}: code {row['code']} wall {row['wall_s']:.1f} s "
                f"PSS {row['peak_pss'] / 2**20:.0f} MB RSS {row['peak_rss'] / 2**20:.0f} MB "
                f"acc {row.get('final_accuracy')}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
