"""X25519 key pairs for peers, and pairwise secrets derived from them.

A peer's long-term key pair is an X25519 key (`cryptography`). Its public half travels in
the topology file as the node attribute `public_key`: the standard base64 of the raw 32
bytes (44 characters, e.g. ``"3p7b...Q="``). `decode_public_key` also accepts hex (64
characters) and Z85 (40 characters, the form ZeroMQ CURVE tools print).

The secret key file holds the raw 32 bytes of the private key as base64 on one line. It
is written atomically (temporary file in the same folder, fsync, rename) with permissions
0600 from the start; `load_keys` refuses a file that group or others can read.

Pairwise secrets: X25519(own private, peer public) → HKDF-SHA256 with

    info = b"ringfl/v1/" + purpose + session (u64) + round (u32) + attempt (u32)
           + a (u32) + b (u32) + public key of a + public key of b

where (a, b) is the pair: (sender, recipient) for directed purposes (`sender=`), or
sorted (min, max) otherwise, so both peers derive the same bytes.
Different sessions, rounds, attempts, pairs or purposes give independent secrets: a key
derived here feeds one keystream (`ringfl.secure.prg`) that masks one plaintext, the
contribution of one attempt of one round, and is never derived again for another.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zmq.utils import z85

from ringfl.errors import ConfigError, SecureAggregationError

KEY_BYTES = 32
_INFO_PREFIX = b"ringfl/v1/"


@dataclass(frozen=True)
class PeerKeys:
    """A peer's X25519 key pair."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> PeerKeys:
        """A fresh key pair from the OS random generator."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> PeerKeys:
        """The key pair whose private key is the 32 raw bytes `raw` (for simulations that
        derive keys from a seed; real peers use `generate`)."""
        if len(raw) != KEY_BYTES:
            raise ConfigError(f"private key must be {KEY_BYTES} bytes, got {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(bytes(raw)))

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_text(self) -> str:
        """The public key as written in a topology file (base64 of the raw bytes)."""
        return encode_public_key(self.public_bytes)

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )


def encode_public_key(raw: bytes) -> str:
    """Base64 (standard alphabet, padded) of a raw 32-byte public key."""
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"public key must be {KEY_BYTES} bytes, got {len(raw)}")
    return base64.b64encode(bytes(raw)).decode("ascii")


def decode_public_key(text: str | bytes, *, where: str = "public_key") -> bytes:
    """Raw 32 bytes from base64 (44 chars), hex (64 chars) or Z85 (40 chars), or from raw
    bytes. Raises `ConfigError` naming `where` if it is none of them."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) == KEY_BYTES:
            return bytes(text)
        text = bytes(text).decode("ascii", errors="replace")
    s = str(text).strip()
    try:
        if len(s) == 64:
            raw = binascii.unhexlify(s)
        elif len(s) == 44:
            raw = base64.b64decode(s, validate=True)
        elif len(s) == 40:
            raw = z85.decode(s.encode("ascii"))
        else:
            raise ValueError(f"{len(s)} characters")
    except (ValueError, binascii.Error, KeyError, UnicodeEncodeError) as exc:
        raise ConfigError(
            f"{where}: not a 32-byte X25519 key in base64, hex or Z85 ({exc})"
        ) from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{where}: decodes to {len(raw)} bytes, expected {KEY_BYTES}")
    return raw


def save_keys(keys: PeerKeys, path: str | os.PathLike[str]) -> Path:
    """Write the private key to `path` atomically with mode 0600; returns the path.

    The public key can always be recomputed from it (`load_keys(path).public_text`)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    data = base64.b64encode(keys.private_bytes()) + b"\n"
    # mkstemp creates the file with mode 0600 already, so the secret is never exposed.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def load_keys(path: str | os.PathLike[str]) -> PeerKeys:
    """Read a key file written by `save_keys`. Raises `ConfigError` naming the file if it
    is missing, readable by group/others, or not a key."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from None
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path}: permissions {stat.filemode(st.st_mode)} let others read the "
            f"secret key; run `chmod 600 {path}`"
        )
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise ConfigError(f"key file {path}: not base64") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"key file {path}: {len(raw)} bytes of key, expected {KEY_BYTES}")
    return PeerKeys.from_private_bytes(raw)


def key_agreement(own: PeerKeys | X25519PrivateKey, peer_public: bytes, peer_id: int) -> bytes:
    """The raw X25519 shared secret with `peer_id` (input to `derive_pairwise` only).
    Raises `SecureAggregationError` if the agreement fails (e.g. a low-order key)."""
    priv = own.private if isinstance(own, PeerKeys) else own
    if len(peer_public) != KEY_BYTES:
        raise SecureAggregationError(
            f"public key of peer {peer_id} is {len(peer_public)} bytes, expected {KEY_BYTES}"
        )
    try:
        return priv.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public)))
    except ValueError as exc:
        raise SecureAggregationError(f"key agreement with peer {peer_id} failed: {exc}") from None


def derive_pairwise(
    shared: bytes,
    own_id: int,
    own_public: bytes,
    peer_id: int,
    peer_public: bytes,
    *,
    session: int,
    round: int,
    attempt: int,
    purpose: str,
    sender: int | None = None,
    length: int = 32,
) -> bytes:
    """HKDF-SHA256 of a `key_agreement` result, bound as described in the module
    docstring (one X25519 agreement can serve several purposes and both directions)."""
    if sender is not None and sender not in (own_id, peer_id):
        raise ConfigError(f"pairwise_secret: sender {sender} is neither {own_id} nor {peer_id}")
    pair = [(int(own_id), bytes(own_public)), (int(peer_id), bytes(peer_public))]
    if sender is None:
        pair.sort(key=lambda p: p[0])
    elif sender != own_id:
        pair.reverse()
    (a, pa), (b, pb) = pair
    info = (
        _INFO_PREFIX
        + purpose.encode("utf-8")
        + b"\0"
        + struct.pack("<QIIII", session, round, attempt, a, b)
        + pa
        + pb
    )
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(shared)


def pairwise_secret(
    own: PeerKeys | X25519PrivateKey,
    own_id: int,
    peer_public: bytes,
    peer_id: int,
    *,
    session: int,
    round: int,
    attempt: int = 0,
    purpose: str,
    sender: int | None = None,
    length: int = 32,
) -> bytes:
    """`length` bytes shared by peers `own_id` and `peer_id` (see the module docstring).

    sender=None binds the sorted pair (one secret per pair); sender=own_id or peer_id
    binds the ordered pair (sender, other), one secret per direction. Both peers get the
    same bytes. Raises `SecureAggregationError` if the key agreement fails (e.g. a
    low-order public key).
    """
    if sender is not None and sender not in (own_id, peer_id):
        raise ConfigError(f"pairwise_secret: sender {sender} is neither {own_id} nor {peer_id}")
    priv = own.private if isinstance(own, PeerKeys) else own
    own_public = priv.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = key_agreement(priv, peer_public, peer_id)
    return derive_pairwise(
        shared,
        own_id,
        own_public,
        peer_id,
        peer_public,
        session=session,
        round=round,
        attempt=attempt,
        purpose=purpose,
        sender=sender,
        length=length,
    )
