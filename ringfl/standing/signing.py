"""Ed25519 signing keys of a party, and signed events.

A party signs every task event it originates (proposals above all) with its Ed25519 key;
every node checks the signature against the origin's `sign_key` in the topology. CURVE
already authenticates the link, but signatures make each stored event verifiable later,
by anyone holding the topology, whichever node it was read from.

Files, in the party's key directory (beside `curve.key` and `mask.key`):

| file | content |
|---|---|
| `sign.key` | raw 32-byte Ed25519 private key, base64, one line, mode 0600 |
| `sign.pub` | raw 32-byte public key, base64 (the topology's `sign_key` node attribute) |
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ringfl.errors import ConfigError

#: Topology node attribute holding a party's Ed25519 public key (base64 of 32 bytes).
SIGN_KEY = "sign_key"
SIGN_SECRET = "sign.key"
SIGN_PUBLIC = "sign.pub"
#: Domain separation: a signature over an event can never be taken for anything else.
_CONTEXT = b"ringfl-standing-event-v1\n"


def canonical(obj: Any) -> bytes:
    """The one byte encoding that is signed and hashed: sorted keys, no spaces, ASCII."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def digest(obj: Any, n: int = 32) -> str:
    """First `n` hex digits of the SHA-256 of `canonical(obj)`."""
    return hashlib.sha256(canonical(obj)).hexdigest()[:n]


class SigningKey:
    """An Ed25519 key pair."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_text(self) -> str:
        """Base64 of the raw 32-byte public key (the topology's `sign_key`)."""
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode("ascii")

    def sign(self, body: dict[str, Any]) -> str:
        """Base64 signature over `canonical(body)`."""
        return base64.b64encode(self._key.sign(_CONTEXT + canonical(body))).decode("ascii")

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write `sign.key` (0600, created with that mode) and `sign.pub` into `folder`."""
        folder = Path(folder)
        secret = folder / SIGN_SECRET
        if secret.exists() and not overwrite:
            raise ConfigError(f"{secret} exists; refusing to overwrite a secret key")
        folder.mkdir(parents=True, exist_ok=True)
        raw = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        tmp = folder / f".{SIGN_SECRET}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(raw).decode("ascii") + "\n")
        os.replace(tmp, secret)
        (folder / SIGN_PUBLIC).write_text(self.public_text + "\n")
        return secret

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> SigningKey:
        """Read `folder/sign.key`; refuses a file that group or others may read."""
        path = Path(folder) / SIGN_SECRET
        try:
            mode = path.stat().st_mode
            text = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no signing key (make one with `ringfl node keys --out DIR`)"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: secret key readable by others (chmod 600 {path})")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{path}: not base64") from None
        if len(raw) != 32:
            raise ConfigError(f"{path}: an Ed25519 key has 32 bytes, this one {len(raw)}")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))


def public_key(text: Any, where: str) -> Ed25519PublicKey:
    """Parse a base64 `sign_key`; ConfigError naming `where` when it is not one."""
    try:
        raw = base64.b64decode(str(text), validate=True)
        if len(raw) != 32:
            raise ValueError
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not a base64 Ed25519 public key (32 bytes)") from None


def verify(key: Ed25519PublicKey, body: dict[str, Any], signature: Any) -> bool:
    """True when `signature` (base64) is `key`'s signature over `canonical(body)`."""
    if not isinstance(signature, str) or len(signature) > 200:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), _CONTEXT + canonical(body))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


__all__ = ["SIGN_KEY", "SigningKey", "canonical", "digest", "public_key", "verify"]
