"""The control plane of a real peer: CONTROL messages (HELLO/ACK, LOST, STATE, RESULT,
DONE) turned into engine events and back, and the start-up handshake. Decisions are the
engine's; this code carries them. `PeerNode` (`ringfl.peer.node`) is built on it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ringfl.collective.events import Message
from ringfl.config import Config
from ringfl.engine.failure import AdaptiveDeadline
from ringfl.engine.round import Handover, RoundEngine
from ringfl.peer import control
from ringfl.peer.control import Op, State
from ringfl.peer.eventlog import EventLog
from ringfl.peer.link import PeerLink
from ringfl.peer.options import PeerOptions, PeerStopped, Rejoin, data_session
from ringfl.peer.refusals import RefusalLimiter


class ControlPlane:
    """Control messages and start-up of one peer process (state declared here, set by
    `PeerNode.__init__`)."""

    opts: PeerOptions
    config: Config
    nodes: list[Any]
    n: int
    node: Any
    peer: int
    mode: str
    masking: bool
    order: list[int]
    log: EventLog
    control_session: int
    deadline: AdaptiveDeadline
    incarnation: int
    state: State
    round: int
    session: int | None
    heard: dict[int, control.Hello]
    known_inc: dict[int, int]
    done_peers: set[int]
    _told: dict[int, int]
    _refusals: RefusalLimiter
    last_sum: tuple[int, control.SumResult] | None
    pending_state: control.StateTransfer | None
    link: PeerLink | None
    engine: RoundEngine | None
    started_at: float
    model_elements: int

    def _prepare(self) -> RoundEngine:
        raise NotImplementedError

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
            return Rejoin()
        return None

    # -- control messages -----------------------------------------------------------------

    def _on_refused(self, fp: str) -> None:
        """A CURVE client with key fingerprint `fp` (not in the topology) was refused.
        Logged at most once a second per key, with the count (clients retry quickly), and
        at most `RefusalLimiter`'s global rate, with the count of lines dropped."""
        line = self._refusals.refused(fp, time.monotonic())
        if line is not None:
            self.log("refused", why="key not in the topology", **line)

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


__all__ = ["ControlPlane"]
