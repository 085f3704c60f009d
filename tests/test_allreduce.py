"""Ring all-reduce state machine over the in-memory network, against numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ringfl.collective.allreduce import RingAllReduce
from ringfl.collective.events import Done, Header, Kind, Message, Send
from ringfl.errors import PeerTimeout, WireError
from ringfl.transport.memory import Crash, MemoryNetwork
from ringfl.wire import DTYPES

NS = [1, 2, 3, 4, 7, 8]


def sizes(n: int) -> list[int]:
    return sorted({0, 1, max(n - 1, 0), n + 1, 1000})


def contributions(n: int, m: int, dtype: str, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return [rng.standard_normal(m).astype(dt) for _ in range(n)]
    info = np.iinfo(dt)
    # full range, so sums wrap around
    return [rng.integers(info.min, info.max, m, dtype=dt, endpoint=True) for _ in range(n)]


def reference(xs: list[np.ndarray], dtype: str, m: int) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return np.sum(np.stack(xs).astype(np.float64), axis=0) if m else np.zeros(0)
    if dt.kind == "u":
        acc = np.zeros(m, dtype=np.uint64)
        for x in xs:
            acc += x.astype(np.uint64)  # uint64 wraps mod 2^64; mask below
        return (acc & np.uint64(np.iinfo(dt).max)).astype(dt)
    acc = [0] * m
    for x in xs:
        acc = [a + int(v) for a, v in zip(acc, x, strict=True)]
    bits = dt.itemsize * 8
    wrapped = [((a + 2 ** (bits - 1)) % 2**bits) - 2 ** (bits - 1) for a in acc]
    return np.array(wrapped, dtype=dt)


def run_ring(xs, ring, segment_bytes=1 << 20, net=None, **kw):
    machines = {p: RingAllReduce(p, ring, xs[p], segment_bytes=segment_bytes, **kw) for p in ring}
    return (net or MemoryNetwork()).run(machines), machines


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_equals_numpy(n: int, dtype: str) -> None:
    for m in sizes(n):
        xs = contributions(n, m, dtype, seed=n * 100 + m)
        ring = list(np.random.default_rng(n).permutation(n))
        before = [x.copy() for x in xs]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow warnings, no upcasts
            res, _ = run_ring(xs, ring, segment_bytes=16)
        assert all(np.array_equal(a, b) for a, b in zip(xs, before, strict=True))
        want = reference(xs, dtype, m)
        for p in range(n):
            got = res.results[p]
            assert got.dtype == np.dtype(dtype) and got.shape == (m,)
            if np.dtype(dtype).kind == "f":
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            else:
                np.testing.assert_array_equal(got, want)
        # every peer holds the same bits
        for p in range(1, n):
            assert res.results[p].tobytes() == res.results[0].tobytes()


def test_uint32_wraps_around_exactly() -> None:
    xs = [np.full(5, 2**32 - 1, dtype=np.uint32), np.full(5, 3, dtype=np.uint32)]
    res, _ = run_ring(xs, [0, 1])
    np.testing.assert_array_equal(res.results[0], np.full(5, 2, dtype=np.uint32))


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8])
def test_bytes_sent_match_the_bandwidth_bound(n: int) -> None:
    m = 10_000
    xs = contributions(n, m, "float32", seed=1)
    res, machines = run_ring(xs, list(range(n)), segment_bytes=4096)
    bound = 2 * (n - 1) / n * m * 4
    for p in range(n):
        # chunks differ by at most one element: within 2(N−1) elements of the bound
        assert abs(res.bytes_sent[p] - bound) <= 2 * (n - 1) * 4
        assert machines[p].bytes_sent == res.bytes_sent[p]


def test_segments_pipeline_at_least_two_per_chunk() -> None:
    m, n = 1000, 4
    ar = RingAllReduce(0, range(n), np.zeros(m, np.float32))  # 1 MiB segments
    assert all(len(segs) == 2 for segs in ar.segments)
    ar = RingAllReduce(0, range(n), np.zeros(m, np.float32), segment_bytes=100)
    assert all(max(b - a for a, b in segs) <= 25 for segs in ar.segments)
    assert RingAllReduce(0, range(4), np.zeros(5, np.float32)).segments[0] == [(0, 1)]


def test_source_is_called_lazily_once_per_segment() -> None:
    n, m = 3, 60
    xs = contributions(n, m, "int64", seed=5)
    calls: dict[int, list[tuple[int, int]]] = {p: [] for p in range(n)}

    def source_of(p):
        def source(a: int, b: int) -> np.ndarray:
            calls[p].append((a, b))
            return xs[p][a:b].copy()

        return source

    machines = {
        p: RingAllReduce(
            p, range(n), length=m, dtype=np.int64, source=source_of(p), segment_bytes=40
        )
        for p in range(n)
    }
    started = machines[0].start()
    # at start only the first chunk's segments are fetched
    assert sorted(calls[0]) == machines[0].segments[0]
    assert all(isinstance(a, Send) for a in started)
    machines[0] = RingAllReduce(
        0, range(n), length=m, dtype=np.int64, source=source_of(0), segment_bytes=40
    )
    calls[0].clear()
    res = MemoryNetwork().run(machines)
    for p in range(n):
        np.testing.assert_array_equal(res.results[p], np.sum(xs, axis=0))
        # each segment of the whole buffer exactly once, covering [0, m)
        got = sorted(calls[p])
        want = sorted(s for segs in machines[p].segments for s in segs)
        assert got == want


def test_source_with_wrong_output_is_a_clear_error() -> None:
    ar = RingAllReduce(
        0, [0, 1], length=10, dtype=np.float32, source=lambda a, b: np.zeros(b - a, np.float64)
    )
    with pytest.raises(ValueError, match="source of peer 0 returned float64"):
        ar.start()


def _msg(**kw) -> Message:
    fields = dict(
        kind=Kind.ALLREDUCE,
        session=0,
        round=0,
        step=0,
        chunk=3,
        segment=0,
        sender=3,
        dtype="float32",
        length=1,
    )
    fields.update(kw)
    return Message(Header(**fields), np.zeros(fields["length"], np.dtype(fields["dtype"])))


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dict(kind=Kind.GOSSIP), "kind"),
        (dict(session=1), "session 1"),
        (dict(round=9), "round 9"),
        (dict(sender=1), "expected ring predecessor 3"),
        (dict(dtype="float64"), "dtype float64"),
        (dict(step=6), "step 6"),
        (dict(chunk=2), "chunk 2 at step 0, expected 3"),
        (dict(segment=5), "segment 5"),
        (dict(length=2), "2 elements, expected 1"),
    ],
)
def test_unexpected_messages_are_rejected_without_state_change(bad, reason) -> None:
    ar = RingAllReduce(0, range(4), np.arange(10, dtype=np.float32))
    ar.start()
    before = [bytes(b) for b in ar._received]
    with pytest.raises(WireError, match=reason):
        ar.receive(_msg(**bad))
    assert [bytes(b) for b in ar._received] == before
    # the good one still goes through, once
    acts = ar.receive(_msg())
    assert len(acts) == 1 and isinstance(acts[0], Send) and acts[0].to == 1
    with pytest.raises(WireError, match="duplicate"):
        ar.receive(_msg())


def test_n1_and_empty() -> None:
    ar = RingAllReduce(5, [5], np.arange(4, dtype=np.int32))
    acts = ar.start()
    assert len(acts) == 1 and isinstance(acts[0], Done) and ar.done
    np.testing.assert_array_equal(acts[0].result, np.arange(4))
    res, _ = run_ring([np.zeros(0, np.float32)] * 3, [0, 1, 2])
    assert all(r.shape == (0,) for r in res.results.values())


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="not in the ring"):
        RingAllReduce(9, [0, 1], np.zeros(3))
    with pytest.raises(ValueError, match="twice"):
        RingAllReduce(0, [0, 1, 0], np.zeros(3))
    with pytest.raises(ValueError, match="float16"):
        RingAllReduce(0, [0, 1], np.zeros(3, np.float16))
    with pytest.raises(ValueError, match="give data or source"):
        RingAllReduce(0, [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        RingAllReduce(0, [0, 1], np.zeros((2, 2)))


def test_crash_raises_peer_timeout_naming_the_dead_peer() -> None:
    n = 4
    xs = contributions(n, 100, "float32", seed=3)
    machines = {p: RingAllReduce(p, range(n), xs[p], segment_bytes=40) for p in range(n)}
    with pytest.raises(PeerTimeout) as exc:
        MemoryNetwork().run(machines, faults=[Crash(2, after_sends=3)])
    assert exc.value.peers == (2,)


def test_custom_recovery_can_override_peers_lost() -> None:
    class Forgiving(RingAllReduce):
        def peers_lost(self, peers):
            self.lost = peers
            return [self._finish(None)]

    n = 3
    machines = {p: Forgiving(p, range(n), np.ones(30)) for p in range(n)}
    res = MemoryNetwork().run(machines, faults=[Crash(1, after_sends=0)])
    assert res.dead == {1}
    assert machines[0].lost == {1} and machines[2].lost == {1}
    assert res.virtual_time_s >= 1.0  # after the deadline


def test_256_peers_in_one_process() -> None:
    n, m = 256, 10_000
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((n, m)).astype(np.float32)
    ring = list(rng.permutation(n))
    res, _ = run_ring(xs, ring)
    want = xs.astype(np.float64).sum(axis=0)
    for p in (0, 17, 255):
        np.testing.assert_allclose(res.results[p], want, rtol=1e-4, atol=1e-3)
    assert res.results[0].tobytes() == res.results[200].tobytes()


def test_in_place_and_preallocated_out() -> None:
    n, m = 4, 1001
    xs = contributions(n, m, "int64", seed=9)
    want = np.sum(xs, axis=0)
    bufs = [x.copy() for x in xs]
    machines = {
        p: RingAllReduce(p, range(n), bufs[p], out=bufs[p], segment_bytes=64) for p in range(n)
    }
    res = MemoryNetwork().run(machines)
    for p in range(n):
        assert res.results[p] is bufs[p]
        np.testing.assert_array_equal(bufs[p], want)
        assert machines[p].out_shared  # its first chunk went out from `out` itself
    outs = [np.empty(m, np.int64) for _ in range(n)]
    machines = {p: RingAllReduce(p, range(n), xs[p], out=outs[p]) for p in range(n)}
    MemoryNetwork().run(machines)
    assert all(np.array_equal(o, want) for o in outs)
    # writable payloads (a network's): nothing leaves from `out`, the caller may reuse it
    assert not any(mach.out_shared for mach in machines.values())
    with pytest.raises(ValueError, match="out must be"):
        RingAllReduce(0, [0, 1], xs[0], out=np.empty(m, np.float64))


def test_read_only_payloads_take_the_copying_path() -> None:
    """Hand-deliver every message with a read-only payload (as from immutable bytes):
    the result is the same as over the network, where payloads are writable."""
    from collections import deque

    n, m = 4, 999
    xs = contributions(n, m, "int32", seed=4)
    machines = {p: RingAllReduce(p, range(n), xs[p], segment_bytes=64) for p in range(n)}
    queue = deque((p, a) for p in range(n) for a in machines[p].start())
    results = {}
    while queue:
        _, act = queue.popleft()
        if isinstance(act, Done):
            continue
        payload = act.message.payload.copy()
        payload.flags.writeable = False
        acts = machines[act.to].receive(Message(act.message.header, payload))
        for a in acts:
            if isinstance(a, Done):
                results[act.to] = a.result
            queue.append((act.to, a))
    want, _ = run_ring(xs, list(range(n)), segment_bytes=64)
    for p in range(n):
        np.testing.assert_array_equal(results[p], want.results[p])
        np.testing.assert_array_equal(results[p], reference(xs, "int32", m))
        # the finished chunk was forwarded from `out`: it must stay unchanged until sent
        assert machines[p].out_shared
