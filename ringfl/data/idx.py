"""Reader for the IDX format (MNIST's file format), gzipped or not.

IDX layout, big-endian: two zero bytes, a type byte, a byte with the number of dimensions,
one uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from ringfl.data.errors import DataError

# IDX type byte -> numpy dtype (big-endian where it matters).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of `path` (gunzipped when it ends in `.gz`)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read (corrupt or truncated gzip?): {exc}") from None


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into an array in native byte order. `source` names the file in errors."""
    if len(raw) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{source}: not an IDX file (magic must start with two zero bytes)")
    type_byte, ndim = raw[2], raw[3]
    if type_byte not in IDX_TYPES:
        raise DataError(f"{source}: unknown IDX type byte 0x{type_byte:02x}")
    if ndim == 0:
        raise DataError(f"{source}: IDX file with zero dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{source}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_byte]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got != expected:
        raise DataError(
            f"{source}: IDX data is {got} bytes, but dims {dims} of {dtype.name} need {expected}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (`.gz` or raw). If `sha256` is given, the uncompressed bytes must
    have that digest, else `DataError` (the file is corrupt or not the expected one)."""
    path = Path(path)
    raw = read_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise DataError(
                f"{path}: SHA-256 of the uncompressed file is {digest}, expected {sha256} "
                "(corrupt or not the canonical file)"
            )
    return parse_idx(raw, str(path))
