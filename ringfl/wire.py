"""The wire format: one message = two frames, never pickle.

Frame 0 is a fixed 48-byte little-endian header (`HEADER`); frame 1 is the payload's raw
bytes (a 1-D C-contiguous array). Layout of frame 0:

    magic    4s   b"RFL\\x00"
    version  u8   `VERSION`; another version is rejected
    kind     u8   `Kind`
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

The wire owns the message vocabulary: `Kind`, `Header`, `Message`, the payload `DTYPES`,
and `StepCodec`, the one way a protocol packs several small fields into `Header.step`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ringfl.errors import WireError


class Kind(enum.IntEnum):
    """What a message belongs to; drivers route messages by (kind, round)."""

    ALLREDUCE = 1
    GOSSIP = 2
    BROADCAST = 3
    SECURE = 4  # secure-aggregation setup and unmasking
    CONTROL = 5  # hello, state transfer, liveness (real peers)


@dataclass(frozen=True, slots=True)
class Header:
    """Fixed fields of every message. Integers are unsigned; `length` counts elements."""

    kind: Kind
    session: int  # u64: one training run; messages of another session are rejected
    round: int  # u32
    step: int  # u32: protocol step, e.g. 0 .. 2(N-1)-1 in a ring all-reduce
    chunk: int  # u32
    segment: int  # u32
    sender: int  # u32 peer id
    dtype: str  # numpy dtype name, one of ringfl.wire.DTYPES
    length: int  # elements in the 1-D payload


@dataclass(frozen=True, slots=True)
class Message:
    """A header and its payload. A received payload that is writable belongs to the
    receiving machine, which may modify it and send it on (drivers hand over buffers
    nobody else uses); a read-only one must be copied before it is changed."""

    header: Header
    payload: np.ndarray  # 1-D, C-contiguous, dtype == header.dtype, len == header.length


@dataclass(frozen=True)
class StepCodec:
    """How a protocol packs named fields into the u32 `Header.step`: `fields` from the
    most to the least significant, each with its width in bits (32 bits in all at most).
    `pack` raises `ValueError` for a value that does not fit (a protocol bug); `unpack`
    never fails (every u32 unpacks; the protocol checks the values)."""

    fields: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if sum(bits for _, bits in self.fields) > 32 or any(b < 1 for _, b in self.fields):
            raise ValueError(f"step codec {self.fields}: widths must be >= 1 and fit 32 bits")

    def pack(self, **values: int) -> int:
        out = 0
        for name, bits in self.fields:
            v = int(values.get(name, 0))
            if not 0 <= v < 1 << bits:
                raise ValueError(f"step field {name} = {v} does not fit {bits} bits")
            out = (out << bits) | v
        return out

    def unpack(self, step: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, bits in reversed(self.fields):
            out[name] = step & ((1 << bits) - 1)
            step >>= bits
        return out

    def limit(self, name: str) -> int:
        """The largest value field `name` can hold."""
        return (1 << dict(self.fields)[name]) - 1


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
