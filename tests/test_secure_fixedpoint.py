"""Fixed-point codec: exact sums, overflow refusal, counted clipping, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from ringfl.errors import ConfigError, SecureAggregationError
from ringfl.secure.fixedpoint import CHUNK_ELEMENTS, FixedPoint, default_frac_bits


def reference_ints(x: np.ndarray, f: int, clip: float) -> np.ndarray:
    q = np.floor(clip * 2.0**f)
    return np.rint(np.clip(x.astype(np.float64) * 2.0**f, -q, q)).astype(np.int64)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 100])
@pytest.mark.parametrize("bits", [32, 64])
def test_default_frac_bits_is_the_largest_safe(n: int, bits: int) -> None:
    for clip in (1.0, 0.3, 5.0):
        f = default_frac_bits(n, clip, bits)
        assert n * clip * 2.0**f < 2.0 ** (bits - 1) <= n * clip * 2.0 ** (f + 1)
        FixedPoint(n, f, clip, bits)  # accepted
        with pytest.raises(ConfigError, match="frac_bits"):
            FixedPoint(n, f + 1, clip, bits)


def test_overflowing_configurations_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="n_peers·clip·2\\^frac_bits"):
        FixedPoint(8, 28, 1.0, 32)
    with pytest.raises(ConfigError, match="bits"):
        FixedPoint(8, 10, 1.0, 16)
    with pytest.raises(ConfigError, match="clip"):
        FixedPoint(8, 10, -1.0)
    with pytest.raises(ConfigError, match="n_peers"):
        FixedPoint(0, 10, 1.0)
    with pytest.raises(ConfigError, match="clip"):
        FixedPoint(2, -3, 0.1)  # below one step


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_decoded_sum_equals_sum_of_rounded_values_exactly(dtype, bits: int, n: int) -> None:
    rng = np.random.default_rng(n * bits)
    m = CHUNK_ELEMENTS + 1001  # crosses a chunk boundary
    codec = FixedPoint.for_peers(n, clip=2.0, bits=bits)
    xs = (rng.standard_normal((n, m)) * rng.choice([0.01, 1.0, 3.0], size=(n, 1))).astype(dtype)
    total = np.zeros(m, dtype=codec.word_dtype)
    clipped = 0
    for x in xs:
        w, c = codec.encode(x)
        total += w  # wraps modulo 2^k
        clipped += c
    ints = sum(reference_ints(x, codec.frac_bits, 2.0) for x in xs)
    assert clipped == int(np.count_nonzero(np.abs(xs.astype(np.float64)) > 2.0))
    got = codec.decode(total, dtype=np.float64)
    if bits == 32:
        np.testing.assert_array_equal(got, ints * 2.0**-codec.frac_bits)
        np.testing.assert_array_equal(total.view(np.int32).astype(np.int64), ints)
    else:
        np.testing.assert_array_equal(total.view(np.int64), ints)


def test_negative_values_wrap_and_decode() -> None:
    codec = FixedPoint(3, 4, 1.0)
    w, _ = codec.encode(np.array([-1.0, -0.5, 0.0, 0.0625, 1.0], dtype=np.float32))
    assert w.tolist() == [2**32 - 16, 2**32 - 8, 0, 1, 16]
    s = (w + w + w).astype(np.uint32)
    assert codec.decode(s).tolist() == [-3.0, -1.5, 0.0, 0.1875, 3.0]


def test_average_of_typical_deltas_within_1e6_relative_error() -> None:
    n, m = 8, 200_000
    rng = np.random.default_rng(0)
    deltas = (rng.standard_normal((n, m)) * 0.01).astype(np.float32)
    codec = FixedPoint.for_peers(n)  # k = 32, clip = 1
    total = np.zeros(m, dtype=np.uint32)
    for x in deltas:
        total += codec.encode(x)[0]
    avg = codec.decode(total, dtype=np.float64, divide_by=n)
    want = deltas.astype(np.float64).mean(axis=0)
    rel = np.linalg.norm(avg - want) / np.linalg.norm(want)
    assert rel < 1e-6, rel
    avg32 = codec.decode(total, divide_by=n)  # float32 output as well
    assert np.linalg.norm(avg32 - want) / np.linalg.norm(want) < 1e-6


def test_clipping_is_counted_and_inf_clipped_nan_refused() -> None:
    codec = FixedPoint(4, 20, 0.5)
    x = np.array([0.1, 0.6, -0.7, np.inf, -np.inf, 0.5, -0.5], dtype=np.float64)
    w, clipped = codec.encode(x)
    assert clipped == 4
    got = codec.decode(w, dtype=np.float64)
    np.testing.assert_array_equal(got, reference_ints(x, 20, 0.5) * 2.0**-20)
    np.testing.assert_allclose(got, [0.1, 0.5, -0.5, 0.5, -0.5, 0.5, -0.5], atol=2.0**-20)
    with pytest.raises(SecureAggregationError, match="NaN"):
        codec.encode(np.array([0.0, np.nan], dtype=np.float32))


def test_empty_and_bad_shapes() -> None:
    codec = FixedPoint.for_peers(3)
    w, c = codec.encode(np.zeros(0, dtype=np.float32))
    assert w.shape == (0,) and c == 0 and codec.decode(w).shape == (0,)
    with pytest.raises(ConfigError):
        codec.encode(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ConfigError):
        codec.encode(np.zeros(3, dtype=np.int32))
    with pytest.raises(ConfigError):
        codec.decode(np.zeros(3, dtype=np.uint64))
