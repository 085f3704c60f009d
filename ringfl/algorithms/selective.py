"""Selective sharing (Shokri & Shmatikov, CCS 2015, "DSSGD"), server-free: each round every
peer shares only a fraction theta of its delta entries. The index set S_r is drawn from a
seed all peers share (session, round), so that masked secure sums still cancel; only the
|S_r| selected entries (plus the weight) travel around the ring. Every peer then applies
the weighted mean delta on S_r; entries outside S_r keep the round's starting value.

Difference to the original DSSGD: there, a server keeps the global model and each
participant keeps its own local model. Here all peers restart each round from the same
shared model (bit-identical across peers), so local progress outside S_r is dropped.
Weights as in `ring` (a setup sum of sample counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ringfl.algorithms.base import get_flat, set_flat, weighted_mean, weighted_payload
from ringfl.algorithms.ring import SecureSettings, _RingSum
from ringfl.collective.events import Machine

if TYPE_CHECKING:
    from ringfl.learner import Learner


def shared_indices(session: int, round_index: int, size: int, fraction: float) -> np.ndarray:
    """The sorted index set of round `round_index`: max(1, round(fraction * size)) distinct
    indices in [0, size), the same on every peer of the session."""
    k = min(size, max(1, int(round(fraction * size))))
    rng = np.random.default_rng([session & (2**63 - 1), round_index, 0x5E1EC7])
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


class SelectiveAverage(_RingSum):
    """Share a fraction `share_fraction` of the delta entries per round."""

    name = "selective"

    def __init__(
        self, ring: Sequence[int], share_fraction: float, *, secure: SecureSettings | None = None
    ) -> None:
        super().__init__(ring, secure)
        self.share_fraction = float(share_fraction)
        self._start: np.ndarray | None = None
        self._idx: np.ndarray | None = None

    def begin_round(self, learner: Learner, round_index: int) -> None:
        self._start = get_flat(learner.model)
        self._idx = shared_indices(
            learner.session, round_index, self._start.shape[0], self.share_fraction
        )

    def machine(self, learner: Learner, round_index: int) -> Machine:
        assert self._start is not None and self._idx is not None, "begin_round first"
        delta = get_flat(learner.model)[self._idx] - self._start[self._idx]
        return self._sum(learner, weighted_payload(delta, self.weight(learner)), round_index)

    def apply(self, learner: Learner, round_index: int, result: Any) -> None:
        assert self._start is not None and self._idx is not None, "begin_round first"
        new = self._start
        new[self._idx] += weighted_mean(np.asarray(result))
        set_flat(learner.model, new)
        self._start = self._idx = None
