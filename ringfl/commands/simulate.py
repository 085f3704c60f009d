"""`ringfl simulate`: N peers in one process over the in-memory network.

    ringfl simulate --topology FILE --config FILE [--out DIR] [--no-baseline] [--threads N] [--quiet]
                    [--backend auto|inline|processes|ray] [--workers N]
                    [--ray-address ADDR] [--ray-num-cpus C] [--ray-num-gpus G]

Local training runs on a compute backend (`ringfl.compute`): `auto` (the default) uses
worker processes when more than one core is free, else this process; `ray` runs each
party's training as a Ray task on a cluster (`--ray-address`) or a local Ray instance.
The results are the same bits on every backend.

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
        default=1,
        metavar="N",
        help="torch threads of this process (default 1, as every worker uses: results are "
        "bit-identical across backends only at equal thread counts)",
    )
    from ringfl.compute import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="where local training runs (default auto: worker processes when more than "
        "one core is free, else this process)",
    )
    p.add_argument("--workers", type=int, metavar="N", help="processes backend: worker processes")
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="ray backend: the cluster to join (e.g. auto, ray://HEAD:10001; "
        "default: a new local Ray instance)",
    )
    p.add_argument(
        "--ray-num-cpus",
        type=float,
        default=1.0,
        metavar="C",
        help="ray backend: CPUs Ray reserves per party's training task (default 1)",
    )
    p.add_argument(
        "--ray-num-gpus",
        type=float,
        default=0.0,
        metavar="G",
        help="ray backend: GPUs Ray reserves per party's training task (default 0)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or partition table")
    p.add_argument(
        "--messages",
        action="store_true",
        help="run every ring sum message by message, as real peers do (default: sums that "
        "nothing can disturb are computed in bulk: the same bits, times and bytes)",
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


def backend_spec(args: argparse.Namespace):
    """The compute backend the arguments ask for (`ringfl.compute`)."""
    from ringfl.compute import Processes, Ray
    from ringfl.errors import ConfigError

    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        if args.backend not in ("processes", "auto"):
            raise ConfigError(f"--workers is for --backend processes, not {args.backend}")
        return Processes(workers=args.workers)
    ray_opts = args.ray_address is not None or args.ray_num_cpus != 1.0 or args.ray_num_gpus
    if ray_opts and args.backend != "ray":
        raise ConfigError("--ray-address/--ray-num-cpus/--ray-num-gpus need --backend ray")
    if args.backend == "ray":
        if args.ray_num_cpus < 0 or args.ray_num_gpus < 0:
            raise ConfigError("--ray-num-cpus and --ray-num-gpus must be >= 0")
        return Ray(address=args.ray_address, num_cpus=args.ray_num_cpus, num_gpus=args.ray_num_gpus)
    return args.backend


def run(args: argparse.Namespace) -> int:
    from ringfl import topology
    from ringfl.config import load_config
    from ringfl.errors import ConfigError
    from ringfl.sim import simulate

    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    import torch

    # this process's setting, at its entry point (workers set their own: one thread)
    torch.set_num_threads(args.threads)
    backend = backend_spec(args)
    config = load_config(args.config)
    graph = topology.load(args.topology)
    out = args.out or config.output
    if not args.quiet:
        print(
            f"ringfl simulate: {len(topology.peers(graph))} peers, {config.algorithm.name}, "
            f"{config.data.dataset}, {config.train.rounds} rounds -> {out} "
            f"(local training: {args.backend})",
            file=sys.stderr,
        )
    result = simulate(
        graph,
        config,
        out=out,
        baseline=not args.no_baseline,
        progress=not args.quiet,
        backend=backend,
        messages=args.messages,
    )
    if not args.quiet:
        print("partition (samples per class):")
        if result.data is not None:
            print(result.data.summary.table())
    changed = any(r["dropped"] or r["admitted"] or r["stopped"] for r in result.rounds)
    if config.faults or changed:
        print("membership per round (rounds.jsonl):")
        print(format_table(ROUND_HEADERS, membership_rows(result)))
    print(format_table(RESULT_HEADERS, results_rows(result)))
    workers = "" if result.workers == 1 else f", {result.workers} at a time"
    print(f"local training ran on the {result.backend} backend{workers}")
    print(f"wrote {', '.join(p.name for p in result.files)} to {result.out_dir}")
    return 0
