"""Server-free FedAvg over a ring: every party trains locally, then a ring all-reduce
(secure by default) sums the sample-weighted model deltas, and every party applies the
same weighted mean — so all members hold bit-identical models after each round.

Weights. Party i's weight is w_i = n_i / T (n_i its sample count, T the total over the
ring, learned once in a secure setup sum before round 0, so no party learns another's
count). Per round each party contributes [w_i * delta_i, w_i] (float32; delta = local -
start); the sum gives the numerator and the denominator of the weighted mean in one
collective, so the mean stays exact even when T is only approximate (the secure setup sum
is fixed point) or a party drops out. Keeping w_i <= 1 keeps every value inside the
secure fixed-point range ([-clip, clip]).
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


class RingAverage:
    """FedAvg without a server: the sum of sample-weighted deltas over the ring."""

    name = "ring"
    collective: Collective = "ring"

    def contribution(self, x: RoundInput) -> np.ndarray:
        delta, w = finite_delta(x)
        return weighted_payload(delta, w)

    def aggregate(self, x: RoundInput, result: SumResult) -> np.ndarray:
        mean = weighted_mean(result.total)
        if mean is None:
            return x.start.copy()
        new: np.ndarray = (x.start + mean).astype(np.float32, copy=False)
        return new
