"""Shamir t-of-n over 32-byte secrets (GF(2^31 − 1), numpy) and sealed shares (AES-GCM)."""

from __future__ import annotations

import itertools
import os

import pytest

from ringfl.errors import ConfigError, SecureAggregationError
from ringfl.secure.shamir import (
    SEALED_BYTES,
    SHARE_BYTES,
    combine_shares,
    default_threshold,
    open_share,
    seal_share,
    split_secret,
)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_any_t_shares_rebuild_and_fewer_do_not(n: int) -> None:
    t = default_threshold(n)
    assert t == n // 2 + 1
    secret = os.urandom(32)
    shares = split_secret(secret, t, n)
    assert len(shares) == n and all(len(s) == SHARE_BYTES for s in shares)
    for subset in itertools.combinations(range(n), t):
        assert combine_shares({i + 1: shares[i] for i in subset}, t) == secret
    if t > 1:
        # t-1 shares interpolate to something else (t-1 shares say nothing about it)
        sub = {i + 1: shares[i] for i in range(t - 1)}
        # (or to no valid secret at all: a limb out of range)
        try:
            assert combine_shares(sub, t - 1) != secret
        except SecureAggregationError as exc:
            assert "valid secret" in str(exc)
        with pytest.raises(SecureAggregationError, match="needs"):
            combine_shares(sub, t)


def test_split_checks_its_arguments() -> None:
    with pytest.raises(ConfigError):
        split_secret(os.urandom(16), 2, 3)
    with pytest.raises(ConfigError, match="threshold"):
        split_secret(os.urandom(32), 4, 3)
    with pytest.raises(ConfigError, match="threshold"):
        split_secret(os.urandom(32), 0, 3)


def test_sealed_shares_are_bound_to_their_context() -> None:
    key, share = os.urandom(32), os.urandom(SHARE_BYTES)
    ctx = dict(session=3, round=9, sender=1, recipient=2, context=b"epk")
    sealed = seal_share(key, share, **ctx)
    assert len(sealed) == SEALED_BYTES and share not in sealed
    assert open_share(key, sealed, **ctx) == share
    for change in (
        dict(session=4),
        dict(round=10),
        dict(sender=2, recipient=1),
        dict(context=b"other"),
    ):
        with pytest.raises(SecureAggregationError, match="authentication"):
            open_share(key, sealed, **{**ctx, **change})
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(SecureAggregationError):
        open_share(key, tampered, **ctx)
    with pytest.raises(SecureAggregationError):
        open_share(os.urandom(32), sealed, **ctx)


def test_sealing_the_same_share_twice_uses_fresh_nonces() -> None:
    """A retried round seals under the same key: GCM nonces must never repeat."""
    key = os.urandom(32)
    ctx = dict(session=1, round=2, sender=0, recipient=1)
    a, b = seal_share(key, bytes(36), **ctx), seal_share(key, bytes(range(36)), **ctx)
    assert a[:12] != b[:12]
    assert open_share(key, a, **ctx) == bytes(36)
    assert open_share(key, b, **ctx) == bytes(range(36))
