"""All-reduce (sum) by a communication plan, as a sans-I/O state machine.

`PlannedAllReduce` runs one peer's `plan.Plan` (ring, bidirectional ring or recursive
halving/doubling; see `plan.py`) as a dataflow over units:

* Units. The buffer is cut at the plan's boundaries, and each piece into units of at most
  `segment_bytes` (near-equal sizes). Every member computes the same units.
* Messages. The range a step sends is packed into messages left to right: consecutive
  units go into one message while it stays within `segment_bytes`. So a tiny range is one
  message (one hop, one hand-off), and a large one is a train of messages that pipeline.
  Header fields: `step` = plan step, `segment` = message index within the step's range,
  `chunk` = the algorithm's code (`plan.CODES`), so a peer running another algorithm is
  rejected with a reason, not silently misread.
* Dataflow. A message is sent as soon as every unit in it has received what the plan says
  it needs (own data needs nothing), so steps overlap: in halving/doubling the first
  finished units start the all-gather while later ones are still being reduced.
* Buffers. A received payload that is writable belongs to the machine (see
  `events.Message`). When it is forwarded whole (its units are exactly one later message)
  the sum is made in the payload and that buffer is forwarded, and all-gather payloads are
  forwarded as received, so a ZeroMQ driver passes them on without a copy; the result is
  copied into `out` where this peer needs it later. Otherwise (and for a final sum sent
  on only once, where summing into `out` saves that copy) sums go into `out` and slices
  of it are sent. A slice of `out` that was sent is only overwritten by a later
  receive that is causally after the partner received it (sent units only come back as
  final values), so zero-copy sends are safe.

Integer dtypes wrap modulo 2^k (numpy array addition, no upcast). `source`, `data` and
`out` work as in `RingAllReduce`; `source` is called once per range this peer needs its
own contribution for (each element exactly once).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ringfl.collective.allreduce import Source, ring_positions
from ringfl.collective.base import (
    MachineBase,
    check_out,
    read_source,
    resolve_input,
    segment_elements,
    split,
    wire_dtype,
)
from ringfl.collective.events import Action, Kind, Message
from ringfl.collective.plan import CODES, PLANS, Plan
from ringfl.errors import WireError

# one received message: range, add or copy, own partial (first touch) or the one in
# `out`, whether `out` must hold the value afterwards, later sends it feeds (step,
# message, units), and which of those are exactly its units (forwarded by reference)
_Recv = tuple[
    int, int, bool, bool, bool, tuple[tuple[int, int, int], ...], frozenset[tuple[int, int]]
]


def units_of(boundaries: Sequence[int], per: int) -> list[int]:
    """Start offsets of the units (plus the end): each non-empty interval between
    consecutive boundaries cut into near-equal pieces of at most `per` elements."""
    starts: list[int] = []
    for a, b in zip(boundaries, boundaries[1:], strict=False):
        if b > a:
            starts.extend(x for x, _ in split(a, b, per))
    starts.append(boundaries[-1] if boundaries else 0)
    return starts


def pack(starts: Sequence[int], a: int, b: int, per: int) -> list[tuple[int, int]]:
    """Messages of range [a, b) as unit index ranges: consecutive units share a message
    while it stays within `per` elements. [a, b) must start and stop on unit starts."""
    ua = bisect.bisect_left(starts, a)
    ub = bisect.bisect_left(starts, b)
    if b <= a:
        return []
    if starts[ua] != a or ub >= len(starts) or starts[ub] != b:
        raise AssertionError(f"range [{a}, {b}) is not on unit boundaries")
    out = []
    i = ua
    while i < ub:
        j = i + 1
        while j < ub and starts[j + 1] - starts[i] <= per:
            j += 1
        out.append((i, j))
        i = j
    return out


@dataclass(frozen=True)
class Tables:
    """What a member needs to run its plan, computed once per (algorithm, position,
    members, length, units): who each step talks to, each message's range and role, and
    the initial counters (copied per run)."""

    plan: Plan
    units: int
    send_to: tuple[int, ...]  # per step; -1: no send
    recv_from: tuple[int, ...]  # per step; -1: no receive
    send_ranges: tuple[tuple[tuple[int, int], ...], ...]  # [step][message] → (start, stop)
    recv_info: tuple[tuple[_Recv, ...], ...]  # [step][message]
    own_sends: tuple[tuple[int, int], ...]  # (step, message) sent from own data at start
    unblocks: dict[tuple[int, int], tuple[tuple[int, int], ...]]
    missing: tuple[tuple[int, ...], ...]  # [step][message]: units still to receive
    blocked: tuple[tuple[int, ...], ...]  # [step][message]: earlier receives to apply first
    recv_counts: tuple[int, ...]  # messages to receive per step


@functools.lru_cache(maxsize=64)
def compile_plan(
    algorithm: str, position: int, ring: tuple[int, ...], length: int, per: int
) -> Tables:
    """Tables for one member (cached: a peer reruns the same all-reduce every round).
    Raises AssertionError if the plan breaks an invariant the machine relies on."""
    plan = PLANS[algorithm](position, ring, length)
    steps = plan.steps
    starts = units_of(plan.boundaries, per)
    units = len(starts) - 1
    send_groups: list[list[tuple[int, int]]] = []
    recv_groups: list[list[tuple[int, int]]] = []
    # touches[u]: (step, is_send, group, reduce) in step order
    touches: list[list[tuple[int, bool, int, bool]]] = [[] for _ in range(units)]
    for s, st in enumerate(steps):
        sg = pack(starts, st.send.start, st.send.stop, per) if st.send else []
        rg = pack(starts, st.recv.start, st.recv.stop, per) if st.recv else []
        send_groups.append(sg)
        recv_groups.append(rg)
        for g, (ua, ub) in enumerate(rg):
            for u in range(ua, ub):
                touches[u].append((s, False, g, st.reduce))
        for g, (ua, ub) in enumerate(sg):
            for u in range(ua, ub):
                if touches[u] and touches[u][-1][0] == s:
                    raise AssertionError(f"unit {u} sent and received at step {s}")
                touches[u].append((s, True, g, False))
    # per unit: index of its touch, to find what follows each receive
    where: dict[tuple[int, int], int] = {}
    own_uses = [0] * units
    for u, ts in enumerate(touches):
        for i, (s, is_send, _g, _r) in enumerate(ts):
            if not is_send:
                where[s, u] = i
        if ts and not any(not t[1] for t in ts):
            raise AssertionError(f"unit {u} is never received")
    recv_info: list[list[_Recv]] = []
    before: dict[tuple[int, int], set[tuple[int, int]]] = {
        (s, g): set() for s, groups in enumerate(recv_groups) for g in range(len(groups))
    }
    for s, groups in enumerate(recv_groups):
        infos = []
        for g, (ua, ub) in enumerate(groups):
            feeds: dict[tuple[int, int], int] = {}
            firsts, needs_out = set(), False
            for u in range(ua, ub):
                ts = touches[u]
                i = where[s, u]
                firsts.add(i == 0)
                earlier = [t for t in ts[:i] if not t[1]]
                if earlier:  # the unit's previous receive must be applied first
                    before[s, g].add((earlier[-1][0], earlier[-1][2]))
                if steps[s].reduce and any(t[1] for t in ts[:i]):
                    raise AssertionError(f"unit {u} comes back to be added after a send")
                j = i + 1
                while j < len(ts) and ts[j][1]:
                    key = (ts[j][0], ts[j][2])
                    feeds[key] = feeds.get(key, 0) + 1
                    j += 1
                # `out` must hold the value if it is final, or a later receive adds to it
                if j == len(ts) or ts[j][3]:
                    needs_out = True
            if len(firsts) != 1:
                raise AssertionError(f"step {s} message {g} mixes first and later touches")
            first = firsts.pop()
            if first and steps[s].reduce:
                for u in range(ua, ub):
                    own_uses[u] += 1
            whole = frozenset(k for k in feeds if send_groups[k[0]][k[1]] == (ua, ub))
            if len(whole) != len(feeds):
                needs_out = True  # some later message is sent from `out`
            a, b = starts[ua], starts[ub]
            infos.append(
                (a, b, steps[s].reduce, first, needs_out, tuple(
                    (s2, g2, c) for (s2, g2), c in sorted(feeds.items())
                ), whole)
            )  # fmt: skip
        recv_info.append(infos)
    missing: list[list[int]] = []
    own_sends: list[tuple[int, int]] = []
    for s, groups in enumerate(send_groups):
        row = []
        for g, (ua, ub) in enumerate(groups):
            waiting = 0
            for u in range(ua, ub):
                if any(not t[1] and t[0] < s for t in touches[u]):
                    waiting += 1
            if 0 < waiting < ub - ua:
                raise AssertionError(f"step {s} message {g} mixes own and received units")
            if waiting == 0:
                own_sends.append((s, g))
                for u in range(ua, ub):
                    own_uses[u] += 1
            row.append(waiting)
        missing.append(row)
    if len(ring) > 1 and any(c != 1 for c in own_uses):
        raise AssertionError("plan uses a contribution other than exactly once")
    blocked = [[0] * len(g) for g in recv_groups]
    unblocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for key, prev in before.items():
        blocked[key[0]][key[1]] = len(prev)
        for k in prev:
            unblocks.setdefault(k, []).append(key)
    return Tables(
        plan=plan,
        units=units,
        send_to=tuple(st.send.peer if st.send else -1 for st in steps),
        recv_from=tuple(st.recv.peer if st.recv else -1 for st in steps),
        send_ranges=tuple(tuple((starts[ua], starts[ub]) for ua, ub in g) for g in send_groups),
        recv_info=tuple(tuple(i) for i in recv_info),
        own_sends=tuple(own_sends),
        unblocks={k: tuple(v) for k, v in unblocks.items()},
        missing=tuple(tuple(r) for r in missing),
        blocked=tuple(tuple(r) for r in blocked),
        recv_counts=tuple(len(g) for g in recv_groups),
    )


class PlannedAllReduce(MachineBase):
    """Sum of every member's 1-D buffer by the named `algorithm` ("ring",
    "bidirectional-ring" or "halving-doubling"), delivered as `Done(result)`.

    Arguments as for `RingAllReduce`: `data`, or `source(start, stop)` with `length` and
    `dtype`; optional `out` (preallocated, or `data` itself for in place). All members
    must use the same algorithm, length, dtype and `segment_bytes`. `bytes_sent` counts
    payload bytes: ≈ 2(N−1)/N·M·itemsize, except halving/doubling for N not a power of
    two (see `plan.halving_doubling_plan`).
    """

    kind = Kind.ALLREDUCE

    def __init__(
        self,
        peer: int,
        ring: Sequence[int],
        data: Any = None,
        *,
        algorithm: str = "halving-doubling",
        length: int | None = None,
        dtype: Any = None,
        source: Source | None = None,
        out: np.ndarray | None = None,
        session: int = 0,
        round: int = 0,
        segment_bytes: int = 1 << 20,
    ) -> None:
        self.ring, self.position = ring_positions(peer, ring)
        what = f"all-reduce of peer {peer}"
        if algorithm not in PLANS:
            raise ValueError(f"{what}: algorithm {algorithm!r} is not one of {', '.join(PLANS)}")
        self._data, length, dtype = resolve_input(what, data, length, dtype, source)
        super().__init__(peer, session=session, round=round, dtype=wire_dtype(dtype, what))
        self.length = length
        self._source = source
        self.n = len(self.ring)
        self.out = check_out(what, out, length, self.dtype)
        self.algorithm = algorithm
        self.code = CODES[algorithm]
        per = segment_elements(segment_bytes, self.dtype)
        t = compile_plan(algorithm, self.position, tuple(self.ring), length, per)
        self.plan = t.plan
        self.units = t.units
        self.steps = len(t.plan.steps)
        self._send_to = t.send_to
        self._recv_from = t.recv_from
        self._send_ranges = t.send_ranges
        self._recv_info = t.recv_info
        self._own_sends = t.own_sends
        self._unblocks = t.unblocks
        self._missing = [list(r) for r in t.missing]
        self._blocked = [list(r) for r in t.blocked]
        self._got = [bytearray(c) for c in t.recv_counts]
        self._remaining = self.messages_expected = sum(t.recv_counts)
        # a message whose units still wait for an earlier receive is held until that one
        # is applied: every unit's partial sum is then made in plan order, so the float
        # result is the same whatever order messages arrive in
        self._early: dict[tuple[int, int], np.ndarray] = {}

    # -- helpers ----------------------------------------------------------------------

    def _own(self, start: int, stop: int) -> np.ndarray:
        if self._source is None:
            assert self._data is not None
            return self._data[start:stop]
        return read_source(self._source, self.peer, self.dtype, start, stop)

    def _send_group(self, s: int, g: int, payload: np.ndarray) -> Action:
        return self._send(self._send_to[s], s, self.code, g, payload)

    # -- Machine protocol ---------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.n == 1:
            np.copyto(self.out, self._own(0, self.length))
            return [self._finish(self.out)]
        actions: list[Action] = []
        for s, g in self._own_sends:
            a, b = self._send_ranges[s][g]
            actions.append(self._send_group(s, g, self._own(a, b)))
        if self._remaining == 0:
            actions.append(self._finish(self.out))
        return actions

    def receive(self, message: Message) -> list[Action]:
        h = self._check_common(message)
        s = h.step
        name = f"{self.algorithm} all-reduce of peer {self.peer}"
        if h.chunk != self.code:
            raise WireError(
                f"{name}: message of another all-reduce (chunk {h.chunk:#x}, "
                f"expected {self.code:#x}) from peer {h.sender}"
            )
        if s >= self.steps or self._recv_from[s] < 0:
            raise WireError(f"{name}: nothing to receive at step {s}")
        if h.sender != self._recv_from[s]:
            raise WireError(
                f"{name}: step {s} from peer {h.sender}, expected peer {self._recv_from[s]}"
            )
        infos = self._recv_info[s]
        g = h.segment
        if g >= len(infos):
            raise WireError(f"{name}: segment {g} of step {s} (has {len(infos)})")
        a, b = infos[g][0], infos[g][1]
        if h.length != b - a:
            raise WireError(
                f"{name}: segment {g} of step {s} has {h.length} elements, expected {b - a}"
            )
        seen = self._got[s]
        if seen[g]:
            raise WireError(f"{name}: duplicate step {s} segment {g}")
        seen[g] = 1
        if self._blocked[s][g]:
            self._early[s, g] = message.payload
            return []
        actions: list[Action] = []
        self._apply(s, g, message.payload, actions)
        if self._remaining == 0:
            actions.append(self._finish(self.out))
        return actions

    def _apply(self, s: int, g: int, payload: np.ndarray, actions: list[Action]) -> None:
        """Add or copy one received message, send what it completes, then apply the
        held messages it unblocks."""
        a, b, reduce, first, needs_out, feeds, whole = self._recv_info[s][g]
        out = self.out
        value: np.ndarray | None = payload
        if reduce:
            partial = self._own(a, b) if first else out[a:b]
            # sum in the received buffer when it is forwarded whole: no tracked send of
            # `out` (pyzmq's collector thread) — unless `out` needs the value anyway and
            # it goes out only once, where summing into `out` saves the copy
            if whole and payload.flags.writeable and (not needs_out or len(feeds) > 1):
                np.add(payload, partial, out=payload)
                if needs_out:
                    np.copyto(out[a:b], payload)
            else:
                np.add(payload, partial, out=out[a:b])
                value = None
        else:
            np.copyto(out[a:b], payload)
        self._remaining -= 1
        missing = self._missing
        for s2, g2, count in feeds:
            row = missing[s2]
            left = row[g2] - count
            row[g2] = left
            if left == 0:
                if value is not None and (s2, g2) in whole:
                    actions.append(self._send_group(s2, g2, value))
                else:
                    a2, b2 = self._send_ranges[s2][g2]
                    actions.append(self._send_group(s2, g2, out[a2:b2]))
        for s3, g3 in self._unblocks.get((s, g), ()):
            row = self._blocked[s3]
            row[g3] -= 1
            if row[g3] == 0 and (s3, g3) in self._early:
                self._apply(s3, g3, self._early.pop((s3, g3)), actions)

    def expecting(self) -> frozenset[int]:
        if self._done or self.n == 1:
            return frozenset()
        return frozenset(self._recv_from[s] for s, seen in enumerate(self._got) if seen.count(0))

    def _needs(self) -> set[int]:
        return set(self.ring) - {self.peer}
