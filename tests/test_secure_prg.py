"""Mask PRG: deterministic, segment-addressable, cancels exactly, looks uniform."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from ringfl.errors import ConfigError
from ringfl.secure.prg import MaskStreamer, expand

KEY = bytes(range(32))


def test_matches_aes256_ctr_keystream() -> None:
    # independent reference: the raw AES-256-CTR keystream from counter block 0
    ks = Cipher(algorithms.AES(KEY), modes.CTR(bytes(16))).encryptor().update(bytes(4000))
    np.testing.assert_array_equal(expand(KEY, 0, 1000), np.frombuffer(ks, dtype="<u4"))
    np.testing.assert_array_equal(expand(KEY, 0, 500, np.uint64), np.frombuffer(ks, dtype="<u8"))


def test_deterministic_and_key_dependent() -> None:
    a = expand(KEY, 0, 10_000)
    assert np.array_equal(a, expand(KEY, 0, 10_000))
    other = expand(bytes(31) + b"\x01", 0, 10_000)
    assert np.count_nonzero(a == other) < 5
    assert np.count_nonzero(a == expand(KEY, 0, 10_000, stream=1)) < 5


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_any_segment_equals_the_slice_of_the_whole_mask(dtype) -> None:
    n = 300_001
    whole = expand(KEY, 0, n, dtype)
    rng = np.random.default_rng(1)
    cuts = [(0, 0), (0, 1), (1, 2), (3, 17), (5, n), (n - 1, n), (123_457, 262_145)]
    cuts += [tuple(sorted(rng.integers(0, n, 2))) for _ in range(20)]
    s = MaskStreamer(chunk_bytes=4096)  # many pieces per segment
    for a, b in cuts:
        np.testing.assert_array_equal(expand(KEY, a, b, dtype), whole[a:b])
        out = np.empty(b - a, dtype=dtype)
        np.testing.assert_array_equal(s.fill(KEY, out, a), whole[a:b])
        w = np.zeros(b - a, dtype=dtype)
        np.testing.assert_array_equal(s.apply(w, a, add=[KEY]), whole[a:b])


def test_masks_cancel_exactly_modulo_2k() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32)
    keys = [rng.bytes(32) for _ in range(4)]
    s = MaskStreamer()
    y = s.apply(x.copy(), 777, add=keys[:2], subtract=keys[2:])
    assert np.count_nonzero(y == x) < 5
    back = s.apply(y, 777, add=keys[2:], subtract=keys[:2])
    np.testing.assert_array_equal(back, x)


def test_mask_bytes_are_uniform() -> None:
    b = expand(KEY, 0, 250_000).view(np.uint8)
    counts = np.bincount(b, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        expand(b"short", 0, 3)
    with pytest.raises(ConfigError):
        expand(KEY, 5, 3)
    with pytest.raises(ConfigError):
        MaskStreamer().fill(KEY, np.zeros(3, dtype=np.float32), 0)
    with pytest.raises(ConfigError):
        MaskStreamer(chunk_bytes=100)


def test_reused_encryptors_give_the_same_words_in_any_order() -> None:
    # a streamer keeps one CTR encryptor per key positioned where the last segment ended;
    # consecutive, interleaved, repeated and backward segments must all match the slices
    n = 10_007
    keys = [bytes([k]) * 32 for k in range(3)]
    whole = {k: expand(k, 0, n) for k in keys}
    bounds = [0, 1, 2, 5, 16, 17, 100, 1024, 1025, 4099, 9000, n]
    segs = list(zip(bounds[:-1], bounds[1:], strict=True))
    rng = np.random.default_rng(5)
    orders = [segs, segs[::-1], [segs[i] for i in rng.permutation(len(segs))], segs + segs]
    for order in orders:
        s = MaskStreamer(chunk_bytes=64)
        total = np.zeros(n, dtype=np.uint32)
        seen = np.zeros(n, dtype=bool)
        for a, b in order:
            w = np.zeros(b - a, dtype=np.uint32)
            s.apply(w, a, add=keys[:2], subtract=keys[2:])
            if not seen[a]:
                total[a:b] = w
                seen[a:b] = True
            else:  # a repeat must give the same words again
                np.testing.assert_array_equal(w, total[a:b])
        want = whole[keys[0]] + whole[keys[1]] - whole[keys[2]]
        np.testing.assert_array_equal(total, want)
