"""Server-free FedAvg over a ring: every peer trains locally, then a ring all-reduce
(secure by default) sums the sample-weighted model deltas, and every peer applies the same
weighted mean — so all peers hold bit-identical models after each round.

Payload per peer: [n_i * delta_i, n_i] (float32; delta = local - global): one all-reduce
gives both the numerator and the denominator of the weighted mean. With secure
aggregation no peer learns any single n_i * delta_i, only the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ringfl.algorithms.base import get_flat, set_flat, weighted_mean, weighted_payload
from ringfl.collective.allreduce import RingAllReduce
from ringfl.collective.events import Machine
from ringfl.errors import ConfigError

if TYPE_CHECKING:
    from ringfl.learner import Learner


def secure_available() -> bool:
    """Whether `ringfl.secure.SecureRingAllReduce` can be imported."""
    try:
        from ringfl.secure import SecureRingAllReduce  # noqa: F401
    except ImportError:
        return False
    return True


def sum_machine(
    peer: int,
    ring: Sequence[int],
    data: np.ndarray,
    *,
    secure: bool,
    session: int,
    round_index: int,
) -> Machine:
    """The collective that sums `data` over `ring`: secure (masked) or plain."""
    if secure:
        try:
            from ringfl.secure import SecureRingAllReduce
        except ImportError as exc:
            raise ConfigError(
                "algorithm.secure = true, but secure aggregation (ringfl.secure) is not "
                "available; set algorithm.secure = false"
            ) from exc
        return SecureRingAllReduce(peer, ring, data, session=session, round=round_index)
    return RingAllReduce(peer, ring, data, session=session, round=round_index)


class RingAverage:
    """FedAvg without a server: ring all-reduce of sample-weighted deltas."""

    name = "ring"

    def __init__(self, ring: Sequence[int], *, secure: bool = True) -> None:
        self.ring = [int(p) for p in ring]
        self.secure = secure
        self._start: np.ndarray | None = None

    def begin_round(self, learner: Learner, round_index: int) -> None:
        self._start = get_flat(learner.model)

    def machine(self, learner: Learner, round_index: int) -> Machine:
        assert self._start is not None, "begin_round first"
        delta = get_flat(learner.model) - self._start
        return sum_machine(
            learner.peer,
            self.ring,
            weighted_payload(delta, learner.weight),
            secure=self.secure,
            session=learner.session,
            round_index=round_index,
        )

    def apply(self, learner: Learner, round_index: int, result: Any) -> None:
        assert self._start is not None, "begin_round first"
        set_flat(learner.model, self._start + weighted_mean(np.asarray(result)))
        self._start = None
