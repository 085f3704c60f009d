"""t-of-n Shamir secret sharing of 32-byte secrets, and share encryption.

Sharing uses pycryptodome's `Crypto.Protocol.SecretSharing.Shamir` (GF(2^128), 16-byte
secrets, share indices 1..n, coefficients from the OS random generator). A 32-byte secret
is split as two independent 16-byte halves with the same indices, so a share is 32 bytes
(left half's share ‖ right half's share) and any t shares rebuild the secret while t − 1
reveal nothing about it.

Shares travel encrypted to their recipient with AES-256-GCM (`cryptography`), keyed with
the directed pairwise secret of (sender → recipient, purpose "share-enc") for this
session and round (`ringfl.secure.keys.pairwise_secret` with `sender=`). Every seal
draws a fresh random 96-bit nonce that travels in front of the ciphertext: a peer that
retries a round (same session, round and key) must never reuse a GCM nonce with a
different share, and a random nonce makes that impossible to get wrong at the call
site. The associated data binds
session, round, sender, recipient and `context` (the secure aggregation puts the
sender's ephemeral masking public key there, which authenticates it to the recipient).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ringfl.errors import ConfigError, SecureAggregationError

SECRET_BYTES = 32
SHARE_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12
#: Size of one encrypted share on the wire: nonce ‖ ciphertext ‖ tag.
SEALED_BYTES = NONCE_BYTES + SHARE_BYTES + TAG_BYTES
_HALF = 16


def default_threshold(n: int) -> int:
    """⌊n/2⌋ + 1: a strict majority (two disjoint groups can never both recover)."""
    return n // 2 + 1


def check_threshold(threshold: int, n: int) -> int:
    if not isinstance(threshold, int) or not 1 <= threshold <= n:
        raise ConfigError(f"threshold must be an int in 1..{n} (peers), got {threshold!r}")
    return threshold


def split_secret(secret: bytes, threshold: int, n: int) -> list[bytes]:
    """n shares of a 32-byte secret; share i (0-based) has Shamir index i + 1."""
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    check_threshold(threshold, n)
    left = Shamir.split(threshold, n, bytes(secret[:_HALF]))
    right = Shamir.split(threshold, n, bytes(secret[_HALF:]))
    return [a[1] + b[1] for a, b in zip(left, right, strict=True)]


def combine_shares(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least `threshold` shares, given as {Shamir index: share}.

    Uses the `threshold` lowest indices. Raises `SecureAggregationError` if too few.
    """
    if len(shares) < threshold:
        raise SecureAggregationError(
            f"{len(shares)} shares cannot rebuild a secret that needs {threshold}"
        )
    chosen = sorted(shares)[:threshold]
    for i in chosen:
        if len(shares[i]) != SHARE_BYTES or i < 1:
            raise SecureAggregationError(f"malformed share with index {i}")
    left = Shamir.combine([(i, shares[i][:_HALF]) for i in chosen])
    right = Shamir.combine([(i, shares[i][_HALF:]) for i in chosen])
    return left + right


def _ad(session: int, round: int, sender: int, recipient: int, context: bytes) -> bytes:
    return b"ringfl/v1/share" + struct.pack("<QIII", session, round, sender, recipient) + context


def seal_share(
    key: bytes,
    share: bytes,
    *,
    session: int,
    round: int,
    sender: int,
    recipient: int,
    context: bytes = b"",
) -> bytes:
    """Encrypt a share for `recipient` (AES-256-GCM, `SEALED_BYTES` out)."""
    if len(key) != 32 or len(share) != SHARE_BYTES:
        raise ConfigError("seal_share: key and share must be 32 bytes")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(
        nonce, bytes(share), _ad(session, round, sender, recipient, context)
    )


def open_share(
    key: bytes,
    sealed: bytes,
    *,
    session: int,
    round: int,
    sender: int,
    recipient: int,
    context: bytes = b"",
) -> bytes:
    """Decrypt and authenticate a share; `SecureAggregationError` if it was tampered with,
    addressed to someone else, or from another session/round."""
    if len(sealed) != SEALED_BYTES:
        raise SecureAggregationError(f"sealed share from peer {sender} has {len(sealed)} bytes")
    try:
        return AESGCM(key).decrypt(
            bytes(sealed[:NONCE_BYTES]),
            bytes(sealed[NONCE_BYTES:]),
            _ad(session, round, sender, recipient, context),
        )
    except InvalidTag:
        raise SecureAggregationError(
            f"share from peer {sender} to peer {recipient} failed authentication"
        ) from None
