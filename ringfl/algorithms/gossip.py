"""Decentralized SGD (D-PSGD) by gossip: local steps, then one mixing step
x_i <- sum_j W_ij x_j with the topology's mixing matrix (Metropolis-Hastings by default).
Models differ between parties; the simulator reports the consensus distance
mean_i ||x_i - mean(x)||. The engine runs the mixing step with the live neighbours' row
(a lost neighbour's weight moves to the party itself).
"""

from __future__ import annotations

import numpy as np

from ringfl.algorithms.base import Collective, RoundInput, SumResult


class GossipAverage:
    """One neighbour-averaging step per round."""

    name = "gossip"
    collective: Collective = "neighbours"

    def contribution(self, x: RoundInput) -> np.ndarray:
        # a party whose local model is not finite sends the round's start model instead
        return x.local if np.all(np.isfinite(x.local)) else x.start.copy()

    def aggregate(self, x: RoundInput, result: SumResult) -> np.ndarray:
        return np.asarray(result.total, dtype=np.float32)
