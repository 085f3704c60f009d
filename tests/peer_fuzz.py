"""A hostile client for the real-peer tests: connects a PUSH socket to a peer and sends
random and malformed frames (every one of them invalid in some way), or forged messages.

    python tests/peer_fuzz.py ENDPOINT --count 3000 --control-session S --data-session D \
        --peers N [--seed 0] [--curve-server Z85 --curve-secret FILE] [--forge]

Prints a JSON object with how many frames of each category it sent.
"""

from __future__ import annotations

import argparse
import json
import struct
import time

import numpy as np
import zmq

HEADER = struct.Struct("<4sBBBBQIIIII4xQ")
MAGIC = b"RFL\x00"
CONTROL, SECURE, ALLREDUCE = 5, 4, 1
F32, U8, I64 = 1, 7, 5


def header(kind, session, rnd, step, sender, dtype, length, *, magic=MAGIC, version=1, pad=0):
    return HEADER.pack(magic, version, kind, dtype, pad, session, rnd, step, 0, 0, sender, length)


def frames(rng: np.random.Generator, cs: int, ds: int, n: int) -> tuple[str, list[bytes]]:
    """One invalid message: (category, frames)."""
    c = int(rng.integers(0, 20))
    i64 = lambda *v: np.array(v, dtype=np.int64).tobytes()  # noqa: E731
    if c == 0:
        k = int(rng.integers(1, 5))
        return "random", [rng.bytes(int(rng.integers(0, 200))) for _ in range(k)]
    if c == 1:
        return "short-header", [rng.bytes(47), b""]
    if c == 2:
        return "bad-magic", [header(CONTROL, cs, 0, 3, 1, I64, 1, magic=b"XXXX"), i64(1)]
    if c == 3:
        return "version", [header(CONTROL, cs, 0, 3, 1, I64, 1, version=2), i64(1)]
    if c == 4:
        return "kind", [header(99, cs, 0, 3, 1, I64, 1), i64(1)]
    if c == 5:
        return "dtype", [header(CONTROL, cs, 0, 3, 1, 0, 1), i64(1)]
    if c == 6:
        return "oversized-length", [header(SECURE, ds, 1, 0, 1, U8, 1 << 40), b"x" * 16]
    if c == 7:
        return "length-mismatch", [header(CONTROL, cs, 0, 1, 1, I64, 5), i64(1, 2)]
    if c == 8:
        return "wrong-session", [
            header(SECURE, int(rng.integers(1, 1 << 62)), 1, 0, 1, U8, 8),
            rng.bytes(8),
        ]
    if c == 9:
        return "not-a-peer", [header(CONTROL, cs, 0, 1, n + 7, I64, 5), i64(1, 0, 0, 0, 0)]
    if c == 10:
        return "unknown-op", [header(CONTROL, cs, 0, 77, 1, I64, 1), i64(1)]
    if c == 11:  # HELLO with an impossible state / negative incarnation
        bad = [i64(5, 9, 0, 0, 0), i64(-5, 0, 0, 0, 0), i64(5, 0, -9, 0, 0), i64(5, 0, 0, 3, 0)]
        return "bad-hello", [header(CONTROL, cs, 0, 1, 1, I64, 5), bad[int(rng.integers(4))]]
    if c == 12:  # LOST naming a peer twice / out of range / nobody
        bad = [i64(1, 1), i64(n + 3), b""]
        p = bad[int(rng.integers(3))]
        return "bad-lost", [header(CONTROL, cs, 2, 5, 1, I64, len(p) // 8), p]
    if c == 13:  # STATE whose counts do not match its length
        blob = struct.pack("<QIIQ", ds, 3, 2, 10) + struct.pack("<II", 0, 1) + b"\0" * 12
        return "bad-state", [header(CONTROL, cs, 3, 6, 1, U8, len(blob)), blob]
    if c == 14:  # a data message for a round long past
        return "past-round", [header(SECURE, ds, 0, 0, 1, U8, 4), rng.bytes(4)]
    if c == 15:  # far in the future
        return "future-round", [header(SECURE, ds, 10**6, 0, 1, U8, 4), rng.bytes(4)]
    if c == 16:  # a neighbour's buffer of the wrong length (all rounds a run can have)
        rnd = int(rng.integers(0, 12))
        step = (3 << 29) | int(rng.integers(0, 8))  # stage SUM
        length = int(rng.integers(1, 4))
        return "wrong-length", [
            header(SECURE, ds, rnd, step, int(rng.integers(0, n)), U8, length),
            rng.bytes(length),
        ]
    if c == 17:  # NaN floats where words are expected
        pay = np.full(6, np.nan, np.float32).tobytes()
        return "nan-payload", [
            header(SECURE, ds, int(rng.integers(0, 12)), 3 << 29, int(rng.integers(0, n)), F32, 6),
            pay,
        ]
    if c == 18:  # unknown stage
        return "bad-stage", [
            header(SECURE, ds, int(rng.integers(0, 12)), 0, int(rng.integers(0, n)), U8, 1),
            b"\x01",
        ]
    return "nonzero-pad", [header(CONTROL, cs, 0, 3, 1, I64, 1, pad=1), i64(1)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--control-session", type=int, required=True)
    ap.add_argument("--data-session", type=int, default=0)
    ap.add_argument("--peers", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curve-server", help="the peer's CURVE public key (Z85)")
    ap.add_argument("--curve-secret", help="file with this client's CURVE secret (Z85)")
    ap.add_argument("--forge", action="store_true", help="send well-formed forged notices")
    ap.add_argument("--seconds", type=float, default=3.0, help="spread the frames over this")
    a = ap.parse_args()
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 500)
    s.setsockopt(zmq.SNDHWM, 100_000)
    if a.curve_server:
        with open(a.curve_secret, "rb") as f:
            secret = f.read().strip()
        s.curve_secretkey = secret
        s.curve_publickey = zmq.curve_public(secret)
        s.curve_serverkey = a.curve_server.encode()
    s.connect(a.endpoint)
    rng = np.random.default_rng(a.seed)
    counts: dict[str, int] = {}
    pause = a.seconds / max(a.count, 1)
    for i in range(a.count):
        if a.forge:
            # well-formed, in the name of peer 1: "peer 2 is lost in round r" and a HELLO of
            # a new incarnation of peer 1
            if i % 2:
                cat, fr = (
                    "forged-lost",
                    [
                        header(CONTROL, a.control_session, i % 10, 5, 1, I64, 1),
                        np.array([2], np.int64).tobytes(),
                    ],
                )
            else:
                cat, fr = (
                    "forged-hello",
                    [
                        header(CONTROL, a.control_session, 0, 1, 1, I64, 5),
                        np.array([10**18 + i, 0, 0, 0, 0], np.int64).tobytes(),
                    ],
                )
        else:
            cat, fr = frames(rng, a.control_session, a.data_session, a.peers)
        try:
            s.send_multipart(fr, zmq.NOBLOCK)
        except zmq.Again:
            cat = "not-sent"
        counts[cat] = counts.get(cat, 0) + 1
        if pause:
            time.sleep(pause)
    s.close(500)
    ctx.term()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
