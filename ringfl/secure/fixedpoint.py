"""Fixed-point codec: floats ↔ integers modulo 2^k, for sums that must be exact.

A value x becomes the integer q = round(clamp(x·2^f, −Q, Q)) with Q = ⌊clip·2^f⌋, stored
modulo 2^k as an unsigned k-bit word (two's complement). A sum of words modulo 2^k
decodes (as a signed k-bit integer, times 2^−f) to the exact sum of the q's, as long as
that sum cannot wrap:

    N · clip · 2^f < 2^(k−1)          (the overflow bound; checked at construction)

so the sum of N clipped values lies in (−2^(k−1), 2^(k−1)). The bound leaves at least
⌈log2 N⌉ bits of headroom above the per-value range [−Q, Q].

Defaults (`FixedPoint.for_peers(n)`): k = 32, clip = 1.0 and the largest f that meets the
bound, i.e. f = ⌈k − 1 − log2(N·clip)⌉ − 1 (N = 8: f = 27, step 2^−27 ≈ 7.5e−9). The
rounding error of the average is then ≈ 2^−f/√(12N) per element (RMS), e.g. a relative
error ≈ 2e−7 for deltas with element std 0.01 at N = 8. For smaller deltas lower `clip`
(f grows by one bit each time clip halves) or use k = 64.

Values beyond ±clip are clipped, never silently: `encode` returns how many it clipped.
NaN is refused (`SecureAggregationError`); ±inf counts as clipped.

Speed: encode and decode walk the data in chunks of `CHUNK_ELEMENTS` through preallocated
scratch buffers (whole-array numpy expressions were several times slower here, their
temporaries being larger than the caches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ringfl.errors import ConfigError, SecureAggregationError

#: Elements per chunk of encode/decode (1 MiB of float32; float64 scratch is 2 MiB).
CHUNK_ELEMENTS = 1 << 18

_WORD: dict[int, np.dtype] = {32: np.dtype(np.uint32), 64: np.dtype(np.uint64)}
_SIGNED: dict[int, np.dtype] = {32: np.dtype(np.int32), 64: np.dtype(np.int64)}


def default_frac_bits(n_peers: int, clip: float, bits: int = 32) -> int:
    """The largest f with n_peers · clip · 2^f < 2^(bits−1)."""
    if n_peers < 1:
        raise ConfigError(f"fixed point: n_peers must be ≥ 1, got {n_peers}")
    if not (clip > 0 and math.isfinite(clip)):
        raise ConfigError(f"fixed point: clip must be a positive finite number, got {clip}")
    f = math.ceil(bits - 1 - math.log2(n_peers * clip)) - 1
    while f > -1074 and n_peers * clip * 2.0**f >= 2.0 ** (bits - 1):
        f -= 1  # guard against log2 rounding
    while n_peers * clip * 2.0 ** (f + 1) < 2.0 ** (bits - 1):
        f += 1
    return f


@dataclass(frozen=True)
class FixedPoint:
    """Codec for sums of up to `n_peers` values in Z_{2^bits} with `frac_bits` fractional
    bits and clipping bound `clip` (same units as the values).

    Construction raises `ConfigError` naming the field when the configuration could
    overflow (n_peers · clip · 2^frac_bits ≥ 2^(bits−1)) or is otherwise invalid.
    """

    n_peers: int
    frac_bits: int
    clip: float = 1.0
    bits: int = 32
    _q: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.bits not in _WORD:
            raise ConfigError(f"fixed point: bits must be 32 or 64, got {self.bits}")
        if not isinstance(self.n_peers, int) or self.n_peers < 1:
            raise ConfigError(f"fixed point: n_peers must be an int ≥ 1, got {self.n_peers!r}")
        if not isinstance(self.frac_bits, int):
            raise ConfigError(f"fixed point: frac_bits must be an int, got {self.frac_bits!r}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError(f"fixed point: clip must be positive and finite, got {self.clip}")
        q = math.floor(self.clip * 2.0**self.frac_bits)
        if q < 1:
            raise ConfigError(
                f"fixed point: clip {self.clip} is below one step 2^-{self.frac_bits}; "
                "raise frac_bits or clip"
            )
        limit = 2 ** (self.bits - 1)
        if self.n_peers * self.clip * 2.0**self.frac_bits >= limit or self.n_peers * q >= limit:
            raise ConfigError(
                f"fixed point: n_peers·clip·2^frac_bits = {self.n_peers}·{self.clip}·"
                f"2^{self.frac_bits} ≥ 2^{self.bits - 1}: the sum could overflow; lower "
                f"frac_bits (at most {default_frac_bits(self.n_peers, self.clip, self.bits)}), "
                "lower clip, or use bits=64"
            )
        object.__setattr__(self, "_q", q)

    @classmethod
    def for_peers(cls, n_peers: int, *, clip: float = 1.0, bits: int = 32) -> FixedPoint:
        """The codec with the most fractional bits that is safe for `n_peers`."""
        return cls(n_peers, default_frac_bits(n_peers, clip, bits), clip, bits)

    @property
    def word_dtype(self) -> np.dtype:
        """uint32 or uint64: the wire dtype of encoded values."""
        return _WORD[self.bits]

    @property
    def max_int(self) -> int:
        """Q: encoded values lie in [−Q, Q]."""
        return self._q

    @property
    def step(self) -> float:
        """The value of one unit in the last place, 2^−frac_bits."""
        return 2.0**-self.frac_bits

    def quantize_reference(self, values: np.ndarray) -> np.ndarray:
        """Slow, obvious float64 reference of the signed integers `encode` produces
        (exact for float32 input and for |x·2^f| < 2^53)."""
        x = np.asarray(values, dtype=np.float64) * 2.0**self.frac_bits
        return np.rint(np.clip(x, -self._q, self._q)).astype(np.int64)

    # -- encode ------------------------------------------------------------------------

    def encode(self, values: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """Encode a 1-D float32/float64 array into words (`out`, allocated if None).

        Returns (words, clipped): `clipped` counts values with |x| > clip (±inf included).
        Raises `SecureAggregationError` if a value is NaN.
        """
        x = np.asarray(values)
        if x.ndim != 1:
            raise ConfigError(f"fixed point: expected a 1-D array, got shape {x.shape}")
        if x.dtype not in (np.float32, np.float64):
            raise ConfigError(f"fixed point: expected float32 or float64, got {x.dtype}")
        if out is None:
            out = np.empty(x.shape[0], dtype=self.word_dtype)
        elif out.dtype != self.word_dtype or out.shape != x.shape:
            raise ConfigError(
                f"fixed point: out must be {self.word_dtype} {x.shape}, got {out.dtype} {out.shape}"
            )
        return out, self.encode_into(x, out)

    def encode_into(self, x: np.ndarray, out: np.ndarray, scratch: np.ndarray | None = None) -> int:
        """Like `encode`, writing into the preallocated `out`; returns the clip count.

        `scratch`: optional reusable float buffer (float64, or float32 when both the input
        and k = 32 allow) of at least min(len(x), CHUNK_ELEMENTS) elements."""
        n = x.shape[0]
        if n == 0:
            return 0
        # float32 holds x·2^f exactly (a power-of-two scaling) when k = 32; k = 64 or
        # float64 input needs float64 to keep the rounding exact.
        work = np.float32 if (x.dtype == np.float32 and self.bits == 32) else np.float64
        qf = work(self._q)
        if qf > self._q:  # not representable: take the next value toward zero
            qf = np.nextafter(qf, work(0))
        scale = work(2.0**self.frac_bits)
        size = min(n, CHUNK_ELEMENTS)
        if scratch is not None and scratch.dtype == work and scratch.shape[0] >= size:
            tmp = scratch
        else:
            tmp = np.empty(size, dtype=work)
        ints = out.view(_SIGNED[self.bits])
        clipped = 0
        for a in range(0, n, CHUNK_ELEMENTS):
            b = min(n, a + CHUNK_ELEMENTS)
            t = tmp[: b - a]
            np.multiply(x[a:b], scale, out=t)
            # max/min are cheap reductions; NaN makes them NaN and fails the test too
            if not (t.max() <= qf and t.min() >= -qf):
                if np.isnan(t).any():
                    raise SecureAggregationError(
                        f"fixed point: input contains NaN (elements {a}..{b - 1})"
                    )
                clipped += int(np.count_nonzero(t > qf)) + int(np.count_nonzero(t < -qf))
                np.clip(t, -qf, qf, out=t)
            np.rint(t, out=t)
            ints[a:b] = t  # float → signed int, seen through `out` as unsigned words
        return clipped

    # -- decode ------------------------------------------------------------------------

    def decode(
        self,
        words: np.ndarray,
        out: np.ndarray | None = None,
        *,
        dtype: np.dtype | type = np.float32,
        divide_by: float = 1.0,
    ) -> np.ndarray:
        """Decode words (a sum of encodings, modulo 2^k) to floats: signed value · 2^−f /
        `divide_by` (pass the number of summands to get the average). `out` or a new
        array of `dtype` receives the result."""
        w = np.asarray(words)
        if w.dtype != self.word_dtype or w.ndim != 1:
            raise ConfigError(f"fixed point: expected 1-D {self.word_dtype} words, got {w.dtype}")
        if out is None:
            out = np.empty(w.shape[0], dtype=dtype)
        elif out.shape != w.shape or out.dtype not in (np.float32, np.float64):
            raise ConfigError("fixed point: out must be a float32/float64 array of the same shape")
        if divide_by <= 0:
            raise ConfigError(f"fixed point: divide_by must be positive, got {divide_by}")
        ints = w.view(_SIGNED[self.bits])
        scale = out.dtype.type(2.0**-self.frac_bits / divide_by)
        n = w.shape[0]
        for a in range(0, n, CHUNK_ELEMENTS):
            b = min(n, a + CHUNK_ELEMENTS)
            o = out[a:b]
            np.copyto(o, ints[a:b], casting="unsafe")
            o *= scale
        return out
