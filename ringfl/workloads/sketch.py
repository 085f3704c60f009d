"""Secure histograms for quantiles: signed-binade bins, then linear refinement.

Every finite |x| < 2^80 falls in one bin of `BINADE_EDGES`: the half-open intervals
[e_i, e_{i+1}) between −2^80, …, −2^−64, 0, 2^−64, …, 2^80 (one bin per power of two and
sign; values within 2^−64 of zero share the two bins next to 0). Refining an interval
[lo, hi) splits it into `bins` equal half-open bins (`refine_edges`). Every party computes
the same edges with the same float operations, so their counts add up consistently.

A `RankSearch` finds the interval that holds the r-th smallest value (0-based) of the
pooled data: one secure histogram per step, each step narrowing the interval to the bin
where the cumulative count passes r, until it is at most `tol` wide. The midpoint of the
final interval is then within tol/2 of the order statistic.
"""

from __future__ import annotations

import numpy as np

from ringfl.errors import ConfigError

BINADE_LO, BINADE_HI = -64, 80
_POS = 2.0 ** np.arange(BINADE_LO, BINADE_HI + 1)
BINADE_EDGES = np.concatenate([-_POS[::-1], [0.0], _POS])
LIMIT = 2.0**BINADE_HI


def check_range(x: np.ndarray, where: str) -> None:
    """Refuse values a binade histogram cannot hold (|x| ≥ 2^80, ±inf)."""
    bad = ~np.isnan(x) & ~((x >= -LIMIT) & (x < LIMIT))
    if bad.any():
        raise ConfigError(f"{where}: value {x[bad][0]!r} is outside [-2^80, 2^80)")


def bin_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of the finite values of `x` in the half-open bins [edges[i], edges[i+1]);
    values outside [edges[0], edges[-1]) are not counted."""
    x = x[~np.isnan(x)]
    nb = len(edges) - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx = idx[(idx >= 0) & (idx < nb)]
    return np.bincount(idx, minlength=nb).astype(np.float64)


def refine_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """`bins` equal bins over [lo, hi), as bins + 1 edges (the last is exactly hi)."""
    return np.linspace(lo, hi, bins + 1)


class RankSearch:
    """Finds the interval holding the `rank`-th smallest pooled value (0-based)."""

    def __init__(self, rank: int, tol: float, bins: int = 256) -> None:
        if not tol > 0:
            raise ConfigError(f"quantile tolerance must be > 0, got {tol}")
        self.rank = int(rank)
        self.tol = float(tol)
        self.bins = int(bins)
        self.edges = BINADE_EDGES
        self.below = 0  # pooled values below edges[0]
        self.lo = self.hi = float("nan")
        self.done = False
        self.steps = 0

    def counts(self, x: np.ndarray) -> np.ndarray:
        """This party's histogram over the current edges."""
        return bin_counts(x, self.edges)

    def take(self, pooled_counts: np.ndarray) -> None:
        """Narrow the interval with the pooled histogram of the current edges."""
        self.steps += 1
        c = np.rint(pooled_counts).astype(np.int64)
        cum = self.below + np.cumsum(c)
        b = int(np.searchsorted(cum, self.rank, side="right"))  # first bin with cum > rank
        if b >= len(c):
            raise ConfigError("quantile search: rank beyond the pooled count (data changed?)")
        self.below = int(cum[b] - c[b])
        self.lo, self.hi = float(self.edges[b]), float(self.edges[b + 1])
        width = self.hi - self.lo
        if width <= self.tol or np.nextafter(self.lo, np.inf) >= self.hi:
            self.done = True
        else:
            self.edges = refine_edges(self.lo, self.hi, self.bins)

    @property
    def value(self) -> float:
        """The midpoint of the final interval (within tol/2 of the order statistic)."""
        return 0.5 * (self.lo + self.hi)


__all__ = ["BINADE_EDGES", "RankSearch", "bin_counts", "check_range", "refine_edges"]
