"""Mask expansion: a 32-byte secret → a stream of uint32/uint64 mask words.

The PRG is AES-256 in CTR mode (`cryptography`), keyed with the full 32-byte secret —
never a truncated seed, never numpy's generators. The 16-byte counter block is

    stream (u64, big-endian) ‖ block index (u64, big-endian)

and the keystream is read as little-endian words, so element e of a `dtype` mask lives at
byte e·itemsize of stream `stream`. Any range [start, stop) is therefore generated on its
own (segment by segment, in any order) and equals the same slice of the whole mask.

Each secret must be used for one mask only (one stream per purpose); the secure
aggregation derives a fresh secret per (session, round, pair).

Speed: keystream is produced with `update_into` from a preallocated zero buffer into a
preallocated output (about 0.5 ms per 10^6 uint32 words here), `MASK_CHUNK_BYTES` at a
time so the data stays in cache while it is added to the words.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ringfl.errors import ConfigError

KEY_BYTES = 32
BLOCK = 16
#: Keystream bytes produced per `update_into` call.
MASK_CHUNK_BYTES = 1 << 20

_WORDS = (np.dtype(np.uint32), np.dtype(np.uint64))
#: Read-only zeros that the cipher encrypts into keystream (shared, never written).
_ZEROS = memoryview(bytes(MASK_CHUNK_BYTES + BLOCK))


def _check_key(key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise ConfigError(f"mask key must be {KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


def _check_words(words: np.ndarray) -> np.dtype:
    if words.dtype not in _WORDS or words.ndim != 1 or not words.flags.c_contiguous:
        raise ConfigError(
            f"mask words must be a 1-D contiguous uint32/uint64 array, got {words.dtype}"
        )
    return words.dtype


class MaskStreamer:
    """Generates and applies masks with reusable scratch buffers (one per machine; not
    thread-safe)."""

    def __init__(self, chunk_bytes: int = MASK_CHUNK_BYTES) -> None:
        if chunk_bytes < BLOCK or chunk_bytes % BLOCK or chunk_bytes > MASK_CHUNK_BYTES:
            raise ConfigError(
                f"chunk_bytes must be a multiple of {BLOCK} in [{BLOCK}, {MASK_CHUNK_BYTES}]"
            )
        self.chunk_bytes = chunk_bytes
        self._buf = np.empty(0, dtype=np.uint8)  # grown on demand, up to chunk_bytes + 16
        self._open: dict[tuple[bytes, int], tuple[object, int]] = {}  # (key, stream) → (enc, pos)

    def _scratch(self, nbytes: int) -> np.ndarray:
        need = min(nbytes, self.chunk_bytes) + BLOCK
        if self._buf.shape[0] < need:
            self._buf = np.empty(need, dtype=np.uint8)
        return self._buf

    def _encryptor(self, key: bytes, byte0: int, stream: int):
        """A CTR encryptor positioned at keystream byte `byte0` of (key, stream): the one
        left at exactly that position by the previous call if any (consecutive segments
        reuse it), else a new one."""
        if byte0 < 0 or not 0 <= stream < 1 << 64:
            raise ConfigError(f"mask start must be ≥ 0 and stream a u64 (byte {byte0})")
        hit = self._open.pop((key, stream), None)
        if hit is not None and hit[1] == byte0:
            return hit[0]
        block, skip = divmod(byte0, BLOCK)
        nonce = stream.to_bytes(8, "big") + block.to_bytes(8, "big")
        enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        if skip:
            enc.update_into(_ZEROS[:skip], self._scratch(skip).data)
        return enc

    def _park(self, key: bytes, stream: int, enc, byte_end: int) -> None:
        if len(self._open) >= 256:
            self._open.clear()
        self._open[(key, stream)] = (enc, byte_end)

    def _pieces(self, key: bytes, start: int, n: int, itemsize: int, stream: int):
        """Yield (offset in elements, keystream bytes as uint8 view) covering n elements
        from element `start`."""
        start, n, stream = int(start), int(n), int(stream)
        if start < 0 or n < 0:
            raise ConfigError(f"mask range must be non-negative, got start={start} n={n}")
        if n == 0:
            return
        byte0 = start * itemsize
        enc = self._encryptor(key, byte0, stream)
        total = n * itemsize
        buf = self._scratch(total)
        done = 0
        per = self.chunk_bytes
        while done < total:
            m = min(per, total - done)
            enc.update_into(_ZEROS[:m], buf)
            yield done // itemsize, buf[:m]
            done += m
        self._park(key, stream, enc, byte0 + total)

    def fill(self, key: bytes, out: np.ndarray, start: int, *, stream: int = 0) -> np.ndarray:
        """Write mask words for elements [start, start + len(out)) into `out`."""
        key = _check_key(key)
        dt = _check_words(out)
        start, stream = int(start), int(stream)
        n = out.shape[0]
        if n == 0:
            return out
        byte0 = start * dt.itemsize
        enc = self._encryptor(key, byte0, stream)
        dst = memoryview(out.data).cast("B")
        total, done, per = dst.nbytes, 0, self.chunk_bytes
        while done < total:  # straight into `out`: no copy
            m = min(per, total - done)
            enc.update_into(_ZEROS[:m], dst[done:])
            done += m
        self._park(key, stream, enc, byte0 + total)
        return out

    def apply(
        self,
        words: np.ndarray,
        start: int,
        add: Iterable[bytes] = (),
        subtract: Iterable[bytes] = (),
        *,
        stream: int = 0,
    ) -> np.ndarray:
        """words += Σ mask(k) for k in `add` − Σ mask(k) for k in `subtract`, modulo 2^k,
        where the masks cover elements [start, start + len(words)). In place."""
        dt = _check_words(words)
        n = words.shape[0]
        for sign, keys in ((1, add), (-1, subtract)):
            op = np.add if sign > 0 else np.subtract
            for key in keys:
                key = _check_key(key)
                for off, piece in self._pieces(key, start, n, dt.itemsize, stream):
                    ks = piece.view(dt)
                    dst = words[off : off + ks.shape[0]]
                    op(dst, ks, out=dst)
        return words


def expand(
    key: bytes, start: int, stop: int, dtype: np.dtype | type = np.uint32, *, stream: int = 0
) -> np.ndarray:
    """Mask words for elements [start, stop) of the mask of `key` (a new array)."""
    if stop < start:
        raise ConfigError(f"mask range [{start}, {stop}) is empty or reversed")
    out = np.empty(stop - start, dtype=dtype)
    return MaskStreamer().fill(key, out, start, stream=stream)
