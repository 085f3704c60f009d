"""`PeerNode`: one real peer process — start-up, rounds, failures, rejoin, outputs.

    node = PeerNode(PeerOptions(topology="ring.json", node="a", config="run.toml",
                                keys="keys/"))
    status = node.run()          # 0: trained to the end

Life of a peer (design: docs/peers.md):

1. Start-up. Bind its own address, then send HELLO to every peer of the topology (again
   every second to those not heard) until it has heard from all of them (a bounded wait
   that reports who is missing). If everyone is starting, the run begins at round 0 (or at
   the round the peers' checkpoints agree on) with every peer as a member; the data session
   is derived from the seed and every peer's incarnation, so two runs never share one
   (secure masking keys are bound to (session, round)). If some peer is already running and
   this one is not a member, it is a restarted peer: it rejoins (5.).
2. A ring round r: snapshot the model, train locally (in a worker thread, so the peer keeps
   answering probes and requests), build the payload [w·delta, w, join flags], run the
   (secure or plain) ring all-reduce over members(r), apply start + Σw·delta/Σw — the same
   bits on every finisher — and compute members(r+1) (`ringfl.engine.membership`).
3. Failures. The driver (`PeerLink`) waits with adaptive deadlines and probes; a peer that
   stops answering is declared gone, a LOST notice goes to every peer, and every receiver
   reports the loss to its running collective, which re-forms the ring without it
   (masking recovery in secure mode). A peer that learns it was itself declared gone
   rejoins. A peer that can reach only a minority of the topology stops.
4. Checkpoint after every round (atomic, `ringfl.checkpoint`): model, next round, members.
5. Rejoin. A restarted peer (new incarnation) says HELLO; every running peer folds the
   request into its next payload's join flags, so all agree to admit it from the next
   round; the admitted peer's ring predecessor sends it a STATE (that round's start model,
   members and session), and it takes part from that round on.

Outputs in its directory: events.jsonl (every event), metrics.jsonl (one line per round),
checkpoint.npz, model.npz (final), summary.json, and with `save_deltas` one
deltas/round-NNNNN.npz per round (payload and summed result).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ringfl import checkpoint
from ringfl.algorithms.base import get_flat, set_flat
from ringfl.collective.events import Machine, Message
from ringfl.config import Config, load_config
from ringfl.errors import ConfigError, PeerTimeout, RingflError, TopologyError
from ringfl.peer import control
from ringfl.peer.control import Op, State
from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy
from ringfl.peer.eventlog import EventLog
from ringfl.peer.identity import Identity, find_identity_dir, node_dir_name, topology_keys
from ringfl.peer.link import PeerLink
from ringfl.engine.membership import (
    apply_mean,
    has_majority,
    live_weights,
    next_members,
    ring_payload,
    split_result,
)

#: Environment variables that name this process's node (first match wins): a node id,
#: then a peer index (position in the topology's node list).
NODE_ENV = "RINGFL_NODE"
INDEX_ENVS = ("RINGFL_PEER_INDEX", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


class PeerStopped(RingflError):
    """The peer stopped before the end of training (minority partition, start-up timeout)."""


class _Rejoin(Exception):
    """This peer was declared gone by the others: rejoin as a new incarnation."""


@dataclass
class PeerOptions:
    """What `ringfl peer` takes (paths as given on the command line)."""

    topology: str
    config: str
    node: str | None = None
    keys: str | None = None
    out: str | None = None
    insecure: bool = False
    bind: str | None = None
    deadline: DeadlinePolicy = field(default_factory=DeadlinePolicy)
    startup_timeout_s: float = 120.0
    join_timeout_s: float = 120.0
    save_deltas: bool = False
    min_round_s: float = 0.0
    fresh: bool = False
    faults: tuple[str, ...] = ()
    verbose: bool = False
    console: TextIO | None = sys.stderr
    data: Any = None  # a `ringfl.sim.PeerData` loaded before forking (`ringfl launch`)


def resolve_node(graph: Any, node: str | None, env: dict[str, str] | None = None) -> Hashable:
    """The topology node this process runs: `node` (matched against str(node id)), else
    $RINGFL_NODE, else a peer index from $RINGFL_PEER_INDEX, $SLURM_PROCID,
    $OMPI_COMM_WORLD_RANK or $PMI_RANK."""
    from ringfl.topology import peers

    env = os.environ if env is None else env
    nodes = peers(graph)
    by_name = {str(n): n for n in nodes}
    name = node if node is not None else env.get(NODE_ENV)
    if name is not None:
        if name not in by_name:
            shown = ", ".join(list(by_name)[:10])
            raise TopologyError(f"node {name!r} is not in the topology (nodes: {shown})")
        return by_name[name]
    for var in INDEX_ENVS:
        if var in env:
            try:
                i = int(env[var])
            except ValueError:
                raise ConfigError(f"${var} = {env[var]!r} is not a peer index") from None
            if not 0 <= i < len(nodes):
                raise ConfigError(f"${var} = {i}, but the topology has {len(nodes)} peers")
            return nodes[i]
    raise ConfigError(
        f"which node is this? give --node NAME or set ${NODE_ENV} (or a peer index in "
        f"${', $'.join(INDEX_ENVS)})"
    )


def _parse_faults(faults: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Test hooks: `kill@R:S` (SIGKILL itself when handing its S-th message of round R to
    the driver), `nan@R` (a non-finite delta in round R)."""
    out = {}
    for f in faults:
        try:
            what, at = f.split("@", 1)
            parts = [int(x) for x in at.split(":")]
        except ValueError:
            raise ConfigError(f"--fault {f!r}: expected kill@ROUND:SENDS or nan@ROUND") from None
        if what == "kill" and len(parts) == 2:
            out["kill"] = (parts[0], parts[1])
        elif what == "nan" and len(parts) == 1:
            out["nan"] = (parts[0], 0)
        else:
            raise ConfigError(f"--fault {f!r}: expected kill@ROUND:SENDS or nan@ROUND")
    return out


