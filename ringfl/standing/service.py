"""The standing node: one per party, long-lived, no coordinator.

Ties the parts together under one lock: the SQLite store, the CURVE ZeroMQ links to the
other nodes, the party's catalog and policy, and the peer processes of running tasks.

Delivery. Each event a node originates for a task goes to every other participant
through a per-pair channel: the sender numbers its events for each receiver (`outbox`),
the receiver applies them in order and remembers the last one applied (`inbox`), and the
heartbeat every `HEARTBEAT_S` carries that number back as an acknowledgement; anything
not acknowledged is sent again (every `RESEND_S`). Both sides live in SQLite, so a node
killed and restarted neither loses nor repeats an event.

Checks on every received event: the sender (authenticated by CURVE) is its origin;
the Ed25519 signature verifies under the origin's `sign_key`; proposals carry an unseen
nonce and have not expired; the origin takes part in the task. Anything else is refused
with a logged reason (and the sender is told); nothing from the network stops the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfl import topology
from ringfl.errors import ConfigError, TopologyError
from ringfl.peer.identity import Identity, find_identity_dir, topology_keys
from ringfl.standing import runner
from ringfl.standing.catalog import Catalog
from ringfl.standing.lifecycle import TERMINAL, TaskView, derive
from ringfl.standing.messages import MessageError, decode, encode
from ringfl.standing.policy import Policy
from ringfl.standing.signing import SIGN_KEY, SigningKey, digest, public_key, verify
from ringfl.standing.spec import SpecError, parse_spec
from ringfl.standing.store import MAX_PENDING, Store

HEARTBEAT_S = 0.5
RESEND_S = 1.0
LIVE_S = 3.0
#: A proposal may be valid for at most this long (bounds the stored nonces' lifetime).
MAX_VALIDITY_S = 7 * 86400.0
RESEND_BATCH = 64


def task_id(proposer: str, nonce: str) -> str:
    """A task's id: from its proposer and the proposal's nonce (16 hex digits)."""
    return digest({"proposer": proposer, "nonce": nonce}, 16)


@dataclass
class NodeOptions:
    topology: str
    keys: str
    catalog: str
    policy: str
    state: str
    node: str | None = None
    bind: str | None = None


class Refused(Exception):
    """An event is refused; the text is the reason."""


class NodeService:
    """One party's node (see the module docstring)."""

    def __init__(self, opts: NodeOptions, *, log: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        g = topology.load(opts.topology)
        src = str(opts.topology)
        self.graph = g
        self.names = [str(n) for n in topology.peers(g)]
        self.index = {n: i for i, n in enumerate(self.names)}
        keys = topology_keys(g, src)
        if keys.curve is None:
            raise TopologyError(f"{src}: nodes need public_key (CURVE) attributes")
        self.curve_keys = keys.curve
        self.sign_keys = {}
        for n in self.names:
            if SIGN_KEY not in g.nodes[n]:
                raise TopologyError(
                    f"{src}: node {n!r} has no {SIGN_KEY} (run `ringfl node keys --topology`)"
                )
            self.sign_keys[n] = public_key(g.nodes[n][SIGN_KEY], f"{src}: {SIGN_KEY} of {n!r}")
        self.me = self._resolve_me(opts, g)
        key_dir = find_identity_dir(opts.keys, self.me)
        self.key_dir = key_dir.resolve()
        self.identity = Identity.load(key_dir)
        self.signer = SigningKey.load(key_dir)
        if self.signer.public_text != g.nodes[self.me][SIGN_KEY]:
            raise ConfigError(f"{key_dir}: sign.key is not node {self.me!r}'s sign_key")
        self.catalog = Catalog.load(opts.catalog)
        self.policy = Policy.load(opts.policy)
        self.state = Path(opts.state).resolve()
        self.state.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state / "node.db")
        self._log_file = open(self.state / "node.log", "a", buffering=1)  # noqa: SIM115 (open for the node's life)
        self._echo = log
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.version = 0
        self.incarnation = time.time_ns() // 1000
        self.heard: dict[str, float] = {}
        self.peer_inc: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.last_sent: dict[tuple[str, int], float] = {}
        self.partner_catalogs: dict[str, dict[str, Any]] = {}
        self.public_catalog = self.catalog.public()
        self.catalog_hash = digest(self.public_catalog, 16)
        self.procs: dict[tuple[str, int], runner.PeerProcess] = {}
        self.transport: Any = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="node-tick", daemon=True)

    @staticmethod
    def _resolve_me(opts: NodeOptions, g: Any) -> str:
        names = [str(n) for n in topology.peers(g)]
        if opts.node is not None:
            if opts.node not in names:
                raise TopologyError(f"node {opts.node!r} is not in {opts.topology}")
            return opts.node
        mine = (
            Identity.load(find_identity_dir(opts.keys, "-")).curve_public
            if (Path(opts.keys) / "curve.key").exists()
            else None
        )
        for n in names:
            if mine is not None and g.nodes[n].get(topology.PUBLIC_KEY) == mine:
                return n
        raise ConfigError(
            f"{opts.keys}: its public_key is not in {opts.topology}; give --node NAME"
        )

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        from ringfl.standing.transport import Transport

        endpoints = {
            i: str(self.graph.nodes[n][topology.ADDRESS]) for i, n in enumerate(self.names)
        }
        self.transport = Transport(
            self.index[self.me],
            endpoints,
            self.identity,
            self.curve_keys,
            self._on_frame,
            on_refused=lambda fp: self.log(
                f"refused a link: CURVE key {fp} is not in the topology"
            ),
            bind=self.opts.bind,
        )
        self.transport.start()
        self.log(
            f"node {self.me} listening on {self.transport.address} (incarnation {self.incarnation})"
        )
        with self.lock:
            self._resume_runs()
        self._ticker.start()

    def stop(self, *, stop_peers: bool = True) -> None:
        """Stop ticking and talking; SIGTERM this node's peers unless `stop_peers` is False
        (a restarted node starts them again and they rejoin from their checkpoints)."""
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join(5)
        if self.transport is not None:
            self.transport.stop()
        if stop_peers:
            with self.lock:
                procs = list(self.procs.values())
            for p in procs:
                p.stopped.clear()  # not a cancellation: the run resumes on restart
                if p.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p.pid, 15)
        self._log_file.close()

    def log(self, line: str) -> None:
        text = f"{time.strftime('%H:%M:%S')} {line}"
        with contextlib.suppress(ValueError):
            self._log_file.write(text + "\n")
        if self._echo is not None:
            self._echo(text)

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    def now(self) -> float:
        return time.time()

    # -- sending ------------------------------------------------------------------------

    def _send(self, peer: str, msg: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.send(self.index[peer], encode(msg))

    def _queue(self, peer: str, ev: dict[str, Any], eid: str) -> None:
        row = self.store.one("SELECT MAX(seq) AS s FROM outbox WHERE peer = ?", peer)
        seq = int(row["s"] or 0) + 1 if row is not None else 1
        self.store.x("INSERT INTO outbox VALUES (?, ?, ?)", peer, seq, eid)
        self.last_sent[(peer, seq)] = time.monotonic()
        self._send(peer, {"t": "ev", "seq": seq, "ev": ev})

    def _emit(self, task: str, kind: str, data: dict[str, Any], to: list[str]) -> dict[str, Any]:
        """Originate, sign, store and send an event of `task` to `to` (minus this node)."""
        body = {
            "v": 1,
            "task": task,
            "origin": self.me,
            "kind": kind,
            "time": self.now(),
            "data": data,
        }
        ev = {**body, "sig": self.signer.sign(body)}
        eid = digest(body)
        with self.store.tx():
            self._store_event(ev, eid)
            for p in to:
                if p != self.me:
                    self._queue(p, ev, eid)
        return ev

    def _store_event(self, ev: dict[str, Any], eid: str) -> None:
        self.store.x(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            eid, ev["task"], ev["origin"], ev["kind"], ev["time"], json.dumps(ev), self.now(),
        )  # fmt: skip
        d = ev["data"]
        if ev["kind"] == "vote":
            self.store.x(
                "INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?, ?, ?)",
                ev["task"], ev["origin"], int(bool(d.get("accept"))), str(d.get("reason", "")),
                json.dumps(d.get("fields", {})), ev["time"],
            )  # fmt: skip
        elif ev["kind"] == "finished":

            def num(v: Any) -> float | None:
                return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

            self.store.x(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ev["task"], int(d["run"]), ev["origin"], str(d.get("status", "")),
                str(d.get("hash", "")), num(d.get("accuracy")), num(d.get("loss")),
                d.get("rounds") if isinstance(d.get("rounds"), int) else None,
                str(d.get("reason", ""))[:1000], ev["time"],
            )  # fmt: skip
        self._bump()

    # -- receiving ----------------------------------------------------------------------

    def _on_frame(self, idx: int, raw: bytes) -> None:
        sender = self.names[idx]
        with self.lock:
            self.heard[sender] = time.monotonic()
            try:
                msg = decode(raw)
            except MessageError as exc:
                self._refuse(sender, "", f"malformed message: {exc}")
                return
            t = msg["t"]
            if t == "hb":
                self._on_heartbeat(sender, msg)
            elif t == "cat":
                self.partner_catalogs[sender] = _catalog_view(msg["datasets"])
                self._bump()
            elif t == "refused":
                self.store.refuse(
                    self.now(), sender, msg.get("task", ""), f"refused by {sender}: {msg['reason']}"
                )
                self.log(f"{sender} refused our event of task {msg.get('task')}: {msg['reason']}")
                self._bump()
            elif t == "ev":
                self._on_event_msg(sender, msg)

    def _on_heartbeat(self, sender: str, msg: dict[str, Any]) -> None:
        if self.peer_inc.get(sender) != msg["inc"]:
            # a (re)started node: resend everything it has not acknowledged, now
            self.peer_inc[sender] = msg["inc"]
            for key in [k for k in self.last_sent if k[0] == sender]:
                del self.last_sent[key]
        self.acked[sender] = msg["ack"]
        if msg.get("cat") != self.catalog_hash:
            self._send(sender, {"t": "cat", "datasets": self.public_catalog})
        self._resend(sender)

    def _resend(self, peer: str) -> None:
        if peer not in self.acked:
            return
        now = time.monotonic()
        rows = self.store.q(
            "SELECT o.seq, e.body FROM outbox o JOIN events e ON e.id = o.event "
            "WHERE o.peer = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
            peer, self.acked[peer], RESEND_BATCH,
        )  # fmt: skip
        for r in rows:
            key = (peer, int(r["seq"]))
            if now - self.last_sent.get(key, -1e9) >= RESEND_S:
                self.last_sent[key] = now
                self._send(peer, {"t": "ev", "seq": key[1], "ev": json.loads(r["body"])})

    def _on_event_msg(self, sender: str, msg: dict[str, Any]) -> None:
        row = self.store.one("SELECT seq FROM inbox WHERE peer = ?", sender)
        cursor = int(row["seq"]) if row else 0
        seq = msg["seq"]
        if seq != cursor + 1:
            return  # a duplicate, or a gap the sender fills by resending in order
        refusal = None
        with self.store.tx():
            self.store.x("INSERT OR REPLACE INTO inbox VALUES (?, ?)", sender, seq)
            try:
                self._receive(sender, msg["ev"])
            except Refused as exc:
                refusal = str(exc)
        if refusal is not None:
            self._refuse(sender, str(msg["ev"].get("task", "")), refusal)

    def _refuse(self, sender: str, task: str, reason: str) -> None:
        self.store.refuse(self.now(), sender, task, reason)
        self.log(
            f"refused an event from {sender}" + (f" (task {task})" if task else "") + f": {reason}"
        )
        self._send(sender, {"t": "refused", "task": task[:64], "reason": reason[:1000]})
        self._bump()

    def _verified(self, sender: str, ev: dict[str, Any]) -> str:
        """Check origin and signature; returns the event id."""
        if ev["origin"] != sender:
            raise Refused(
                f"event claims origin {ev['origin']!r} but was sent by {sender!r} (events are not relayed)"
            )
        if "sig" not in ev:
            raise Refused(f"unsigned {ev['kind']} event")
        body = {k: v for k, v in ev.items() if k != "sig"}
        if not verify(self.sign_keys[sender], body, ev["sig"]):
            raise Refused(
                f"bad signature on a {ev['kind']} event: not made with {sender}'s sign_key (forged?)"
            )
        return digest(body)

    def _receive(self, sender: str, ev: dict[str, Any]) -> None:
        eid = self._verified(sender, ev)
        if self.store.one("SELECT 1 FROM events WHERE id = ?", eid):
            if ev["kind"] == "proposed":
                raise Refused(f"replayed proposal of task {ev['task']} (already received)")
            return
        if ev["kind"] == "proposed":
            self._on_proposal(ev, eid)
            return
        task = self.store.one("SELECT participants FROM tasks WHERE id = ?", ev["task"])
        if task is None:
            row = self.store.one("SELECT COUNT(*) AS n FROM pending")
            n = row["n"] if row is not None else 0
            if n >= MAX_PENDING:
                raise Refused("too many events for unknown tasks")
            self.store.x(
                "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
                eid, ev["task"], sender, json.dumps(ev), self.now(),
            )  # fmt: skip
            return
        if sender not in json.loads(task["participants"]):
            raise Refused(f"{sender} is not a participant of task {ev['task']}")
        self._store_event(ev, eid)
        self.log(f"task {ev['task']}: {ev['kind']} from {sender} {self._brief(ev)}")
        self._advance(ev["task"])

    @staticmethod
    def _brief(ev: dict[str, Any]) -> str:
        d = ev["data"]
        if ev["kind"] == "vote":
            return "accept" if d.get("accept") else f"reject: {d.get('reason', '')}"
        if ev["kind"] == "finished":
            return f"run {d.get('run')} {d.get('status')} {str(d.get('hash', ''))[:12]} {d.get('reason', '')}"
        if "run" in d:
            return f"run {d['run']}"
        return ""

    def _on_proposal(self, ev: dict[str, Any], eid: str) -> None:
        d, origin = ev["data"], ev["origin"]
        nonce, expires = d.get("nonce"), d.get("expires")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            raise Refused("proposal without a nonce (16 to 64 characters)")
        if self.store.one("SELECT 1 FROM nonces WHERE nonce = ?", nonce):
            raise Refused(f"replayed proposal: nonce {nonce[:12]}... was seen before")
        if not isinstance(expires, (int, float)) or isinstance(expires, bool):
            raise Refused("proposal without an expiry time")
        now = self.now()
        if now > expires:
            raise Refused(f"expired proposal (expired {now - expires:.0f} s ago)")
        if expires - ev["time"] > MAX_VALIDITY_S:
            raise Refused(f"proposal valid for more than {MAX_VALIDITY_S:g} s")
        if ev["task"] != task_id(origin, nonce):
            raise Refused("task id does not match the proposal's proposer and nonce")
        try:
            spec = parse_spec(d.get("spec"))
        except SpecError as exc:
            raise Refused(f"invalid task spec: {exc}") from None
        if spec != d.get("spec"):
            raise Refused("task spec is not in normal form")
        if origin not in spec["participants"]:
            raise Refused(f"the proposer {origin} is not a participant of its task")
        if self.me not in spec["participants"]:
            raise Refused(f"{self.me} is not a participant of this task (non-participant)")
        self._accept_proposal(ev, eid, spec)

    def _accept_proposal(self, ev: dict[str, Any], eid: str, spec: dict[str, Any]) -> None:
        d = ev["data"]
        self.store.x("INSERT INTO nonces VALUES (?, ?, ?)", d["nonce"], ev["origin"], d["expires"])
        self.store.x(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'created', '', ?)",
            ev["task"], spec["name"], spec["kind"], ev["origin"], json.dumps(spec["participants"]),
            json.dumps(spec), ev["time"], d["expires"], self.now(),
        )  # fmt: skip
        self._store_event(ev, eid)
        self.log(
            f"task {ev['task']}: proposed by {ev['origin']} ({spec['kind']}, {', '.join(spec['participants'])})"
        )
        why = [
            f"participants: {p!r} is not a node of the topology"
            for p in spec["participants"]
            if p not in self.index
        ]
        if spec["kind"] not in runner.SUPPORTED_KINDS:
            why.append(f"kind: this node's engine does not run {spec['kind']!r} tasks yet")
        why += self.policy.check(spec, me=self.me, proposer=ev["origin"], catalog=self.catalog)
        parts = [p for p in spec["participants"] if p in self.index]
        if why:
            self._emit(ev["task"], "vote", {"accept": False, "reason": "; ".join(why)}, parts)
            self.log(f"task {ev['task']}: rejected: {'; '.join(why)}")
        else:
            _, readable = self.policy.local_values(spec, self.me)
            self._emit(
                ev["task"], "vote", {"accept": True, "reason": "", "fields": readable}, parts
            )
            self.log(f"task {ev['task']}: accepted")
        for r in self.store.q("SELECT id, sender, body FROM pending WHERE task = ?", ev["task"]):
            self.store.x("DELETE FROM pending WHERE id = ?", r["id"])
            pev = json.loads(r["body"])
            if r["sender"] in parts and not self.store.one(
                "SELECT 1 FROM events WHERE id = ?", r["id"]
            ):
                self._store_event(pev, r["id"])
        self._advance(ev["task"])

    # -- local requests -----------------------------------------------------------------

    def submit(self, raw_spec: Any) -> str:
        """Propose a task from this node; returns its id. SpecError names a bad field."""
        spec = parse_spec(raw_spec)
        for p in spec["participants"]:
            if p not in self.index:
                raise SpecError("participants", f"{p!r} is not a node of the topology")
        if self.me not in spec["participants"]:
            raise SpecError("participants", f"this node ({self.me}) must be a participant")
        nonce = secrets.token_hex(16)
        tid = task_id(self.me, nonce)
        with self.lock:
            body = {
                "v": 1, "task": tid, "origin": self.me, "kind": "proposed", "time": self.now(),
                "data": {"spec": spec, "nonce": nonce, "expires": self.now() + spec["approval_timeout"]},
            }  # fmt: skip
            ev = {**body, "sig": self.signer.sign(body)}
            eid = digest(body)
            with self.store.tx():
                for p in spec["participants"]:
                    if p != self.me:
                        self._queue(p, ev, eid)
                self._accept_proposal(ev, eid, spec)
        return tid

    def cancel(self, task: str, reason: str = "") -> dict[str, Any]:
        with self.lock:
            view = self.view(task)
            if view is None:
                raise KeyError(task)
            if view.status not in TERMINAL:
                self._emit(task, "cancel", {"reason": reason[:500]}, view.participants)
                self._advance(task)
            return self.detail(task)

    # -- the task's progress --------------------------------------------------------------

    def view(self, task: str) -> TaskView | None:
        return derive(self.store.events(task), self.now())

    def _advance(self, task: str) -> None:
        """Take this node's next steps in `task` (idempotent; called on every event and tick)."""
        view = self.view(task)
        if view is None:
            return
        row = self.store.one("SELECT status, reason FROM tasks WHERE id = ?", task)
        if row is not None and (row["status"], row["reason"]) != (view.status, view.reason):
            self.store.x(
                "UPDATE tasks SET status = ?, reason = ?, updated = ? WHERE id = ?",
                view.status, view.reason, self.now(), task,
            )  # fmt: skip
            self.log(f"task {task}: {view.status}" + (f" ({view.reason})" if view.reason else ""))
            self._bump()
        if view.status in ("failed", "cancelled"):
            for (t, _k), proc in list(self.procs.items()):
                if t == task:
                    proc.stop()
            if view.reason.startswith("no answer") and not any(
                e["kind"] == "timeout" for e in self.store.events(task)
            ):
                missing = sorted(set(view.participants) - set(view.votes))
                self._emit(task, "timeout", {"missing": missing}, view.participants)
            return
        if view.status != "running" or view.next_run is None:
            return
        k = view.next_run
        rv = view.run_view(k)
        if (rv is None or self.me not in rv.ready) and self.now() >= (view.next_due or 0):
            self._emit(task, "ready", {"run": k, "endpoint": self._endpoint()}, view.participants)
            view = self.view(task)
            assert view is not None
            rv = view.run_view(k)
        if rv is None or not set(rv.ready) >= set(view.participants):
            return
        if (task, k) in self.procs or self.store.one(
            "SELECT 1 FROM runs WHERE task = ? AND run = ?", task, k
        ):
            return
        self._start_run(view, k, rv.ready)

    def _endpoint(self) -> str:
        """tcp://HOST:PORT for this node's peer in a new run: the host of the node's own
        address and a free port below the kernel's ephemeral range."""
        addr = str(self.graph.nodes[self.me][topology.ADDRESS])
        host = addr.split("://", 1)[-1].rsplit(":", 1)[0]
        taken = {r["endpoint"] for r in self.store.q("SELECT endpoint FROM runs")}
        rng = random.Random()
        for _ in range(100):
            port = rng.randrange(20000, 32000)
            ep = f"tcp://{host}:{port}"
            if ep in taken:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host if host != "*" else "", port))
                except OSError:
                    continue
            return ep
        raise ConfigError(f"no free port on {host} for a task peer")

    def _run_config(self, spec: dict[str, Any]) -> dict[str, Any]:
        cfg = json.loads(json.dumps(spec["config"]))
        if spec["kind"] != "train":
            return cfg  # a statistics job's query or task: no per-party training fields
        values, _ = self.policy.local_values(spec, self.me)
        for f, v in values.items():
            section, key = f.split(".", 1)
            cfg.setdefault(section, {})[key] = v
        if "train" in cfg and "local_epochs" in cfg["train"] and "local_steps" in cfg["train"]:
            cfg["train"].pop("local_epochs")  # a party's steps override a shared epochs
        return cfg

    def _start_run(self, view: TaskView, k: int, endpoints: dict[str, str]) -> None:
        spec, task = view.spec, view.id
        folder = self.state / "tasks" / task / f"run-{k}"
        try:
            cfg = self._run_config(spec)
            ds, cols = spec["datasets"][self.me], spec.get("columns")
            test: Path | None = None
            classes = 0
            if spec["kind"] == "train":
                train, test, classes = self.catalog.write_view(ds, cols, folder / "data")
            else:  # a statistics job reads one table: the task's columns and the label
                train = self.catalog.write_table(ds, cols, folder / "data")
            warm = self.state / "tasks" / task / f"run-{k - 1}" / "peer" / "model.npz"
            req = runner.RunRequest(
                task=task, run=k, node=self.me, participants=view.participants,
                endpoints=endpoints, node_graph=self.graph, keys=self.key_dir, folder=folder,
                config=cfg, train=train, test=test, kind=spec["kind"],
                warm_start=warm if k > 1 and warm.exists() and spec["kind"] == "train" else None,
                pace_s=spec.get("pace", 0.0),
            )  # fmt: skip
            cmd = runner.prepare(req)
            (folder / "cmd.json").write_text(json.dumps({"cmd": cmd, "classes": classes}))
            proc = runner.PeerProcess(folder, cmd)
            pid = proc.start()
        except Exception as exc:  # bad local data or config: this party's run fails
            self.log(f"task {task}: run {k} could not start: {exc}")
            self._emit(
                task,
                "finished",
                runner.RunOutcome("failed", reason=f"could not start: {exc}").as_event(k),
                view.participants,
            )
            self.store.x(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, NULL, ?, ?, ?, 'failed')",
                task,
                k,
                endpoints[self.me],
                str(folder),
                self.now(),
                self.now(),
            )
            self._advance(task)
            return
        self.store.x(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL, 'running')",
            task, k, endpoints[self.me], pid, str(folder), self.now(),
        )  # fmt: skip
        self.procs[(task, k)] = proc
        self._emit(task, "started", {"run": k}, view.participants)
        self.log(f"task {task}: run {k} started (peer pid {pid})")
        self._watch(task, k, proc, classes, cfg)

    def _watch(
        self, task: str, k: int, proc: runner.PeerProcess, classes: int, cfg: dict[str, Any]
    ) -> None:
        def wait() -> None:
            outcome = proc.wait()
            with self.lock:
                if self._stop.is_set() and outcome.status != "succeeded":
                    return  # this node is shutting down: the run resumes on restart
                self.procs.pop((task, k), None)
                self.store.x(
                    "UPDATE runs SET finished = ?, status = ? WHERE task = ? AND run = ?",
                    self.now(), outcome.status, task, k,
                )  # fmt: skip
                view = self.view(task)
                parts = view.participants if view else [self.me]
                self._emit(task, "finished", outcome.as_event(k), parts)
                self.log(
                    f"task {task}: run {k} {outcome.status} here {outcome.hash[:12]} {outcome.reason}"
                )
                self._advance(task)
            if outcome.status == "succeeded":  # after telling the others: it imports torch
                try:
                    runner.write_predictions(
                        proc.folder, cfg, proc.folder / "data" / "test.npz", classes
                    )
                except Exception as exc:  # predictions are a convenience; the run stands
                    self.log(f"task {task}: run {k}: no predictions: {exc}")
                with self.lock:
                    self._bump()

        threading.Thread(target=wait, name=f"run-{task}-{k}", daemon=True).start()

    def _resume_runs(self) -> None:
        """After a restart: follow this node's peers that still run, restart the others
        (they rejoin the run from their checkpoints)."""
        for r in self.store.q("SELECT task, run, pid, dir FROM runs WHERE status = 'running'"):
            folder = Path(r["dir"])
            try:
                saved = json.loads((folder / "cmd.json").read_text())
            except (OSError, ValueError):
                continue
            proc = runner.PeerProcess(folder, saved["cmd"])
            if r["pid"] is not None and proc.adopt(int(r["pid"])):
                self.log(f"task {r['task']}: run {r['run']}: following peer pid {r['pid']}")
            elif (folder / "peer" / "summary.json").exists():
                proc.cmd = None  # it ended while this node was down: read how
                self.log(
                    f"task {r['task']}: run {r['run']}: the peer ended while the node was down"
                )
            else:
                pid = proc.start()
                self.store.x(
                    "UPDATE runs SET pid = ? WHERE task = ? AND run = ?", pid, r["task"], r["run"]
                )
                self.log(f"task {r['task']}: run {r['run']}: peer restarted (pid {pid}), rejoining")
            self.procs[(r["task"], int(r["run"]))] = proc
            view = self.view(r["task"])
            spec = view.spec if view else {"config": {}}
            self._watch(
                r["task"],
                int(r["run"]),
                proc,
                int(saved.get("classes", 10)),
                self._run_config(spec) if view else {},
            )

    # -- timers ---------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        next_hb = 0.0
        while not self._stop.wait(0.1):
            try:
                with self.lock:
                    now = time.monotonic()
                    if now >= next_hb:
                        next_hb = now + HEARTBEAT_S
                        for p in self.names:
                            if p != self.me:
                                self._heartbeat(p)
                    for r in self.store.q(
                        "SELECT id FROM tasks WHERE status NOT IN ('succeeded', 'failed', 'cancelled')"
                    ):
                        self._advance(r["id"])
            except Exception as exc:  # never let one bad tick stop the node
                self.log(f"tick failed: {exc!r}")

    def _heartbeat(self, p: str) -> None:
        row = self.store.one("SELECT seq FROM inbox WHERE peer = ?", p)
        cat = self.partner_catalogs.get(p)
        self._send(p, {
            "t": "hb", "ack": int(row["seq"]) if row else 0, "inc": self.incarnation,
            "cat": digest(cat, 16) if cat is not None else "",
        })  # fmt: skip
        self._resend(p)

    # -- reading ---------------------------------------------------------------------------

    def tasks(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.store.q("SELECT * FROM tasks ORDER BY created DESC")
            return [self._summary(r) for r in rows]

    def _summary(self, r: Any) -> dict[str, Any]:
        spec = json.loads(r["spec"])
        runs = self.store.q(
            "SELECT run, dir, status FROM runs WHERE task = ? ORDER BY run", r["id"]
        )
        progress = None
        if runs:
            done = len(runner.metrics(Path(runs[-1]["dir"])))
            total = int(spec["config"].get("train", {}).get("rounds", 10))
            progress = {"run": int(runs[-1]["run"]), "round": done, "rounds": total}
        return {
            "id": r["id"], "name": r["name"], "kind": r["kind"], "proposer": r["proposer"],
            "participants": json.loads(r["participants"]), "status": r["status"],
            "reason": r["reason"], "created": r["created"], "updated": r["updated"],
            "schedule": spec.get("schedule"), "progress": progress,
        }  # fmt: skip

    def detail(self, task: str) -> dict[str, Any]:
        with self.lock:
            r = self.store.one("SELECT * FROM tasks WHERE id = ?", task)
            if r is None:
                raise KeyError(task)
            view = self.view(task)
            assert view is not None
            out = self._summary(r)
            out["spec"] = view.spec
            out["votes"] = view.votes
            out["runs"] = [rv.as_dict() for rv in view.runs]
            out["history"] = [
                {"id": digest({k: v for k, v in e.items() if k != "sig"}), "origin": e["origin"],
                 "kind": e["kind"], "time": e["time"], "data": e["data"] if e["kind"] != "proposed" else {"expires": e["data"]["expires"]}}
                for e in self.store.events(task)
            ]  # fmt: skip
            local = {}
            for x in self.store.q("SELECT * FROM runs WHERE task = ? ORDER BY run", task):
                folder = Path(x["dir"])
                local[int(x["run"])] = {
                    "status": x["status"], "endpoint": x["endpoint"], "pid": x["pid"],
                    "metrics": runner.metrics(folder),
                    "model": self._model_file(folder, r["kind"]).exists(),
                    "predictions": (folder / "predictions.csv").exists(),
                }  # fmt: skip
            out["local"] = local
            out["result"] = self._result(view)
            return out

    def _result(self, view: TaskView) -> dict[str, Any] | None:
        done = [rv for rv in view.runs if rv.status == "succeeded"]
        if not done:
            return None
        rv = done[-1]
        mine = rv.finished.get(self.me, {})
        return {
            "run": rv.run, "hash": rv.hash, "accuracy": mine.get("accuracy"),
            "loss": mine.get("loss"), "rounds": mine.get("rounds"),
            "parties": {p: {"accuracy": f.get("accuracy"), "hash": f.get("hash")} for p, f in rv.finished.items()},
        }  # fmt: skip

    def run_file(self, task: str, run: int, what: str) -> Path | None:
        r = self.store.one("SELECT dir FROM runs WHERE task = ? AND run = ?", task, run)
        if r is None:
            return None
        folder = Path(r["dir"])
        t = self.store.one("SELECT kind FROM tasks WHERE id = ?", task)
        path = {
            "model": self._model_file(folder, t["kind"] if t is not None else "train"),
            "metrics": folder / "peer" / "metrics.jsonl",
            "predictions": folder / "predictions.csv",
            "log": folder / "peer.log",
        }.get(what)
        return path if path is not None and path.is_file() else None

    @staticmethod
    def _model_file(folder: Path, kind: str) -> Path:
        """A run's result to download: the neural model, or a statistics job's result
        (`model.json` of newton/gbdt, `result.json` of analytics)."""
        if kind == "train":
            return folder / "peer" / "model.npz"
        return folder / runner.RESULT_FILES[kind]

    def log_lines(self, task: str) -> tuple[list[str], list[str]]:
        """The task's log as two append-only streams of text lines: its events in the
        order this node received them, and this node's peer output of each run."""
        events = []
        for r in self.store.q("SELECT body FROM events WHERE task = ? ORDER BY rowid", task):
            e = json.loads(r["body"])
            t = time.strftime("%H:%M:%S", time.localtime(e["time"]))
            events.append(f"{t} [{e['origin']}] {e['kind']} {self._brief(e)}".rstrip())
        out = []
        for r in self.store.q("SELECT run, dir FROM runs WHERE task = ? ORDER BY run", task):
            try:
                text = (Path(r["dir"]) / "peer.log").read_text(errors="replace")
            except OSError:
                continue
            # a line still being written is left for the next call
            done = text[: text.rfind("\n") + 1]
            out += [f"[run {r['run']}] {x}" for x in done.splitlines()]
        return events, out

    def wait_change(self, seen: int, timeout: float) -> int:
        """Block until the state changes after version `seen`, at most `timeout` s."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen, timeout=max(0.0, timeout))
            return self.version

    def parties(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self.lock:
            out = []
            for n in self.names:
                heard = self.heard.get(n)
                out.append({
                    "name": n, "me": n == self.me,
                    "address": str(self.graph.nodes[n][topology.ADDRESS]),
                    "live": True if n == self.me else heard is not None and now - heard < LIVE_S,
                    "last_heard_s": None if heard is None else round(now - heard, 2),
                })  # fmt: skip
            return out

    def datasets(self) -> dict[str, Any]:
        with self.lock:
            return {self.me: self.public_catalog, **dict(self.partner_catalogs)}

    def refusals(self) -> list[dict[str, Any]]:
        rows = self.store.q("SELECT * FROM refusals ORDER BY id DESC LIMIT 200")
        return [dict(r) for r in rows]


def _catalog_view(datasets: dict[str, Any]) -> dict[str, Any]:
    """A partner's catalog as announced, keeping only well-formed entries (names,
    descriptions, schemas of plain values): it is shown to this party as is."""
    out = {}
    for name, e in datasets.items():
        schema = e.get("schema") if isinstance(e, dict) else None
        if not isinstance(schema, dict):
            continue
        cols = schema.get("columns")
        shape = schema.get("shape")
        if not (isinstance(cols, list) and all(isinstance(c, str) for c in cols)):
            continue
        if not (isinstance(shape, list) and all(isinstance(x, int) for x in shape)):
            continue
        out[str(name)[:128]] = {
            "description": str(e.get("description", ""))[:500],
            "schema": {
                "columns": cols, "shape": shape, "label": str(schema.get("label", ""))[:128],
                "classes": schema.get("classes") if isinstance(schema.get("classes"), int) else None,
                "format": str(schema.get("format", ""))[:16],
            },
        }  # fmt: skip
    return out


def new_token(path: Path) -> str:
    """The API token: read from `path`, or made there (mode 0600) when missing."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path}: token file readable by others (chmod 600 {path})")
        return path.read_text().strip()
    tok = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok + "\n")
    return tok


def echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["NodeOptions", "NodeService", "Refused", "new_token", "task_id"]
