"""Ring broadcast: root's buffer to everyone, known and unknown lengths, blobs."""

from __future__ import annotations

import numpy as np
import pytest

from ringfl.collective.broadcast import RingBroadcast
from ringfl.collective.events import Header, Kind, Message
from ringfl.errors import ConfigError, PeerTimeout, WireError
from ringfl.transport.memory import Crash, MemoryNetwork
from ringfl.wire import DTYPES


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8])
@pytest.mark.parametrize("known", [True, False])
def test_everyone_gets_the_roots_buffer(n: int, known: bool) -> None:
    rng = np.random.default_rng(n)
    ring = list(rng.permutation(n))
    for dtype in DTYPES:
        for m in sorted({0, 1, n + 1, 1001}):
            root = int(rng.integers(0, n))
            data = rng.integers(0, 100, m).astype(dtype)
            machines = {
                p: RingBroadcast(
                    p,
                    ring,
                    root,
                    data if p == root else (m if known else None),
                    dtype=dtype,
                    max_length=m,
                    segment_bytes=64,
                )
                for p in range(n)
            }
            res = MemoryNetwork().run(machines)
            for p in range(n):
                assert res.results[p].dtype == np.dtype(dtype)
                np.testing.assert_array_equal(res.results[p], data)
            per = 64 // np.dtype(dtype).itemsize
            # everyone but the root's predecessor forwards the whole buffer once
            pred = ring[(ring.index(root) - 1) % n]
            for p in range(n):
                want = 0 if (p == pred or n == 1) else m * np.dtype(dtype).itemsize
                assert res.bytes_sent[p] == want
                silent = p == pred or n == 1
                assert res.messages_sent[p] == (0 if silent else max(1, -(-m // per)))


def test_bytes_blob() -> None:
    blob = b"task spec \x00\xff" * 1000
    machines = {
        p: RingBroadcast(p, [2, 0, 1], 0, blob if p == 0 else None, max_length=len(blob))
        for p in range(3)
    }
    res = MemoryNetwork().run(machines)
    assert all(r.tobytes() == blob for r in res.results.values())


def test_unknown_length_is_bounded() -> None:
    root = RingBroadcast(0, [0, 1], 0, np.zeros(1000, np.uint8), segment_bytes=100)
    recv = RingBroadcast(1, [0, 1], 0, None, max_length=500, segment_bytes=100)
    first = root.start()[0].message
    with pytest.raises(WireError, match="exceed max_length 500"):
        recv.receive(first)
    assert recv.expecting() == {0}


def test_rejections() -> None:
    recv = RingBroadcast(1, [0, 1, 2], 0, 10, dtype=np.int32, segment_bytes=16)

    def msg(**kw):
        f = dict(
            kind=Kind.BROADCAST,
            session=0,
            round=0,
            step=0,
            chunk=3,
            segment=0,
            sender=0,
            dtype="int32",
            length=4,
        )
        f.update(kw)
        return Message(Header(**f), np.zeros(f["length"], f["dtype"]))

    for bad, reason in [
        (dict(sender=2), "expected 0"),
        (dict(chunk=4), "4 segments announced"),
        (dict(segment=3), "segment 3"),
        (dict(length=3), "has 3 elements"),
        (dict(step=1), "step 1"),
    ]:
        with pytest.raises(WireError, match=reason):
            recv.receive(msg(**bad))
    acts = recv.receive(msg(segment=2, length=2))
    assert acts[0].to == 2
    with pytest.raises(WireError, match="duplicate"):
        recv.receive(msg(segment=2, length=2))


def test_config_errors_and_lost_root() -> None:
    with pytest.raises(ConfigError, match="root 5"):
        RingBroadcast(0, [0, 1], 5, 3)
    with pytest.raises(ConfigError, match="max_length"):
        RingBroadcast(1, [0, 1], 0, None)
    with pytest.raises(ConfigError, match="must give its buffer"):
        RingBroadcast(0, [0, 1], 0, 3)
    machines = {
        p: RingBroadcast(p, range(4), 0, np.ones(8) if p == 0 else 8, dtype=np.float64)
        for p in range(4)
    }
    with pytest.raises(PeerTimeout) as exc:
        MemoryNetwork().run(machines, faults=[Crash(1)])
    assert exc.value.peers == (1,)
