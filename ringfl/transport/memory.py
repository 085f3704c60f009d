"""A deterministic in-memory network with a virtual clock, for simulation and tests.

`MemoryNetwork.run` drives N protocol machines in one thread. Events are ordered by
(virtual time, sequence number), so the same machines and faults give the same run, bit
for bit. Every message goes through `wire.encode` → bytes → `wire.decode`, exactly as over
ZeroMQ, so the wire format is exercised and captured frames are the real bytes. Received
payloads are private writable buffers, as over ZeroMQ, so machines may reuse them.

Timing model: each peer has one outgoing link (its NIC) of `bandwidth_Bps`; messages leave
it one after another (a message starts when the previous one from that peer has finished),
and arrive `latency_s` after their last byte left. Hence links are FIFO. Computation takes
no virtual time.

Faults: `Crash(peer, after_sends=k)` — the peer's k-th send still goes out, then it is dead:
its later sends and every message to it vanish (k = 0: dead from the start).
`Suspect(peer, after_sends=k)` — a wrong loss declaration: right after the peer's k-th send
every other live machine is told at once (not at a quiet moment) that it was lost, and the
network cuts it off as if it had crashed; its machine keeps what it had received (what a
live, excluded peer knows). `Inject(...)` delivers raw frames, as if from the network, at a
virtual time.

Deadlines: when no event is pending and some live machine is unfinished, the clock
advances by `deadline_s` and every live unfinished machine gets
`peers_lost(crashed peers not yet reported to it)` — a perfect failure detector after the
deadline (real drivers can only suspect). A machine's `PeerTimeout` (the default reaction)
propagates out of `run`. If no crashed peer explains the stall, `run` raises `PeerTimeout`
naming the peers the stalled machines are waiting for; so it does when a machine, told of
every crash, still neither finishes nor sends.

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
from ringfl.errors import ConfigError, PeerTimeout, WireError

#: capture callback: (sender, to, frames as bytes)
Capture = Callable[[int, int, list[bytes]], None]


@dataclass(frozen=True)
class Crash:
    """`peer` dies right after its `after_sends`-th send (0: before sending anything)."""

    peer: int
    after_sends: int = 0


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


class MemoryNetwork:
    """In-memory network: `latency_s` per message, `bandwidth_Bps` per sender, and
    `deadline_s` of virtual time before silent peers are declared lost."""

    def __init__(
        self,
        latency_s: float = 50e-6,
        bandwidth_Bps: float = 1e9,
        deadline_s: float = 1.0,
        *,
        max_elements: int = 1 << 28,
    ) -> None:
        if latency_s < 0 or bandwidth_Bps <= 0 or deadline_s <= 0:
            raise ConfigError("MemoryNetwork: latency ≥ 0, bandwidth > 0 and deadline > 0")
        self.latency_s = latency_s
        self.bandwidth_Bps = bandwidth_Bps
        self.deadline_s = deadline_s
        self.max_elements = max_elements

    def run(
        self,
        machines: Mapping[int, Machine],
        faults: Iterable[Crash | Suspect | Inject] = (),
        *,
        capture: Capture | list | None = None,
        session: int | None = None,
    ) -> RunResult:
        """Run every machine to completion (or death) and collect the results.

        `capture` gets (sender, to, frames) for every message put on the wire; a list is
        appended to. `session`, if given, is checked by `wire.decode`.
        """
        return _Run(self, dict(machines), list(faults), capture, session).go()


class _Run:
    def __init__(
        self,
        net: MemoryNetwork,
        machines: dict[int, Machine],
        faults: list[Crash | Suspect | Inject],
        capture: Capture | list | None,
        session: int | None,
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
        self.queue: list[tuple[float, int, int, int, list]] = []
        self.seq = 0
        self.now = 0.0
        for f in faults:
            if f.__class__ is Crash or f.__class__ is Suspect:
                if f.peer not in machines:
                    raise ConfigError(f"fault names peer {f.peer}, which is not in the network")
                self.crash_after[f.peer] = f.after_sends
                if f.__class__ is Suspect:
                    self.suspected.add(f.peer)
            elif f.__class__ is Inject:
                if f.to not in machines:
                    raise ConfigError(f"injection to peer {f.to}, which is not in the network")
                self._push(f.at_s, f.sender, f.to, list(f.frames))
            else:
                raise ConfigError(f"unknown fault {f!r}")
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
            else:
                raise TypeError(f"peer {peer} returned {a!r}, not Send/Done")

    def _send(self, peer: int, a: Send) -> None:
        if a.to not in self.machines:
            raise ConfigError(f"peer {peer} sends to {a.to}, which is not in the network")
        head, payload = wire.encode(a.message)
        # a private, writable copy: like a buffer a real transport hands over
        body = bytearray(memoryview(payload).cast("B")) if payload.nbytes else bytearray()
        frames = [head, body]
        size = len(head) + len(body)
        self.sends[peer] += 1
        self.bytes[peer] += len(body)
        self.wire_bytes[peer] += size
        start = max(self.now, self.nic_free[peer])
        end = start + size / self.net.bandwidth_Bps
        self.nic_free[peer] = end
        if self.capture is not None:
            self.capture(peer, a.to, [head, bytes(body)])
        self._push(end + self.net.latency_s, peer, a.to, frames)
        limit = self.crash_after.get(peer)
        if limit is not None and self.sends[peer] >= limit and peer not in self.dead:
            self.dead.add(peer)
            if peer in self.suspected:
                self.declare.append(peer)

    def _tell_declared(self) -> None:
        """Tell every live machine about wrong declarations made since the last call."""
        while self.declare:
            gone = self.declare.pop(0)
            for p in self._live_unfinished():
                if gone not in self.reported[p]:
                    self.reported[p].add(gone)
                    self._act(p, self.machines[p].peers_lost(frozenset({gone})))

    def _live_unfinished(self) -> list[int]:
        return [p for p in sorted(self.machines) if p not in self.dead and p not in self.finished]

    def go(self) -> RunResult:
        for p in sorted(self.machines):
            if p not in self.dead:
                self._act(p, self.machines[p].start())
        self._tell_declared()
        decode = wire.decode
        max_el = self.net.max_elements
        while True:
            while self.queue:
                t, _, sender, to, frames = heapq.heappop(self.queue)
                self.now = t
                if to in self.dead:
                    continue
                if to in self.finished:
                    self.rejected.append((to, f"message from {sender} after peer {to} finished"))
                    continue
                try:
                    msg = decode(frames, max_elements=max_el, session=self.session)
                    actions = self.machines[to].receive(msg)
                except WireError as exc:
                    self.rejected.append((to, str(exc)))
                    continue
                self._act(to, actions)
                self._tell_declared()
            stalled = self._live_unfinished()
            if not stalled:
                break
            self.now += self.net.deadline_s
            lost_any = False
            for p in stalled:
                if p in self.dead or p in self.finished:
                    continue
                new = self.dead - self.reported[p]
                if not new:
                    continue
                lost_any = True
                self.reported[p] |= new
                self._act(p, self.machines[p].peers_lost(frozenset(new)))
            self._tell_declared()
            if not lost_any and not self.queue:
                waiting = sorted(set().union(*(self.machines[p].expecting() for p in stalled)))
                why = (
                    "and were told of every crash"
                    if self.dead and set(waiting) <= self.dead
                    else "and no crash explains it"
                )
                raise PeerTimeout(
                    f"peers {stalled} stalled at virtual time {self.now:.6g} s waiting for "
                    f"{waiting}, {why}",
                    tuple(waiting),
                )
        return RunResult(
            results=self.results,
            dead=frozenset(self.dead),
            bytes_sent=self.bytes,
            messages_sent=self.sends,
            virtual_time_s=self.now,
            wire_bytes_sent=self.wire_bytes,
            rejected=self.rejected,
        )
