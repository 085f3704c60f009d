"""Planned all-reduces (ring, bidirectional ring, halving/doubling) and the automatic
choice, over the in-memory network and in random delivery order, against exact sums."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest

from ringfl import wire
from ringfl.collective.allreduce import RingAllReduce
from ringfl.collective.choose import (
    PLANNED_MIN_SEGMENT_BYTES,
    PLANNED_SEGMENT_BYTES,
    RING_SEGMENT_BYTES,
    SMALL_BYTES,
    choose_algorithm,
    make_allreduce,
    planned_segment_bytes,
)
from ringfl.collective.events import Done, Header, Kind, Message
from ringfl.collective.plan import CODES, PLANS
from ringfl.collective.planned import PlannedAllReduce
from ringfl.errors import PeerTimeout, WireError
from ringfl.transport.memory import Crash, MemoryNetwork

ALGOS = ["planned-ring", "bidirectional-ring", "halving-doubling", "auto"]
NS = [1, 2, 3, 7]


def contributions(n: int, m: int, dtype: str, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return [rng.standard_normal(m).astype(dt) for _ in range(n)]
    info = np.iinfo(dt)  # the full range, so sums wrap around
    return [rng.integers(info.min, info.max, m, dtype=dt, endpoint=True) for _ in range(n)]


def exact(xs: list[np.ndarray], dtype: str) -> np.ndarray:
    """The sum in Python integers, wrapped to the dtype's k bits (what the secure sum
    needs), or in float64 for floats."""
    dt = np.dtype(dtype)
    m = xs[0].shape[0]
    if dt.kind == "f":
        return np.sum(np.stack(xs).astype(np.float64), axis=0) if m else np.zeros(0)
    bits = 8 * dt.itemsize
    total = [sum(int(x[i]) for x in xs) for i in range(m)]
    if dt.kind == "i":
        total = [((t + 2 ** (bits - 1)) % 2**bits) - 2 ** (bits - 1) for t in total]
    else:
        total = [t % 2**bits for t in total]
    return np.array(total, dtype=dt)


def machines_for(algorithm: str, xs, ring, **kw) -> dict:
    return {p: make_allreduce(p, ring, xs[p], algorithm=algorithm, **kw) for p in ring}


def shuffled(machines: dict, seed: int) -> dict:
    """Deliver every message in random order (through the real wire encoding, writable
    payloads as from ZeroMQ); returns {peer: result}."""
    rnd = random.Random(seed)
    pending: list = []
    results = {}

    def act(p, actions):
        for a in actions:
            if isinstance(a, Done):
                assert p not in results
                results[p] = a.result
            else:
                head, payload = wire.encode(a.message)
                body = bytearray(memoryview(payload).cast("B"))
                pending.append((a.to, [head, body]))

    for p, m in machines.items():
        act(p, m.start())
    while pending:
        to, frames = pending.pop(rnd.randrange(len(pending)))
        act(to, machines[to].receive(wire.decode(frames, max_elements=1 << 30)))
    return results


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint32", "uint64"])
def test_sum_equals_exact_sum(algorithm: str, n: int, dtype: str) -> None:
    ring = [int(p) for p in np.random.default_rng(n).permutation(n)]
    for m in sorted({0, 1, max(n - 1, 0), n + 1, 1001}):
        xs = contributions(n, m, dtype, seed=7 * n + m)
        before = [x.copy() for x in xs]
        want = exact(xs, dtype)
        for seg in (12, 1 << 20):  # many small messages; one message per range
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no overflow warnings, no upcasts
                res = MemoryNetwork().run(machines_for(algorithm, xs, ring, segment_bytes=seg))
            for p in range(n):
                got = res.results[p]
                assert got.dtype == np.dtype(dtype) and got.shape == (m,)
                if np.dtype(dtype).kind == "f":
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
                else:
                    np.testing.assert_array_equal(got, want)
                assert got.tobytes() == res.results[0].tobytes()
        assert all(np.array_equal(a, b) for a, b in zip(xs, before, strict=True))


@pytest.mark.parametrize("algorithm", ["planned-ring", "bidirectional-ring", "halving-doubling"])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8])
def test_any_delivery_order_gives_the_same_bits(algorithm: str, n: int) -> None:
    """Messages may overtake each other (different partners, different steps): partial
    sums are still made in plan order, so float results are identical bit for bit."""
    m = 997
    xs = contributions(n, m, "float32", seed=n)
    ring = list(range(n))
    ref = MemoryNetwork().run(machines_for(algorithm, xs, ring, segment_bytes=64)).results
    np.testing.assert_allclose(ref[0], exact(xs, "float32"), rtol=1e-5, atol=1e-5)
    for seed in range(3):
        got = shuffled(machines_for(algorithm, xs, ring, segment_bytes=64), seed)
        assert sorted(got) == ring
        assert all(got[p].tobytes() == ref[0].tobytes() for p in ring)
    words = contributions(n, m, "uint64", seed=n + 1)
    got = shuffled(machines_for(algorithm, words, ring, segment_bytes=40), 9)
    assert all(np.array_equal(got[p], exact(words, "uint64")) for p in ring)


@pytest.mark.parametrize("algorithm", ["ring", "bidirectional-ring", "halving-doubling"])
@pytest.mark.parametrize("n", range(1, 14))
def test_plans_agree_between_partners(algorithm: str, n: int) -> None:
    """What A sends B at step s is exactly what B expects from A at step s; every range
    starts and stops on the shared boundaries."""
    m = 1000 + n
    ring = [int(p) for p in np.random.default_rng(n).permutation(n)]
    plans = {p: PLANS[algorithm](i, ring, m) for i, p in enumerate(ring)}
    bounds = {plan.boundaries for plan in plans.values()}
    assert len(bounds) == 1
    edges = set(bounds.pop())
    for p, plan in plans.items():
        for s, st in enumerate(plan.steps):
            for t in (st.send, st.recv):
                if t is not None:
                    assert t.start in edges and t.stop in edges and t.peer != p
            if st.send is not None:
                other = plans[st.send.peer].steps[s].recv
                assert other is not None and (other.peer, other.start, other.stop) == (
                    p,
                    st.send.start,
                    st.send.stop,
                )


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8])
def test_bytes_sent_against_the_bandwidth_bound(n: int) -> None:
    m = 10_000
    xs = contributions(n, m, "float32", seed=1)
    bound = 2 * (n - 1) / n * m * 4
    for algorithm in ("planned-ring", "bidirectional-ring"):
        res = MemoryNetwork().run(machines_for(algorithm, xs, range(n), segment_bytes=4096))
        for p in range(n):
            assert abs(res.bytes_sent[p] - bound) <= 2 * (n - 1) * 4
    machines = machines_for("halving-doubling", xs, range(n), segment_bytes=4096)
    res = MemoryNetwork().run(machines)
    p2 = 1 << (n.bit_length() - 1)
    core = 2 * (p2 - 1) / p2 * m * 4
    for p in range(n):
        assert machines[p].bytes_sent == res.bytes_sent[p]
        if p >= p2:  # an extra: its whole buffer, once
            assert res.bytes_sent[p] == m * 4
        elif p < n - p2:  # folds an extra in: the core bound plus the result back
            assert abs(res.bytes_sent[p] - core - m * 4) <= 2 * p2 * 4
        else:
            assert abs(res.bytes_sent[p] - core) <= 2 * p2 * 4
    if n & (n - 1) == 0:
        assert all(abs(b - bound) <= 2 * n * 4 for b in res.bytes_sent.values())


def test_tiny_buffers_take_one_message_per_step() -> None:
    n, m = 8, 100
    xs = contributions(n, m, "float32", seed=2)
    res = MemoryNetwork().run(machines_for("halving-doubling", xs, range(n)))
    assert set(res.messages_sent.values()) == {2 * 3}  # 2·log2 N hops, one message each
    res = MemoryNetwork().run(machines_for("planned-ring", xs, range(n)))
    assert set(res.messages_sent.values()) == {2 * (n - 1)}
    # the classic ring splits every chunk in two
    ring = {p: RingAllReduce(p, range(n), xs[p]) for p in range(n)}
    assert set(MemoryNetwork().run(ring).messages_sent.values()) == {4 * (n - 1)}
    # large buffers: messages of at most segment_bytes
    big = contributions(n, 4096, "float32", seed=3)
    res = MemoryNetwork().run(machines_for("halving-doubling", big, range(n), segment_bytes=1024))
    assert max(res.bytes_sent.values()) / max(res.messages_sent.values()) <= 1024


@pytest.mark.parametrize("algorithm", ["bidirectional-ring", "halving-doubling"])
def test_source_is_called_once_per_element(algorithm: str) -> None:
    """The secure sum's hook: uint32 words from `source(start, stop)`, each element's
    contribution fetched exactly once, and the sum wraps modulo 2^32."""
    n, m = 7, 503
    xs = contributions(n, m, "uint32", seed=5)
    calls: dict[int, list[tuple[int, int]]] = {p: [] for p in range(n)}

    def source_of(p):
        def source(a: int, b: int) -> np.ndarray:
            calls[p].append((a, b))
            return xs[p][a:b].copy()

        return source

    machines = {
        p: PlannedAllReduce(
            p,
            range(n),
            algorithm=algorithm,
            length=m,
            dtype=np.uint32,
            source=source_of(p),
            segment_bytes=64,
        )
        for p in range(n)
    }
    res = MemoryNetwork().run(machines)
    for p in range(n):
        np.testing.assert_array_equal(res.results[p], exact(xs, "uint32"))
        covered = np.zeros(m, np.int64)
        for a, b in calls[p]:
            covered[a:b] += 1
        assert (covered == 1).all()


def test_in_place_and_preallocated_out() -> None:
    n, m = 5, 1001
    xs = contributions(n, m, "int64", seed=9)
    want = exact(xs, "int64")
    for algorithm in ("bidirectional-ring", "halving-doubling"):
        bufs = [x.copy() for x in xs]
        machines = {
            p: PlannedAllReduce(p, range(n), bufs[p], algorithm=algorithm, out=bufs[p])
            for p in range(n)
        }
        res = MemoryNetwork().run(machines)
        for p in range(n):
            assert res.results[p] is bufs[p]
            np.testing.assert_array_equal(bufs[p], want)
    with pytest.raises(ValueError, match="out must be"):
        PlannedAllReduce(0, [0, 1], xs[0], out=np.empty(m, np.float64))


def _msg(**kw) -> Message:
    fields = dict(
        kind=Kind.ALLREDUCE,
        session=0,
        round=0,
        step=1,
        chunk=CODES["halving-doubling"],
        segment=0,
        sender=2,
        dtype="float32",
        length=5,
    )
    fields.update(kw)
    return Message(Header(**fields), np.ones(fields["length"], np.dtype(fields["dtype"])))


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dict(chunk=CODES["ring"]), "another all-reduce"),
        (dict(chunk=0), "another all-reduce"),
        (dict(sender=1), "expected peer 2"),
        (dict(step=0), "nothing to receive at step 0"),
        (dict(step=9), "nothing to receive at step 9"),
        (dict(segment=1), "segment 1 of step 1"),
        (dict(length=4), "4 elements, expected 10"),
        (dict(round=3), "round 3"),
        (dict(dtype="int32"), "dtype int32"),
    ],
)
def test_unexpected_messages_are_rejected_without_state_change(bad, reason) -> None:
    # N = 4, M = 20: peer 0 keeps blocks 0-1 at step 1 (halving with peer 2)
    hd = PlannedAllReduce(0, range(4), np.arange(20, dtype=np.float32))
    assert len(hd.start()) == 1
    with pytest.raises(WireError, match=reason):
        hd.receive(_msg(**bad, **({} if "length" in bad else {"length": 10})))
    assert not hd._got[1][0] and hd._remaining == hd.messages_expected
    acts = hd.receive(_msg(length=10))
    assert [a.to for a in acts] == [1]  # block 1 goes on to peer 1 at step 2
    with pytest.raises(WireError, match="duplicate step 1 segment 0"):
        hd.receive(_msg(length=10))


def test_mismatched_algorithms_are_named() -> None:
    """Members that chose different algorithms reject each other's messages by name
    (the algorithm code travels in the chunk field)."""
    xs = contributions(2, 10, "float32", seed=0)
    hd = PlannedAllReduce(0, [0, 1], xs[0], algorithm="halving-doubling")
    hd.start()
    others = [
        PlannedAllReduce(1, [0, 1], xs[1], algorithm="bidirectional-ring"),
        RingAllReduce(1, [0, 1], xs[1]),
    ]
    for other in others:
        for act in other.start():
            with pytest.raises(WireError, match="another all-reduce .* from peer 1"):
                hd.receive(act.message)
    assert hd._remaining == hd.messages_expected


def test_crash_raises_peer_timeout_naming_the_dead_peer() -> None:
    n = 6
    xs = contributions(n, 600, "float32", seed=3)
    machines = machines_for("halving-doubling", xs, range(n), segment_bytes=40)
    with pytest.raises(PeerTimeout) as exc:
        MemoryNetwork().run(machines, faults=[Crash(5, after_sends=0)])
    assert exc.value.peers == (5,)


def test_choice_rule() -> None:
    assert choose_algorithm(1, 10) == "halving-doubling"
    for n in (2, 4, 8, 64):
        for nbytes in (0, 400, 4 << 20, 40 << 20):
            assert choose_algorithm(n, nbytes) == "halving-doubling"
    for n in (3, 5, 7, 100):
        assert choose_algorithm(n, SMALL_BYTES) == "halving-doubling"
        assert choose_algorithm(n, SMALL_BYTES + 1) == "planned-ring"
    big = np.zeros(SMALL_BYTES // 4 + 1, np.float32)
    m = make_allreduce(0, range(3), big)
    assert isinstance(m, PlannedAllReduce) and m.algorithm == "ring"
    assert isinstance(make_allreduce(0, range(3), big, algorithm="ring"), RingAllReduce)
    m = make_allreduce(0, range(4), big)
    assert isinstance(m, PlannedAllReduce) and m.algorithm == "halving-doubling"
    src = make_allreduce(0, range(3), length=8, dtype=np.uint64, source=lambda a, b: None)
    assert isinstance(src, PlannedAllReduce)
    with pytest.raises(ValueError, match="not one of"):
        make_allreduce(0, range(3), big, algorithm="tree")
    with pytest.raises(ValueError, match="need n"):
        choose_algorithm(0, 1)


def test_default_message_sizes() -> None:
    """Planned machines default to messages of an eighth of the buffer within
    [1 MiB, 8 MiB], the classic ring to RING_SEGMENT_BYTES; an explicit segment_bytes
    wins."""
    assert planned_segment_bytes(0) == PLANNED_MIN_SEGMENT_BYTES == 1 << 20
    assert planned_segment_bytes(40 << 20) == 5 << 20
    assert planned_segment_bytes(1 << 30) == PLANNED_SEGMENT_BYTES == 8 << 20
    n = 4

    def sends(m) -> list[int]:
        return [a.message.payload.nbytes for a in m.start()]

    for x in (np.zeros(6 << 20, np.float32), np.zeros(1 << 20, np.float32)):
        seg = planned_segment_bytes(x.nbytes)
        hd = make_allreduce(0, range(n), x)
        assert max(sends(hd)) <= seg
        assert sends(hd) == sends(make_allreduce(0, range(n), x, segment_bytes=seg))
        ring = make_allreduce(0, range(n), x, algorithm="ring")
        assert max(sends(ring)) <= RING_SEGMENT_BYTES
    big = np.zeros(16 << 20, np.float32)  # 64 MiB: 8 MiB messages
    assert len(sends(make_allreduce(0, range(n), big, segment_bytes=1 << 20))) > len(
        sends(make_allreduce(0, range(n), big))
    )
