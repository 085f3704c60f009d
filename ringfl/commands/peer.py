"""Real peers: `ringfl peer`, `ringfl launch`, `ringfl keys`, `ringfl status`.

    ringfl keys generate --out DIR [--topology FILE [-o OUT]] [--force]
    ringfl peer --topology FILE --config FILE [--node NAME] [--data FILE [--val FILE]]
                [--keys DIR] [--out DIR] [--insecure]
    ringfl launch --topology FILE --config FILE [--keys DIR] [--out DIR] [--nodes A,B] [--insecure]
    ringfl status DIR [--json]

Exit status: 0 fine, 1 invalid input or error, 2 usage error, 3 the peer stopped (minority
partition, start-up or rejoin timeout), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ringfl.errors import ConfigError


def _add_run_args(p: argparse.ArgumentParser, *, launch: bool) -> None:
    p.add_argument("--topology", required=True, metavar="FILE", help="topology file")
    p.add_argument("--config", required=True, metavar="FILE", help="experiment config (TOML)")
    if not launch:
        p.add_argument(
            "--node",
            metavar="NAME",
            help="which node this process is (default: $RINGFL_NODE, or a peer index from "
            "$RINGFL_PEER_INDEX, $SLURM_PROCID, $OMPI_COMM_WORLD_RANK, $PMI_RANK)",
        )
        p.add_argument("--bind", metavar="ADDR", help="bind here instead of the topology's address")
        p.add_argument(
            "--data",
            metavar="FILE",
            help="this party's own training data (.csv, .npz, .npy); no other party's file "
            "is ever read (default: the node's `data` in the topology, or data.files)",
        )
        p.add_argument("--val", metavar="FILE", help="this party's own validation data")
        # ringfl.launch (Python) writes the user's model factory and data loader, pickled
        # with cloudpickle, to the stdin of the peer processes it spawns on this machine
        p.add_argument("--code-stdin", action="store_true", help=argparse.SUPPRESS)
    else:
        p.add_argument("--nodes", metavar="A,B", help="only these nodes (default: all local)")
    p.add_argument(
        "--keys",
        metavar="DIR",
        help="key directory (this node's, or one with a sub-directory per node)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output directory"
        + (" (one sub-directory per node)" if launch else "")
        + " (default: <config output>/peers/<node>)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="plain links: no CURVE encryption or authentication (loudly reported)",
    )
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--save-deltas", action="store_true", help="save each round's payload")
    p.add_argument(
        "--min-round-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="pace rounds to last at least S seconds (demos, tests)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="give up when some peer has not answered after S seconds (default 120)",
    )
    p.add_argument(
        "--join-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="a restarted peer gives up rejoining after S seconds (default 120)",
    )
    g = p.add_argument_group(
        "deadlines", "deadline = clamp(K x EWMA(longest silence per round) + MARGIN, MIN, MAX)"
    )
    g.add_argument("--deadline-min", type=float, default=1.0, metavar="S", help="(1)")
    g.add_argument("--deadline-max", type=float, default=30.0, metavar="S", help="(30)")
    g.add_argument(
        "--deadline-initial", type=float, default=5.0, metavar="S", help="before any round (5)"
    )
    g.add_argument("--deadline-k", type=float, default=3.0, metavar="K", help="(3)")
    g.add_argument("--deadline-margin", type=float, default=0.5, metavar="S", help="(0.5)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar=("NODE:" if launch else "") + "SPEC",
        help="test hook: kill@ROUND:SENDS (SIGKILL itself) or nan@ROUND (non-finite delta); "
        "a config's [[faults]] schedule does the same for every peer",
    )
    p.add_argument(
        "--hold",
        metavar="ROUND:FILE",
        help="test hook: before ROUND, keep serving the network until FILE exists",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show every event")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("peer", help="run one real peer of a topology")
    _add_run_args(p, launch=False)
    p.set_defaults(handler=_peer)

    lp = sub.add_parser("launch", help="run every peer whose address is on this machine")
    _add_run_args(lp, launch=True)
    lp.set_defaults(handler=_launch)

    k = sub.add_parser("keys", help="make peer key pairs (CURVE + masking)")
    ka = k.add_subparsers(dest="keys_action", metavar="ACTION")
    ka.required = True
    g = ka.add_parser(
        "generate",
        help="one key directory, or one per node of a topology (public keys into the file)",
    )
    g.add_argument("--out", required=True, metavar="DIR", help="key directory")
    g.add_argument("--topology", metavar="FILE", help="make keys for every node of FILE")
    g.add_argument(
        "-o", "--output", metavar="OUT", help="write the topology with keys here (default: FILE)"
    )
    g.add_argument("--force", action="store_true", help="replace existing keys")
    g.set_defaults(handler=_keys_generate)

    s = sub.add_parser("status", help="state of a peer (or of every peer) from its event log")
    s.add_argument("dir", metavar="DIR", help="a peer directory, or a directory of them")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(handler=_status)


def _options(args: argparse.Namespace):
    from ringfl.engine.failure import DeadlinePolicy
    from ringfl.peer.node import PeerOptions

    policy = DeadlinePolicy(
        k=args.deadline_k,
        margin_s=args.deadline_margin,
        min_s=args.deadline_min,
        max_s=args.deadline_max,
        initial_s=args.deadline_initial,
    )
    if args.min_round_seconds < 0:
        raise ConfigError("--min-round-seconds must be >= 0")
    hold = None
    if args.hold:
        r, sep, path = args.hold.partition(":")
        if not sep or not r.isdigit() or not path:
            raise ConfigError(f"--hold {args.hold!r}: expected ROUND:FILE")
        hold = (int(r), path)
    return PeerOptions(
        topology=args.topology,
        config=args.config,
        node=getattr(args, "node", None),
        keys=args.keys,
        out=args.out,
        insecure=args.insecure,
        bind=getattr(args, "bind", None),
        deadline=policy,
        startup_timeout_s=args.startup_timeout,
        join_timeout_s=args.join_timeout,
        save_deltas=args.save_deltas,
        min_round_s=args.min_round_seconds,
        fresh=args.fresh,
        faults=tuple(args.fault) if not hasattr(args, "nodes") else (),
        verbose=args.verbose,
        data=getattr(args, "data", None),
        val=getattr(args, "val", None),
        hold=hold,
    )


def _user_code(opts):
    """The model factory and data loader `ringfl.launch` sent on stdin (its own child)."""
    import dataclasses

    import cloudpickle

    from ringfl.config import load_config
    from ringfl.peer.spawn import party_from_loader

    # stdin of a peer that `ringfl.launch` spawned on this machine (the user's own model
    # and data factories), never the network
    code = cloudpickle.loads(sys.stdin.buffer.read())
    party = None
    if code.get("data") is not None:
        k = load_config(opts.config).data.num_classes
        party = party_from_loader(code["data"], str(opts.node), k)
    return dataclasses.replace(opts, model=code.get("model"), party=party)


def process_settings() -> None:
    """Process-wide settings of a peer process, set here at the entry point only: one torch
    thread (several peers share a machine's cores), and glibc's allocator tuned for many
    short-lived message buffers."""
    import torch

    from ringfl.transport.zmq import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()


def _peer(args: argparse.Namespace) -> int:
    from ringfl.peer.node import PeerNode, PeerStopped

    opts = _options(args)

    def stop(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    process_settings()
    if getattr(args, "code_stdin", False):
        opts = _user_code(opts)
    try:
        return PeerNode(opts).run()
    except PeerStopped as exc:
        print(f"ringfl: stopped: {exc}", file=sys.stderr)
        return 3


def _launch(args: argparse.Namespace) -> int:
    from ringfl import topology
    from ringfl.peer.launch import launch, local_nodes

    opts = _options(args)
    g = topology.load(args.topology)
    only = [x for x in args.nodes.split(",") if x] if args.nodes else None
    nodes = local_nodes(g, only)
    if not nodes:
        raise ConfigError(
            f"{args.topology}: no node has an address on this machine (use --nodes to pick)"
        )
    faults: dict[str, tuple[str, ...]] = {}
    for f in args.fault:
        node, sep, spec = f.partition(":")
        if not sep:
            raise ConfigError(f"--fault {f!r}: launch needs NODE:SPEC")
        faults[node] = (*faults.get(node, ()), spec)
    return launch(opts, nodes, faults=faults)


def _keys_generate(args: argparse.Namespace) -> int:
    from ringfl.peer.identity import Identity, generate_for_topology

    if args.topology is None:
        if args.output:
            raise ConfigError("-o/--output only goes with --topology")
        ident = Identity.generate()
        folder = ident.save(args.out, overwrite=args.force)
        print(f"wrote keys to {folder} (secret files mode 0600)")
        print(f"  public_key (CURVE): {ident.curve_public}")
        print(f"  mask_key (masking): {ident.mask_public}")
        return 0
    from ringfl import topology

    g = topology.load(args.topology)
    made = generate_for_topology(g, args.out, overwrite=args.force)
    target = args.output or args.topology
    topology.save(g, target)
    print(
        f"wrote {len(made)} key directories under {args.out} (secret files mode 0600) and "
        f"their public keys into {target}"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from ringfl.peer.status import format_status, peer_dirs, peer_status

    found = [peer_status(d) for d in peer_dirs(args.dir)]
    if args.json:
        print(json.dumps(found if len(found) > 1 else found[0], default=str))
        return 0
    print("\n".join(format_status(s) for s in found))
    return 0
