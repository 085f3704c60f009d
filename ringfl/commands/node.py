"""Standing nodes: `ringfl node ...` and `ringfl task ...`.

    ringfl node serve --topology FILE --keys DIR --catalog FILE --policy FILE [--state DIR]
                      [--node NAME] [--http HOST:PORT] [--bind ADDR]
    ringfl node keys --out DIR [--topology FILE]     # Ed25519 signing keys (sign.key 0600)
    ringfl node example --out DIR                    # three local parties, ready to serve
    ringfl task submit SPEC | list | show ID | logs ID [--follow] | wait ID | result ID | cancel ID
                      [--state DIR | --url URL --token-file FILE]

Exit status: 0 fine, 1 invalid input or error, 2 usage, 3 `task wait` saw the task fail or
be cancelled, 4 `task wait` timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from ringfl.errors import ConfigError

STATE_ENV = "RINGFL_NODE_STATE"


def register(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser("node", help="a standing node: serve, keys, example")
    na = n.add_subparsers(dest="node_action", metavar="ACTION")
    na.required = True
    s = na.add_parser("serve", help="run this party's long-lived node (API + dashboard)")
    s.add_argument("--topology", required=True, metavar="FILE", help="the parties' topology")
    s.add_argument("--keys", required=True, metavar="DIR", help="this party's key directory")
    s.add_argument("--catalog", required=True, metavar="FILE", help="data catalog (TOML)")
    s.add_argument("--policy", required=True, metavar="FILE", help="policy (TOML)")
    s.add_argument("--state", metavar="DIR", help="state folder (default: .ringfl-node/<node>)")
    s.add_argument("--node", metavar="NAME", help="which node (default: from the keys)")
    s.add_argument(
        "--http", default="127.0.0.1:0", metavar="HOST:PORT", help="API address (127.0.0.1:0)"
    )
    s.add_argument("--bind", metavar="ADDR", help="bind the node link here, not the topology's")
    s.add_argument("-q", "--quiet", action="store_true", help="no log lines on stderr")
    s.set_defaults(handler=_serve)

    k = na.add_parser("keys", help="Ed25519 signing keys (one dir, or one per topology node)")
    k.add_argument("--out", required=True, metavar="DIR")
    k.add_argument("--topology", metavar="FILE", help="one key per node; sign_key into FILE")
    k.add_argument("--force", action="store_true", help="replace existing signing keys")
    k.set_defaults(handler=_keys)

    e = na.add_parser("example", help="three parties on this machine (topology, keys, data)")
    e.add_argument("--out", required=True, metavar="DIR")
    e.set_defaults(handler=_example)

    t = sub.add_parser("task", help="tasks of a standing node: submit, list, show, logs, ...")
    ta = t.add_subparsers(dest="task_action", metavar="ACTION")
    ta.required = True

    def add(name: str, help: str, task_id: bool = True) -> argparse.ArgumentParser:
        p = ta.add_parser(name, help=help)
        if task_id:
            p.add_argument("id", metavar="ID", help="task id")
        p.add_argument("--state", metavar="DIR", help=f"the node's state folder (${STATE_ENV})")
        p.add_argument("--url", metavar="URL", help="the node's API URL (with --token-file)")
        p.add_argument("--token-file", metavar="FILE", help="the node's api.token")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=_task, action=name)
        return p

    add("submit", "propose a task (spec file, TOML or JSON)", task_id=False).add_argument(
        "spec", metavar="SPEC"
    )
    add("list", "tasks of this node", task_id=False)
    add("show", "one task: status, votes, runs, result")
    lg = add("logs", "the task's log")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    w = add("wait", "wait until the task has ended")
    w.add_argument("--timeout", type=float, default=3600.0, metavar="S")
    add("result", "the task's result (model hash, accuracy)")
    c = add("cancel", "cancel the task on every participant")
    c.add_argument("--reason", default="", metavar="TEXT")


def _serve(args: argparse.Namespace) -> int:
    import signal

    from ringfl.standing.server import serve
    from ringfl.standing.service import NodeOptions

    state = args.state
    if state is None:
        state = os.path.join(".ringfl-node", args.node or os.path.basename(args.keys.rstrip("/")))
    opts = NodeOptions(
        topology=args.topology,
        keys=args.keys,
        catalog=args.catalog,
        policy=args.policy,
        state=state,
        node=args.node,
        bind=args.bind,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return serve(opts, args.http, quiet=args.quiet)


def _keys(args: argparse.Namespace) -> int:
    from ringfl.standing.signing import SigningKey

    if args.topology is None:
        k = SigningKey.generate()
        path = k.save(args.out, overwrite=args.force)
        print(f"wrote {path} (mode 0600)\n  sign_key: {k.public_text}")
        return 0
    from ringfl import topology
    from ringfl.peer.identity import node_dir_name
    from ringfl.standing.signing import SIGN_KEY

    g = topology.load(args.topology)
    for node in topology.peers(g):
        k = SigningKey.generate()
        k.save(os.path.join(args.out, node_dir_name(node)), overwrite=args.force)
        g.nodes[node][SIGN_KEY] = k.public_text
    topology.save(g, args.topology)
    print(f"wrote a signing key per node under {args.out} and sign_key into {args.topology}")
    return 0


def _example(args: argparse.Namespace) -> int:
    from ringfl.standing.example import PARTIES, make_example

    out = make_example(args.out)
    print(f"wrote three parties ({', '.join(PARTIES)}) into {out}; start each node with")
    for i, p in enumerate(PARTIES):
        print(
            f"  ringfl node serve --topology {out}/topology.json --keys {out}/keys/{p} "
            f"--catalog {out}/{p}/catalog.toml --policy {out}/{p}/policy.toml "
            f"--state {out}/{p}/state --http 127.0.0.1:{8701 + i} &"
        )
    print(f"then: ringfl task submit {out}/task.toml --state {out}/a/state")
    return 0


def _client(args: argparse.Namespace) -> Any:
    from ringfl.standing.client import Node

    if args.url:
        if not args.token_file:
            raise ConfigError("--url needs --token-file")
        return Node(args.url, token_file=args.token_file)
    state = args.state or os.environ.get(STATE_ENV)
    if not state:
        raise ConfigError(f"which node? give --state DIR (or set ${STATE_ENV}), or --url")
    return Node.local(state)


def _fmt_time(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _show(d: dict[str, Any]) -> str:
    out = [
        f"task {d['id']}  {d['name']}  ({d['kind']})",
        f"  status:       {d['status']}" + (f" - {d['reason']}" if d["reason"] else ""),
        f"  proposer:     {d['proposer']}   created {_fmt_time(d['created'])}",
        f"  participants: {', '.join(d['participants'])}",
    ]
    if d.get("schedule"):
        out.append(f"  schedule:     {d['schedule']}")
    for p in d["participants"]:
        v = d["votes"].get(p)
        state = "no answer yet" if v is None else "accepted" if v.get("accept") else "rejected"
        why = f": {v['reason']}" if v and v.get("reason") else ""
        fields = f"  {v['fields']}" if v and v.get("fields") else ""
        out.append(f"  vote {p:<8} {state}{why}{fields}")
    for r in d["runs"]:
        out.append(f"  run {r['run']}: {r['status']} {r['hash'][:16]} {r['reason']}".rstrip())
    if d.get("result"):
        r = d["result"]
        out.append(f"  result: run {r['run']}, model {r['hash'][:16]}, accuracy {r['accuracy']}")
    return "\n".join(out)


def _task(args: argparse.Namespace) -> int:
    node = _client(args)
    a = args.action
    if a == "submit":
        tid = node.create_task(args.spec)
        print(json.dumps({"id": tid}) if args.json else tid)
        return 0
    if a == "list":
        rows = node.tasks()
        if args.json:
            print(json.dumps(rows))
            return 0
        print(f"{'id':<16}  {'status':<10} {'progress':<10} {'proposer':<9} participants  name")
        for r in rows:
            pr = r["progress"]
            prog = (
                f"{pr['round']}/{pr['rounds']}" + (f" r{pr['run']}" if pr["run"] > 1 else "")
                if pr
                else "-"
            )
            print(
                f"{r['id']:<16}  {r['status']:<10} {prog:<10} {r['proposer']:<9} "
                f"{','.join(r['participants']):<13} {r['name']}"
            )
        return 0
    if a == "logs":
        for line in node.trace(args.id, follow=args.follow):
            print(line, flush=True)
        return 0
    if a == "wait":
        try:
            d = node.wait(args.id, timeout=args.timeout)
        except TimeoutError as exc:
            print(f"ringfl: {exc}", file=sys.stderr)
            return 4
        print(json.dumps(d) if args.json else _show(d))
        return 0 if d["status"] == "succeeded" else 3
    if a == "result":
        r = node.result(args.id)
        if r is None:
            raise ConfigError(f"task {args.id} has no successful run yet")
        print(json.dumps(r, indent=1))
        return 0
    d = node.cancel(args.id, args.reason) if a == "cancel" else node.task(args.id)
    print(json.dumps(d) if args.json else _show(d))
    return 0
