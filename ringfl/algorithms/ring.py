"""Server-free FedAvg over a ring: every peer trains locally, then a ring all-reduce
(secure by default) sums the sample-weighted model deltas, and every peer applies the same
weighted mean — so all peers hold bit-identical models after each round.

Weights. Peer i's weight is w_i = n_i / T (n_i its sample count, T the total over the
ring, learned once in a setup sum before round 0). Per round each peer contributes
[w_i * delta_i, w_i] (float32; delta = local - global); the sum gives the numerator and
the denominator of the weighted mean in one collective, so the mean stays exact even when
T is only approximate (the secure setup sum is fixed point) or a peer drops out. Keeping
w_i <= 1 keeps every value inside the secure fixed-point range ([-clip, clip]).

With secure aggregation (`ringfl.secure`) no peer learns any single n_i or w_i * delta_i,
only the sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ringfl.algorithms.base import get_flat, set_flat, weighted_mean, weighted_payload
from ringfl.collective.allreduce import RingAllReduce
from ringfl.collective.events import Machine
from ringfl.errors import ConfigError

if TYPE_CHECKING:
    from ringfl.learner import Learner

#: Round number of the one-off setup collective (sum of sample counts); u32 max, so it
#: never collides with a training round.
SETUP_ROUND = 2**32 - 1
#: Largest per-peer sample count the secure setup sum represents (counts are clipped there).
MAX_COUNT = float(2**24)


def secure_available() -> bool:
    """Whether `ringfl.secure.aggregate.SecureRingAllReduce` can be imported."""
    try:
        from ringfl.secure.aggregate import SecureRingAllReduce  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class SecureSettings:
    """What a peer needs for secure sums: its key pair (`ringfl.secure.keys.PeerKeys`),
    every ring member's public key, and the clipping bound of the fixed-point inputs."""

    keys: Any
    public_keys: Mapping[int, bytes | str]
    clip: float = 1.0


def sum_machine(
    peer: int,
    ring: Sequence[int],
    data: np.ndarray,
    *,
    secure: SecureSettings | None,
    session: int,
    round_index: int,
    clip: float | None = None,
) -> Machine:
    """The collective that sums `data` over `ring`: masked (`secure` given) or plain.
    `clip` overrides `secure.clip` (the setup sum of counts needs a wider range)."""
    if secure is None:
        return RingAllReduce(peer, ring, data, session=session, round=round_index)
    try:
        from ringfl.secure.aggregate import Masking, SecureRingAllReduce
    except ImportError as exc:
        raise ConfigError(
            "algorithm.secure = true, but secure aggregation (ringfl.secure) is not "
            "available; set algorithm.secure = false"
        ) from exc
    masking = Masking(clip=secure.clip if clip is None else clip)
    return SecureRingAllReduce(
        peer,
        ring,
        data,
        secure.keys,
        secure.public_keys,
        session=session,
        round=round_index,
        masking=masking,
    )


class _RingSum:
    """Shared by ring averaging and selective sharing: the setup sum of counts."""

    def __init__(self, ring: Sequence[int], secure: SecureSettings | None) -> None:
        self.ring = [int(p) for p in ring]
        self.secure = secure
        self.total: float | None = None

    def setup(self, learner: Learner) -> Machine:
        data = np.array([learner.num_samples], dtype=np.float64)
        return sum_machine(
            learner.peer,
            self.ring,
            data,
            secure=self.secure,
            session=learner.session,
            round_index=SETUP_ROUND,
            clip=MAX_COUNT,
        )

    def finish_setup(self, learner: Learner, result: Any) -> None:
        total = float(np.asarray(result)[0])
        if not total > 0:
            raise ConfigError(f"peer {learner.peer}: total sample count over the ring is {total}")
        self.total = total

    def weight(self, learner: Learner) -> float:
        if self.total is None:
            raise ConfigError(f"peer {learner.peer}: run the setup collective before round 0")
        return learner.num_samples / self.total

    def _sum(self, learner: Learner, payload: np.ndarray, round_index: int) -> Machine:
        return sum_machine(
            learner.peer,
            self.ring,
            payload,
            secure=self.secure,
            session=learner.session,
            round_index=round_index,
        )


class RingAverage(_RingSum):
    """FedAvg without a server: ring all-reduce of sample-weighted deltas."""

    name = "ring"

    def __init__(self, ring: Sequence[int], *, secure: SecureSettings | None = None) -> None:
        super().__init__(ring, secure)
        self._start: np.ndarray | None = None

    def begin_round(self, learner: Learner, round_index: int) -> None:
        self._start = get_flat(learner.model)

    def machine(self, learner: Learner, round_index: int) -> Machine:
        assert self._start is not None, "begin_round first"
        delta = get_flat(learner.model) - self._start
        return self._sum(learner, weighted_payload(delta, self.weight(learner)), round_index)

    def apply(self, learner: Learner, round_index: int, result: Any) -> None:
        assert self._start is not None, "begin_round first"
        set_flat(learner.model, self._start + weighted_mean(np.asarray(result)))
        self._start = None
