"""Tabular workloads: `ringfl analytics`, `ringfl fit`, `ringfl predict`.

    ringfl analytics --query Q.toml --simulate p0.csv p1.csv p2.csv [-o result.json]
    ringfl analytics --query Q.toml --topology T.json --node a --keys KEYS --data mine.csv [-o result.json]
    ringfl fit --task task.toml --simulate p0.csv p1.csv p2.csv -o model.json [--report r.json]
    ringfl fit --task task.toml --topology T.json --node a --keys KEYS --data mine.csv -o model.json
    ringfl predict --model model.json --data FILE.csv -o predictions.csv [--id-column id]

Both forms run the job on the round engine (`ringfl.workloads.run`). `--simulate` runs
every party in this process on the simulator (real keys, real masking, in-memory
network); the other form is one real peer (`ringfl.peer.node.PeerNode`, as `ringfl
peer`): it reads only its own file and talks to the others over ZeroMQ with CURVE (start
one per node). Both give the same sums, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError


def _party_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--simulate", nargs="+", metavar="CSV", help="simulate: one CSV file per party (3 or more)"
    )
    p.add_argument("--topology", metavar="FILE", help="real party: the topology file")
    p.add_argument("--node", metavar="NAME", help="real party: this party's node")
    p.add_argument("--keys", metavar="DIR", help="real party: key directory")
    p.add_argument("--data", metavar="CSV", help="real party: this party's own table")
    p.add_argument("--insecure", action="store_true", help="real party: links without CURVE")
    p.add_argument(
        "--seed", type=int, default=0, help="the run's seed (simulate: keys too; default 0)"
    )
    p.add_argument(
        "--deadline",
        type=float,
        default=5.0,
        metavar="S",
        help="real party: least wait for a silent peer (5 s)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="real party: wait this long for the other parties to start (60 s)",
    )
    p.add_argument(
        "--peer-dir",
        metavar="DIR",
        help="real party: the peer's folder (events.jsonl, metrics.jsonl, summary.json; "
        "default runs/jobs/NODE)",
    )
    p.add_argument(
        "--events", action="store_true", help="real party: print the peer's events to stderr"
    )


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("analytics", help="secure federated analytics over every party's table")
    a.add_argument("--query", required=True, metavar="FILE", help="query file (TOML or JSON)")
    _party_args(a)
    a.add_argument("-o", "--out", metavar="FILE", help="write the result as JSON here")
    a.set_defaults(handler=_analytics)

    f = sub.add_parser("fit", help="train a tabular model (Newton logistic regression, GBDT)")
    f.add_argument("--task", required=True, metavar="FILE", help="task file (TOML or JSON)")
    _party_args(f)
    f.add_argument("-o", "--out", required=True, metavar="FILE", help="the model (JSON)")
    f.add_argument("--report", metavar="FILE", help="a JSON report: metrics, bytes, times")
    f.add_argument("--metrics-jsonl", metavar="FILE", help="one JSON line per iteration (loss)")
    f.set_defaults(handler=_fit)

    p = sub.add_parser("predict", help="predictions of a saved model: example_id,prediction")
    p.add_argument(
        "--model",
        required=True,
        metavar="FILE",
        help="model.json (GBDT, logistic) or model.npz (neural)",
    )
    p.add_argument("--data", required=True, metavar="CSV", help="rows to predict (header row)")
    p.add_argument("-o", "--out", required=True, metavar="CSV", help="predictions file")
    p.add_argument(
        "--id-column", metavar="NAME", help="example ids from this column (default: row index)"
    )
    p.add_argument(
        "--config", metavar="FILE", help="neural models: the run's config (TOML or JSON)"
    )
    p.add_argument(
        "--num-classes", type=int, default=10, metavar="K", help="neural models: classes (10)"
    )
    p.set_defaults(handler=_predict)


# -- running parties ------------------------------------------------------------------------


class _Runner:
    """Runs one statistics job per party on the round engine: every party in this process
    on the simulator (`--simulate`), or this one party as a real peer."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ringfl.workloads.table import read_csv

        self.args = args
        if args.simulate:
            if any(getattr(args, k) for k in ("topology", "node", "data")):
                raise ConfigError("give either --simulate CSV... or --topology/--node/--data")
            if len(args.simulate) < 3:
                raise ConfigError(
                    "--simulate needs one CSV file per party, at least 3 (a secure sum "
                    "never reveals a sum of fewer than 3 parties)"
                )
            self.tables = [read_csv(f) for f in args.simulate]
        else:
            if not args.topology or not args.data:
                raise ConfigError("give --simulate CSV... or --topology FILE and --data CSV")
            self.tables = [read_csv(args.data)]

    def run(self, jobs: list[Any]) -> Any:
        """The jobs' run (`ringfl.workloads.run.JobRun`); its result is every party's."""
        from ringfl.workloads.run import run_peer, simulate_jobs

        a = self.args
        if a.simulate:
            return simulate_jobs(jobs, seed=a.seed)
        return run_peer(
            jobs[0],
            a.topology,
            node=a.node,
            keys=a.keys,
            insecure=a.insecure,
            seed=a.seed,
            deadline_s=a.deadline,
            startup_s=a.startup_timeout,
            out=a.peer_dir,
            console=sys.stderr if a.events else None,
        )


def _analytics(args: argparse.Namespace) -> int:
    from ringfl.workloads.analytics import AnalyticsWorkload, load_query
    from ringfl.workloads.tasks import write_json

    query = load_query(args.query)
    runner = _Runner(args)
    run = runner.run([AnalyticsWorkload(query, t) for t in runner.tables])
    result = run.result
    out = {**result.to_dict(), "run": run.info()}
    for r in result.refusals:
        print(f"ringfl analytics: {r}", file=sys.stderr)
    if args.out:
        write_json(args.out, out)
    print(json.dumps(out["values"], indent=1, default=str))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from ringfl.workloads.tasks import FitThenMetrics, load_task, write_json

    task = load_task(args.task)
    runner = _Runner(args)
    jobs = [FitThenMetrics(task, t) for t in runner.tables]
    run = runner.run(jobs)
    model, metrics = run.result
    model.save(args.out)
    # per iteration: the Newton objective and step, or the GBDT training loss
    history = jobs[0].history
    if args.metrics_jsonl:
        path = Path(args.metrics_jsonl)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(h) + "\n" for h in history))
    info = run.info()
    report = {
        "task": task.workload,
        "model": str(args.out),
        "fit": info,
        "train_metrics": metrics,
    }
    if args.report:
        write_json(args.report, report)
    summary = {k: metrics[k] for k in ("accuracy", "auc", "log_loss", "rmse", "r2") if k in metrics}
    print(json.dumps({"model": str(args.out), **summary, "seconds": info["seconds"]}))
    return 0


# -- predictions ------------------------------------------------------------------------------


def _predict(args: argparse.Namespace) -> int:
    from ringfl.workloads.predict import predict_file

    n = predict_file(
        args.model,
        args.data,
        args.out,
        id_column=args.id_column,
        config=args.config,
        num_classes=args.num_classes,
    )
    print(f"ringfl predict: {n} predictions written to {args.out}", file=sys.stderr)
    return 0


__all__ = ["register"]
