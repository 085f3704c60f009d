"""Refused CURVE clients: the table of keys and the log stay bounded whatever the clients do
(fresh key per connection, fast retries), and dropped log lines are counted and reported."""

from __future__ import annotations

import time

import pytest
import zmq

from ringfl.errors import ConfigError
from ringfl.peer.curve import CurveSecurity
from ringfl.peer.identity import Identity
from ringfl.peer.refusals import RefusalLimiter
from ringfl.transport.zmq import ZmqPeer
from tests.peer_util import short_dir


def test_fresh_keys_keep_table_and_log_bounded() -> None:
    lim = RefusalLimiter(max_keys=1024, per_key_s=1.0, rate=1.0, burst=10)
    n, dt = 100_000, 0.001  # a fresh key every millisecond for 100 s
    lines = []
    for i in range(n):
        line = lim.refused(f"{i:012x}", i * dt)
        if line is not None:
            lines.append(line)
        assert len(lim) <= 1024
    assert len(lim) == 1024
    span = (n - 1) * dt
    assert len(lines) <= 10 + span * 1.0 + 1  # burst + rate·t
    assert len(lines) >= span * 1.0 - 1  # and the budget is used
    # every fresh key deserved a line: each one is either logged or counted as dropped
    reported = sum(x.get("suppressed", 0) for x in lines)
    assert len(lines) + reported + lim.flush() == n
    assert lim.flush() == 0
    assert lim.refusals == n and lim.lines == len(lines)
    assert all(x["attempts"] == 1 for x in lines)
    assert any(x.get("suppressed", 0) > 0 for x in lines)


def test_one_key_retrying_logs_once_a_period_with_its_attempts() -> None:
    lim = RefusalLimiter(per_key_s=1.0, rate=5.0, burst=5)
    lines = [lim.refused("aa", t / 100) for t in range(1000)]  # 100 Hz for 10 s
    got = [x for x in lines if x is not None]
    assert len(got) == 10 and [x["key"] for x in got] == ["aa"] * 10
    assert got[0]["attempts"] == 1 and all(x["attempts"] == 100 for x in got[1:])
    assert not any("suppressed" in x for x in got)


def test_forgotten_keys_start_afresh_and_suppressed_count_arrives_later() -> None:
    lim = RefusalLimiter(max_keys=4, per_key_s=10.0, rate=0.5, burst=2)
    assert lim.refused("a", 0.0) == {"key": "a", "attempts": 1}
    assert lim.refused("a", 0.1) is None  # same key within its period
    assert lim.refused("b", 0.2) == {"key": "b", "attempts": 1}
    assert lim.refused("c", 0.3) is None  # global budget spent: dropped, counted
    assert lim.refused("d", 0.4) is None
    for k in "efg":  # pushes "a" out of the 4-key table
        lim.refused(k, 0.5)
    assert len(lim) == 4
    # 4 s later the bucket has tokens again; "a" was forgotten, so it is new again
    assert lim.refused("a", 4.5) == {"key": "a", "attempts": 1, "suppressed": 5}
    with pytest.raises(ConfigError, match="max_keys"):
        RefusalLimiter(max_keys=0)


def test_real_curve_refusals_from_fresh_keys_stay_bounded() -> None:
    # Real ZAP handshakes: 40 clients, each with a fresh CURVE key not in the topology.
    d = short_dir()
    me = Identity.generate()
    ctx = zmq.Context()
    lim = RefusalLimiter(max_keys=8, per_key_s=1.0, rate=2.0, burst=4)
    seen: set[str] = set()
    lines: list[dict] = []

    def on_refused(fp: str) -> None:  # what the peer node does, plus test bookkeeping
        seen.add(fp)
        line = lim.refused(fp, time.monotonic())
        if line is not None:
            lines.append(line)

    sec = CurveSecurity(me, 0, {0: me.curve.public_bytes}, ctx, on_refused=on_refused)
    sec.start()
    server = ZmqPeer(0, {0: f"ipc://{d}/s.sock"}, context=ctx, security=sec)
    clients = []
    t0 = time.monotonic()
    try:
        for _ in range(40):
            pub, secret = zmq.curve_keypair()
            c = ctx.socket(zmq.PUSH)
            c.linger = 0
            c.curve_secretkey, c.curve_publickey = secret, pub
            c.curve_serverkey = zmq.utils.z85.encode(me.curve.public_bytes)
            c.connect(server.address)
            clients.append(c)
        end = time.monotonic() + 30
        while len(seen) < 40 and time.monotonic() < end:
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        assert len(seen) == 40
        assert len(lim) <= 8
        assert 1 <= len(lines) <= 4 + 2.0 * elapsed + 1
        assert len(lines) + sum(x.get("suppressed", 0) for x in lines) + lim.flush() >= 40
    finally:
        for c in clients:
            c.close(0)
        server.close()
        sec.stop()
        ctx.term()
        (d / "s.sock").unlink(missing_ok=True)
        d.rmdir()
