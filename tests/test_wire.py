"""Wire format: round trips, every validation, and a fuzz of random/truncated/flipped frames."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfl import wire
from ringfl.collective.events import Header, Kind, Message
from ringfl.errors import WireError

MAX = 1 << 20


def make(dtype="float32", n=5, **kw) -> Message:
    fields = dict(kind=Kind.ALLREDUCE, session=7, round=3, step=2, chunk=1, segment=0, sender=4)
    fields.update(kw)
    payload = (np.arange(n) * 3 + 1).astype(dtype)
    return Message(Header(dtype=dtype, length=n, **fields), payload)


def roundtrip(msg: Message, **kw) -> Message:
    return wire.decode(wire.to_bytes(wire.encode(msg)), max_elements=MAX, **kw)


@pytest.mark.parametrize("dtype", wire.DTYPES)
@pytest.mark.parametrize("n", [0, 1, 17])
def test_roundtrip_every_dtype(dtype: str, n: int) -> None:
    msg = make(dtype, n)
    got = roundtrip(msg, session=7)
    assert got.header == msg.header
    assert got.payload.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.payload, msg.payload)


def test_encode_gives_header_bytes_and_the_array_itself() -> None:
    msg = make()
    frames = wire.encode(msg)
    assert isinstance(frames[0], bytes) and len(frames[0]) == wire.HEADER_SIZE
    assert frames[1] is msg.payload


def test_decode_is_zero_copy_view() -> None:
    frames = wire.to_bytes(wire.encode(make(n=1000)))
    body = bytearray(frames[1])
    got = wire.decode([frames[0], body], max_elements=MAX)
    body[0:4] = np.float32(99).tobytes()
    assert got.payload[0] == 99


def test_decode_accepts_zmq_frames() -> None:
    zmq = pytest.importorskip("zmq")
    frames = [zmq.Frame(f) for f in wire.to_bytes(wire.encode(make(n=9)))]
    np.testing.assert_array_equal(wire.decode(frames, max_elements=MAX).payload, make(n=9).payload)


def _patched(offset: int, fmt: str, value: int) -> list[bytes]:
    head, body = wire.to_bytes(wire.encode(make()))
    head = bytearray(head)
    struct.pack_into(fmt, head, offset, value)
    return [bytes(head), body]


@pytest.mark.parametrize(
    "frames, reason",
    [
        (lambda: wire.to_bytes(wire.encode(make()))[:1], "expected 2 frames"),
        (lambda: wire.to_bytes(wire.encode(make())) + [b""], "expected 2 frames"),
        (lambda: [wire.to_bytes(wire.encode(make()))[0][:-1], b""], "header is 47 bytes"),
        (lambda: [b"XXXX" + wire.to_bytes(wire.encode(make()))[0][4:], b""], "bad magic"),
        (lambda: _patched(4, "<B", 2), "protocol version 2"),
        (lambda: _patched(5, "<B", 99), "unknown message kind 99"),
        (lambda: _patched(6, "<B", 0), "unknown dtype code 0"),
        (lambda: _patched(6, "<B", 200), "unknown dtype code 200"),
        (lambda: _patched(7, "<B", 1), "padding"),
        (lambda: _patched(36, "<I", 1), "padding"),
        (lambda: _patched(40, "<Q", 6), "payload is 20 bytes"),
        (lambda: _patched(40, "<Q", MAX + 1), "exceeds the limit"),
        (lambda: _patched(6, "<B", 2), "payload is 20 bytes, header says 5 × float64"),
        (lambda: _patched(8, "<Q", 8), "session 8, expected 7"),
    ],
)
def test_rejections_name_the_reason(frames, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        wire.decode(frames(), max_elements=MAX, session=7)


def test_encode_refuses_bad_messages() -> None:
    bad = [
        Message(make().header, np.zeros(5, np.float64)),  # dtype mismatch
        Message(make().header, np.zeros(4, np.float32)),  # length mismatch
        Message(make().header, np.zeros((5, 1), np.float32)),  # not 1-D
        Message(make().header, np.zeros(10, np.float32)[::2]),  # not contiguous
        make("float16"),  # dtype not allowed
        make(round=2**32),  # does not fit u32
        make(session=-1),
    ]
    for msg in bad:
        with pytest.raises(WireError):
            wire.encode(msg)


def _check_one(frames: list) -> None:
    """Either a valid message consistent with its frames, or WireError; nothing else."""
    try:
        got = wire.decode(frames, max_elements=4096)
    except WireError:
        return
    h = got.header
    assert got.payload.shape == (h.length,)
    assert got.payload.dtype.name == h.dtype
    assert got.payload.nbytes == len(frames[1])
    assert wire.to_bytes(wire.encode(got)) == [bytes(f) for f in frames]


def test_fuzz_random_truncated_and_flipped_frames() -> None:
    rng = np.random.default_rng(1234)
    valid = [
        wire.to_bytes(wire.encode(make(d, n, step=int(rng.integers(0, 9)))))
        for d in wire.DTYPES
        for n in (0, 1, 3, 100)
    ]
    for i in range(6000):
        base = [bytearray(f) for f in valid[i % len(valid)]]
        mode = i % 6
        if mode == 0:  # flip random bits anywhere in the header
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, len(base[0]) * 8))
                base[0][pos // 8] ^= 1 << (pos % 8)
        elif mode == 1:  # truncate or extend the header
            cut = int(rng.integers(0, wire.HEADER_SIZE + 8))
            base[0] = (base[0] + bytearray(8))[:cut]
        elif mode == 2:  # truncate or extend the payload
            base[1] = (base[1] + bytearray(rng.bytes(16)))[
                : int(rng.integers(0, len(base[1]) + 16))
            ]
        elif mode == 3:  # random frames
            base = [
                bytearray(rng.bytes(int(rng.integers(0, 60))))
                for _ in range(int(rng.integers(0, 4)))
            ]
        elif mode == 4:  # random header with a valid magic and version
            base[0] = bytearray(wire.MAGIC + bytes([wire.VERSION]) + rng.bytes(43))
        else:  # flip bits in the payload: still a valid message
            if base[1]:
                pos = int(rng.integers(0, len(base[1]) * 8))
                base[1][pos // 8] ^= 1 << (pos % 8)
        _check_one([bytes(f) for f in base])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), min_size=0, max_size=3))
def test_hypothesis_arbitrary_frames(frames: list[bytes]) -> None:
    _check_one(frames)


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from(wire.DTYPES),
    n=st.integers(0, 64),
    fields=st.tuples(*[st.integers(0, 2**32 - 1)] * 5),
    session=st.integers(0, 2**64 - 1),
    kind=st.sampled_from(list(Kind)),
)
def test_hypothesis_roundtrip(dtype, n, fields, session, kind) -> None:
    rnd, step, chunk, seg, sender = fields
    msg = make(
        dtype,
        n,
        kind=kind,
        session=session,
        round=rnd,
        step=step,
        chunk=chunk,
        segment=seg,
        sender=sender,
    )
    got = roundtrip(msg, session=session)
    assert got.header == msg.header
    np.testing.assert_array_equal(got.payload, msg.payload)
