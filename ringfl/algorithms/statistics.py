"""The algorithm of a statistics workload (`ringfl.engine.workload.StatisticsWorkload`):
the contribution is the party's (scaled) statistics vector as it is, and the new state is
the sum itself; the workload applies its own update to it.

A statistics job's state is consistent only when every sum holds every party's
statistics, so a round whose sum lacks a member fails the job with a clear error instead
of carrying on with a partial sum (neural FedAvg, in contrast, re-weights the survivors).
"""

from __future__ import annotations

import numpy as np

from ringfl.algorithms.base import Collective, RoundInput, SumResult
from ringfl.errors import RingflError


class StatisticsSum:
    """Sum the parties' vectors; every party takes the sum (needs every party)."""

    name = "statistics"
    collective: Collective = "ring"

    def contribution(self, x: RoundInput) -> np.ndarray:
        return np.asarray(x.local, dtype=np.float64)

    def aggregate(self, x: RoundInput, result: SumResult) -> np.ndarray:
        if result.failures:
            lost = ", ".join(str(p) for p in result.failures)
            raise RingflError(
                f"round {x.round}: the sum lacks peer(s) {lost}; a statistics workload "
                "needs every party in every sum, so it stops here"
            )
        return np.asarray(result.total, dtype=np.float64)


__all__ = ["StatisticsSum"]
