"""A deterministic in-memory network with a virtual clock, for simulation and tests.

`MemoryNetwork.run` drives N protocol machines in one thread. Events are ordered by
(virtual time, sequence number), so the same machines and faults give the same run, bit
for bit. Every message goes through `wire.encode` → bytes → `wire.decode`, exactly as over
ZeroMQ, so the wire format is exercised and captured frames are the real bytes. Received
payloads are private writable buffers, as over ZeroMQ, so machines may reuse them.

Timing model: each peer has one outgoing NIC; messages leave it one after another (a
message starts when the previous one from that peer has finished), take size / bandwidth
of their link to leave, and arrive the link's latency after their last byte left. Hence
links are FIFO. Every link has `latency_s` and `bandwidth_Bps` unless `links` gives that
pair its own (`Link`; `ringfl.sim_clock.link_model` reads them from a topology).
Computation takes no virtual time. A machine that starts late (`start_at`: its local
training) holds what arrives before its start and takes it, in arrival order, when it
starts; its failure detector starts then too.

Faults: `Crash(peer, after_sends=k)` — the peer's k-th send still goes out, then it is dead:
its later sends and every message to it vanish (k = 0: dead from the start);
`Crash(peer, at_s=t)` — it dies at virtual time t (it goes offline). `Cut(side)` —
messages between `side` and the other peers vanish (a partition); to each side the other
is unreachable. `Suspect(peer, after_sends=k)` — a wrong loss declaration: right after the
peer's k-th send every other live machine is told at once (not when a deadline passes)
that it was lost, and the network cuts it off as if it had crashed; its machine keeps what
it had received (what a live, excluded peer knows). `Inject(...)` delivers raw frames, as if from the network, at a virtual
time. `start_at` delays a machine's start (its local training on virtual time);
`link_factor` slows the link between two peers (latency and transfer time).

Failure detection: every live machine has the failure detector real peers use
(`ringfl.engine.failure.FailureDetector`), fed with virtual time, with a fixed deadline of
`deadline_s` (probe window half of it), or — with `deadlines` (one `AdaptiveDeadline` per
peer, kept by the driver across runs as a real peer keeps its own) — the engine's adaptive
deadline, which each run's longest silence updates. A silent peer a machine waits for is probed; a
live, reachable peer answers at once (a slow one too), a crashed or cut-off one never, and
is declared gone when the deadline passes. As a real peer's LOST notice does, the news
then reaches, at that same virtual moment, every live machine that cannot reach the lost
peer either, so all survivors learn of a loss consistently. With `on_lost(peer, lost) ->
bool` the driver hears of it first and may stop that peer (False: it leaves the run, as a
real peer that finds itself in a minority stops); otherwise the machine gets
`peers_lost`. `initial_lost` reports known losses right after the start. A machine's
`PeerTimeout` (the default reaction) propagates out of `run`. A stall that no loss
explains (the awaited peers answer probes but nothing moves for the detector's hard limit,
65 deadlines, or a machine told of every crash still neither finishes nor sends) raises
`PeerTimeout` naming the peers the stalled machines wait for — except when the awaited
peers are stragglers that have not started yet (still training): as real peers do at the
hard limit, they are declared gone, cut off for the rest of the run (`RunResult.declared`),
and the others go on without them.

A message that a machine rejects (`WireError` from `decode` or `receive`) is dropped and its
reason recorded in `RunResult.rejected`, as a real peer would log it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ringfl import wire
from ringfl.collective.events import Done, Machine, Send
from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy, FailureDetector
from ringfl.errors import PeerTimeout, WireError

#: capture callback: (sender, to, frames as bytes)
Capture = Callable[[int, int, list[bytes]], None]
# pseudo-senders of clock events in the queue
_START, _OFFLINE = -2, -3


@dataclass(frozen=True)
class Crash:
    """`peer` dies right after its `after_sends`-th send (0: before sending anything), or,
    with `at_s`, at that virtual time (seconds from the run's start)."""

    peer: int
    after_sends: int = 0
    at_s: float | None = None


@dataclass(frozen=True)
class Link:
    """One link's one-way latency (seconds) and bandwidth (bytes per second, > 0)."""

    latency_s: float
    bandwidth_Bps: float

    def __post_init__(self) -> None:
        if not (self.latency_s >= 0 and self.bandwidth_Bps > 0):
            raise ValueError(f"Link: latency ≥ 0 and bandwidth > 0, got {self}")


@dataclass(frozen=True)
class Cut:
    """Messages between the peers of `side` and all others vanish (a network partition)."""

    side: frozenset[int]


@dataclass(frozen=True)
class Suspect:
    """`peer` is declared lost to every other peer right after its `after_sends`-th send
    (a wrong declaration: it was alive), and cut off from then on."""

    peer: int
    after_sends: int = 0


@dataclass(frozen=True)
class Inject:
    """Deliver raw `frames` to peer `to` at virtual time `at_s` (tests of rejection)."""

    to: int
    frames: tuple[bytes, ...]
    at_s: float = 0.0
    sender: int = -1  # for capture/accounting only; frames carry their own header


@dataclass
class RunResult:
    results: dict[int, Any]  # peer → Done.result, for peers that finished
    dead: frozenset[int]  # peers crashed by a fault
    bytes_sent: dict[int, int]  # payload bytes sent per peer (frames that left it)
    messages_sent: dict[int, int]
    virtual_time_s: float
    wire_bytes_sent: dict[int, int] = field(default_factory=dict)  # header + payload
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (receiver, reason)
    stopped: frozenset[int] = frozenset()  # peers the driver stopped (`on_lost` said so)
    finished_at: dict[int, float] = field(default_factory=dict)  # virtual time of Done
    declared: frozenset[int] = frozenset()  # stragglers declared gone at the hard limit


class MemoryNetwork:
    """In-memory network: `latency_s` per message, `bandwidth_Bps` per link, and
    `deadline_s` of virtual time before silent peers are declared lost. `links`: links
    with their own latency and bandwidth, keyed by peer pair (either order)."""

    def __init__(
        self,
        latency_s: float = 50e-6,
        bandwidth_Bps: float = 1e9,
        deadline_s: float = 1.0,
        *,
        max_elements: int = 1 << 28,
        links: Mapping[tuple[int, int], Link] | None = None,
    ) -> None:
        if latency_s < 0 or bandwidth_Bps <= 0 or deadline_s <= 0:
            raise ValueError("MemoryNetwork: latency ≥ 0, bandwidth > 0 and deadline > 0")
        self.latency_s = latency_s
        self.bandwidth_Bps = bandwidth_Bps
        self.deadline_s = deadline_s
        self.max_elements = max_elements
        self.default_link = Link(latency_s, bandwidth_Bps)
        self.links: dict[tuple[int, int], Link] = {
            (min(a, b), max(a, b)): v for (a, b), v in (links or {}).items()
        }

    def link(self, a: int, b: int) -> Link:
        """The link between peers `a` and `b`."""
        return self.links.get((a, b) if a < b else (b, a), self.default_link)

    def run(
        self,
        machines: Mapping[int, Machine],
        faults: Iterable[Crash | Cut | Suspect | Inject] = (),
        *,
        capture: Capture | list | None = None,
        session: int | None = None,
        initial_lost: Mapping[int, frozenset[int]] | None = None,
        on_lost: Callable[[int, frozenset[int]], bool] | None = None,
        start_at: Mapping[int, float] | None = None,
        link_factor: Mapping[tuple[int, int], float] | None = None,
        absent: Iterable[int] = (),
        deadlines: Mapping[int, AdaptiveDeadline] | None = None,
    ) -> RunResult:
        """Run every machine to completion (or death) and collect the results.

        `capture` gets (sender, to, frames) for every message put on the wire; a list is
        appended to. `session`, if given, is checked by `wire.decode`. `initial_lost`,
        `on_lost`, `start_at`, `link_factor`: see the module docstring. `absent`: peers
        that exist but run nothing now (crashed earlier, rejoining): messages to them vanish.
        `deadlines`: each peer's adaptive deadline (updated by this run), instead of the
        fixed `deadline_s`.
        """
        run = _Run(self, dict(machines), list(faults), capture, session, deadlines, start_at)
        run.initial_lost = dict(initial_lost or {})
        run.on_lost = on_lost
        run.absent = frozenset(absent)
        run.link_factor = {(min(a, b), max(a, b)): f for (a, b), f in (link_factor or {}).items()}
        return run.go()


class _Run:
    def __init__(
        self,
        net: MemoryNetwork,
        machines: dict[int, Machine],
        faults: list[Crash | Cut | Suspect | Inject],
        capture: Capture | list | None,
        session: int | None,
        deadlines: Mapping[int, AdaptiveDeadline] | None = None,
        start_at: Mapping[int, float] | None = None,
    ) -> None:
        self.net = net
        self.machines = machines
        self.session = session
        if isinstance(capture, list):
            self.capture: Capture | None = lambda s, t, f: capture.append((s, t, f))
        else:
            self.capture = capture
        self.crash_after: dict[int, int] = {}
        self.suspected: set[int] = set()  # crash_after entries that are declarations
        self.declare: list[int] = []  # declared, not yet told to the others
        self.cut: frozenset[int] | None = None
        self.initial_lost: dict[int, frozenset[int]] = {}
        self.on_lost: Callable[[int, frozenset[int]], bool] | None = None
        self.start_at: dict[int, float] = dict(start_at or {})
        self.pending: set[int] = {p for p in machines if self.start_at.get(p, 0.0) > 0}
        self.inbox: dict[int, list[tuple[int, list]]] = {}  # held until the machine starts
        self.declared: set[int] = set()
        self.link_factor: dict[tuple[int, int], float] = {}
        self.stopped: set[int] = set()
        self.absent: frozenset[int] = frozenset()
        self.finished_at: dict[int, float] = {}
        self.queue: list[tuple[float, int, int, int, list]] = []
        self.seq = 0
        self.now = 0.0
        for f in faults:
            if f.__class__ is Crash and f.at_s is not None:
                if f.peer not in machines:
                    raise ValueError(f"fault names peer {f.peer}, which is not in the network")
                if f.at_s <= 0:  # offline from the start
                    self.crash_after[f.peer] = 0
                else:
                    self._push(float(f.at_s), _OFFLINE, f.peer, [])
            elif f.__class__ is Crash or f.__class__ is Suspect:
                if f.peer not in machines:
                    raise ValueError(f"fault names peer {f.peer}, which is not in the network")
                self.crash_after[f.peer] = f.after_sends
                if f.__class__ is Suspect:
                    self.suspected.add(f.peer)
            elif f.__class__ is Cut:
                self.cut = frozenset(f.side)
            elif f.__class__ is Inject:
                if f.to not in machines:
                    raise ValueError(f"injection to peer {f.to}, which is not in the network")
                self._push(f.at_s, f.sender, f.to, list(f.frames))
            else:
                raise ValueError(f"unknown fault {f!r}")
        self.dead: set[int] = {p for p, k in self.crash_after.items() if k <= 0}
        self.declare = sorted(self.dead & self.suspected)
        self.reported: dict[int, set[int]] = {p: set() for p in machines}
        self.results: dict[int, Any] = {}
        self.finished: set[int] = set()
        self.sends = dict.fromkeys(machines, 0)
        self.bytes = dict.fromkeys(machines, 0)
        self.wire_bytes = dict.fromkeys(machines, 0)
        self.nic_free = dict.fromkeys(machines, 0.0)
        self.rejected: list[tuple[int, str]] = []
        d = net.deadline_s
        policy = DeadlinePolicy(
            min_s=d, max_s=d, initial_s=d, probe_min_s=d / 2, probe_max_s=d / 2, margin_s=0.0
        )
        # a live peer that answers probes is waited for as long as a real peer would with
        # the default deadlines (2 x 30 s + 5 s for d = 1 s) before the stall is an error
        hard = 65.0 * d
        self.detectors = {}
        for p in machines:
            t0 = self.start_at.get(p, 0.0) if p in self.pending else 0.0
            if deadlines is not None and p in deadlines:
                self.detectors[p] = FailureDetector(deadlines[p], started=t0)
            else:
                self.detectors[p] = FailureDetector(
                    AdaptiveDeadline(policy), started=t0, hard_limit_s=hard
                )
        # when each detector must be asked next (a late starter's from its start)
        self.wake = {p: self.detectors[p].started for p in machines}
        # after progress, a detector has nothing to say before this
        self.first_ask = min(
            (det.deadline.seconds() - det.deadline.probe_s() for det in self.detectors.values()),
            default=d / 2,
        )
        self.min_wake = 0.0  # a lower bound of min(self.wake) over live machines

    def _push(self, t: float, sender: int, to: int, frames: list[bytes]) -> None:
        heapq.heappush(self.queue, (t, self.seq, sender, to, frames))
        self.seq += 1

    def _act(self, peer: int, actions: list) -> None:
        for a in actions:
            if peer in self.dead:
                return
            if a.__class__ is Send:
                self._send(peer, a)
            elif a.__class__ is Done:
                self.results[peer] = a.result
                self.finished.add(peer)
                self.finished_at[peer] = self.now
            else:
                raise TypeError(f"peer {peer} returned {a!r}, not Send/Done")

    def _send(self, peer: int, a: Send) -> None:
        if a.to not in self.machines and a.to not in self.absent:
            raise ValueError(f"peer {peer} sends to {a.to}, which is not in the network")
        head, payload = wire.encode(a.message)
        # a private, writable copy: like a buffer a real transport hands over
        body = bytearray(memoryview(payload).cast("B")) if payload.nbytes else bytearray()
        frames = [head, body]
        size = len(head) + len(body)
        self.sends[peer] += 1
        self.bytes[peer] += len(body)
        self.wire_bytes[peer] += size
        factor = self.link_factor.get((min(peer, a.to), max(peer, a.to)), 1.0)
        link = self.net.link(peer, a.to)
        start = max(self.now, self.nic_free[peer])
        end = start + factor * size / link.bandwidth_Bps
        self.nic_free[peer] = end
        if self.capture is not None:
            self.capture(peer, a.to, [head, bytes(body)])
        if not self._cut_between(peer, a.to) and a.to not in self.absent:
            self._push(end + factor * link.latency_s, peer, a.to, frames)
        limit = self.crash_after.get(peer)
        if limit is not None and self.sends[peer] >= limit and peer not in self.dead:
            self.dead.add(peer)
            if peer in self.suspected:
                self.declare.append(peer)

    def _tell_declared(self) -> None:
        """Tell every live machine, at once, of wrong declarations made since the last
        call (`Suspect`)."""
        while self.declare:
            gone = frozenset({self.declare.pop(0)})
            for p in self._live_unfinished():
                if not gone <= self.reported[p]:
                    self.detectors[p].mark_lost(gone)
                    self._lose(p, gone)
                    self.wake[p] = self.now

    def _cut_between(self, a: int, b: int) -> bool:
        return self.cut is not None and ((a in self.cut) != (b in self.cut))

    def _unreachable(self, p: int) -> set[int]:
        gone = set(self.dead) | self.stopped | self.absent
        if self.cut is not None:
            gone |= {q for q in self.machines if self._cut_between(p, q)}
        return gone - {p}

    def _live_unfinished(self) -> list[int]:
        return [
            p
            for p in sorted(self.machines)
            if p not in self.dead and p not in self.finished and p not in self.stopped
        ]

    def _lose(self, p: int, lost: frozenset[int]) -> None:
        self.reported[p] |= lost
        if self.on_lost is not None and not self.on_lost(p, lost):
            self.stopped.add(p)
            return
        self._act(p, self.machines[p].peers_lost(lost))

    def _start(self, p: int) -> None:
        self.pending.discard(p)
        if p in self.dead:
            return
        self.min_wake = min(self.min_wake, self.wake[p])
        self._act(p, self.machines[p].start())
        lost = self.initial_lost.get(p, frozenset()) - self.reported[p]
        if lost and p not in self.finished:
            self.reported[p] |= lost
            self.detectors[p].mark_lost(lost)
            self._act(p, self.machines[p].peers_lost(frozenset(lost)))
        # what arrived while it was still training, in arrival order
        for sender, frames in self.inbox.pop(p, ()):
            self._deliver(sender, p, frames)

    def _detect(self) -> None:
        """Run the failure detectors up to the next event (or until one declares): probes
        are answered by live, reachable peers; declared peers reach every machine that
        cannot reach them either (the LOST notice), at one virtual moment."""
        while True:
            live = [p for p in self._live_unfinished() if p not in self.pending]
            if not live:
                return
            nxt = self.queue[0][0] if self.queue else float("inf")
            wake = min(self.wake[p] for p in live)
            self.min_wake = wake
            if wake > nxt:
                return
            self.now = max(self.now, wake)
            declared: set[int] = set()
            stalled: list[int] = []
            for p in live:
                if self.wake[p] > self.now:
                    continue
                det = self.detectors[p]
                expecting = set(self.machines[p].expecting()) - self.reported[p]
                v = det.poll(self.now, expecting)
                unreachable = self._unreachable(p)
                for q in v.probe:
                    if q not in unreachable:
                        det.heard(q, self.now)  # alive: it answers
                if v.probe:
                    v = det.poll(self.now, expecting)
                self.wake[p] = max(v.wake_at, self.now)
                if v.stalled:
                    stalled.append(p)
                declared |= set(v.declare)
            if stalled:
                late = self._stragglers(stalled)
                if late:
                    for p in stalled:  # only the stragglers are declared; the rest wait on
                        det = self.detectors[p]
                        det.lost -= set(self.machines[p].expecting()) - late - self.reported[p]
                    self._declare_stragglers(late)
                    return
                self._stall(stalled)
            if declared:
                for r in self._live_unfinished():
                    new = (declared & self._unreachable(r)) - self.reported[r]
                    if new:
                        self.detectors[r].mark_lost(new)
                        self._lose(r, frozenset(new))
                        self.wake[r] = self.now
                self.min_wake = self.now
                return

    def _stragglers(self, stalled: list[int]) -> set[int]:
        """Awaited peers that have not started their collective yet (still training)."""
        waiting = set().union(*(self.machines[p].expecting() for p in stalled))
        return {q for q in waiting if q in self.pending and q not in self.dead}

    def _declare_stragglers(self, late: set[int]) -> None:
        """The hard limit passed while waiting for stragglers: declare them gone, as real
        peers do, and cut them off for the rest of the run."""
        for q in sorted(late):
            self.dead.add(q)
            self.declared.add(q)
        gone = frozenset(late)
        for r in self._live_unfinished():
            if r in self.pending:
                continue
            new = gone - self.reported[r]
            if new:
                self.detectors[r].mark_lost(new)
                self._lose(r, frozenset(new))
                self.wake[r] = self.now
        self.min_wake = self.now

    def _stall(self, stalled: list[int]) -> None:
        """The detector's hard limit: the awaited peers all answer, or nobody is left to
        wait for, and nothing moves."""
        waiting = sorted(set().union(*(self.machines[p].expecting() for p in stalled)))
        gone = self.dead | self.absent | self.stopped
        if waiting and set(waiting) - gone - set().union(*(self._unreachable(p) for p in stalled)):
            why = "and no crash explains it"
        else:
            why = "and were told of every crash"
        raise PeerTimeout(
            f"peers {stalled} stalled at virtual time {self.now:.6g} s waiting for "
            f"{waiting}, {why}",
            tuple(waiting),
        )

    def _deliver(self, sender: int, to: int, frames: list, decode=wire.decode, max_el=0) -> None:
        if to in self.dead or to in self.stopped:
            return
        if to in self.finished:
            self.rejected.append((to, f"message from {sender} after peer {to} finished"))
            return
        t = self.now
        det = self.detectors[to]
        if sender >= 0:
            det.heard(sender, t)
        try:
            msg = decode(frames, max_elements=max_el or self.net.max_elements, session=self.session)
            actions = self.machines[to].receive(msg)
        except WireError as exc:
            self.rejected.append((to, str(exc)))
            return
        det.progress(t)
        self.wake[to] = t + self.first_ask
        self.min_wake = min(self.min_wake, self.wake[to])
        self._act(to, actions)
        self._tell_declared()

    def go(self) -> RunResult:
        later = []
        for p in sorted(self.machines):
            t = self.start_at.get(p, 0.0)
            if t > 0:
                later.append((t, p))
            else:
                self._start(p)
        for t, p in sorted(later):  # a start is an event on the clock, like a message
            self._push(t, _START, p, [])
        self._tell_declared()
        decode = wire.decode
        max_el = self.net.max_elements
        while True:
            while self.queue:
                t, _, sender, to, frames = heapq.heappop(self.queue)
                if sender in (_START, _OFFLINE) and (
                    to in self.dead or not self._live_unfinished()
                ):
                    continue  # nothing happens: the clock does not move for it
                self.now = t
                if sender == _START:  # a delayed start
                    self._start(to)
                elif sender == _OFFLINE:  # the peer goes offline
                    if to not in self.finished:
                        self.dead.add(to)
                        self.pending.discard(to)
                        self.inbox.pop(to, None)
                elif to in self.pending:  # still training: taken when it starts
                    self.inbox.setdefault(to, []).append((sender, frames))
                    if sender >= 0:
                        self.detectors[to].heard(sender, t)
                else:
                    self._deliver(sender, to, frames, decode, max_el)
                if self.queue and self.queue[0][0] < self.min_wake:
                    continue
                self._detect()
            if not self._live_unfinished():
                break
            self._detect()
            self._tell_declared()
        for p, det in self.detectors.items():
            if p not in self.dead and p in self.finished:
                det.close(self.finished_at[p])
        return RunResult(
            results=self.results,
            dead=frozenset(self.dead),
            bytes_sent=self.bytes,
            messages_sent=self.sends,
            virtual_time_s=self.now,
            wire_bytes_sent=self.wire_bytes,
            rejected=self.rejected,
            stopped=frozenset(self.stopped),
            finished_at=self.finished_at,
            declared=frozenset(self.declared),
        )
