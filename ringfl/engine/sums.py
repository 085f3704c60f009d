"""The collectives a round engine runs, built in one place: the ring sum (masked with
`ringfl.secure` or plain, both surviving lost peers), the gossip step and the star sum.

Real peers and the simulator get the same machines from here, so a sum that recovers from
a crash in one recovers the same way in the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ringfl.collective.events import Machine
from ringfl.collective.resilient import ResilientNeighbourAverage, RetryingRingSum
from ringfl.collective.star import StarSum
from ringfl.secure.aggregate import Masking, SecureRingAllReduce
from ringfl.secure.keys import PeerKeys

#: Round number of the one-off setup sum (sample counts); u32 max, so it never collides
#: with a training round.
SETUP_ROUND = 2**32 - 1
#: Largest per-party count the secure setup sum represents (counts are clipped there).
MAX_COUNT = float(2**24)


def setup_clip(n_peers: int) -> float:
    """The clip of the secure setup sum of counts among `n_peers`: `MAX_COUNT`, lowered
    for large rings so that n_peers · clip ≤ 2^30 and the 32-bit fixed point keeps whole
    numbers (at least 0 fractional bits): 2^24 up to 64 peers, 2^20 at 1,000, 2^16 at
    10,000."""
    return min(MAX_COUNT, float(2 ** (30 - max(int(n_peers) - 1, 1).bit_length())))


@dataclass(frozen=True)
class SecureSettings:
    """What a party needs for masked sums: its masking key pair, every member's public
    masking key, the clipping bound of the fixed-point inputs and their word size (32
    bits for neural deltas; 64 for statistics, `ringfl.engine.scale`), and (tests) a
    source of randomness for the round secrets."""

    keys: PeerKeys
    public_keys: Mapping[int, bytes | str]
    clip: float = 1.0
    entropy: Callable[[int], bytes] | None = None
    bits: int = 32


def ring_sum(
    peer: int,
    members: Sequence[int],
    data: np.ndarray,
    *,
    secure: SecureSettings | None,
    session: int,
    round_index: int,
    clip: float | None = None,
) -> Machine:
    """The sum of `data` over `members` (ring order): masked when `secure` is given, else a
    plain ring all-reduce that restarts among the survivors when members are lost. `clip`
    overrides `secure.clip` (the setup sum of counts needs a wider range)."""
    if secure is None:
        return RetryingRingSum(peer, members, data, session=session, round=round_index)
    masking = Masking(bits=secure.bits, clip=secure.clip if clip is None else clip)
    extra = {} if secure.entropy is None else {"entropy": secure.entropy}
    return SecureRingAllReduce(
        peer,
        list(members),
        data,
        secure.keys,
        {p: secure.public_keys[p] for p in members},
        session=session,
        round=round_index,
        masking=masking,
        **extra,
    )


def neighbour_mix(
    peer: int, row: Mapping[int, float], data: np.ndarray, *, session: int, round_index: int
) -> ResilientNeighbourAverage:
    """One gossip step x_i <- sum_j W_ij x_j with `row` (lost neighbours dropped)."""
    return ResilientNeighbourAverage(peer, row, data, session=session, round=round_index)


def star_sum(
    peer: int,
    hub: int,
    clients: Sequence[int],
    data: np.ndarray | None,
    *,
    length: int,
    session: int,
    round_index: int,
) -> StarSum:
    """The server baseline's sum: a client sends `data`, the hub (`data` None) adds."""
    if data is None:
        return StarSum(
            peer, hub, clients, length=length, dtype=np.float32, session=session, round=round_index
        )
    return StarSum(peer, hub, clients, data, session=session, round=round_index)


__all__ = [
    "MAX_COUNT",
    "SETUP_ROUND",
    "SecureSettings",
    "setup_clip",
    "neighbour_mix",
    "ring_sum",
    "star_sum",
]
