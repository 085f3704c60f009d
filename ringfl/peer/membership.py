"""Round membership of real peers (pure functions; docs/peers.md has the full design).

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

Payload of peer i in a ring round (float32): [w_i · delta_i (M values), w_i, flags (N)],
where w_i = n_i / Σ_j n_j is its share of the training samples of the whole topology
(so every entry stays within the secure codec's clip of 1). A peer whose delta is not
finite contributes zeros and w_i = 0 for that round (its flags still count).

Majority rule: a peer keeps training only while the members it still reaches (members of
the current round not known to be gone) are a strict majority of the topology's N; in a
partition at most one side can satisfy this, so the ring never splits into two.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np


def ring_members(order: Sequence[int], present: Collection[int]) -> list[int]:
    """The peers of `present`, in ring `order` (the gaps of absent peers skipped)."""
    keep = set(present)
    return [p for p in order if p in keep]


def has_majority(live: int, n_peers: int) -> bool:
    """Strict majority of the topology: live > N/2."""
    return 2 * int(live) > int(n_peers)


def ring_payload(
    delta: np.ndarray, weight: float, flags: Iterable[int], n_peers: int
) -> tuple[np.ndarray, bool]:
    """[weight·delta, weight, flags] as float32, and whether delta was finite (when it is
    not, the delta part and the weight are zero)."""
    m = delta.shape[0]
    out = np.zeros(m + 1 + n_peers, dtype=np.float32)
    finite = bool(np.all(np.isfinite(delta)))
    if finite:
        np.multiply(delta, np.float32(weight), out=out[:m])
        out[m] = weight
    for j in flags:
        out[m + 1 + int(j)] = 1.0
    return out, finite


def split_result(
    result: np.ndarray, model_elements: int, n_peers: int
) -> tuple[np.ndarray, float, frozenset[int]]:
    """(Σ w·delta, Σ w, admitted peers) from a summed ring payload."""
    m = model_elements
    if result.shape != (m + 1 + n_peers,):
        raise ValueError(f"result has shape {result.shape}, expected ({m + 1 + n_peers},)")
    flags = result[m + 1 :]
    admitted = frozenset(int(j) for j in np.flatnonzero(flags > 0.5))
    return result[:m], float(result[m]), admitted


def apply_mean(start: np.ndarray, weighted_sum: np.ndarray, total_weight: float) -> np.ndarray:
    """start + Σ w·delta / Σ w (float32; start unchanged when no weight arrived). The same
    inputs give the same bits on every peer."""
    if not total_weight > 0:
        return start.copy()
    mean = (weighted_sum / np.float32(total_weight)).astype(np.float32, copy=False)
    return (start + mean).astype(np.float32, copy=False)


def next_members(
    order: Sequence[int], contributors: Collection[int], admitted: Collection[int]
) -> list[int]:
    """members(r+1) = contributors(r) ∪ admitted(r), in ring order."""
    return ring_members(order, set(contributors) | set(admitted))


def live_weights(row: Mapping[int, float], peer: int, gone: Collection[int]) -> dict[int, float]:
    """A gossip row without the gone neighbours: their weight moves to the peer itself,
    so the row still sums to one (and stays symmetric when both ends drop the edge)."""
    out = {int(j): float(w) for j, w in row.items() if int(j) not in gone}
    moved = sum(float(w) for j, w in row.items() if int(j) in gone and int(j) != peer)
    out[int(peer)] = out.get(int(peer), 0.0) + moved
    return out


__all__ = [
    "apply_mean",
    "has_majority",
    "live_weights",
    "next_members",
    "ring_members",
    "ring_payload",
    "split_result",
]
