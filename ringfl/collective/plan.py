"""Communication plans of all-reduce algorithms: who sends which element range to whom.

A plan is one peer's list of steps. Step s has at most one send (partner, element range)
and at most one receive (partner, element range, added or copied). Step numbers are global:
when peer A's step s sends range R to B, B's step s receives R from A. A peer idle at a
step has an empty `Step()` there. `PlannedAllReduce` (see `planned.py`) runs a plan as a
dataflow: a range is sent as soon as every receive it depends on has arrived, so the
steps of a plan overlap wherever the data allows.

Every range starts and stops on `Plan.boundaries`, the same offsets for all members, so
every member cuts ranges into the same units and messages.

Algorithms (N members in ring order, M elements, position r):

* `ring_plan` — the classic ring on [lo, hi): N chunks, reduce-scatter then all-gather,
  2(N−1) steps, each peer sends 2(N−1)/N of the range.
* `bidirectional_ring_plan` — [0, M/2) goes round the ring one way and [M/2, M) the other
  way (steps interleaved: even steps clockwise, odd ones anticlockwise). The same bytes and
  hops as the ring, but each peer sends to and receives from both neighbours at once, so
  each direction carries half the buffer.
* `halving_doubling_plan` — recursive halving (reduce-scatter) then recursive doubling
  (all-gather) over p = 2^⌊log2 N⌋ "core" members: 2·log2 p steps instead of 2(N−1), each
  core peer sends 2(p−1)/p·M, the bandwidth bound when N is a power of two. When it is
  not, each of the N − p members at positions p .. N−1 ("extras") first sends its whole
  buffer to the core member at its position − p, which adds it (step 0, "fold"), and gets
  the whole result back from it at the end (last step, "unfold"). So for N not a power of
  two the extras send M (not 2(N−1)/N·M) and their core partners send M more than the
  bound, and the fold and unfold add two full-buffer hops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: algorithm codes; carried in the `chunk` field of every message of a planned all-reduce,
#: so a peer that runs another algorithm (a misconfiguration) is named in the rejection
CODES: dict[str, int] = {
    "ring": 0xA1100001,
    "bidirectional-ring": 0xA1100002,
    "halving-doubling": 0xA1100003,
}


@dataclass(frozen=True, slots=True)
class Transfer:
    """Elements [start, stop) sent to (or received from) `peer`."""

    peer: int
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class Step:
    """One step of one peer: an optional send, an optional receive (`reduce`: add the
    received values to this peer's partial sum; otherwise they are final: copy them)."""

    send: Transfer | None = None
    recv: Transfer | None = None
    reduce: bool = True


@dataclass(frozen=True, slots=True)
class Plan:
    """One peer's steps; `boundaries` are the sorted offsets (0 and M included) that every
    range of every member's plan starts and stops at."""

    algorithm: str
    steps: tuple[Step, ...]
    boundaries: tuple[int, ...]


def chunk_bounds(lo: int, hi: int, n: int) -> list[int]:
    """n + 1 offsets cutting [lo, hi) into n near-equal chunks (sizes differ by ≤ 1)."""
    size = hi - lo
    return [lo + c * size // n for c in range(n + 1)]


def ring_steps(position: int, members: Sequence[int], lo: int, hi: int) -> list[Step]:
    """The 2(N−1) steps of a ring all-reduce of [lo, hi) for the member at `position`:
    at reduce-scatter step t it sends chunk (r−t) to its successor and adds chunk (r−t−1)
    from its predecessor; at all-gather step t it sends chunk (r+1−t), copies chunk (r−t)."""
    n = len(members)
    r = position
    succ, pred = members[(r + 1) % n], members[(r - 1) % n]
    b = chunk_bounds(lo, hi, n)
    steps = []
    for t in range(n - 1):
        c_out, c_in = (r - t) % n, (r - t - 1) % n
        steps.append(
            Step(Transfer(succ, b[c_out], b[c_out + 1]), Transfer(pred, b[c_in], b[c_in + 1]))
        )
    for t in range(n - 1):
        c_out, c_in = (r + 1 - t) % n, (r - t) % n
        steps.append(
            Step(
                Transfer(succ, b[c_out], b[c_out + 1]),
                Transfer(pred, b[c_in], b[c_in + 1]),
                reduce=False,
            )
        )
    return steps


def ring_plan(position: int, members: Sequence[int], length: int) -> Plan:
    """The classic one-way ring over the whole buffer."""
    n = len(members)
    steps = ring_steps(position, members, 0, length) if n > 1 else []
    return Plan("ring", tuple(steps), tuple(sorted(set(chunk_bounds(0, length, n)))))


def bidirectional_ring_plan(position: int, members: Sequence[int], length: int) -> Plan:
    """[0, M/2) clockwise, [M/2, M) anticlockwise; steps interleaved (see module doc)."""
    n = len(members)
    half = length // 2
    if n == 1:
        return Plan("bidirectional-ring", (), (0, half, length))
    cw = ring_steps(position, members, 0, half)
    rev = list(reversed(members))
    ccw = ring_steps(n - 1 - position, rev, half, length)
    steps = [s for pair in zip(cw, ccw, strict=True) for s in pair]
    bounds = set(chunk_bounds(0, half, n)) | set(chunk_bounds(half, length, n))
    return Plan("bidirectional-ring", tuple(steps), tuple(sorted(bounds)))


def halving_doubling_plan(position: int, members: Sequence[int], length: int) -> Plan:
    """Recursive halving then doubling, with a fold for N not a power of two (see module
    doc). Steps: 0 fold, 1 .. L halving, L+1 .. 2L doubling, 2L+1 unfold (L = log2 p)."""
    n = len(members)
    p = 1 << (n.bit_length() - 1)  # largest power of two ≤ n
    levels = p.bit_length() - 1
    extras = n - p
    blocks = chunk_bounds(0, length, p)
    total = 2 * levels + 2
    steps = [Step() for _ in range(total)]
    r = position
    if r >= p:  # an extra: hand the buffer to the core partner, get the sum back
        core = members[r - p]
        steps[0] = Step(send=Transfer(core, 0, length))
        steps[total - 1] = Step(recv=Transfer(core, 0, length), reduce=False)
        return Plan("halving-doubling", tuple(steps), tuple(sorted(set(blocks))))
    if r < extras:
        extra = members[r + p]
        steps[0] = Step(recv=Transfer(extra, 0, length))
        steps[total - 1] = Step(send=Transfer(extra, 0, length))
    # halving: at level k the distance is d = p / 2^(k+1); the region of 2d blocks around
    # block r is split in halves, r keeps the half its bit d points to
    for k in range(levels):
        d = p >> (k + 1)
        partner = r ^ d
        lo = r & ~(2 * d - 1)
        lower, upper = (blocks[lo], blocks[lo + d]), (blocks[lo + d], blocks[lo + 2 * d])
        keep, give = (upper, lower) if r & d else (lower, upper)
        steps[1 + k] = Step(
            Transfer(members[partner], *give), Transfer(members[partner], *keep), reduce=True
        )
    # doubling: at level j the distance is d = 2^j; r sends its 2^j finished blocks and
    # copies the partner's
    for j in range(levels):
        d = 1 << j
        partner = r ^ d
        mine, theirs = r & ~(d - 1), partner & ~(d - 1)
        steps[1 + levels + j] = Step(
            Transfer(members[partner], blocks[mine], blocks[mine + d]),
            Transfer(members[partner], blocks[theirs], blocks[theirs + d]),
            reduce=False,
        )
    return Plan("halving-doubling", tuple(steps), tuple(sorted(set(blocks))))


PLANS = {
    "ring": ring_plan,
    "bidirectional-ring": bidirectional_ring_plan,
    "halving-doubling": halving_doubling_plan,
}
