"""The wire format: one message = two frames, never pickle.

Frame 0 is a fixed 48-byte little-endian header (`HEADER`); frame 1 is the payload's raw
bytes (a 1-D C-contiguous array). Layout of frame 0:

    magic    4s   b"RFL\\x00"
    version  u8   `VERSION`; another version is rejected
    kind     u8   `ringfl.collective.events.Kind`
    dtype    u8   index into `DTYPES` (1-based; 0 is invalid)
    pad      u8   must be 0
    session  u64
    round    u32
    step     u32
    chunk    u32
    segment  u32
    sender   u32
    pad      4x   must be 0
    length   u64  elements in frame 1

`decode` validates every field against the frame it came with and raises `WireError`
naming the reason; it never trusts a length field without checking it against the bytes
that actually arrived, and it never copies the payload (np.frombuffer view, read-only).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from ringfl.collective.events import Header, Kind, Message
from ringfl.errors import WireError

MAGIC = b"RFL\x00"
VERSION = 1

#: The numpy dtypes a payload may have; the header carries the index (1-based).
DTYPES: tuple[str, ...] = ("float32", "float64", "int32", "uint32", "int64", "uint64", "uint8")

HEADER = struct.Struct("<4sBBBBQIIIII4xQ")
HEADER_SIZE = HEADER.size  # 48

_DTYPE_CODE = {name: i + 1 for i, name in enumerate(DTYPES)}
_CODE_DTYPE = {i + 1: np.dtype(name) for i, name in enumerate(DTYPES)}
_NAME_DTYPE = {name: np.dtype(name) for name in DTYPES}
_KINDS = {int(k): k for k in Kind}


def dtype_code(dtype: Any) -> int:
    """The header code of a numpy dtype; raises `WireError` for a dtype not in `DTYPES`."""
    code = _DTYPE_CODE.get(dtype) if isinstance(dtype, str) else None
    if code is not None:
        return code
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = repr(dtype)
    try:
        return _DTYPE_CODE[name]
    except KeyError:
        raise WireError(f"dtype {name!r} cannot be sent; allowed: {', '.join(DTYPES)}") from None


def check_dtype(dtype: Any) -> np.dtype:
    """Return `np.dtype(dtype)` if it is one of `DTYPES`, else raise `WireError`."""
    dtype_code(dtype)
    return np.dtype(dtype)


def encode_header(h: Header) -> bytes:
    """Pack a `Header` into frame 0. Raises `WireError` for out-of-range fields."""
    try:
        return HEADER.pack(
            MAGIC,
            VERSION,
            int(h.kind),
            dtype_code(h.dtype),
            0,
            h.session,
            h.round,
            h.step,
            h.chunk,
            h.segment,
            h.sender,
            h.length,
        )
    except struct.error as exc:
        raise WireError(f"header {h} does not fit the wire format: {exc}") from None


def encode(msg: Message) -> list[Any]:
    """Frames of `msg`: `[header bytes, payload ndarray]`.

    The payload frame is the array itself (not a copy) so a ZeroMQ driver can send it
    with `copy=False`; it must not be modified until the driver has released it.
    """
    p = msg.payload
    h = msg.header
    if not isinstance(p, np.ndarray) or p.ndim != 1 or not p.flags.c_contiguous:
        raise WireError("payload must be a 1-D C-contiguous numpy array")
    want = _NAME_DTYPE.get(h.dtype) if isinstance(h.dtype, str) else None
    if want is None:
        want = _CODE_DTYPE[dtype_code(h.dtype)]
    if p.dtype != want:
        raise WireError(f"payload dtype {p.dtype} != header dtype {h.dtype}")
    if p.shape[0] != h.length:
        raise WireError(f"payload has {p.shape[0]} elements, header says {h.length}")
    return [encode_header(h), p]


def _buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    if buf is None:
        try:
            buf = memoryview(frame)
        except TypeError:
            raise WireError(f"frame of type {type(frame).__name__} is not a buffer") from None
    if buf.ndim != 1 or buf.itemsize != 1:
        buf = buf.cast("B")
    return buf


def decode(frames: Sequence[Any], *, max_elements: int, session: int | None = None) -> Message:
    """Parse and validate two frames (bytes, memoryviews or `zmq.Frame`s) into a `Message`.

    Checks, in order: frame count, header size, magic, version, kind, dtype, padding,
    `length <= max_elements`, payload bytes == length × itemsize, and `session` if given.
    The payload is a read-only zero-copy view of frame 1. Any failure raises `WireError`.
    """
    if len(frames) != 2:
        raise WireError(f"expected 2 frames, got {len(frames)}")
    head = _buffer(frames[0])
    if head.nbytes != HEADER_SIZE:
        raise WireError(f"header is {head.nbytes} bytes, expected {HEADER_SIZE}")
    (magic, version, kind, code, pad, sess, rnd, step, chunk, seg, sender, length) = HEADER.unpack(
        head
    )
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}")
    if version != VERSION:
        raise WireError(f"protocol version {version}, this peer speaks {VERSION}")
    k = _KINDS.get(kind)
    if k is None:
        raise WireError(f"unknown message kind {kind}")
    dtype = _CODE_DTYPE.get(code)
    if dtype is None:
        raise WireError(f"unknown dtype code {code}")
    if pad != 0 or bytes(head[36:40]) != b"\0\0\0\0":
        raise WireError("non-zero header padding")
    if length > max_elements:
        raise WireError(f"length {length} exceeds the limit of {max_elements} elements")
    body = _buffer(frames[1])
    if body.nbytes != length * dtype.itemsize:
        raise WireError(
            f"payload is {body.nbytes} bytes, header says {length} × {dtype.name} "
            f"= {length * dtype.itemsize}"
        )
    if session is not None and sess != session:
        raise WireError(f"message of session {sess}, expected {session}")
    payload = np.frombuffer(body, dtype=dtype, count=length)
    header = Header(k, sess, rnd, step, chunk, seg, sender, DTYPES[code - 1], length)
    return Message(header, payload)


def to_bytes(frames: Sequence[Any]) -> list[bytes]:
    """Copy encoded frames to `bytes` (what crosses a real network)."""
    return [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]
