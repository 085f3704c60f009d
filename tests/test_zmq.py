"""The ZeroMQ driver over real loopback sockets (tcp and ipc), threads and processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from ringfl import wire
from ringfl.collective.allreduce import RingAllReduce
from ringfl.collective.events import Header, Kind, Message
from ringfl.collective.gossip import NeighbourAverage
from ringfl.errors import ConfigError, PeerTimeout
from ringfl.transport.zmq import ZmqPeer, local_peers, run_threads

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def close_all(peers) -> None:
    for zp in peers.values():
        zp.close()


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_allreduce_in_threads_equals_numpy(ctx, tmp_path, transport: str, n: int) -> None:
    peers = local_peers(range(n), transport=transport, ipc_dir=str(tmp_path), context=ctx)
    try:
        ring = [int(p) for p in np.random.default_rng(n).permutation(n)]
        for rnd, (m, dtype) in enumerate(
            [(0, "float32"), (n + 1, "uint32"), (70_001, "float32"), (300_007, "int64")]
        ):
            rng = np.random.default_rng(rnd)
            if dtype == "float32":
                xs = rng.standard_normal((n, m)).astype(dtype)
            else:
                xs = rng.integers(0, np.iinfo(dtype).max, (n, m), dtype=dtype, endpoint=True)
            machines = {
                p: RingAllReduce(p, ring, xs[p], round=rnd, segment_bytes=1 << 17) for p in range(n)
            }
            res = run_threads(peers, machines, timeout_s=30)
            want = xs.sum(axis=0, dtype=dtype)  # numpy wraps the same way
            for p in range(n):
                if dtype == "float32":
                    np.testing.assert_allclose(res[p], want, rtol=1e-5, atol=1e-4)
                else:
                    np.testing.assert_array_equal(res[p], want)
            assert all(res[p].tobytes() == res[0].tobytes() for p in range(n))
    finally:
        close_all(peers)


def test_gossip_over_tcp(ctx) -> None:
    n, m = 4, 100_003
    peers = local_peers(range(n), context=ctx)
    try:
        w = np.array(
            [[0.5, 0.25, 0, 0.25], [0.25, 0.5, 0.25, 0], [0, 0.25, 0.5, 0.25], [0.25, 0, 0.25, 0.5]]
        )
        xs = np.random.default_rng(0).standard_normal((n, m))
        machines = {
            i: NeighbourAverage(i, {j: w[i, j] for j in range(n)}, xs[i], segment_bytes=1 << 16)
            for i in range(n)
        }
        res = run_threads(peers, machines, timeout_s=30)
        for i in range(n):
            np.testing.assert_allclose(res[i], w[i] @ xs, rtol=1e-12, atol=1e-12)
    finally:
        close_all(peers)


def test_missing_peer_is_named_within_the_deadline(ctx) -> None:
    n = 3
    peers = local_peers(range(n), context=ctx)
    try:
        machines = {p: RingAllReduce(p, range(n), np.ones(1000)) for p in range(2)}  # 2 absent
        t0 = time.monotonic()
        with pytest.raises(PeerTimeout) as exc:
            run_threads({p: peers[p] for p in range(2)}, machines, timeout_s=1.0)
        assert time.monotonic() - t0 < 10  # bounded: no hang
        assert exc.value.peers == (2,)
        assert "2" in str(exc.value)
    finally:
        close_all(peers)


def test_nobody_listening_is_a_timeout_not_a_hang(ctx) -> None:
    with ZmqPeer(0, {0: "tcp://127.0.0.1:0", 1: "tcp://127.0.0.1:9"}, context=ctx) as zp:
        with pytest.raises(PeerTimeout) as exc:
            zp.run(RingAllReduce(0, [0, 1], np.ones(200_000, np.float32)), timeout_s=0.5)
        assert exc.value.peers == (1,)


def _raw_push(ctx, address: str) -> zmq.Socket:
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    return s


def _frames(kind=Kind.ALLREDUCE, round=0, sender=1, step=0, chunk=1, n=5, session=0, value=0):
    h = Header(kind, session, round, step, chunk, 0, sender, "float32", n)
    return wire.to_bytes(wire.encode(Message(h, np.arange(n, dtype=np.float32) + value)))


def test_garbage_is_dropped_and_later_rounds_are_held(ctx, caplog) -> None:
    peers = local_peers(range(2), context=ctx)
    raw = _raw_push(ctx, peers[0].address)
    try:
        raw.send_multipart([b"junk"])
        raw.send_multipart([b"x" * wire.HEADER_SIZE, b""])
        raw.send_multipart(_frames(session=5))  # peers here check no session: accepted kind
        # a (forged) message for round 1 "from peer 1", before round 0 has even started:
        # step 0, chunk 1, segment 0 of a 4-element buffer on 2 peers = element 2
        early = _frames(round=1, n=1, value=100)
        raw.send_multipart(early)
        time.sleep(0.2)
        xs = np.arange(20, dtype=np.float32).reshape(2, 10)
        res = run_threads(peers, {p: RingAllReduce(p, [0, 1], xs[p]) for p in range(2)}, 30)
        np.testing.assert_array_equal(res[0], xs.sum(axis=0))
        assert peers[0].rejected >= 2
        assert "expected 2 frames" in caplog.text and "bad magic" in caplog.text
        # the round-1 message was held for round 1 (2 held: the session-5 one is round 0,
        # delivered to round 0's machine and rejected there as a wrong session)
        assert [m.header.round for m in peers[0]._held] == [1]
        # a stale round-0 message after round 0 completed is dropped, not held
        raw.send_multipart(_frames(round=0))
        xs2 = np.ones((2, 4), np.float32)
        # in round 1 peer 0 takes the held segment first, so the real one is a duplicate
        res = run_threads(
            peers, {p: RingAllReduce(p, [0, 1], xs2[p], round=1) for p in range(2)}, 30
        )
        np.testing.assert_array_equal(res[1], [2, 2, 101, 2])
        assert "duplicate step 0 segment 0" in caplog.text
        assert list(peers[0]._held) == []
    finally:
        raw.close()
        close_all(peers)


def test_session_mismatch_rejected_at_decode(ctx, caplog) -> None:
    peers = local_peers(range(2), context=ctx, session=9)
    raw = _raw_push(ctx, peers[0].address)
    try:
        raw.send_multipart(_frames(session=3))
        time.sleep(0.1)
        xs = np.ones((2, 4), np.float32)
        machines = {p: RingAllReduce(p, [0, 1], xs[p], session=9) for p in range(2)}
        res = run_threads(peers, machines, 30)
        np.testing.assert_array_equal(res[0], 2 * np.ones(4))
        assert "session 3, expected 9" in caplog.text
    finally:
        raw.close()
        close_all(peers)


def test_security_hook_configures_every_socket(ctx) -> None:
    seen = []

    class Record:
        def configure(self, socket, *, server, peer):
            seen.append((socket.type, server, peer))

    peers = local_peers(range(2), context=ctx, security=Record())
    try:
        run_threads(peers, {p: RingAllReduce(p, [0, 1], np.ones(3)) for p in range(2)}, 30)
    finally:
        close_all(peers)
    assert sorted(seen) == sorted(
        [(zmq.PULL, True, 0), (zmq.PULL, True, 1), (zmq.PUSH, False, 1), (zmq.PUSH, False, 0)]
    )


def test_bad_endpoints(ctx) -> None:
    with pytest.raises(ConfigError, match="no endpoint for peer 3"):
        ZmqPeer(3, {0: "tcp://127.0.0.1:0"}, context=ctx)
    with pytest.raises(ConfigError, match="cannot bind"):
        ZmqPeer(0, {0: "tcp://256.0.0.1:1"}, context=ctx)
    with pytest.raises(ConfigError, match="use tcp:// or ipc://"):
        ZmqPeer(0, {0: "inproc://x"}, context=ctx)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_separate_processes(tmp_path, transport: str) -> None:
    n, m, seed = 3, 200_003, 11
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    for p in range(n):
        bind = "tcp://127.0.0.1:0" if transport == "tcp" else f"ipc://{tmp_path}/p{p}.sock"
        cmd = [
            sys.executable,
            str(ROOT / "tests" / "zmq_peer_child.py"),
            str(p),
            str(n),
            str(m),
            str(seed),
            str(tmp_path / f"out{p}.npy"),
            bind,
        ]
        procs.append(
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        )
    try:
        addrs = {}
        for p, proc in enumerate(procs):
            line = [None]
            t = threading.Thread(
                target=lambda pr=proc, box=line: box.__setitem__(0, pr.stdout.readline())
            )
            t.start()
            t.join(60)
            assert line[0], f"peer {p} printed no address"
            addrs[p] = line[0].strip()
        for proc in procs:
            proc.stdin.write(json.dumps(addrs) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.wait(timeout=90) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    xs = [np.random.default_rng(seed + p).standard_normal(m).astype(np.float32) for p in range(n)]
    want = np.sum(xs, axis=0)
    for p in range(n):
        np.testing.assert_allclose(np.load(tmp_path / f"out{p}.npy"), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_planned_allreduces_over_zmq_equal_exact_sums(ctx, tmp_path, transport, n) -> None:
    """Halving/doubling, the bidirectional ring and the automatic choice over real
    sockets: odd lengths, empty buffers, integer sums that wrap modulo 2^k."""
    from ringfl.collective.choose import make_allreduce

    peers = local_peers(range(n), transport=transport, ipc_dir=str(tmp_path), context=ctx)
    try:
        ring = [int(p) for p in np.random.default_rng(n + 1).permutation(n)]
        cases = [(0, "float32"), (n + 1, "uint32"), (50_001, "float32"), (100_003, "uint64")]
        rnd = 0
        for algorithm in ("halving-doubling", "bidirectional-ring", "auto"):
            for m, dtype in cases:
                rng = np.random.default_rng(rnd)
                if dtype == "float32":
                    xs = rng.standard_normal((n, m)).astype(dtype)
                else:
                    xs = rng.integers(0, np.iinfo(dtype).max, (n, m), dtype=dtype, endpoint=True)
                machines = {
                    p: make_allreduce(
                        p, ring, xs[p], algorithm=algorithm, round=rnd, segment_bytes=1 << 16
                    )
                    for p in range(n)
                }
                res = run_threads(peers, machines, timeout_s=30)
                rnd += 1
                if dtype == "float32":
                    want = xs.astype(np.float64).sum(axis=0)
                    np.testing.assert_allclose(res[0], want, rtol=1e-5, atol=1e-4)
                else:  # exact, modulo 2^64 / 2^32, in Python integers
                    bits = 8 * np.dtype(dtype).itemsize
                    want = [sum(int(v) for v in xs[:, i]) % 2**bits for i in range(m)]
                    assert res[0].tolist() == want
                assert all(res[p].tobytes() == res[0].tobytes() for p in range(n))
    finally:
        close_all(peers)
