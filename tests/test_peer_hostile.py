"""Hostile input to live peers (real processes): a client whose CURVE key is not in the
topology is refused and nothing it sends is processed; a client with a real peer's key that
speaks for another peer is dropped as spoofed; a fuzzer's thousands of malformed frames
change nothing. Each run must end with exactly the model a direct computation gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zmq

from ringfl.engine.build import session_id
from ringfl.peer.curve import fingerprint
from tests.peer_util import Ring, env, kill_group, reference_ring_run, start, wait, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

FUZZ = str(Path(__file__).resolve().parent / "peer_fuzz.py")


def ready_session(ring: Ring, name: str) -> int | None:
    for e in ring.events(name):
        if e["event"] == "ready":
            return int(e["session"], 16)
    return None


def fuzzer(endpoint: str, ring: Ring, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, FUZZ, endpoint, "--control-session",
         str(session_id(3, "ringfl-control")), "--peers", str(ring.n), *extra],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip


def test_unknown_curve_key_is_refused_and_spoofed_sender_dropped() -> None:
    ring = Ring(3, rounds=10, steps=5)
    clients = []
    try:
        stranger = ring.dir / "stranger.key"
        pub, secret = zmq.curve_keypair()
        stranger.write_bytes(secret)
        stolen = ring.dir / "peer2.key"  # peer 2's real CURVE secret, in Z85
        from ringfl.peer.identity import Identity

        stolen.write_bytes(Identity.load(ring.keys / "2").curve_secret_z85)
        gate = ring.dir / "gate"  # the peers hold before round 2 until the forgeries are in
        proc = start(
            "launch",
            *ring.args("--out", str(ring.out), "--hold", f"2:{gate}"),
            log=ring.dir / "launch.log",
        )
        assert wait_for(lambda: ready_session(ring, "0") is not None, 120)
        addr = ring.graph.nodes[0]["address"]
        server = ring.graph.nodes[0]["public_key"]
        for key in (stranger, stolen):
            clients.append(
                fuzzer(addr, ring, "--forge", "--count", "200", "--seconds", "1.5",
                       "--curve-server", server, "--curve-secret", str(key))
            )  # fmt: skip
        for c in clients:
            assert c.wait(timeout=60) == 0, c.stdout.read()

        def spoofed() -> list[dict]:
            return [e for e in ring.events("0") if e["event"] == "dropped"]

        # every forged frame is in once peer 0 logged 200 drops; then the ring goes on
        assert wait_for(lambda: len(spoofed()) >= 200, 60), len(spoofed())
        gate.write_text("")
        assert wait(proc, 200) == 0, (ring.dir / "launch.log").read_text()[-3000:]
        ev = ring.events("0")
        refused = [e for e in ev if e["event"] == "refused"]
        assert refused and {e["key"] for e in refused} == {fingerprint(pub)}
        dropped = [e for e in ev if e["event"] == "dropped"]
        assert all("but the link is peer 2" in e["reason"] for e in dropped)
        assert len(dropped) == 200  # every forged message of the stolen-key client, no other
        for name in ring.names:
            kinds = {e["event"] for e in ring.events(name)}
            assert not kinds & {"peer_gone", "lost", "hello", "declared_lost"}, name
        assert len({ring.summary(n)["hash"] for n in ring.names}) == 1
        assert np.array_equal(ring.final_model("0"), reference_ring_run(ring))
    finally:
        for c in clients:
            kill_group(c)
        ring.cleanup()


def test_fuzzed_peer_neither_crashes_nor_changes_its_result() -> None:
    ring = Ring(4, rounds=10, steps=5)
    fz = None
    try:
        proc = start(
            "launch",
            *ring.args(
                "--out", str(ring.out), "--min-round-seconds", "0.3", "--save-deltas",
                "--fault", "1:nan@1", insecure=True,
            ),
            log=ring.dir / "launch.log",
        )  # fmt: skip
        assert wait_for(lambda: ready_session(ring, "0") is not None, 120)
        fz = fuzzer(
            ring.graph.nodes[0]["address"], ring, "--count", "3000", "--seconds", "2.5",
            "--data-session", str(ready_session(ring, "0")), "--seed", "7",
        )  # fmt: skip
        assert fz.wait(timeout=60) == 0
        sent = json.loads(fz.stdout.read().strip().splitlines()[-1])
        assert sum(sent.values()) == 3000 and len(sent) >= 19
        assert wait(proc, 200) == 0, (ring.dir / "launch.log").read_text()[-3000:]
        log = (ring.dir / "launch.log").read_text()
        assert "INSECURE" in log  # plain mode says so
        ev = ring.events("0")
        reasons = [e["reason"] for e in ev if e["event"] == "dropped"]
        assert len(reasons) > 1000  # the rest sit in the secure machine's rejected list
        for needle in (
            "bad magic",
            "protocol version",
            "exceeds the limit",
            "session",
            "is not another peer",
            "unknown operation",
            "outside rounds",
            "expected 2 frames",
        ):
            assert any(needle in r for r in reasons), needle
        # the NaN delta of peer 1 in round 1 was caught before masking: weight 0
        bad = [e for e in ring.events("1") if e["event"] == "nonfinite_delta"]
        assert bad and bad[0]["round"] == 1
        assert len({ring.summary(n)["hash"] for n in ring.names}) == 1
        want = reference_ring_run(ring, nonfinite={(1, 1)})
        assert np.array_equal(ring.final_model("0"), want)
    finally:
        if fz is not None:
            kill_group(fz)
        ring.cleanup()
