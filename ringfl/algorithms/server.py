"""The server-based FedAvg baseline (a star: one hub averages, the classic parameter
server), run through the same engine and wire messages as the ring. The parties' side is
the ring's weighted-delta payload with raw counts as weights ([n_i * delta_i, n_i]: the hub
sees every contribution in the clear anyway), summed by the hub (`ringfl.collective.star`)
instead of a ring all-reduce. The hub is an auxiliary participant of the engine: it holds
no data, trains nothing and contributes nothing (weight 0), like hivemind's AUX mode.
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


class ServerAverage:
    """FedAvg through a hub: the hub sums [n_i * delta_i, n_i] and sends it back."""

    name = "server"
    collective: Collective = "star"

    def contribution(self, x: RoundInput) -> np.ndarray:
        delta, w = finite_delta(x)
        return weighted_payload(delta, w)

    def aggregate(self, x: RoundInput, result: SumResult) -> np.ndarray:
        mean = weighted_mean(result.total)
        if mean is None:
            return x.start.copy()
        new: np.ndarray = (x.start + mean).astype(np.float32, copy=False)
        return new
