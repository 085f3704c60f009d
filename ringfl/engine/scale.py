"""The agreed power-of-two scale of a statistics sum (`StatisticsWorkload`).

The secure ring sum adds fixed-point words (`ringfl.secure.fixedpoint.FixedPoint`, the one
codec of every masked sum): values clipped to ±clip with f fractional bits. A neural
delta has a known range, so it is clipped at the configured `algorithm.clip`. Statistics
(counts, sums of squares, Hessians) have any magnitude, so a statistics step runs in up
to two engine rounds:

1. SCALE (skipped when the workload states a public bound, `scale_exponent`): every party
   sums a one-hot vector over binary exponents (`SCALE_SLOTS` slots): slot e is 1 when
   the largest |value| of its statistics is in [2^(e−1), 2^e). The sum says, for each
   power of two, how many parties' largest statistic lies in that binade (no party is
   named); every party takes E = the largest exponent present, so that every party's
   values lie in (−2^E, 2^E).
2. SUM: every party sums its values times 2^−E (exact: a power of two) in 64-bit words
   with clip = 1 and f = `frac_bits(N)` fractional bits (N·2^f < 2^63: f = 61 at N = 3,
   60 at N = 5..8); the sum is multiplied back by 2^E.

Resolution (stated and tested): every element of the result differs from the exact sum of
the parties' float64 values by at most N·2^(E−f−1) (each party rounds once), plus the
float64 rounding of the result itself. Relative to the largest |value| any party sent
(≥ 2^(E−1)), that is ≤ N·2^−f: 1.3e−18 at N = 3. Integer-valued statistics whose sums stay
below 2^53 (counts, quantized gradients) are summed exactly.
"""

from __future__ import annotations

import numpy as np

from ringfl.errors import SecureAggregationError
from ringfl.secure.fixedpoint import default_frac_bits

#: Binary exponents of float64 magnitudes (np.frexp): |x| = m·2^e, m ∈ [0.5, 1).
EXP_MIN, EXP_MAX = -1073, 1024
SCALE_SLOTS = EXP_MAX - EXP_MIN + 1

#: Word size and clip of a statistics sum (values scaled into (−1, 1)).
STAT_BITS = 64
STAT_CLIP = 1.0


def frac_bits(n_parties: int) -> int:
    """Fractional bits of the SUM round for `n_parties` (the most the word allows)."""
    return default_frac_bits(n_parties, STAT_CLIP, STAT_BITS)


def exponent_onehot(v: np.ndarray) -> np.ndarray:
    """The SCALE round's vector of one party: 1 at the exponent of max |v| (all zeros
    when v is zero)."""
    out = np.zeros(SCALE_SLOTS, dtype=np.float64)
    if v.size:
        m = float(np.max(np.abs(v)))
        if m > 0:
            out[int(np.frexp(m)[1]) - EXP_MIN] = 1.0
    return out


def agreed_exponent(summed_onehot: np.ndarray) -> int | None:
    """E from the summed one-hot vectors (None when every party sent zeros)."""
    present = np.flatnonzero(np.rint(summed_onehot) > 0)
    return None if present.size == 0 else int(present[-1]) + EXP_MIN


def resolution(n_parties: int, exponent: int | None) -> float:
    """The bound on |secure sum − exact sum| per element (see the module docstring)."""
    if exponent is None:
        return 0.0
    return n_parties * 2.0 ** (exponent - frac_bits(n_parties) - 1)


def check_bound(v: np.ndarray, exponent: int, where: str) -> None:
    """Refuse a vector with a value of magnitude ≥ 2^exponent (the public bound)."""
    if v.size and float(np.max(np.abs(v))) >= 2.0**exponent:
        raise SecureAggregationError(
            f"{where}: a statistic of magnitude {float(np.max(np.abs(v))):.6g} exceeds the "
            f"workload's public bound 2^{exponent}"
        )


def scale_down(v: np.ndarray, exponent: int | None) -> np.ndarray:
    """v·2^−E (zeros when there is no E)."""
    return np.zeros_like(v) if exponent is None else np.ldexp(v, -exponent)


def scale_up(s: np.ndarray, exponent: int | None) -> np.ndarray:
    """s·2^E (zeros when there is no E)."""
    return np.zeros_like(s) if exponent is None else np.ldexp(s, exponent)


__all__ = [
    "EXP_MAX",
    "EXP_MIN",
    "SCALE_SLOTS",
    "STAT_BITS",
    "STAT_CLIP",
    "agreed_exponent",
    "check_bound",
    "exponent_onehot",
    "frac_bits",
    "resolution",
    "scale_down",
    "scale_up",
]
