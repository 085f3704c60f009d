"""`ringfl topology`: make, check and draw topology files.

    ringfl topology make KIND -n N [--seed S] [-k K] [--p P] [--rows R] [--local-ports BASE] -o FILE
    ringfl topology check FILE [FILE ...] [--json | --table]
    ringfl topology draw FILE -o OUT.png [--layout L]
    ringfl topology keys FILE --keys-dir DIR [-o OUT]

Exit status: 0 fine, 1 invalid input (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ringfl.errors import RingflError

KINDS = ("ring", "complete", "star", "torus", "exponential", "random-regular", "small-world")
_TAKES = {"random-regular": {"k"}, "small-world": {"k", "p"}, "torus": {"rows"}}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topology", help="make, check and draw topology files")
    actions = p.add_subparsers(dest="topology_action", metavar="ACTION")
    actions.required = True

    m = actions.add_parser(
        "make",
        help="generate a topology file",
        description="Generate a connected topology; the format follows the extension of -o "
        "(.json, .graphml, .edgelist, .txt).",
    )
    m.add_argument("kind", choices=KINDS, metavar="KIND", help=", ".join(KINDS))
    m.add_argument("-n", type=_positive_int, required=True, help="number of peers")
    m.add_argument("--seed", type=int, default=0, help="seed (random kinds; default 0)")
    m.add_argument("-k", type=int, help="degree (random-regular) or neighbours (small-world)")
    m.add_argument("--p", type=float, help="small-world rewiring probability (default 0.1)")
    m.add_argument("--rows", type=int, help="torus rows (default: the most square shape)")
    m.add_argument(
        "--local-ports",
        type=int,
        metavar="BASE",
        help="give peer i the address tcp://127.0.0.1:BASE+i",
    )
    m.add_argument("-o", "--output", required=True, metavar="FILE")
    m.set_defaults(handler=_make, parser=m)

    c = actions.add_parser("check", help="validate topology files and summarize them")
    c.add_argument("files", nargs="+", metavar="FILE")
    fmt = c.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the summary as JSON")
    fmt.add_argument("--table", action="store_true", help="print one Markdown table row per file")
    c.add_argument(
        "--time-limit", type=float, default=10.0, metavar="S", help="ring search limit (s)"
    )
    c.set_defaults(handler=_check)

    d = actions.add_parser("draw", help="draw a topology (ring order highlighted)")
    d.add_argument("file", metavar="FILE")
    d.add_argument("-o", "--output", required=True, metavar="OUT.png")
    d.add_argument(
        "--layout",
        choices=("auto", "grid", "ring", "kamada-kawai", "spring", "circular"),
        default="auto",
        help="auto: grid for a torus, else the ring order on a circle, else kamada-kawai",
    )
    d.add_argument("--seed", type=int, default=0, help="layout seed (spring)")
    d.set_defaults(handler=_draw)

    k = actions.add_parser(
        "keys",
        help="write the public keys of DIR/<node>/ into a topology file",
        description="Set each node's public_key (CURVE) and mask_key (masking) from the key "
        "directories DIR/<node>/ made by `ringfl keys generate`.",
    )
    k.add_argument("file", metavar="FILE")
    k.add_argument("--keys-dir", required=True, metavar="DIR")
    k.add_argument("-o", "--output", metavar="OUT", help="write here (default: FILE)")
    k.set_defaults(handler=_keys)


def _make(args: argparse.Namespace) -> int:
    from ringfl import topology

    given = {name for name in ("k", "p", "rows") if getattr(args, name) is not None}
    extra = given - _TAKES.get(args.kind, set())
    if extra:
        flags = ", ".join("-k" if x == "k" else f"--{x}" for x in sorted(extra))
        args.parser.error(f"{args.kind} does not take {flags}")
    kw = {name: getattr(args, name) for name in given}
    g = topology.make(args.kind, args.n, seed=args.seed, **kw)
    if args.local_ports is not None:
        topology.assign_local_addresses(g, args.local_ports)
    topology.save(g, args.output)
    ring = "with ring order" if topology.RING in g.graph else "no ring order"
    print(
        f"wrote {args.output}: {args.kind}, {g.number_of_nodes()} nodes, "
        f"{g.number_of_edges()} edges, {ring}"
    )
    return 0


def _fmt_ring(info: dict) -> str:
    if info["ring"] is None:
        return "none: " + info["ring_error"].split("no ring order: ", 1)[-1]
    return " ".join(str(x) for x in info["ring"]) + f"  (from {info['ring_source']})"


def _print_text(info: dict) -> None:
    rows = [
        ("nodes", info["nodes"]),
        ("edges", info["edges"]),
        ("degree", f"{info['degree_min']}..{info['degree_max']}"),
        ("diameter", info["diameter"]),
        ("mixing", info["mixing"] + (f" ({info['mixing_note']})" if info["mixing_note"] else "")),
        ("spectral gap", f"{info['spectral_gap']:.6f}"),
        ("addresses", f"{info['addresses']} of {info['nodes']} nodes"),
        ("public keys", f"{info['public_keys']} of {info['nodes']} nodes"),
        ("ring", _fmt_ring(info)),
    ]
    print(f"{info['source']}: valid topology")
    for name, value in rows:
        print(f"  {name:<13}{value}")


TABLE_HEADER = (
    "| file | nodes | edges | degree | diameter | spectral gap | ring |\n"
    "|---|---:|---:|---|---:|---:|---|"
)


def table_row(info: dict, name: str) -> str:
    """One Markdown table row for `ringfl topology check --table`."""
    ring = "yes" if info["ring"] is not None else "no"
    return (
        f"| {name} | {info['nodes']} | {info['edges']} | {info['degree_min']}..{info['degree_max']} "
        f"| {info['diameter']} | {info['spectral_gap']:.4f} | {ring} |"
    )


def _check(args: argparse.Namespace) -> int:
    from ringfl import topology

    status = 0
    summaries = []
    if args.table:
        print(TABLE_HEADER)
    for path in args.files:
        try:
            g = topology.load(path)
            info = topology.describe(g, path, time_limit_s=args.time_limit)
        except RingflError as exc:
            print(f"ringfl: error: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            summaries.append(info)
        elif args.table:
            print(table_row(info, Path(path).name))
        else:
            _print_text(info)
    if args.json:
        print(json.dumps(summaries if len(args.files) > 1 else summaries[0] if summaries else None))
    return status


def _draw(args: argparse.Namespace) -> int:
    from ringfl import topology
    from ringfl.topology.draw import draw

    g = topology.load(args.file)
    info = draw(g, args.output, source=args.file, layout=args.layout, seed=args.seed)
    ring = "ring highlighted" if info["ring"] is not None else "no ring"
    print(f"wrote {args.output}: {info['nodes']} nodes, {info['edges']} edges, {ring}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from ringfl import topology
    from ringfl.peer.identity import keys_from_directory

    g = topology.load(args.file)
    n = keys_from_directory(g, args.keys_dir)
    target = args.output or args.file
    topology.save(g, target)
    print(f"wrote {target}: public keys of {n} nodes from {args.keys_dir}")
    return 0
