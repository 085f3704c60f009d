"""Real peers, separate processes, on loopback: a ring trains to completion with CURVE links
and secure masking, every peer ends with the same model, and that model is exactly the
one a direct computation of the same rounds gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ringfl import checkpoint
from tests.peer_util import Ring, cli, env, reference_ring_run, start, wait

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def ring5():
    r = Ring(5, rounds=4, steps=5)
    yield r
    r.cleanup()


@pytest.mark.slow
def test_ring_of_five_trains_to_identical_models(ring5: Ring) -> None:
    proc = start("launch", *ring5.args("--out", str(ring5.out)), log=ring5.dir / "launch.log")
    code = wait(proc, 180)
    log = (ring5.dir / "launch.log").read_text()
    assert code == 0, log[-3000:]
    hashes = {name: ring5.summary(name)["hash"] for name in ring5.names}
    assert len(set(hashes.values())) == 1, hashes
    models = [ring5.final_model(name) for name in ring5.names]
    assert all(checkpoint.digest(m) == hashes[n] for m, n in zip(models, ring5.names, strict=True))
    # the distributed result is bit-exact against a direct computation of the same rounds
    want = reference_ring_run(ring5)
    assert np.array_equal(models[0], want)
    # every round: all five peers, CURVE links, masked sum, no dropped messages
    for name in ring5.names:
        rows = ring5.metrics(name)
        assert [r["round"] for r in rows] == [0, 1, 2, 3]
        assert all(r["members"] == ring5.names for r in rows)
        events = ring5.events(name)
        start_ev = next(e for e in events if e["event"] == "start")
        assert start_ev["links"] == "CURVE" and start_ev["masking"] is True
        assert not [e for e in events if e["event"] in ("dropped", "refused", "lost")]
        assert ring5.summary(name)["accuracy"] > 0.5
    # no secret key material in any log
    secrets = [
        (ring5.keys / n / f).read_text().strip()
        for n in ring5.names
        for f in ("curve.key", "mask.key")
    ]
    text = log + "".join((ring5.peer_dir(n) / "events.jsonl").read_text() for n in ring5.names)
    assert not any(s in text for s in secrets)


def test_status_reads_the_event_log(ring5: Ring) -> None:
    import subprocess

    d = ring5.out / "0"
    d.mkdir(parents=True)
    rows = [
        {"t": 1.0, "node": 0, "peer": 0, "event": "start"},
        {"t": 2.0, "node": 0, "peer": 0, "event": "ready", "round": 0, "members": ["0", "1", "2"]},
        {
            "t": 3.0,
            "node": 0,
            "peer": 0,
            "event": "round",
            "round": 0,
            "members": ["0", "1", "2"],
            "accuracy": 0.75,
            "bytes_sent": 2_000_000,
            "dropped": [],
        },
        {"t": 4.0, "node": 0, "peer": 0, "event": "lost", "round": 1, "peers": ["2"]},
        {"t": 5.0, "node": 0, "peer": 0, "event": "dropped", "reason": "x"},
    ]
    (d / "events.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
    out = subprocess.run(
        cli("status", str(d)), env=env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "node 0: running" in out.stdout
    assert "2 of 3 members: 0, 1" in out.stdout
    assert "75.00%" in out.stdout and "2.00 MB" in out.stdout
    js = subprocess.run(
        cli("status", str(ring5.out), "--json"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    s = json.loads(js.stdout)
    assert s["round"] == 0 and s["lost"] == ["2"] and s["dropped"] == 1
    bad = subprocess.run(
        cli("status", str(ring5.dir / "nothing")),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "no such directory" in bad.stderr
