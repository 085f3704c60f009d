"""The in-memory network: determinism, timing model, FIFO, faults, rejections, capture."""

from __future__ import annotations

import numpy as np
import pytest

from ringfl import wire
from ringfl.collective.allreduce import RingAllReduce
from ringfl.collective.events import Done, Header, Kind, Message, Send
from ringfl.errors import PeerTimeout
from ringfl.transport.memory import Crash, Inject, MemoryNetwork


class Script:
    """A tiny machine: sends `count` messages of `size` float64 to `to` at start, records
    what it receives, and is done after `expect` messages."""

    def __init__(self, peer, to=None, count=0, size=0, expect=0, waits_for=()):
        self.peer, self.to, self.count, self.size, self.expect = peer, to, count, size, expect
        self.got: list[Message] = []
        self.lost: list[frozenset] = []
        self.waits_for = frozenset(waits_for)
        self._done = False

    def _maybe_done(self):
        if len(self.got) >= self.expect and not self._done:
            self._done = True
            return [Done(len(self.got))]
        return []

    def start(self):
        out = []
        for k in range(self.count):
            h = Header(Kind.CONTROL, 0, 0, 0, 0, k, self.peer, "float64", self.size)
            out.append(Send(self.to, Message(h, np.full(self.size, k, np.float64))))
        return out + self._maybe_done()

    def receive(self, message):
        self.got.append(message)
        return self._maybe_done()

    def peers_lost(self, peers):
        self.lost.append(peers)
        return []

    def expecting(self):
        return frozenset() if self._done else self.waits_for

    @property
    def done(self):
        return self._done


def test_timing_model_and_fifo() -> None:
    net = MemoryNetwork(latency_s=1e-3, bandwidth_Bps=1e6)
    a = Script(0, to=1, count=3, size=1000)
    b = Script(1, expect=3)
    res = net.run({0: a, 1: b})
    size = wire.HEADER_SIZE + 8000
    # three messages leave back to back over the sender's link, the last lands latency later
    assert res.virtual_time_s == pytest.approx(3 * size / 1e6 + 1e-3)
    assert [m.header.segment for m in b.got] == [0, 1, 2]
    assert res.bytes_sent == {0: 24000, 1: 0} and res.messages_sent == {0: 3, 1: 0}
    assert res.wire_bytes_sent[0] == 3 * size
    assert res.results == {0: 0, 1: 3}


def _ring(n=5, m=1001, seed=0):
    xs = np.random.default_rng(seed).standard_normal((n, m)).astype(np.float32)
    return {p: RingAllReduce(p, range(n), xs[p], segment_bytes=256) for p in range(n)}


def test_same_input_same_run_bit_for_bit() -> None:
    frames_a: list = []
    frames_b: list = []
    ra = MemoryNetwork().run(_ring(), capture=frames_a)
    rb = MemoryNetwork().run(_ring(), capture=frames_b)
    assert ra.virtual_time_s == rb.virtual_time_s
    assert frames_a == frames_b
    assert all(ra.results[p].tobytes() == rb.results[p].tobytes() for p in ra.results)


def test_capture_records_real_bytes_that_decode() -> None:
    seen = []
    MemoryNetwork().run(_ring(n=3, m=50), capture=lambda s, t, f: seen.append((s, t, f)))
    assert len(seen) == 3 * 2 * 2 * 2  # peers × steps × segments per chunk
    for sender, to, frames in seen:
        assert all(isinstance(f, bytes) for f in frames)
        msg = wire.decode(frames, max_elements=1 << 20)
        assert msg.header.sender == sender and to == (sender + 1) % 3


def test_crash_after_k_sends() -> None:
    a = Script(0, to=1, count=5, size=2)
    b = Script(1, expect=5, waits_for={0})
    seen: list = []
    with pytest.raises(PeerTimeout, match="told of every crash") as exc:
        MemoryNetwork(deadline_s=0.5).run(
            {0: a, 1: b}, faults=[Crash(0, after_sends=2)], capture=seen
        )
    assert exc.value.peers == (0,)  # this script does not recover
    assert len(b.got) == 2 and len(seen) == 2
    assert b.lost == [frozenset({0})]


def test_recovering_machine_finishes_after_the_deadline() -> None:
    class Recovers(Script):
        def peers_lost(self, peers):
            super().peers_lost(peers)
            self._done = True
            return [Done("recovered")]

    a = Script(0, to=1, count=5, size=2)
    b = Recovers(1, expect=5, waits_for={0})
    res = MemoryNetwork(deadline_s=0.5).run({0: a, 1: b}, faults=[Crash(0, after_sends=2)])
    assert res.dead == {0} and res.messages_sent[0] == 2
    assert res.results == {1: "recovered"}
    assert res.virtual_time_s >= 0.5


def test_messages_to_a_dead_peer_vanish() -> None:
    a = Script(0, to=1, count=2, size=2)
    b = Script(1, expect=2)
    res = MemoryNetwork().run({0: a, 1: b}, faults=[Crash(1, after_sends=0)])
    assert b.got == [] and res.results == {0: 0}


def test_stall_without_crash_names_awaited_peers() -> None:
    a = Script(0, expect=1, waits_for={1})
    b = Script(1)
    with pytest.raises(PeerTimeout, match=r"waiting for \[1\]") as exc:
        MemoryNetwork().run({0: a, 1: b})
    assert exc.value.peers == (1,)


def test_injected_garbage_is_rejected_and_logged() -> None:
    machines = _ring(n=3, m=30)
    want = sum(m._data.astype(np.float64) for m in machines.values())
    good = wire.to_bytes(
        wire.encode(
            Message(Header(Kind.ALLREDUCE, 0, 0, 0, 2, 0, 2, "float32", 4), np.zeros(4, np.float32))
        )
    )
    faults = [
        Inject(0, (b"junk",), at_s=0.0),
        Inject(0, (good[0], good[1][:-1]), at_s=1e-6),  # truncated payload
        Inject(0, tuple(good), at_s=2e-6),  # well-formed but wrong length for the ring
        Inject(1, tuple(good), at_s=3e-6),  # wrong sender for peer 1
    ]
    res = MemoryNetwork().run(machines, faults=faults)
    reasons = [(p, r) for p, r in res.rejected]
    assert reasons[0] == (0, "expected 2 frames, got 1")
    assert reasons[1][0] == 0 and "payload is 15 bytes" in reasons[1][1]
    assert "4 elements, expected 5" in reasons[2][1]
    assert reasons[3][0] == 1 and "expected ring predecessor 0" in reasons[3][1]
    assert len(res.rejected) == 4
    for p in range(3):  # the ring still finished, correctly
        np.testing.assert_allclose(res.results[p], want, rtol=1e-5)


def test_unknown_peers_are_config_errors() -> None:
    with pytest.raises(ValueError, match="sends to 7"):
        MemoryNetwork().run({0: Script(0, to=7, count=1, size=1)})
    with pytest.raises(ValueError, match="peer 3"):
        MemoryNetwork().run({0: Script(0)}, faults=[Crash(3)])