class _KillAfter:
    """Wraps a machine; SIGKILLs this process when it hands out its `sends`-th message."""

    def __init__(self, machine: Machine, sends: int) -> None:
        self._m = machine
        self._left = sends

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def _count(self, actions: list) -> list:
        for a in actions:
            if type(a).__name__ == "Send":
                self._left -= 1
                if self._left <= 0:
                    os.kill(os.getpid(), signal.SIGKILL)
        return actions

    def start(self) -> list:
        return self._count(self._m.start())

    def receive(self, message: Message) -> list:
        return self._count(self._m.receive(message))

    def peers_lost(self, peers: frozenset[int]) -> list:
        return self._count(self._m.peers_lost(peers))


def data_session(seed: int, incarnations: dict[int, int]) -> int:
    """The u64 session of a run: from the seed and every starting peer's incarnation."""
    text = f"ringfl-run:{seed}:" + ",".join(f"{p}={i}" for p, i in sorted(incarnations.items()))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class PeerNode:
    """One peer process (see the module docstring)."""

    def __init__(self, opts: PeerOptions) -> None:
        from ringfl import topology
        from ringfl.learner import session_id

        self.opts = opts
        self.config: Config = load_config(opts.config)
        g = topology.load(opts.topology)
        self.graph = g
        self.nodes = topology.peers(g)
        self.n = len(self.nodes)
        self.node = resolve_node(g, opts.node)
        self.peer = topology.peer_index(g)[self.node]
        src = str(opts.topology)
        missing = [repr(n) for n in self.nodes if topology.ADDRESS not in g.nodes[n]]
        if missing:
            raise TopologyError(f"{src}: no address for node(s) {', '.join(missing[:8])}")
        self.endpoints = {i: g.nodes[n][topology.ADDRESS] for i, n in enumerate(self.nodes)}
        algo = self.config.algorithm
        if algo.name not in ("ring", "gossip"):
            raise ConfigError(
                f"{opts.config}: algorithm.name = {algo.name!r}: real peers run 'ring' or "
                "'gossip' (use `ringfl sim` for the others)"
            )
        self.mode = algo.name
        self.masking = algo.secure and self.mode == "ring"
        self.keys = topology_keys(g, src)
        if not opts.insecure and self.keys.curve is None:
            raise ConfigError(
                f"{src} has no public keys, so links cannot be authenticated: make keys with "
                f"`ringfl keys generate --topology {src} --out KEYS` (then pass --keys KEYS), "
                "or pass --insecure to run unauthenticated, unencrypted links"
            )
        if self.masking and self.keys.mask is None:
            raise ConfigError(
                f"{src} has no mask_key attributes, which secure masking needs: run "
                f"`ringfl keys generate --topology {src} --out KEYS`, or set "
                "algorithm.secure = false"
            )
        self.identity: Identity | None = None
        if not opts.insecure or self.masking:
            if opts.keys is None:
                raise ConfigError("--keys DIR is needed (this peer's key directory)")
            self.identity = Identity.load(find_identity_dir(opts.keys, self.node))
            if self.masking and self.keys.mask[self.peer] != self.identity.mask.public_bytes:
                raise ConfigError(
                    f"the mask key in {opts.keys} is not the topology's mask_key of node "
                    f"{self.node!r}"
                )
        self.order = (
            [topology.peer_index(g)[x] for x in topology.ring_order(g, source=src)]
            if self.mode == "ring"
            else list(range(self.n))
        )
        self.row = topology.mixing_rows(g, src)[self.peer] if self.mode == "gossip" else {}
        out = opts.out or str(Path(self.config.output) / "peers" / node_dir_name(self.node))
        self.dir = Path(out)
        self.faults = _parse_faults(opts.faults)
        self.log = EventLog(
            self.dir, node=self.node, peer=self.peer, console=opts.console, verbose=opts.verbose
        )
        self.control_session = session_id(self.config.seed, "ringfl-control")
        self.deadline = AdaptiveDeadline(opts.deadline)
        self.incarnation = time.time_ns() // 1000
        # run state
        self.state = State.STARTING
        self.round = 0
        self.members: list[int] = []
        self.session: int | None = None
        self.heard: dict[int, control.Hello] = {}
        self.known_inc: dict[int, int] = {}
        self.gone: set[int] = set()
        self.notices: dict[int, set[int]] = {}
        self.join_requests: dict[int, int] = {}
        self.admitted_round: dict[int, int] = {}
        self.done_peers: set[int] = set()
        self._told: dict[int, int] = {}
        self._refusals: dict[str, tuple[float, int]] = {}
        self.snapshot: tuple[int, tuple[int, ...], np.ndarray] | None = None
        self.last_sum: tuple[int, control.SumResult] | None = None
        self.pending_state: control.StateTransfer | None = None
        self.metrics_path = self.dir / "metrics.jsonl"
        self.link: PeerLink | None = None
        self.security: Any = None
        self.context: Any = None
        self.bytes_control = 0
        self.started_at = time.time()

    # -- set-up -------------------------------------------------------------------------

    def _prepare(self) -> None:
        import torch

        from ringfl.learner import make_learner
        from ringfl.sim import prepare_data
        from ringfl.transport.zmq import tune_malloc

        torch.set_num_threads(1)
        tune_malloc()  # this process is one peer: let glibc reuse message buffers
        data = self.opts.data if self.opts.data is not None else prepare_data(self.config, self.n)
        self.test = data.test
        sizes = [len(p) for p in data.parts]
        self.weight = sizes[self.peer] / max(sum(sizes), 1)
        self.learner = make_learner(
            self.peer,
            self.graph,
            self.config,
            data.parts[self.peer],
            num_classes=data.num_classes,
            session=self.control_session,
            keys=self.identity.mask if self.masking and self.identity else None,
            public_keys=self.keys.mask if self.masking else None,
        )
        self.model_elements = get_flat(self.learner.model).shape[0]

    def _open_link(self) -> PeerLink:
        import zmq

        from ringfl.peer.curve import CurveSecurity

        self.context = zmq.Context()
        authenticate = None
        if not self.opts.insecure:
            assert self.identity is not None and self.keys.curve is not None
            self.security = CurveSecurity(
                self.identity,
                self.peer,
                self.keys.curve,
                self.context,
                on_refused=self._on_refused,
            )
            self.security.start()
            authenticate = self.security.authenticated_peer
        endpoints = dict(self.endpoints)
        if self.opts.bind:
            endpoints[self.peer] = self.opts.bind
        link = PeerLink(
            self.peer,
            endpoints,
            n_peers=self.n,
            deadline=self.deadline,
            authenticate=authenticate,
            context=self.context,
            security=self.security,
            max_elements=self._max_elements(),
        )
        link.set_endpoints(self.endpoints)
        link.control_session = self.control_session
        link.on_control = self._on_control
        link.on_lost = self._on_declared
        link.on_drop = self._on_drop
        link.on_stale = self._on_stale
        return link

    def _max_elements(self) -> int:
        """The largest frame a valid message of this run can have, in elements (uint8
        blobs count bytes): a model transfer, a masking share blob, or a sum segment.
        Larger frames are cut by ZeroMQ (MAXMSGSIZE) before they are even read."""
        m, n = self.model_elements, self.n
        return 4 * (m + 2 * n + 64) + 128 * n + 4096

    def _close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.security is not None:
            self.security.stop()
        if self.context is not None:
            self.context.term()
            self.context = None

    # -- helpers --------------------------------------------------------------------------

    def name(self, p: int) -> str:
        return str(self.nodes[p])

    def _send(self, to: int, msg: Message) -> None:
        assert self.link is not None
        self.link.send_control(to, msg)

    def _broadcast(self, msg: Message, skip: set[int] | frozenset[int] = frozenset()) -> None:
        for p in range(self.n):
            if p != self.peer and p not in skip:
                self._send(p, msg)

    def _hello(self, op: Op, *, member: bool = False) -> Message:
        return control.hello(
            op,
            session=self.control_session,
            sender=self.peer,
            incarnation=self.incarnation,
            state=self.state,
            round=self.round if self.state != State.JOINING else -1,
            member=member,
            data_session=self.session or 0,
        )

    def _ctl(self, op: Op, round: int, payload: np.ndarray) -> Message:
        return control.make(
            op, session=self.control_session, round=round, sender=self.peer, payload=payload
        )

    # -- control messages -----------------------------------------------------------------

    def _on_refused(self, fp: str) -> None:
        """A CURVE client with key fingerprint `fp` (not in the topology) was refused.
        Logged at most once a second per key, with the count (clients retry quickly)."""
        now = time.monotonic()
        last, count = self._refusals.get(fp, (-1e9, 0))
        if now - last >= 1.0:
            self.log("refused", key=fp, why="key not in the topology", attempts=count + 1)
            self._refusals[fp] = (now, 0)
        else:
            self._refusals[fp] = (last, count + 1)

    def _on_drop(self, reason: str, sender: int | None) -> None:
        self.log("dropped", reason=reason, sender=sender)
        # a peer we count as gone still talks to us: tell it (once a round), so it rejoins
        if (
            sender is not None
            and sender in self.gone
            and self.state == State.RUNNING
            and self.mode == "ring"
            and self._told.get(sender) != self.round
        ):
            self._told[sender] = self.round
            self._send(sender, self._ctl(Op.LOST, self.round, control.ints(sender)))

    def _on_control(self, msg: Message) -> None:
        op, value = control.decode_control(
            msg, n_peers=self.n, model_elements=getattr(self, "model_elements", None)
        )
        p = msg.header.sender
        if op in (Op.HELLO, Op.ACK):
            self._on_hello(op, p, value)
        elif op == Op.LOST:
            self._on_notice(msg.header.round, value, p)
        elif op == Op.STATE:
            self._on_state(value, p)
        elif op == Op.RESULT:
            self._on_result(msg.header.round, value, p)
        elif op == Op.DONE:
            self.done_peers.add(p)

    def _on_hello(self, op: Op, p: int, h: control.Hello) -> None:
        self.heard[p] = h
        old = self.known_inc.get(p)
        if op == Op.HELLO:
            member = self.state == State.RUNNING and p in self.members and old == h.incarnation
            if old is None and self.state == State.RUNNING and p in self.members:
                member = True  # first word from a peer that started with us
            self._send(p, self._hello(Op.ACK, member=member))
        if old is not None and h.incarnation < old:
            return  # an old incarnation's message, delivered late
        self.known_inc[p] = h.incarnation
        if old is None or old == h.incarnation:
            joining = h.state == State.JOINING and op == Op.HELLO and self.mode == "ring"
            if joining and self.state in (State.RUNNING, State.FINISHED):
                self._serve_state(p, retry=True)
            return
        if self.state not in (State.RUNNING, State.FINISHED):
            return
        # a new incarnation of p while we run: p restarted
        self.log("hello", peer_name=self.name(p), incarnation=h.incarnation, state=h.state.name)
        if self.mode == "gossip":
            self.gone.discard(p)
            self._send_gossip_state(p)
            return
        if self.state == State.FINISHED:
            self._serve_state(p, retry=True)
            return
        if p in self.members and p not in self.gone:
            self._lost({p}, self.round, why="restarted")
        self.join_requests[p] = h.incarnation

    def _on_notice(self, rnd: int, lost: frozenset[int], sender: int) -> None:
        if self.mode == "gossip" or self.state != State.RUNNING:
            return
        if self.peer in lost:
            if rnd >= self.round - 1:
                self.log("declared_lost", round=rnd, by=self.name(sender))
                raise _Rejoin()
            return
        fresh = {p for p in lost if self.admitted_round.get(p, -1) <= rnd}
        if fresh:
            self._lost(fresh, max(rnd, self.round), why=f"notice from {self.name(sender)}")

    def _on_declared(self, lost: frozenset[int], rnd: int) -> None:
        """The driver declared `lost` gone in round `rnd` (they missed the deadline)."""
        names = [self.name(p) for p in sorted(lost)]
        self.log("lost", round=rnd, peers=names, deadline_s=round(self.deadline.seconds(), 3))
        if self.mode == "gossip":
            self.gone |= lost
            if not set(self.row) - {self.peer} - self.gone:
                raise PeerStopped(f"node {self.node!r}: every neighbour is gone; stopping")
            return
        # to everyone, the lost peers too: one that is alive after all learns it must rejoin
        self._broadcast(self._ctl(Op.LOST, rnd, control.ints(*sorted(lost))))
        self._lost(set(lost), rnd, why="deadline", already_in_run=True)

    def _lost(self, peers: set[int], rnd: int, *, why: str, already_in_run: bool = False) -> None:
        """Record that `peers` are gone as of round `rnd`; tell the running collective
        (after the majority check, so a minority stops before it tries to recover)."""
        new = set(peers) - self.gone
        self.notices.setdefault(rnd, set()).update(peers)
        self.gone |= set(peers)
        if new and not already_in_run:
            self.log("peer_gone", round=rnd, peers=[self.name(p) for p in sorted(new)], why=why)
        if rnd == self.round:
            self._check_majority()
        link = self.link
        run = link.current if link is not None else None
        if run is not None and run.round == rnd and not already_in_run:
            run.lose(peers)

    def _check_majority(self) -> None:
        if self.state != State.RUNNING or self.mode != "ring":
            return
        live = [p for p in self.members if p not in self.gone]
        if not has_majority(len(live), self.n):
            names = ", ".join(self.name(p) for p in live)
            raise PeerStopped(
                f"node {self.node!r}: only {len(live)} of {self.n} peers reachable in round "
                f"{self.round} ({names}); a peer keeps training only while it reaches a "
                f"strict majority (> {self.n // 2}), so this minority stops"
            )

    def _serve_state(self, p: int, *, retry: bool) -> None:
        """Send `p` the start state of the current round if it is a member (or the final
        model when training is over)."""
        snap = self.snapshot
        if snap is None:
            return
        rnd, members, model = snap
        if self.state == State.FINISHED and p not in members:
            members = (*members, p)
        elif p in self.gone:
            # p started this round as a member but has since been lost (a restart found
            # while the round still runs): its start state would make p "rejoin" a round
            # whose sum goes on without it. It gets the state of the round it is admitted to.
            return
        if p in members:
            t = control.StateTransfer(self.session or 0, rnd, members, model)
            self._send(p, self._ctl(Op.STATE, rnd, control.encode_state(t)))
            self.log("state_sent", to=self.name(p), round=rnd, retry=retry)

    def _send_gossip_state(self, p: int) -> None:
        snap = self.snapshot
        if snap is None:
            return
        rnd, _, model = snap
        t = control.StateTransfer(self.session or 0, rnd + 1, (self.peer, p), model)
        self._send(p, self._ctl(Op.STATE, rnd + 1, control.encode_state(t)))
        self.log("state_sent", to=self.name(p), round=rnd + 1, retry=False)

    def _on_state(self, t: control.StateTransfer, sender: int) -> None:
        if self.state != State.JOINING:
            return
        if self.mode == "ring" and self.peer not in t.members:
            return
        self.pending_state = t
        self.log("state_received", round=t.round, by=self.name(sender), members=len(t.members))

    def _on_result(self, rnd: int, res: control.SumResult, sender: int) -> None:
        link = self.link
        run = link.current if link is not None else None
        if run is None or run.round != rnd or not hasattr(run.machine, "adopt"):
            return
        if run.machine.done:
            return
        run.act(run.machine.adopt(res.total, res.members))
        self.log("result_adopted", round=rnd, by=self.name(sender))
        msg = self._ctl(Op.RESULT, rnd, control.encode_result(res))
        for q in res.members:
            if q not in (self.peer, sender) and q not in self.gone and q not in run.lost:
                self._send(q, msg)

    def _on_stale(self, msg: Message) -> None:
        """A peer still runs a round this peer finished: hand it the sum (plain ring)."""
        last = self.last_sum
        if last is None or msg.header.round != last[0] or msg.header.sender not in last[1].members:
            return
        self._send(msg.header.sender, self._ctl(Op.RESULT, last[0], control.encode_result(last[1])))

    # -- start-up -------------------------------------------------------------------------

    def _startup(self, ckpt_round: int) -> None:
        link = self.link
        assert link is not None
        self.round = ckpt_round
        hello = self._hello(Op.HELLO)
        self._broadcast(hello)
        t0 = time.monotonic()
        next_hello, next_report = t0 + 1.0, t0 + 3.0
        while True:
            running = [p for p, h in self.heard.items() if h.state in (State.RUNNING,)]
            finished = [p for p, h in self.heard.items() if h.state == State.FINISHED]
            member_of = [p for p in running if self.heard[p].member]
            if member_of:
                h = self.heard[member_of[0]]
                self._begin(h.round, list(self.order), h.session, fresh=True)
                return
            if running or finished:
                self.log("joining", running=[self.name(p) for p in running + finished])
                self.state = State.JOINING
                return
            missing = [p for p in range(self.n) if p != self.peer and p not in self.heard]
            if not missing:
                rounds = {p: h.round for p, h in self.heard.items()} | {self.peer: ckpt_round}
                if len(set(rounds.values())) != 1:
                    shown = ", ".join(f"{self.name(p)}: {r}" for p, r in sorted(rounds.items()))
                    raise PeerStopped(
                        f"peers' checkpoints are at different rounds ({shown}); start them "
                        "all with --fresh to train from round 0"
                    )
                incs = {p: h.incarnation for p, h in self.heard.items()}
                incs[self.peer] = self.incarnation
                self._begin(ckpt_round, list(self.order), data_session(self.config.seed, incs))
                return
            now = time.monotonic()
            if now - t0 > self.opts.startup_timeout_s:
                names = ", ".join(self.name(p) for p in missing)
                raise PeerStopped(
                    f"start-up: no answer within {self.opts.startup_timeout_s:g} s from "
                    f"{len(missing)} peer(s): {names}"
                )
            if now >= next_report:
                self.log("waiting", missing=[self.name(p) for p in missing])
                next_report = now + 5.0
            if now >= next_hello:
                hello = self._hello(Op.HELLO)
                for p in missing:
                    self._send(p, hello)
                next_hello = now + 1.0
            link.service(0.1)

    def _begin(self, rnd: int, members: list[int], session: int, fresh: bool = False) -> None:
        assert self.link is not None
        self.round = rnd
        self.members = members
        self.session = session
        self.link.data_session = session
        self.link.purge_held(rnd)
        self.state = State.RUNNING
        for p, h in self.heard.items():
            self.known_inc.setdefault(p, h.incarnation)
        self.log(
            "ready",
            round=rnd,
            members=[self.name(p) for p in members],
            session=f"{session:016x}",
            startup_s=round(time.time() - self.started_at, 3),
        )

    def _join(self) -> None:
        """Wait for a STATE (sending HELLO again now and then); bounded."""
        link = self.link
        assert link is not None
        self.state = State.JOINING
        self.pending_state = None
        link.data_session = None
        link.round_window = (0, 1 << 32)
        t0 = time.monotonic()
        attempt = 0
        while self.pending_state is None:
            if time.monotonic() - t0 > self.opts.join_timeout_s:
                raise PeerStopped(
                    f"rejoin: no peer sent the current model within {self.opts.join_timeout_s:g} s"
                )
            attempt += 1
            self._broadcast(self._hello(Op.HELLO))
            if attempt > 1:
                self.log("join_retry", attempt=attempt)
            link.service(
                max(self.deadline.seconds(), 1.0), until=lambda: self.pending_state is not None
            )
        t = self.pending_state
        set_flat(self.learner.model, t.model)
        self.session = t.session
        link.data_session = t.session
        self.round = t.round
        self.members = list(t.members) if self.mode == "ring" else []
        self.state = State.RUNNING
        self.gone.clear()
        self.notices.clear()
        link.purge_held(t.round)
        self.log("rejoined", round=t.round, members=[self.name(p) for p in self.members])

    # -- rounds ---------------------------------------------------------------------------

    def _train(self, rnd: int) -> Any:
        link = self.link
        assert link is not None
        box: dict[str, Any] = {}
        t = self.config.train

        def work() -> None:
            try:
                box["stats"] = self.learner.trainer.train(rnd, epochs=t.epochs, steps=t.local_steps)
            except BaseException as exc:  # re-raised in the main thread
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"train-{rnd}", daemon=True)
        thread.start()
        try:
            link.service(1e9, until=lambda: not thread.is_alive())
        finally:
            thread.join()
        if "error" in box:
            raise box["error"]
        return box["stats"]

    def _machine(self, rnd: int, payload: np.ndarray) -> Machine:
        assert self.session is not None
        if self.masking:
            from ringfl.secure.aggregate import SecureRingAllReduce

            assert self.identity is not None and self.keys.mask is not None
            return SecureRingAllReduce(
                self.peer,
                self.members,
                payload,
                self.identity.mask,
                {p: self.keys.mask[p] for p in self.members},
                session=self.session,
                round=rnd,
            )
        from ringfl.collective.resilient import RetryingRingSum

        return RetryingRingSum(self.peer, self.members, payload, session=self.session, round=rnd)

    def _ring_round(self, rnd: int) -> dict[str, Any]:
        link = self.link
        assert link is not None
        model = self.learner.model
        start = get_flat(model)
        self.snapshot = (rnd, tuple(self.members), start)
        for p in self.members:  # members admitted in the last round get their state
            if self.admitted_round.get(p) == rnd and self._predecessor(p) == self.peer:
                self._serve_state(p, retry=False)
        self._check_majority()
        t0 = time.perf_counter()
        stats = self._train(rnd)
        t1 = time.perf_counter()
        delta = get_flat(model) - start
        if self.faults.get("nan", (-1,))[0] == rnd:
            delta[::7] = np.nan
        flags = sorted(j for j in self.join_requests if j not in self.members)
        payload, finite = ring_payload(delta, self.weight, flags, self.n)
        if not finite:
            bad = int(np.size(delta) - np.count_nonzero(np.isfinite(delta)))
            self.log("nonfinite_delta", round=rnd, values=bad, action="weight 0 this round")
        deltas = self.dir / "deltas" / f"round-{rnd:05d}.npz"
        if self.opts.save_deltas:  # before the collective: a peer killed in it leaves it too
            meta = {"round": rnd, "ring": list(self.members)}
            checkpoint.save(deltas, {"payload": payload, "start": start}, meta)
        machine = self._machine(rnd, payload)
        if "kill" in self.faults and self.faults["kill"][0] == rnd:
            machine = _KillAfter(machine, self.faults["kill"][1])  # type: ignore[assignment]
        lost = (self.gone | self.notices.get(rnd, set())) & set(self.members)
        result = link.run_machine(machine, round=rnd, lost=lost)
        t2 = time.perf_counter()
        contributors = tuple(int(p) for p in machine.members)  # type: ignore[attr-defined]
        wsum, total_w, admitted = split_result(np.asarray(result), self.model_elements, self.n)
        new = apply_mean(start, wsum, total_w)
        set_flat(model, new)
        if not self.masking:
            self.last_sum = (rnd, control.SumResult(contributors, np.array(result)))
        if self.opts.save_deltas:
            checkpoint.save(
                deltas,
                {"payload": payload, "result": np.asarray(result), "start": start},
                {"round": rnd, "members": list(contributors), "ring": list(self.members)},
            )
        dropped = [p for p in self.members if p not in contributors]
        self.gone |= set(dropped)
        for j in admitted:
            self.gone.discard(j)
            self.join_requests.pop(j, None)
            self.admitted_round[j] = rnd + 1
        nxt = next_members(self.order, contributors, admitted)
        info = {
            "members": [self.name(p) for p in contributors],
            "dropped": [self.name(p) for p in dropped],
            "admitted": [self.name(p) for p in sorted(admitted)],
            "train_loss": stats.loss,
            "compute_s": t1 - t0,
            "comm_s": t2 - t1,
            "weight": total_w,
            "attempts": getattr(machine, "attempts", None),
            "clipped": getattr(machine, "clipped", None),
        }
        self.members = nxt
        return info

    def _predecessor(self, p: int) -> int:
        ring = self.members
        return ring[(ring.index(p) - 1) % len(ring)]

    def _gossip_round(self, rnd: int) -> dict[str, Any]:
        from ringfl.collective.resilient import ResilientNeighbourAverage

        link = self.link
        assert link is not None and self.session is not None
        model = self.learner.model
        self.snapshot = (rnd, (), get_flat(model))
        t0 = time.perf_counter()
        stats = self._train(rnd)
        t1 = time.perf_counter()
        x = get_flat(model)
        if self.faults.get("nan", (-1,))[0] == rnd:
            x[::7] = np.nan
        if not np.all(np.isfinite(x)):
            self.log("nonfinite_model", round=rnd, action="sending the round's start model")
            x = self.snapshot[2].copy()
        row = live_weights(self.row, self.peer, self.gone)
        machine: Machine = ResilientNeighbourAverage(
            self.peer, row, x, session=self.session, round=rnd
        )
        if "kill" in self.faults and self.faults["kill"][0] == rnd:
            machine = _KillAfter(machine, self.faults["kill"][1])  # type: ignore[assignment]
        result = link.run_machine(machine, round=rnd)
        t2 = time.perf_counter()
        set_flat(model, np.asarray(result))
        dropped = sorted(getattr(machine, "dropped", set()))
        self.gone |= set(dropped)
        return {
            "members": [self.name(p) for p in sorted(row) if p != self.peer],
            "dropped": [self.name(p) for p in dropped],
            "train_loss": stats.loss,
            "compute_s": t1 - t0,
            "comm_s": t2 - t1,
        }

    def _round(self, rnd: int) -> None:
        t0 = time.perf_counter()
        assert self.link is not None
        self.link.round_window = (max(rnd - 1, 0), rnd + 2)
        self.log("round_start", round=rnd, members=len(self.members) or None)
        info = self._ring_round(rnd) if self.mode == "ring" else self._gossip_round(rnd)
        flat = get_flat(self.learner.model)
        digest = checkpoint.digest(flat)
        cfg = self.config
        row: dict[str, Any] = {"round": rnd, **info}
        last = rnd + 1 == cfg.train.rounds
        if (rnd + 1) % cfg.eval_every == 0 or last:
            ev = self.learner.evaluate(self.test)
            row.update(accuracy=ev.accuracy, loss=ev.loss)
        assert self.link is not None
        row.update(
            hash=digest[:16],
            bytes_sent=self.link.bytes_sent,
            control_bytes=self.link.control_bytes,
            deadline_s=self.deadline.seconds(),
        )
        self.round = rnd + 1
        self._checkpoint(flat, digest)
        elapsed = time.perf_counter() - t0
        if self.opts.min_round_s > elapsed and not last:
            self.link.service(self.opts.min_round_s - elapsed)
        row["round_s"] = time.perf_counter() - t0
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        self.log("round", **row)

    def _checkpoint(self, flat: np.ndarray, digest: str) -> None:
        checkpoint.save(
            self.dir / "checkpoint.npz",
            {"model": flat, "members": np.array(self.members, dtype=np.int64)},
            {
                "round": self.round,
                "node": str(self.node),
                "incarnation": self.incarnation,
                "hash": digest,
                "session": f"{self.session or 0:016x}",
            },
        )

    def _load_checkpoint(self) -> int:
        """The round to resume at from checkpoint.npz (0 when there is none or --fresh)."""
        path = self.dir / "checkpoint.npz"
        if self.opts.fresh or not path.exists():
            return 0
        ck = checkpoint.load(path)
        model = ck.arrays.get("model")
        if model is None or model.shape != (self.model_elements,):
            raise checkpoint.CheckpointError(f"{path}: model does not fit the configured model")
        set_flat(self.learner.model, model)
        rnd = int(ck.meta.get("round", 0))
        self.log("checkpoint_loaded", round=rnd, hash=str(ck.meta.get("hash", ""))[:16])
        return rnd

    # -- the whole life ---------------------------------------------------------------------

    def run(self) -> int:
        """Run to the end of training; returns 0, or raises a `RingflError`."""
        self.log(
            "start",
            peers=self.n,
            mode=self.mode,
            masking=self.masking,
            links="insecure (no CURVE)" if self.opts.insecure else "CURVE",
            address=self.endpoints[self.peer],
            pid=os.getpid(),
            incarnation=self.incarnation,
        )
        if self.opts.insecure:
            self.log(
                "warning",
                message="INSECURE: links are neither encrypted nor authenticated "
                "(--insecure); anyone who can reach this address can talk to this peer",
            )
        try:
            self._prepare()
            ckpt_round = self._load_checkpoint()
            self.link = self._open_link()
            self.log("listening", address=self.link.address)
            self._startup(ckpt_round)
            rounds = self.config.train.rounds
            while True:
                try:
                    if self.state == State.JOINING:
                        self._join()
                    while self.round < rounds:
                        self._round(self.round)
                    break
                except _Rejoin:
                    self.incarnation = time.time_ns() // 1000
                    self.state = State.JOINING
                except PeerTimeout as exc:
                    if self.mode == "ring":
                        raise
                    self.log("round_failed", round=self.round, error=str(exc))
                    self.round += 1
            self._finish()
            return 0
        except RingflError as exc:
            self.log("stopped", reason=str(exc), round=self.round)
            self._write_summary(status="stopped", reason=str(exc))
            raise
        finally:
            self._close()
            self.log.close()

    def _finish(self) -> None:
        self.state = State.FINISHED
        flat = get_flat(self.learner.model)
        digest = checkpoint.digest(flat)
        self.snapshot = (self.round, tuple(self.members), flat)
        checkpoint.save(
            self.dir / "model.npz",
            {"model": flat},
            {"round": self.round, "node": str(self.node), "hash": digest},
        )
        ev = self.learner.evaluate(self.test)
        self._write_summary(status="finished", hash=digest, accuracy=ev.accuracy, loss=ev.loss)
        self.log("finished", round=self.round, hash=digest[:16], accuracy=ev.accuracy)
        assert self.link is not None
        self._broadcast(self._ctl(Op.DONE, self.round, control.ints(self.incarnation)))
        others = set(self.members) - {self.peer} - self.gone
        self.link.service(
            max(self.deadline.seconds(), 1.0), until=lambda: others <= self.done_peers
        )

    def _write_summary(self, **fields: Any) -> None:
        link = self.link
        summary = {
            "node": str(self.node),
            "peer": self.peer,
            "round": self.round,
            "rounds": self.config.train.rounds,
            "members": [self.name(p) for p in self.members],
            "bytes_sent": link.bytes_sent if link else None,
            "control_bytes": link.control_bytes if link else None,
            "dropped_messages": link.dropped if link else None,
            "incarnation": self.incarnation,
            **fields,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        os.replace(tmp, self.dir / "summary.json")


__all__ = ["PeerNode", "PeerOptions", "PeerStopped", "data_session", "resolve_node"]
