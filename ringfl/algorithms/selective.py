"""Selective sharing (Shokri & Shmatikov, CCS 2015, "DSSGD"), server-free: each round every
party shares only a fraction theta of its delta entries. The index set S_r is drawn from a
seed all parties share (the run's index session and the round), so that masked secure
sums still cancel; only the |S_r| selected entries (plus the weight) travel around the
ring. Every party then applies the weighted mean delta on S_r; entries outside S_r keep
the round's starting value.

Difference to the original DSSGD: there, a server keeps the global model and each
participant keeps its own local model. Here all parties restart each round from the same
shared model (bit-identical across parties), so local progress outside S_r is dropped.
Weights as in `ring` (a setup sum of sample counts).
"""

from __future__ import annotations

import numpy as np

from ringfl.algorithms.base import (
    Collective,
    RoundInput,
    SumResult,
    finite_delta,
    weighted_mean,
    weighted_payload,
)


def shared_indices(session: int, round_index: int, size: int, fraction: float) -> np.ndarray:
    """The sorted index set of round `round_index`: max(1, round(fraction * size)) distinct
    indices in [0, size), the same on every party of the session."""
    k = min(size, max(1, int(round(fraction * size))))
    rng = np.random.default_rng([session & (2**63 - 1), round_index, 0x5E1EC7])
    return np.sort(rng.choice(size, size=k, replace=False)).astype(np.int64)


class SelectiveAverage:
    """Share a fraction `share_fraction` of the delta entries per round."""

    name = "selective"
    collective: Collective = "ring"

    def __init__(self, share_fraction: float) -> None:
        if not 0 < share_fraction <= 1:
            raise ValueError(f"share_fraction must be in (0, 1], got {share_fraction!r}")
        self.share_fraction = float(share_fraction)

    def indices(self, x: RoundInput) -> np.ndarray:
        return shared_indices(x.index_session, x.round, x.start.shape[0], self.share_fraction)

    def contribution(self, x: RoundInput) -> np.ndarray:
        idx = self.indices(x)
        delta, w = finite_delta(x)
        return weighted_payload(delta[idx], w)

    def aggregate(self, x: RoundInput, result: SumResult) -> np.ndarray:
        new = x.start.copy()
        mean = weighted_mean(result.total)
        if mean is not None:
            new[self.indices(x)] += mean
        return new
