"""The driver of a real peer: `PeerLink`, a `ZmqPeer` that also handles CONTROL messages,
authenticates senders, and waits with adaptive deadlines and probes instead of one fixed
timeout.

Receiving. Every frame pair is decoded (`ringfl.wire.decode`; a `WireError` is logged and
the frames dropped). With CURVE, the peer id ZAP attached to the connection must equal the
header's sender, else the message is dropped as spoofed. CONTROL messages go to the
node's `on_control(message)` at once, whatever the peer is doing (PING is answered here);
other messages go to the running machine when their (kind, round) match it, are held when
they are for a round inside `round_window`, and are dropped otherwise (past rounds,
rounds too far ahead: a logged reason each).

Waiting (`run_machine`). The failure detector (`ringfl.engine.failure.FailureDetector`,
fed with this process's monotonic clock) decides: when the silence — the time since the
machine last accepted a message — reaches the deadline minus the probe window, each peer
the machine still waits for (`expecting()`) is sent a PING; a peer that answers (any
message counts) is alive — it is itself waiting upstream — and is left alone for a while;
a peer that has not answered when the window closes is declared gone: the node's
`on_lost(peers, round)` hears it first (it may stop this peer), then the machine gets
`peers_lost`. In a ring only
the dead peer's successor waits on it directly, so only it declares; the others learn
from its notice (`lose()`), or from the collective's own recovery messages. A run whose
silence exceeds `hard_limit_s` although everyone answers probes (a protocol stall)
declares the awaited peers gone anyway, so no wait is unbounded. The longest silence of
each run feeds the deadline estimate.

Sending. Machine sends keep the zero-copy, tracked, non-blocking path of `ZmqPeer`;
CONTROL sends (`send_control`) are small copies, dropped with a log line when the
destination's queue is full (a dead peer).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
import zmq

from ringfl import wire
from ringfl.collective.events import Kind, Machine, Message, Send
from ringfl.engine.failure import AdaptiveDeadline, FailureDetector
from ringfl.errors import PeerTimeout, WireError
from ringfl.peer import control
from ringfl.transport.zmq import ZmqPeer, _Run

log = logging.getLogger(__name__)


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class PeerLink(ZmqPeer):
    """A `ZmqPeer` for one real peer process. Hooks (set by the node):

    - `on_control(message)`: a validated CONTROL message other than PING/PONG;
    - `on_lost(peers, round)`: this peer declared `peers` gone in `round`;
    - `on_drop(reason, sender)`: a message was dropped (logged by the node);
    - `on_stale(message)`: a data message for a round this peer already finished (the
      sender is behind; the node may hand it the result);
    - `authenticate(frame) -> peer id | None`: the CURVE User-Id of a frame, or None when
      links are not authenticated;
    - `interrupt() -> exception | None`: checked while waiting; a decision the node queued
      in a callback (stop, rejoin) is raised here, in the driver's loop, not through it.
    """

    def __init__(
        self,
        peer: int,
        endpoints: Mapping[int, str],
        *,
        n_peers: int,
        deadline: AdaptiveDeadline,
        authenticate: Callable[[Any], int | None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_held", 20_000)
        kwargs.setdefault("max_held_bytes", 1 << 28)
        super().__init__(peer, endpoints, **kwargs)
        self.n_peers = int(n_peers)
        self.deadline = deadline
        self.authenticate = authenticate
        self.on_control: Callable[[Message], None] = _nothing
        self.on_lost: Callable[[frozenset[int], int], None] = _nothing
        self.on_drop: Callable[[str, int | None], None] = _nothing
        self.on_stale: Callable[[Message], None] = _nothing
        self.interrupt: Callable[[], BaseException | None] = _nothing
        self.round_window: tuple[int, int] = (0, 1 << 32)
        self.control_session = 0
        self.data_session: int | None = None  # None: not known yet (a joiner); hold all
        self.last_heard: dict[int, float] = {}
        self.current: NodeRun | None = None
        self.control_bytes = 0
        self.dropped = 0
        self.hard_limit_s = 2 * deadline.policy.max_s + deadline.policy.probe_max_s
        self._nonce = 0
        self._idle_poller = zmq.Poller()
        self._idle_poller.register(self.pull, zmq.POLLIN)

    # -- sending control -----------------------------------------------------------------

    def send_control(self, to: int, message: Message) -> bool:
        """Send a CONTROL message now (copied, non-blocking); False if it was dropped."""
        if to == self.peer:
            return False
        frames = wire.encode(message)
        try:
            self._socket_to(to).send_multipart(frames, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            log.debug("peer %d: queue to %d full; control message dropped", self.peer, to)
            return False
        self.control_bytes += frames[1].nbytes + wire.HEADER_SIZE
        return True

    def ping(self, to: int, round: int) -> None:
        self._nonce += 1
        self.send_control(
            to,
            control.make(
                control.Op.PING,
                session=self.control_session,
                round=round,
                sender=self.peer,
                payload=control.ints(self._nonce),
            ),
        )

    # -- receiving -------------------------------------------------------------------------

    def _drop(self, reason: str, sender: int | None = None) -> None:
        self.rejected += 1
        self.dropped += 1
        self.on_drop(reason, sender)

    def receive_frames(self, frames: list[Any]) -> Message | None:
        """Decode and authenticate; handle CONTROL; return a data message, or None."""
        try:
            msg = wire.decode(frames, max_elements=self.max_elements, session=self.session)
        except WireError as exc:
            self._drop(f"malformed: {exc}")
            return None
        h = msg.header
        if self.authenticate is not None:
            who = self.authenticate(frames[0])
            if who != h.sender:
                self._drop(f"sender {h.sender} in the header, but the link is peer {who}", who)
                return None
        if not 0 <= h.sender < self.n_peers or h.sender == self.peer:
            self._drop(f"sender {h.sender} is not another peer of the topology", None)
            return None
        if h.kind == Kind.CONTROL:
            if h.session != self.control_session:
                self._drop(f"control message of session {h.session}", h.sender)
                return None
        elif self.data_session is not None and h.session != self.data_session:
            self._drop(f"{h.kind.name} message of session {h.session}", h.sender)
            return None
        self.last_heard[h.sender] = time.monotonic()
        if h.kind == Kind.CONTROL:
            if h.step == control.Op.PING:
                if msg.payload.dtype == np.int64 and msg.payload.shape == (1,):
                    pong = control.make(
                        control.Op.PONG,
                        session=h.session,
                        round=h.round,
                        sender=self.peer,
                        payload=np.array(msg.payload),
                    )
                    self.send_control(h.sender, pong)
                else:
                    self._drop("control PING: malformed payload", h.sender)
                return None
            if h.step == control.Op.PONG:
                return None
            try:
                self.on_control(msg)
            except WireError as exc:
                self._drop(str(exc), h.sender)
            return None
        lo, hi = self.round_window
        if not lo <= h.round <= hi:
            self._drop(
                f"{h.kind.name} message for round {h.round}, outside rounds {lo}..{hi}",
                h.sender,
            )
            return None
        return msg

    def _route_idle(self, msg: Message) -> None:
        h = msg.header
        if h.round <= self._completed.get(int(h.kind), -1):
            self._drop(f"{h.kind.name} message for finished round {h.round}", h.sender)
            self.on_stale(msg)
        else:
            self._hold(msg)

    def service(self, seconds: float, until: Callable[[], bool] | None = None) -> None:
        """Receive for up to `seconds` while no machine runs (CONTROL handled, data held),
        returning early once `until()` is true."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            exc = self.interrupt()
            if exc is not None:
                raise exc
            if until is not None and until():
                return
            left = end - time.monotonic()
            if left <= 0:
                return
            if self._idle_poller.poll(max(1, min(int(left * 1000) + 1, 50))):
                self._drain_idle()

    def _drain_idle(self) -> None:
        for _ in range(10_000):
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg = self.receive_frames(frames)
            if msg is not None:
                self._route_idle(msg)

    def forget_completed(self, kinds: Collection[Kind]) -> None:
        """Forget that rounds of `kinds` were completed (after the one-off setup sum, whose
        round number is above every training round)."""
        for k in kinds:
            self._completed.pop(int(k), None)

    def purge_held(self, before_round: int) -> None:
        """Forget held messages of rounds before `before_round` or of another session."""
        s = self.data_session
        self._held = deque(
            m
            for m in self._held
            if m.header.round >= before_round and (s is None or m.header.session == s)
        )
        self._held_bytes = sum(m.payload.nbytes for m in self._held)

    # -- running a machine ---------------------------------------------------------------

    def run_machine(
        self,
        machine: Machine,
        *,
        round: int,
        lost: Collection[int] = (),
        crash_after: int | None = None,
    ) -> Any:
        """Drive `machine` to `Done` and return its result. `lost`: peers already known to
        be gone, reported to the machine right after it starts. Raises `PeerTimeout` when
        the awaited peers answer probes but the run makes no progress for `hard_limit_s`,
        what the machine raises (e.g. `SecureAggregationError`), or what `interrupt`
        returns. `crash_after`: a scheduled crash — this process dies right after it sent
        that many messages of the run (`ringfl.testing.crash_after_flush`)."""
        self.purge_held(round)
        run = NodeRun(self, machine, frozenset(Kind(k) for k in machine.kinds), int(round), lost)
        run.crash_after = crash_after
        if crash_after is not None and crash_after <= 0:
            from ringfl.testing.faults import crash_after_flush

            crash_after_flush(run)
        self.current = run
        try:
            return run.go()
        finally:
            self.current = None
            run.detector.close(time.monotonic())


