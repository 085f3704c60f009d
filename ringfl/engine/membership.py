"""Round membership (pure; docs/peers.md has the full design): the same code for
simulated and real peers.

Every ring round r has a participant set members(r), listed in the topology's ring order
with the gaps skipped. All live peers agree on it because it is computed only from values
they all share bit for bit:

    members(r+1) = contributors(r) ∪ admitted(r)        (in ring order)

where contributors(r) are the peers whose inputs the round-r sum contains (the secure
all-reduce commits to them; every finisher gets the same list) and admitted(r) are the
peers with a join request in the round-r sum: each peer appends one flag per topology
peer to its payload (1 = "peer j said hello to me and is not a member"), so the summed
flags are the same on every finisher. Membership therefore changes only at round
boundaries. A member known to be gone at the start of a round is reported to the round's
collective at once (`peers_lost`), which re-forms the ring without it.

Payload of peer i in a ring round (float32; float64 for statistics workloads): [the
algorithm's contribution, flags (N)].

Majority rule: a peer keeps training only while the members it still reaches (members of
the current round not known to be gone) are a strict majority of the topology's N; in a
partition at most one side can satisfy this, so the ring never splits into two.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def ring_members(order: tuple[int, ...], present: Collection[int]) -> tuple[int, ...]:
    """The peers of `present`, in ring `order` (the gaps of absent peers skipped). When
    every peer is present this is `order` itself: in a simulation of N parties their
    members are one shared tuple, not N copies of N peers."""
    if present is order:  # every party of a simulation begins with the shared order
        return order
    keep = set(present)
    if len(keep) == len(order) and keep.issuperset(order):
        return order
    return tuple(p for p in order if p in keep)


def has_majority(live: int, n_peers: int) -> bool:
    """Strict majority of the topology: live > N/2."""
    return 2 * int(live) > int(n_peers)


def with_flags(
    contribution: np.ndarray, flags: Iterable[int], candidates: Sequence[int]
) -> np.ndarray:
    """[contribution, flags] as one vector (float32, or float64 for a float64
    contribution), with one flag per candidate — a peer of the ring that is not a member
    of the round (`Membership.candidates`, the same on every member): 1.0 when this peer
    asks for that candidate to be admitted in the next round. Only non-members are ever
    flagged, so the usual round (everyone a member) carries no flags at all: N flags per
    payload made a round O(N²) floats at 10,000 parties."""
    m = contribution.shape[0]
    out = np.zeros(m + len(candidates), dtype=np.result_type(contribution.dtype, np.float32))
    out[:m] = contribution
    flags = list(flags)
    if flags:
        at = {p: i for i, p in enumerate(candidates)}
        for j in flags:
            if j not in at:
                raise ValueError(f"peer {j} is a member or not in the ring: it cannot be flagged")
            out[m + at[j]] = 1.0
    return out


def split_flags(result: np.ndarray, candidates: Sequence[int]) -> tuple[np.ndarray, frozenset[int]]:
    """(summed contribution, admitted peers) from a summed `with_flags` vector."""
    k = len(candidates)
    if result.ndim != 1 or result.shape[0] < k:
        raise ValueError(f"result has shape {result.shape}, expected at least {k} flags")
    m = result.shape[0] - k
    admitted = frozenset(int(candidates[int(i)]) for i in np.flatnonzero(result[m:] > 0.5))
    return result[:m], admitted


def next_members(
    order: tuple[int, ...], contributors: Collection[int], admitted: Collection[int]
) -> tuple[int, ...]:
    """members(r+1) = contributors(r) ∪ admitted(r), in ring order."""
    return ring_members(order, set(contributors) | set(admitted))


def live_weights(row: Mapping[int, float], peer: int, gone: Collection[int]) -> dict[int, float]:
    """A gossip row without the gone neighbours: their weight moves to the peer itself,
    so the row still sums to one (and stays symmetric when both ends drop the edge)."""
    out = {int(j): float(w) for j, w in row.items() if int(j) not in gone}
    moved = sum(float(w) for j, w in row.items() if int(j) in gone and int(j) != peer)
    out[int(peer)] = out.get(int(peer), 0.0) + moved
    return out


@dataclass
class Membership:
    """Who takes part in which round, as one peer sees it (ring modes). Fed with what the
    peer learns (losses, join requests, committed sums); decides the flags it contributes,
    the members of the next round, whom it hands the start state to, and whether it may go
    on (majority rule). `not_before`: the earliest round a restarted peer may be admitted
    in (a fault schedule pins it, so that a replay admits it in the same round)."""

    peer: int
    n_peers: int
    order: tuple[int, ...]  # ring order of every peer (shared, never changed)
    round: int = 0
    members: tuple[int, ...] = ()
    gone: set[int] = field(default_factory=set)
    notices: dict[int, set[int]] = field(default_factory=dict)
    join_requests: dict[int, int] = field(default_factory=dict)  # peer -> incarnation
    admitted_round: dict[int, int] = field(default_factory=dict)
    not_before: dict[int, int] = field(default_factory=dict)

    def begin(self, round_index: int, members: Sequence[int]) -> None:
        """Start (or rejoin) at `round_index` with these members."""
        self.round = int(round_index)
        self.members = ring_members(self.order, members)
        self.gone.clear()
        self.notices.clear()

    def candidates(self) -> tuple[int, ...]:
        """The peers of the ring that are not members of the round (ring order): the
        only ones a payload can flag for admission. Empty in the usual round."""
        if len(self.members) == len(self.order):
            return ()
        present = set(self.members)
        return tuple(p for p in self.order if p not in present)

    def live(self) -> list[int]:
        if not self.gone:  # the usual round: nobody lost, no pass over the members
            return list(self.members)
        return [p for p in self.members if p not in self.gone]

    def majority_problem(self) -> str | None:
        """Why this peer must stop (it reaches only a minority), or None."""
        if not self.gone and has_majority(len(self.members), self.n_peers):
            return None  # the usual round: no list of N members per party
        live = self.live()
        if has_majority(len(live), self.n_peers):
            return None
        return (
            f"only {len(live)} of {self.n_peers} peers reachable in round {self.round} "
            f"({', '.join(map(str, live))}); a peer keeps training only while it reaches a "
            f"strict majority (> {self.n_peers // 2}), so this minority stops"
        )

    def lose(self, peers: Collection[int], round_index: int) -> set[int]:
        """Record that `peers` are gone as of `round_index`; returns the newly gone ones."""
        new = set(peers) - self.gone
        self.notices.setdefault(round_index, set()).update(peers)
        self.gone |= set(peers)
        return new

    def fresh_notice(self, peers: Collection[int], round_index: int) -> set[int]:
        """The peers of a LOST notice for `round_index` that count (a peer admitted after
        that round is not lost by an old notice)."""
        return {p for p in peers if self.admitted_round.get(p, -1) <= round_index}

    def lost_in(self, round_index: int) -> set[int]:
        """Members known gone when `round_index` starts (reported to its collective)."""
        lost = self.gone | self.notices.get(round_index, set())
        return lost & set(self.members) if lost else set()

    def request_join(self, peer: int, incarnation: int) -> bool:
        """`peer` (a new incarnation) asks to join; True when it was a live member, which
        must now be counted gone (it restarted)."""
        restarted = peer in self.members and peer not in self.gone
        self.join_requests[peer] = incarnation
        return restarted

    def flags(self, round_index: int) -> list[int]:
        """The join flags of this peer's round payload."""
        return sorted(
            j
            for j in self.join_requests
            if j not in self.members and self.not_before.get(j, 0) <= round_index + 1
        )

    def awaited_joiners(self, round_index: int) -> list[int]:
        """Peers the fault schedule admits in `round_index + 1` whose request has not come."""
        return sorted(
            j
            for j, r in self.not_before.items()
            if r == round_index + 1 and j not in self.join_requests and j not in self.members
        )

    def commit(
        self, round_index: int, contributors: Sequence[int], admitted: Collection[int]
    ) -> tuple[list[int], list[int]]:
        """The sum of `round_index` is in: returns (dropped, admitted) and moves on to the
        next round's members."""
        if not admitted and (contributors is self.members or tuple(contributors) == self.members):
            # the usual round: every member contributed, nobody joins (bulk rounds hand
            # every party the members tuple itself: no N-long comparison per party)
            self.round = round_index + 1
            return [], []
        keep = set(contributors)  # a set: N members against N contributors is O(N), not O(N²)
        dropped = [p for p in self.members if p not in keep]
        self.gone |= set(dropped)
        for j in admitted:
            self.gone.discard(j)
            self.join_requests.pop(j, None)
            self.admitted_round[j] = round_index + 1
        self.members = next_members(self.order, contributors, admitted)
        self.round = round_index + 1
        return dropped, sorted(admitted)

    def predecessor(self, p: int) -> int:
        ring = self.members
        return ring[(ring.index(p) - 1) % len(ring)]

    def to_serve(self, round_index: int) -> list[int]:
        """Members admitted for `round_index` to whom this peer (their ring predecessor)
        hands the round's start state."""
        if round_index not in self.admitted_round.values():
            return []  # nobody joins this round (the usual case): no pass over the members
        return [
            p
            for p in self.members
            if self.admitted_round.get(p) == round_index and self.predecessor(p) == self.peer
        ]


__all__ = [
    "Membership",
    "has_majority",
    "live_weights",
    "next_members",
    "ring_members",
    "split_flags",
    "with_flags",
]
