"""X25519 keys: files with 0600, text forms, pairwise secrets bound to their context."""

from __future__ import annotations

import os
import stat

import pytest
from zmq.utils import z85

from ringfl.errors import ConfigError, SecureAggregationError
from ringfl.secure.keys import (
    PeerKeys,
    decode_public_key,
    encode_public_key,
    load_keys,
    pairwise_secret,
    save_keys,
)


def test_save_load_roundtrip_with_owner_only_permissions(tmp_path) -> None:
    keys = PeerKeys.generate()
    path = save_keys(keys, tmp_path / "sub" / "peer3.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["peer3.key"]  # no temporary file left behind
    loaded = load_keys(path)
    assert loaded.public_bytes == keys.public_bytes
    assert loaded.private_bytes() == keys.private_bytes()
    # overwrite atomically
    other = PeerKeys.generate()
    save_keys(other, path)
    assert load_keys(path).public_bytes == other.public_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_refuses_readable_missing_or_garbage_files(tmp_path) -> None:
    path = save_keys(PeerKeys.generate(), tmp_path / "k")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=f"{path}.*chmod 600"):
        load_keys(path)
    with pytest.raises(ConfigError, match="nope"):
        load_keys(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a key\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="bad"):
        load_keys(bad)
    short = tmp_path / "short"
    short.write_bytes(b"AAAA\n")
    os.chmod(short, 0o600)
    with pytest.raises(ConfigError, match="3 bytes"):
        load_keys(short)


def test_public_key_text_forms() -> None:
    keys = PeerKeys.generate()
    raw = keys.public_bytes
    text = keys.public_text
    assert len(text) == 44 and text == encode_public_key(raw)
    assert decode_public_key(text) == raw
    assert decode_public_key(raw.hex()) == raw
    assert decode_public_key(z85.encode(raw).decode()) == raw
    assert decode_public_key(raw) == raw
    for bad in ("", "xyz", "g" * 64, "!" * 44):
        with pytest.raises(ConfigError, match="public_key of node 5"):
            decode_public_key(bad, where="public_key of node 5")


def test_pairwise_secret_agrees_and_is_bound_to_context() -> None:
    a, b, c = PeerKeys.generate(), PeerKeys.generate(), PeerKeys.generate()
    ctx = dict(session=11, round=4, purpose="mask")
    s_ab = pairwise_secret(a, 1, b.public_bytes, 2, **ctx)
    assert s_ab == pairwise_secret(b, 2, a.public_bytes, 1, **ctx)
    assert len(s_ab) == 32
    variants = {
        pairwise_secret(a, 1, b.public_bytes, 2, session=12, round=4, purpose="mask"),
        pairwise_secret(a, 1, b.public_bytes, 2, session=11, round=5, purpose="mask"),
        pairwise_secret(a, 1, b.public_bytes, 2, session=11, round=4, purpose="share-enc"),
        pairwise_secret(a, 1, b.public_bytes, 2, session=11, round=4, attempt=1, purpose="mask"),
        pairwise_secret(a, 1, b.public_bytes, 3, **ctx),  # other pair ids
        pairwise_secret(a, 1, c.public_bytes, 2, **ctx),  # other key
        s_ab,
    }
    assert len(variants) == 7
    # directed: one secret per direction, both ends agree
    ab = pairwise_secret(a, 1, b.public_bytes, 2, session=1, round=1, purpose="x", sender=1)
    ba = pairwise_secret(a, 1, b.public_bytes, 2, session=1, round=1, purpose="x", sender=2)
    assert ab != ba
    assert ab == pairwise_secret(b, 2, a.public_bytes, 1, session=1, round=1, purpose="x", sender=1)
    assert ba == pairwise_secret(b, 2, a.public_bytes, 1, session=1, round=1, purpose="x", sender=2)
    with pytest.raises(ConfigError):
        pairwise_secret(a, 1, b.public_bytes, 2, session=1, round=1, purpose="x", sender=3)


def test_low_order_public_key_is_refused() -> None:
    with pytest.raises(SecureAggregationError, match="peer 9"):
        pairwise_secret(PeerKeys.generate(), 1, bytes(32), 9, session=0, round=0, purpose="m")
    with pytest.raises(SecureAggregationError, match="peer 9"):
        pairwise_secret(PeerKeys.generate(), 1, bytes(31), 9, session=0, round=0, purpose="m")


def test_keys_from_seed_bytes_are_deterministic() -> None:
    assert PeerKeys.from_private_bytes(b"\x07" * 32).public_bytes == (
        PeerKeys.from_private_bytes(b"\x07" * 32).public_bytes
    )
    with pytest.raises(ConfigError):
        PeerKeys.from_private_bytes(b"\x07" * 31)