class NodeRun(_Run):
    """One `PeerLink.run_machine`: the poll loop, with the failure detector deciding
    probes and declarations (see the module docstring)."""

    def __init__(
        self,
        link: PeerLink,
        machine: Machine,
        kinds: frozenset[Kind],
        round: int,
        lost: Collection[int],
    ) -> None:
        super().__init__(link, machine, kinds, round, link.hard_limit_s)
        self.link = link
        self.lost: set[int] = set()
        self._initial_lost = frozenset(int(p) for p in lost)
        self.detector = FailureDetector(
            link.deadline, started=time.monotonic(), hard_limit_s=link.hard_limit_s
        )
        self.detector.last_heard = link.last_heard  # every message counts as an answer
        self._wake = 0.0
        self.crash_after: int | None = None
        self._sends = 0

    def send(self, a: Send) -> None:
        super().send(a)
        self._sends += 1
        if self.crash_after is not None and self._sends >= self.crash_after:
            from ringfl.testing.faults import crash_after_flush

            crash_after_flush(self)

    # -- loss ------------------------------------------------------------------------------

    def lose(self, peers: Collection[int], *, declared: bool = False) -> None:
        """Tell the machine that `peers` are gone (from a notice, or declared here)."""
        new = frozenset(int(p) for p in peers) - self.lost - {self.link.peer}
        if not new:
            return
        self.lost |= new
        self.detector.mark_lost(new)
        for p in new:
            self.outbox.pop(p, None)
            if p in self.polled_out:
                self._watch(p, False)
        if declared:
            self.link.on_lost(new, self.round)
            exc = self.link.interrupt()
            if exc is not None:  # the node must stop (a minority): no recovery attempt
                raise exc
        if not self.finished:
            self.act(self.machine.peers_lost(new))

    # -- receiving -------------------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        try:
            actions = self.machine.receive(msg)
        except WireError as exc:
            self.link._drop(f"round {self.round}: {exc}", msg.header.sender)
            return
        self.detector.progress(time.monotonic())
        self.act(actions)

    def drain(self) -> None:
        link = self.link
        for _ in range(100_000):
            try:
                frames = link.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            msg = link.receive_frames(frames)
            if msg is None:
                continue
            h = msg.header
            if h.kind in self.kinds and h.round == self.round:
                if self.finished:
                    link._drop(f"{h.kind.name} round {h.round}: machine already done", h.sender)
                    link.on_stale(msg)
                else:
                    self.deliver(msg)
            else:
                link._route_idle(msg)

    # -- the loop ----------------------------------------------------------------------------

    def go(self) -> Any:
        link = self.link
        m = self.machine
        self.act(m.start())
        if self._initial_lost:
            self.lose(self._initial_lost)
        for msg in link._take_held(self.kinds, self.round):
            if not self.finished:
                self.deliver(msg)
        flush_until = None
        while not self.finished or any(self.outbox.values()):
            exc = link.interrupt()
            if exc is not None:
                raise exc
            now = time.monotonic()
            if self.finished:
                # only unsent messages left: bounded by the deadline
                flush_until = flush_until or now + link.deadline.seconds()
                if now >= flush_until:
                    stuck = sorted(p for p, b in self.outbox.items() if b)
                    raise PeerTimeout(
                        f"peer {link.peer}: could not hand messages to peer(s) {stuck}",
                        tuple(stuck),
                    )
            else:
                self._check_silence(now)
                if self.finished:
                    continue
            events = self.poller.poll(max(1, min(int((self._wake - now) * 1000) + 1, 100)))
            for sock, _ in events:
                if sock is link.pull:
                    self.drain()
            for to in list(self.polled_out):
                if self.outbox.get(to):
                    self.flush(to)
        self._release(time.monotonic() + link.deadline.seconds())
        for k in self.kinds:
            link._completed[int(k)] = max(link._completed.get(int(k), -1), self.round)
        return self.result

    def _release(self, deadline: float) -> None:
        """As `_Run._release`, but a payload queued for a lost peer is left to ZeroMQ: it
        keeps the buffer alive, and this peer never writes to a sent buffer again."""
        self.trackers = [(p, t) for p, t in self.trackers if p not in self.lost]
        super()._release(deadline)

    def _check_silence(self, now: float) -> None:
        expecting = set(self.machine.expecting()) - self.lost
        v = self.detector.poll(now, expecting)
        self._wake = v.wake_at
        if v.stalled and not v.declare:
            raise PeerTimeout(
                f"peer {self.link.peer}: round {self.round} made no progress for "
                f"{now - self.detector.started:.1f} s and waits for no one",
            )
        for p in v.probe:
            self.link.ping(p, self.round)
        if v.declare:
            self.lose(v.declare, declared=True)


__all__ = ["NodeRun", "PeerLink"]
