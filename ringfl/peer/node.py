"""`PeerNode`: one real peer process — the ZeroMQ driver of a `RoundEngine`: start-up
handshake, control messages, waiting, checkpoints and outputs. Every learning, weighting,
membership and recovery decision is the engine's (`ringfl.engine`), the same code the
simulator drives.

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
   rejoins. A peer that can reach only a minority of the topology stops (the engine queues
   the decision; the driver raises it in its own loop).
4. Checkpoint after every round (atomic, `ringfl.checkpoint`): model, next round, members.
5. Rejoin. A restarted peer (new incarnation) says HELLO; every running peer folds the
   request into its next payload's join flags, so all agree to admit it from the next
   round; the admitted peer's ring predecessor sends it a STATE (that round's start model,
   members and session), and it takes part from that round on.

Data: only this party's own — `--data`/`--val` (or the node's `data`/`val` attributes in
the topology, relative to the topology file), else its entry of the config's
`data.files`, else its part of a built-in dataset.

Outputs in its directory: events.jsonl (every event), metrics.jsonl (one line per round),
checkpoint.npz, model.npz (final), summary.json, and with `save_deltas` one
deltas/round-NNNNN.npz per round (payload and summed result).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ringfl import checkpoint
from ringfl.collective.events import Machine, Message
from ringfl.config import Config, load_config
from ringfl.data.parties import PartyData
from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy
from ringfl.engine.round import Handover, RoundEngine
from ringfl.errors import ConfigError, PeerTimeout, RingflError, TopologyError
from ringfl.peer import control
from ringfl.peer.control import Op, State
from ringfl.peer.eventlog import EventLog
from ringfl.peer.identity import Identity, find_identity_dir, node_dir_name, topology_keys
from ringfl.peer.link import PeerLink
from ringfl.testing.faults import parse_fault_hooks

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
    data: str | None = None  # this party's own training file (`--data`)
    val: str | None = None  # its own validation file (`--val`)
    party: PartyData | None = None  # this party's data, loaded already (launch, Python API)
    model: Any = None  # a model factory or layer list (Python API), else the config's
    hold: tuple[int, str] | None = None  # test hook: before round R, wait until FILE exists


def resolve_node(graph: Any, node: str | None, env: Mapping[str, str] | None = None) -> Hashable:
    """The topology node this process runs: `node` (matched against str(node id)), else
    $RINGFL_NODE, else a peer index from $RINGFL_PEER_INDEX, $SLURM_PROCID,
    $OMPI_COMM_WORLD_RANK or $PMI_RANK."""
    from ringfl.topology import peers

    env = dict(os.environ) if env is None else env
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


def data_session(seed: int, incarnations: dict[int, int]) -> int:
    """The u64 session of a run: from the seed and every starting peer's incarnation."""
    text = f"ringfl-run:{seed}:" + ",".join(f"{p}={i}" for p, i in sorted(incarnations.items()))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class PeerNode:
    """One peer process (see the module docstring)."""

    def __init__(self, opts: PeerOptions) -> None:
        from ringfl import topology
        from ringfl.algorithms import REGISTRY, masks
        from ringfl.engine.build import session_id
        from ringfl.engine.faults import resolve

        self.opts = opts
        self.config: Config = load_config(opts.config)
        g = topology.load(opts.topology)
        self.graph = g
        self.nodes = topology.peers(g)
        self.n = len(self.nodes)
        self.node = resolve_node(g, opts.node)
        self.peer = topology.peer_index(g)[self.node]
        src = str(opts.topology)
        self.topology_dir = Path(src).resolve().parent
        missing = [repr(n) for n in self.nodes if topology.ADDRESS not in g.nodes[n]]
        if missing:
            raise TopologyError(f"{src}: no address for node(s) {', '.join(missing[:8])}")
        self.endpoints = {i: g.nodes[n][topology.ADDRESS] for i, n in enumerate(self.nodes)}
        algo = self.config.algorithm
        entry = REGISTRY[algo.name]
        if not entry.real_peers:
            raise ConfigError(
                f"{opts.config}: algorithm.name = {algo.name!r} runs in the simulator only "
                f"({entry.summary}); real peers run "
                + ", ".join(repr(k) for k, e in REGISTRY.items() if e.real_peers)
            )
        self.collective = entry.build(algo).collective
        self.mode = "gossip" if self.collective == "neighbours" else "ring"
        self.masking = masks(algo)
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
            if (
                self.masking
                and self.keys.mask is not None
                and self.keys.mask[self.peer] != self.identity.mask.public_bytes
            ):
                raise ConfigError(
                    f"the mask key in {opts.keys} is not the topology's mask_key of node "
                    f"{self.node!r}"
                )
        self.order = (
            [topology.peer_index(g)[x] for x in topology.ring_order(g, source=src)]
            if self.mode == "ring"
            else list(range(self.n))
        )
        self.row = topology.mixing_rows(g, src)[self.peer] if self.mode == "gossip" else None
        self.plan = resolve(self.config.faults, [str(v) for v in self.nodes], source=opts.config)
        out = opts.out or str(Path(self.config.output) / "peers" / node_dir_name(self.node))
        self.dir = Path(out)
        self.faults = parse_fault_hooks(opts.faults)
        crash = self.plan.crashes.get(self.peer)
        if crash is not None and "kill" not in self.faults:
            self.faults["kill"] = crash
        self.log = EventLog(
            self.dir, node=self.node, peer=self.peer, console=opts.console, verbose=opts.verbose
        )
        self.control_session = session_id(self.config.seed, "ringfl-control")
        self.deadline = AdaptiveDeadline(opts.deadline)
        self.incarnation = time.time_ns() // 1000
        # run state (the transport's; decisions live in the engine)
        self.state = State.STARTING
        self.round = 0
        self.session: int | None = None
        self.heard: dict[int, control.Hello] = {}
        self.known_inc: dict[int, int] = {}
        self.done_peers: set[int] = set()
        self._told: dict[int, int] = {}
        self._refusals: dict[str, tuple[float, int]] = {}
        self.last_sum: tuple[int, control.SumResult] | None = None
        self.pending_state: control.StateTransfer | None = None
        self.metrics_path = self.dir / "metrics.jsonl"
        self.link: PeerLink | None = None
        self.security: Any = None
        self.context: Any = None
        self.started_at = time.time()
        self.engine: RoundEngine | None = None
        self.public_test: Any = None
        self.model_elements = 0

    # -- set-up -------------------------------------------------------------------------

    def _party(self) -> PartyData:
        """This party's own data (see the module docstring); nobody else's file is read."""
        from ringfl.data.parties import load_party, resolve_path

        if self.opts.party is not None:
            return self.opts.party
        attrs = self.graph.nodes[self.node]
        train, val = self.opts.data, self.opts.val
        if train is None and attrs.get("data") is not None:
            train = resolve_path(str(attrs["data"]), self.topology_dir)
        if val is None and attrs.get("val") is not None:
            val = resolve_path(str(attrs["val"]), self.topology_dir)
        if train is None and self.config.data.dataset == "files" and not self.config.data.files:
            raise ConfigError(
                f"node {self.node!r}: which data is this party's? pass --data FILE, give the "
                "node a `data` attribute in the topology, or list data.files in the config"
            )
        try:
            return load_party(self.config, self.n, self.peer, train=train, val=val)
        except ValueError as exc:
            raise ConfigError(f"node {self.node!r}: {exc}") from None

    def _prepare(self) -> RoundEngine:
        from ringfl.engine.build import make_engine, neural_workload

        party = self._party()
        self.public_test = party.test
        workload = neural_workload(self.peer, self.config, party, self.opts.model)
        engine = make_engine(
            self.peer,
            self.n,
            self.config,
            workload,
            order=self.order,
            row=self.row,
            keys=self.identity.mask if self.masking and self.identity else None,
            public_keys=self.keys.mask if self.masking else None,
            plan=self.plan,
        )
        self.model_elements = workload.get().shape[0]
        return engine

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
        link.interrupt = self._interrupt
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

    @property
    def eng(self) -> RoundEngine:
        assert self.engine is not None
        return self.engine

    def name(self, p: int) -> str:
        return str(self.nodes[p])

    def names(self, peers: Any) -> list[str]:
        return [self.name(p) for p in sorted(peers)]

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

    def _interrupt(self) -> BaseException | None:
        """A decision the engine queued, raised in the driver's loop."""
        e = self.engine
        if e is None or self.state != State.RUNNING:
            return None
        if e.stop_reason is not None:
            return PeerStopped(f"node {self.node!r}: {e.stop_reason}")
        if e.must_rejoin:
            return _Rejoin()
        return None

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
            and self.engine is not None
            and sender in self.eng.membership.gone
            and self.state == State.RUNNING
            and self.mode == "ring"
            and self._told.get(sender) != self.round
        ):
            self._told[sender] = self.round
            self._send(sender, self._ctl(Op.LOST, self.round, control.ints(sender)))

    def _on_control(self, msg: Message) -> None:
        op, value = control.decode_control(
            msg, n_peers=self.n, model_elements=self.model_elements or None
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
        running = self.state == State.RUNNING and self.engine is not None
        if op == Op.HELLO:
            member = running and p in self.eng.members and old == h.incarnation
            if old is None and running and p in self.eng.members:
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
        if self.state not in (State.RUNNING, State.FINISHED) or self.engine is None:
            return
        # a new incarnation of p while we run: p restarted
        self.log("hello", peer_name=self.name(p), incarnation=h.incarnation, state=h.state.name)
        if self.state == State.FINISHED:
            self._serve_state(p, retry=True)
            return
        if self.eng.join_request(p, h.incarnation):
            self._lost({p}, self.round, why="restarted")
        if self.mode == "gossip":
            self._serve_state(p, retry=False)

    def _on_notice(self, rnd: int, lost: frozenset[int], sender: int) -> None:
        if self.mode == "gossip" or self.state != State.RUNNING or self.engine is None:
            return
        if self.peer in lost and rnd >= self.round - 1:
            self.log("declared_lost", round=rnd, by=self.name(sender))
        before = set(self.eng.membership.gone)
        new = self.eng.notice(lost, rnd) - before
        if new:
            self.log(
                "peer_gone",
                round=rnd,
                peers=self.names(new),
                why=f"notice from {self.name(sender)}",
            )
            self._tell_run(new, max(rnd, self.round))

    def _on_declared(self, lost: frozenset[int], rnd: int) -> None:
        """The failure detector declared `lost` gone in round `rnd` (they missed the
        deadline); the engine decides what follows, the run hears of it afterwards."""
        self.log(
            "lost", round=rnd, peers=self.names(lost), deadline_s=round(self.deadline.seconds(), 3)
        )
        if self.mode == "ring":
            # to everyone, the lost peers too: one that is alive after all learns it must rejoin
            self._broadcast(self._ctl(Op.LOST, rnd, control.ints(*sorted(lost))))
        self.eng.peers_lost(lost, rnd)

    def _lost(self, peers: set[int], rnd: int, *, why: str) -> None:
        """`peers` are gone as of round `rnd` (learnt here, not declared by the detector)."""
        new = self.eng.peers_lost(peers, rnd)
        if new:
            self.log("peer_gone", round=rnd, peers=self.names(new), why=why)
        self._tell_run(set(peers), rnd)

    def _tell_run(self, peers: set[int], rnd: int) -> None:
        """Report a loss to the running collective, unless the engine decided to stop (a
        minority stops before it tries to recover)."""
        link = self.link
        run = link.current if link is not None else None
        if run is not None and run.round == rnd and self.eng.stop_reason is None:
            run.lose(peers)

    def _serve_state(self, p: int, *, retry: bool) -> None:
        """Send `p` the engine's handover (the start state of the current round if `p` is
        a member, the final model when training is over, a gossip neighbour's model)."""
        if self.engine is None:
            return
        h = self.eng.handover(p, final=self.state == State.FINISHED)
        if h is None:
            return
        t = control.StateTransfer(
            self.session or 0, h.round, h.members, h.model, h.total, h.val_total
        )
        self._send(p, self._ctl(Op.STATE, h.round, control.encode_state(t)))
        self.log("state_sent", to=self.name(p), round=h.round, retry=retry)

    def _on_state(self, t: control.StateTransfer, sender: int) -> None:
        if self.state != State.JOINING:
            return
        if self.mode == "ring" and self.peer not in t.members:
            return
        self.pending_state = t
        self.log("state_received", round=t.round, by=self.name(sender), members=len(t.members))

    def _on_result(self, rnd: int, res: control.SumResult, sender: int) -> None:
        """A plain ring sum another member completed (transport-level recovery: a peer
        that finished before a loss hands the sum to those still running the round)."""
        from ringfl.collective.resilient import RetryingRingSum

        link = self.link
        run = link.current if link is not None else None
        if run is None or run.round != rnd or not isinstance(run.machine, RetryingRingSum):
            return
        if run.machine.done:
            return
        run.act(run.machine.adopt(res.total, res.members))
        self.log("result_adopted", round=rnd, by=self.name(sender))
        msg = self._ctl(Op.RESULT, rnd, control.encode_result(res))
        gone = self.eng.membership.gone
        for q in res.members:
            if q not in (self.peer, sender) and q not in gone and q not in run.lost:
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
                self._begin(h.round, list(self.order), h.session)
                return
            if running or finished:
                self.log("joining", running=self.names(running + finished))
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
                raise PeerStopped(
                    f"start-up: no answer within {self.opts.startup_timeout_s:g} s from "
                    f"{len(missing)} peer(s): {', '.join(self.names(missing))}"
                )
            if now >= next_report:
                self.log("waiting", missing=self.names(missing))
                next_report = now + 5.0
            if now >= next_hello:
                hello = self._hello(Op.HELLO)
                for p in missing:
                    self._send(p, hello)
                next_hello = now + 1.0
            link.service(0.1)

    def _begin(self, rnd: int, members: list[int], session: int) -> None:
        """Everyone started together: run the engine's setup sum, then round `rnd`."""
        link = self.link
        assert link is not None
        self.round = rnd
        self.session = session
        link.data_session = session
        link.purge_held(rnd)
        self.state = State.RUNNING
        for p, h in self.heard.items():
            self.known_inc.setdefault(p, h.incarnation)
        self.eng.begin(rnd, members, session)
        setup = self.eng.setup_machine(session)
        if setup is not None:
            from ringfl.engine.sums import SETUP_ROUND

            link.round_window = (0, 1 << 32)
            self.eng.finish_setup(link.run_machine(setup, round=SETUP_ROUND))
            link.forget_completed(setup.kinds)
        self.log(
            "ready",
            round=rnd,
            members=self.names(members),
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
        self.engine = self._prepare()  # a new incarnation starts afresh (optimizer too)
        h = Handover(t.round, t.members, t.model, t.total, t.val_total)
        self.eng.accept_handover(h, t.session)
        self.session = t.session
        link.data_session = t.session
        self.round = t.round
        self.state = State.RUNNING
        link.purge_held(t.round)
        self.log("rejoined", round=t.round, members=self.names(self.eng.members))

    # -- rounds ---------------------------------------------------------------------------

    def _train(self, rnd: int) -> Any:
        link = self.link
        assert link is not None
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["stats"] = self.eng.train(rnd)
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

    def _round(self, rnd: int) -> None:
        link = self.link
        assert link is not None
        t0 = time.perf_counter()
        link.round_window = (max(rnd - 1, 0), rnd + 2)
        self.log("round_start", round=rnd, members=len(self.eng.members) or None)
        if self.opts.hold is not None and self.opts.hold[0] == rnd:  # test hook, bounded
            gate = Path(self.opts.hold[1])
            self.log("holding", round=rnd, until=str(gate))
            link.service(self.opts.join_timeout_s, until=gate.exists)
        for p in self.eng.begin_round(rnd):  # members admitted in the last round get their state
            self._serve_state(p, retry=False)
        self._raise_queued()
        stats = self._train(rnd)
        t1 = time.perf_counter()
        if self.faults.get("nan", (-1,))[0] == rnd:  # test hook: a diverged local model
            bad = self.eng.workload.get()
            bad[::7] = np.nan
            self.eng.workload.set(bad)
            self.log("nonfinite_delta", round=rnd, action="weight 0 this round")
        awaited = self.eng.membership.awaited_joiners(rnd)
        if awaited:  # a fault schedule pins a restarted peer's admission to a round
            self.log("awaiting_joiners", round=rnd, peers=self.names(awaited))
            link.service(
                self.opts.join_timeout_s,
                until=lambda: not self.eng.membership.awaited_joiners(rnd),
            )
        machine: Machine = self.eng.round_machine(rnd)
        payload = self.eng.payload
        deltas = self.dir / "deltas" / f"round-{rnd:05d}.npz"
        assert self.eng.snapshot is not None
        start = self.eng.snapshot.model
        if self.opts.save_deltas and payload is not None:  # before: a killed peer leaves it too
            meta = {"round": rnd, "ring": list(self.eng.members)}
            checkpoint.save(deltas, {"payload": payload, "start": start}, meta)
        kill = self.faults.get("kill")
        result = link.run_machine(
            machine,
            round=rnd,
            lost=self.eng.lost_at_start(rnd),
            crash_after=kill[1] if kill is not None and kill[0] == rnd else None,
        )
        t2 = time.perf_counter()
        rec = self.eng.finish_round(rnd, np.asarray(result), machine)
        if self.mode == "ring" and not self.masking:
            self.last_sum = (rnd, control.SumResult(rec.contributors, np.array(result)))
        if self.opts.save_deltas and payload is not None:
            checkpoint.save(
                deltas,
                {"payload": payload, "result": np.asarray(result), "start": start},
                {"round": rnd, "members": list(rec.contributors), "ring": list(rec.members)},
            )
        row: dict[str, Any] = {
            "round": rnd,
            "members": self.names(rec.contributors),
            "dropped": self.names(rec.dropped),
            "admitted": self.names(rec.admitted),
            "train_loss": stats.loss,
            "compute_s": t1 - t0,
            "comm_s": t2 - t1,
            "weight": rec.weight,
            "attempts": rec.attempts,
            "clipped": rec.clipped,
        }
        if self.mode == "gossip":
            row["members"] = self.names(p for p in rec.contributors if p != self.peer)
        if rec.evaluation is not None:
            row["global_accuracy"] = rec.evaluation.accuracy
            row["global_loss"] = rec.evaluation.loss
        flat = self.eng.workload.get()
        digest = checkpoint.digest(flat)
        cfg = self.config
        last = rnd + 1 == cfg.train.rounds
        if ((rnd + 1) % cfg.eval_every == 0 or last) and self.public_test is not None:
            from ringfl.local import evaluate

            ev = evaluate(self.eng.workload.model, self.public_test)  # type: ignore[attr-defined]
            row.update(accuracy=ev.accuracy, loss=ev.loss)
        row.update(
            hash=digest[:16],
            bytes_sent=link.bytes_sent,
            control_bytes=link.control_bytes,
            deadline_s=self.deadline.seconds(),
        )
        self.round = rnd + 1
        self._checkpoint(flat, digest)
        elapsed = time.perf_counter() - t0
        if self.opts.min_round_s > elapsed and not last:
            link.service(self.opts.min_round_s - elapsed)
        row["round_s"] = time.perf_counter() - t0
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        self.log("round", **row)

    def _raise_queued(self) -> None:
        exc = self._interrupt()
        if exc is not None:
            raise exc

    def _checkpoint(self, flat: np.ndarray, digest: str) -> None:
        checkpoint.save(
            self.dir / "checkpoint.npz",
            {"model": flat, "members": np.array(self.eng.members, dtype=np.int64)},
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
        self.eng.workload.set(model)
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
            algorithm=self.config.algorithm.name,
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
            self.engine = self._prepare()
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
                    self.eng.membership.round = self.round
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
        link = self.link
        assert link is not None
        rounds = self.config.train.rounds
        closing = self.eng.closing_machine(rounds)
        final_eval = None
        if closing is not None:  # the ring's secure sum of evaluation counts
            link.round_window = (max(rounds - 1, 0), rounds + 1)
            final_eval = self.eng.finish_closing(
                rounds, np.asarray(link.run_machine(closing, round=rounds))
            )
        self.state = State.FINISHED
        flat = self.eng.workload.get()
        digest = checkpoint.digest(flat)
        self.eng.snapshot = Handover(
            self.round, tuple(self.eng.members), flat, self.eng.total or 0.0, self.eng.val_total
        )
        checkpoint.save(
            self.dir / "model.npz",
            {"model": flat},
            {"round": self.round, "node": str(self.node), "hash": digest},
        )
        fields: dict[str, Any] = {"hash": digest}
        if self.public_test is not None:
            from ringfl.local import evaluate

            ev = evaluate(self.eng.workload.model, self.public_test)  # type: ignore[attr-defined]
            fields.update(accuracy=ev.accuracy, loss=ev.loss)
        if final_eval is not None:
            fields.update(global_accuracy=final_eval.accuracy, global_loss=final_eval.loss)
        self._write_summary(status="finished", **fields)
        self.log("finished", round=self.round, hash=digest[:16], accuracy=fields.get("accuracy"))
        self._broadcast(self._ctl(Op.DONE, self.round, control.ints(self.incarnation)))
        others = set(self.eng.members) - {self.peer} - self.eng.membership.gone
        link.service(max(self.deadline.seconds(), 1.0), until=lambda: others <= self.done_peers)

    def _write_summary(self, **fields: Any) -> None:
        link = self.link
        summary = {
            "node": str(self.node),
            "peer": self.peer,
            "round": self.round,
            "rounds": self.config.train.rounds,
            "members": self.names(self.engine.members) if self.engine is not None else [],
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
