"""Peers on separate "hosts": each peer runs in its own network namespace with its own IP
address, joined by veth pairs to a bridge, with `tc netem` delay and packet loss on the
links (where the kernel has netem; without it the test still runs, with plain links).
Every host runs the same command (`ringfl launch`, which starts the one node whose
address is local there); they train to completion over CURVE-encrypted TCP with secure
masking and end bit-identical. Needs root and `ip`/`tc`; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.peer_util import (
    Ring,
    env,
    kill_group,
    reference_ring_run,
    wait,
    wait_for,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

N = 3


def sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def must(*cmd: str) -> None:
    r = sh(*cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")


@pytest.fixture
def hosts():
    """N network namespaces on one bridge; yields (namespace names, IP addresses)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        pytest.skip("network namespaces need root and the ip and tc tools")
    tag = f"rf{os.getpid() % 100000}"
    bridge = f"{tag}b"
    names = [f"{tag}n{i}" for i in range(N)]
    subnet = f"10.213.{os.getpid() % 250}"
    ips = [f"{subnet}.{i + 1}" for i in range(N)]
    made_ns: list[str] = []
    made_bridge = False
    netem: list[bool] = []
    try:
        probe = sh("ip", "netns", "add", names[0])
        if probe.returncode != 0:
            pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
        made_ns.append(names[0])
        r = sh("ip", "link", "add", bridge, "type", "bridge")
        if r.returncode != 0:
            pytest.skip(f"cannot create a bridge here: {r.stderr.strip()}")
        made_bridge = True
        must("ip", "link", "set", bridge, "up")
        for i, ns in enumerate(names):
            if ns not in made_ns:
                must("ip", "netns", "add", ns)
                made_ns.append(ns)
            host_end, ns_end = f"{tag}h{i}", f"{tag}v{i}"
            must("ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            must("ip", "link", "set", ns_end, "netns", ns)
            must("ip", "link", "set", host_end, "master", bridge)
            must("ip", "link", "set", host_end, "up")
            x = ("ip", "netns", "exec", ns)
            must(*x, "ip", "link", "set", "lo", "up")
            must(*x, "ip", "addr", "add", f"{ips[i]}/24", "dev", ns_end)
            must(*x, "ip", "link", "set", ns_end, "up")
            # a wide-area link where the kernel has netem: 3 ms ± 1 ms each way, 1 % loss
            netem.append(
                sh(*x, "tc", "qdisc", "add", "dev", ns_end, "root", "netem",
                   "delay", "3ms", "1ms", "loss", "1%").returncode == 0
            )  # fmt: skip
        r = sh("ip", "netns", "exec", names[0], "ping", "-c", "1", "-W", "3", ips[-1])
        if r.returncode != 0 and shutil.which("ping"):
            pytest.skip(f"namespaces cannot reach each other: {r.stdout.strip()[-200:]}")
        yield names, ips, all(netem), [f"{tag}h{i}" for i in range(N)]
    finally:
        for ns in made_ns:
            sh("ip", "netns", "del", ns)
        if made_bridge:
            sh("ip", "link", "del", bridge)


def test_peers_in_separate_network_namespaces_train_to_completion(hosts) -> None:
    names, ips, netem, _ = hosts
    print(f"links with netem delay and loss: {netem}")
    ring = Ring(N, rounds=4, steps=5, addresses=[f"tcp://{ip}:23456" for ip in ips])
    procs = []
    try:
        for i, ns in enumerate(names):
            cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "ringfl", "launch",
                   *ring.args("--out", str(ring.out))]  # fmt: skip
            log = open(ring.dir / f"host{i}.log", "w")  # noqa: SIM115
            procs.append((subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True), log))  # fmt: skip
        for i, (p, log) in enumerate(procs):
            code = wait(p, 240)
            log.close()
            text = (ring.dir / f"host{i}.log").read_text()
            assert code == 0, text[-3000:]
            # each host started exactly its own node
            assert "started 1 peer(s)" in text and f"{i} (pid" in text
        hashes = {ring.summary(n)["hash"] for n in ring.names}
        assert len(hashes) == 1
        for n in ring.names:
            start_ev = next(e for e in ring.events(n) if e["event"] == "start")
            assert start_ev["links"] == "CURVE" and start_ev["address"].startswith("tcp://10.213.")
        assert np.array_equal(ring.final_model("0"), reference_ring_run(ring))
    finally:
        for p, log in procs:
            kill_group(p)
            log.close()
        ring.cleanup()


def test_partition_minority_stops_and_majority_trains_on(hosts) -> None:
    """Cut host 2's link in the middle of training: hosts 0 and 1 (2 of 3) declare it
    gone and finish; host 2 (1 of 3) stops with the majority message. Plain sums: a
    secure sum never finishes with two contributors (they would learn each other's
    input), so with masking the majority of 2 would stop too (tested in memory)."""
    names, ips, _, links = hosts
    ring = Ring(N, rounds=12, steps=5, secure=False, addresses=[f"tcp://{ip}:23457" for ip in ips])
    procs = []
    try:
        for i, ns in enumerate(names):
            cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "ringfl", "peer",
                   "--node", str(i), "--min-round-seconds", "0.3", "--save-deltas",
                   *ring.args("--out", str(ring.out / str(i)))]  # fmt: skip
            log = open(ring.dir / f"host{i}.log", "w")  # noqa: SIM115
            procs.append((subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True), log))  # fmt: skip
        started = lambda: any(  # noqa: E731
            e["event"] == "round" and e["round"] >= 3 for e in ring.events("0")
        )
        assert wait_for(started, 180), (ring.dir / "host0.log").read_text()[-2000:]
        subprocess.run(["ip", "link", "set", links[2], "down"], check=True, timeout=30)
        codes = [wait(p, 200) for p, _ in procs]
        text = [(ring.dir / f"host{i}.log").read_text() for i in range(N)]
        assert codes[:2] == [0, 0], text[0][-2000:] + text[1][-2000:]
        assert codes[2] == 3, text[2][-2000:]
        stop = [e for e in ring.events("2") if e["event"] == "stopped"]
        assert stop and "strict majority" in stop[0]["reason"]
        assert "only 1 of 3 peers reachable" in stop[0]["reason"]
        assert ring.summary("0")["hash"] == ring.summary("1")["hash"]
        events = ring.events("0")
        members = {
            e["round"]: sorted(int(p) for p in e["members"])
            for e in events
            if e["event"] == "round"
        }
        sizes = {e["round"]: e["members"] for e in events if e["event"] == "round_start"}
        assert members[11] == [0, 1] and members[0] == [0, 1, 2]
        # plain float32 sums: the ring adds each chunk in its own order, so equal to the
        # reference up to rounding (the secure runs above are compared bit for bit)
        want = reference_ring_run(ring, members, sizes)
        np.testing.assert_allclose(ring.final_model("0"), want, rtol=1e-5, atol=1e-7)
    finally:
        for p, log in procs:
            kill_group(p)
            log.close()
        ring.cleanup()
