"""`ringfl simulate`: N peers in one process over the in-memory network.

    ringfl simulate --topology FILE --config FILE [--out DIR] [--no-baseline] [--threads N] [--quiet]

Writes metrics.jsonl, metrics.csv, rounds.jsonl (who started, contributed to, was dropped
from, admitted after and stopped in each round), summary.json, config.json,
partition.csv/json and the plots accuracy_vs_round.png / accuracy_vs_bytes.png to DIR
(default: the config's `output`), and prints a results table; with a `[[faults]]`
schedule, or when membership changed, also the membership of every round.
"""

from __future__ import annotations

import argparse
import sys

from ringfl.report import format_table, human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate N peers in one process",
        description="Simulate the peers of a topology file in one process, as a config file says.",
    )
    p.add_argument("--topology", required=True, metavar="FILE", help="topology file (.json, ...)")
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="experiment config (TOML, or JSON when it ends in .json)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default: config `output`)")
    p.add_argument("--no-baseline", action="store_true", help="skip the centralized baseline")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads (default: torch's; use 1 when several runs share the cores)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or partition table")
    p.add_argument(
        "--bulk",
        action="store_true",
        help="compute fault-free ring sums in bulk (same results; for hundreds of peers or more)",
    )
    p.set_defaults(handler=run)


def results_rows(result) -> list[list[str]]:
    """Rows (method, accuracy, rounds, bytes per peer, time) for a SimResult."""
    label = result.algorithm + (" (secure)" if result.secure else "")
    rows = [
        [
            f"{label}, {result.num_peers} peers",
            f"{100 * result.final_accuracy:.2f}%",
            str(result.config.train.rounds),
            human_bytes(result.bytes_per_peer),
            f"{result.compute_s + result.comm_s:.1f} s "
            f"({result.compute_s:.1f} train + {result.comm_s:.1f} comm)",
        ]
    ]
    b = result.baseline
    if b is not None:
        rows.append(
            [
                "centralized (same samples)",
                f"{100 * b.accuracy:.2f}%",
                f"{b.detail.get('epochs', 0):.0f} epochs",
                "-",
                f"{b.seconds:.1f} s",
            ]
        )
    return rows


RESULT_HEADERS = ("method", "test accuracy", "rounds", "sent per peer", "time")
ROUND_HEADERS = ("round", "contributors", "dropped", "admitted", "stopped", "virtual time")


def membership_rows(result) -> list[list[str]]:
    """One row per round: who contributed, was dropped, admitted, stopped."""

    def names(xs: list[str]) -> str:
        return " ".join(xs) if xs else "-"

    return [
        [
            str(r["round"]),
            names(r["contributors"]),
            names(r["dropped"]),
            names(r["admitted"]),
            names(r["stopped"]),
            f"{r['virtual_s']:.3f} s",
        ]
        for r in result.rounds
    ]


def run(args: argparse.Namespace) -> int:
    from ringfl import topology
    from ringfl.config import load_config
    from ringfl.errors import ConfigError
    from ringfl.sim import simulate

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    graph = topology.load(args.topology)
    out = args.out or config.output
    if not args.quiet:
        print(
            f"ringfl simulate: {len(topology.peers(graph))} peers, {config.algorithm.name}, "
            f"{config.data.dataset}, {config.train.rounds} rounds -> {out}",
            file=sys.stderr,
        )
    result = simulate(
        graph,
        config,
        out=out,
        baseline=not args.no_baseline,
        progress=not args.quiet,
        bulk=args.bulk,
    )
    if not args.quiet:
        print("partition (samples per class):")
        print(result.data.summary.table())
    changed = any(r["dropped"] or r["admitted"] or r["stopped"] for r in result.rounds)
    if config.faults or changed:
        print("membership per round (rounds.jsonl):")
        print(format_table(ROUND_HEADERS, membership_rows(result)))
    print(format_table(RESULT_HEADERS, results_rows(result)))
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    return 0
