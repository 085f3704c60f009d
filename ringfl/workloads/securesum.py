"""Secure sums of float64 statistics: fixed-point scaling, and the simulated ring.

The masked ring all-reduce (`ringfl.secure.aggregate.SecureRingAllReduce`) adds values
clipped to ±clip in fixed point. Statistics (counts, sums of squares, Hessians) have any
magnitude, so each sum runs in two secure rounds:

1. SCALE (skipped when the workload states a public bound, `scale_exponent`): every party secure-sums a one-hot vector over binary exponents (2,098 slots):
   slot e is 1 when the largest |value| of its statistics is in [2^(e−1), 2^e). The sum
   says, for each power of two, how many parties' largest statistic lies in that binade
   (no party is named); every party takes E = the largest exponent present, so that every
   party's values lie in (−2^E, 2^E).
2. SUM: every party secure-sums its values times 2^−E (exact: a power of two) with 64-bit
   words, clip = 1 and f = `frac_bits(N)` fractional bits (N·2^f < 2^63: f = 61 at N = 3,
   60 at N = 5..8), and the sum is multiplied back by 2^E.

Resolution (stated and tested): every element of the result differs from the exact sum of
the parties' float64 values by at most N·2^(E−f−1) (each party rounds once), plus the
float64 rounding of the result itself. Relative to the largest |value| any party sent
(≥ 2^(E−1)), that is ≤ N·2^−f: 1.3e−18 at N = 3. Integer-valued statistics whose sums stay
below 2^53 (counts, quantized gradients) are summed exactly.

`SimulatedSecureSum` runs all N parties' `SecureRingAllReduce` machines, with real keys and
real masking, over the in-memory network (`ringfl.transport.memory.MemoryNetwork`) in this
process; it is the `sum_all` of `ringfl.workloads.base.run_parties`. The real-peer
counterpart is `ringfl.workloads.peersum.PeerSecureSum`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ringfl.errors import ConfigError, SecureAggregationError
from ringfl.secure.aggregate import Masking, SecureRingAllReduce
from ringfl.secure.fixedpoint import default_frac_bits
from ringfl.secure.keys import PeerKeys
from ringfl.transport.memory import MemoryNetwork

#: Binary exponents of float64 magnitudes (np.frexp): |x| = m·2^e, m ∈ [0.5, 1).
EXP_MIN, EXP_MAX = -1073, 1024
SCALE_SLOTS = EXP_MAX - EXP_MIN + 1

#: Masking of the scaled values: 64-bit words, values in (−1, 1).
MASKING = Masking(bits=64, clip=1.0)


def frac_bits(n_parties: int) -> int:
    """Fractional bits of the SUM round for `n_parties` (the most the word allows)."""
    return default_frac_bits(n_parties, MASKING.clip, MASKING.bits)


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
    return np.zeros_like(v) if exponent is None else np.ldexp(v, -exponent)


def scale_up(s: np.ndarray, exponent: int | None) -> np.ndarray:
    return np.zeros_like(s) if exponent is None else np.ldexp(s, exponent)


@dataclass
class SumStats:
    """What a secure-sum driver has done so far (per party where it says so)."""

    sums: int = 0  # statistics vectors summed (each is a SCALE and a SUM round)
    rounds: int = 0  # secure all-reduce rounds run
    elements: int = 0  # statistics elements summed
    bytes_sent: dict[int, int] = field(default_factory=dict)  # wire bytes, per party
    worst_resolution: float = 0.0  # the largest per-element bound stated so far
    seconds: float = 0.0  # wall time spent in the secure sum


class SimulatedSecureSum:
    """`sum_all` for `run_parties`: N parties' real `SecureRingAllReduce` machines over a
    `MemoryNetwork`. Keys are drawn from `seed` (simulations only; real peers keep their
    own), the session from the OS generator, so no two instances share (session, round).
    `last_resolution`: the error bound of the last sum (module docstring)."""

    def __init__(self, n_parties: int, *, seed: int = 0, network: MemoryNetwork | None = None):
        if not isinstance(n_parties, int) or n_parties < 2:
            raise ConfigError(
                f"a secure sum needs at least 2 parties, got {n_parties} (a single party "
                "has nothing to hide from: use ringfl.workloads.base.plain_sum)"
            )
        self.n = n_parties
        rng = np.random.default_rng(seed)
        self.keys = {p: PeerKeys.from_private_bytes(rng.bytes(32)) for p in range(n_parties)}
        self.public_keys = {p: k.public_bytes for p, k in self.keys.items()}
        self.ring = list(range(n_parties))
        self.session = int.from_bytes(os.urandom(8), "big")
        self.network = network or MemoryNetwork()
        self.round = 0
        self.stats = SumStats(bytes_sent=dict.fromkeys(self.ring, 0))
        self.last_resolution = 0.0

    def masked_sum(self, vectors: list[np.ndarray]) -> np.ndarray:
        """One secure all-reduce round of float64 vectors already within ±1."""
        import time

        t0 = time.perf_counter()
        machines = {
            p: SecureRingAllReduce(
                p,
                self.ring,
                np.ascontiguousarray(vectors[p], dtype=np.float64),
                self.keys[p],
                self.public_keys,
                session=self.session,
                round=self.round,
                masking=MASKING,
            )
            for p in self.ring
        }
        self.round += 1
        res = self.network.run(machines)
        self.stats.rounds += 1
        for p, b in res.wire_bytes_sent.items():
            self.stats.bytes_sent[p] += b
        if res.dead or sorted(res.results) != self.ring:
            raise SecureAggregationError(f"simulated secure sum: parties lost {sorted(res.dead)}")
        first = res.results[0]
        for p in self.ring:
            if machines[p].members != tuple(self.ring) or not np.array_equal(res.results[p], first):
                raise SecureAggregationError("simulated secure sum: parties disagree on the sum")
            if machines[p].clipped:
                raise SecureAggregationError(f"party {p}: {machines[p].clipped} values clipped")
        self.stats.seconds += time.perf_counter() - t0
        return np.array(first, dtype=np.float64)

    def __call__(self, vectors: list[np.ndarray], exponent: int | None = None) -> np.ndarray:
        """The sum of the parties' vectors; `exponent`: a public bound 2^exponent on every
        |value| (skips the SCALE round; a value beyond it is refused)."""
        if len(vectors) != self.n:
            raise ConfigError(
                f"simulated secure sum of {self.n} parties got {len(vectors)} vectors"
            )
        if exponent is None:
            e = agreed_exponent(self.masked_sum([exponent_onehot(v) for v in vectors]))
        else:
            e = int(exponent)
            for p, v in enumerate(vectors):
                check_bound(v, e, f"party {p}")
        total = self.masked_sum([scale_down(v, e) for v in vectors])
        self.last_resolution = resolution(self.n, e)
        self.stats.worst_resolution = max(self.stats.worst_resolution, self.last_resolution)
        self.stats.sums += 1
        self.stats.elements += int(vectors[0].shape[0])
        return scale_up(total, e)


__all__ = [
    "MASKING",
    "SCALE_SLOTS",
    "SimulatedSecureSum",
    "SumStats",
    "agreed_exponent",
    "check_bound",
    "exponent_onehot",
    "frac_bits",
    "resolution",
    "scale_down",
    "scale_up",
]
