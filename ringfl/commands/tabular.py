"""Tabular workloads: `ringfl analytics`, `ringfl fit`, `ringfl predict`.

    ringfl analytics --query Q.toml --simulate p0.csv p1.csv p2.csv [-o result.json]
    ringfl analytics --query Q.toml --topology T.json --node a --keys KEYS --data mine.csv [-o result.json]
    ringfl fit --task task.toml --simulate p0.csv p1.csv p2.csv -o model.json [--report r.json]
    ringfl fit --task task.toml --topology T.json --node a --keys KEYS --data mine.csv -o model.json
    ringfl predict --model model.json --data FILE.csv -o predictions.csv [--id-column id]

`--simulate` runs every party in this process over the simulated secure ring (real keys,
real masking, in-memory network); the other form is one real party: it reads only its
own file and talks to the others over ZeroMQ with CURVE (start one per node).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError


def _party_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--simulate", nargs="+", metavar="CSV", help="simulate: one CSV file per party (2 or more)"
    )
    p.add_argument("--topology", metavar="FILE", help="real party: the topology file")
    p.add_argument("--node", metavar="NAME", help="real party: this party's node")
    p.add_argument("--keys", metavar="DIR", help="real party: key directory")
    p.add_argument("--data", metavar="CSV", help="real party: this party's own table")
    p.add_argument("--insecure", action="store_true", help="real party: links without CURVE")
    p.add_argument("--seed", type=int, default=0, help="simulate: key seed (default 0)")
    p.add_argument(
        "--deadline", type=float, default=5.0, metavar="S", help="real party: deadline (5 s)"
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="real party: wait this long for the other parties to start (60 s)",
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
    """Runs workloads for every simulated party, or for this one real party."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ringfl.workloads.table import read_csv

        self.args = args
        if args.simulate:
            if any(getattr(args, k) for k in ("topology", "node", "data")):
                raise ConfigError("give either --simulate CSV... or --topology/--node/--data")
            if len(args.simulate) < 2:
                raise ConfigError("--simulate needs one CSV file per party, at least 2")
            from ringfl.workloads.securesum import SimulatedSecureSum

            self.tables = [read_csv(f) for f in args.simulate]
            self.summer: Any = SimulatedSecureSum(len(self.tables), seed=args.seed)
            self.peer = None
        else:
            if not args.topology or not args.data:
                raise ConfigError("give --simulate CSV... or --topology FILE and --data CSV")
            from ringfl.workloads.peersum import PeerSecureSum

            self.tables = [read_csv(args.data)]
            self.summer = PeerSecureSum(
                args.topology,
                args.node,
                args.keys,
                insecure=args.insecure,
                deadline_s=args.deadline,
                startup_s=args.startup_timeout,
            )
            self.peer = self.summer
        self.started = time.perf_counter()

    def run(self, workloads: list[Any]) -> Any:
        from ringfl.workloads.base import run_parties, run_party

        if self.peer is not None:
            return run_party(workloads[0], self.summer)
        return run_parties(workloads, self.summer)[0]

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()

    def info(self) -> dict[str, Any]:
        st = self.summer.stats
        return {
            "parties": len(self.tables) if self.peer is None else self.peer.n,
            "node": None if self.peer is None else str(self.peer.node),
            "secure_sums": st.sums,
            "secure_rounds": st.rounds,
            "bytes_sent": {str(k): v for k, v in st.bytes_sent.items()},
            "seconds": round(time.perf_counter() - self.started, 6),
            "seconds_in_secure_sum": round(st.seconds, 6),
            "worst_resolution": st.worst_resolution,
        }


def _analytics(args: argparse.Namespace) -> int:
    from ringfl.workloads.analytics import AnalyticsWorkload, load_query
    from ringfl.workloads.tasks import write_json

    query = load_query(args.query)
    runner = _Runner(args)
    try:
        result = runner.run([AnalyticsWorkload(query, t) for t in runner.tables])
    finally:
        runner.close()
    out = {**result.to_dict(), "run": runner.info()}
    for r in result.refusals:
        print(f"ringfl analytics: {r}", file=sys.stderr)
    if args.out:
        write_json(args.out, out)
    print(json.dumps(out["values"], indent=1, default=str))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from ringfl.workloads.tasks import load_task, metrics_workload, write_json

    task = load_task(args.task)
    runner = _Runner(args)
    try:
        fitting = [task.workload_for(t) for t in runner.tables]
        model = runner.run(fitting)
        fit_info = runner.info()
        data = [task.data(t) for t in runner.tables]
        metrics = runner.run([metrics_workload(model, x, y) for x, y, _ in data])
    finally:
        runner.close()
    model.save(args.out)
    # per iteration: the Newton objective and step, or the GBDT training loss
    history = getattr(model, "history", None) or getattr(fitting[0], "history", [])
    if args.metrics_jsonl:
        path = Path(args.metrics_jsonl)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(h) + "\n" for h in history))
    report = {
        "task": task.workload,
        "model": str(args.out),
        "fit": fit_info,
        "train_metrics": metrics,
    }
    if args.report:
        write_json(args.report, report)
    summary = {k: metrics[k] for k in ("accuracy", "auc", "log_loss", "rmse", "r2") if k in metrics}
    print(json.dumps({"model": str(args.out), **summary, "seconds": fit_info["seconds"]}))
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
