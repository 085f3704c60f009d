"""`ringfl launch`: Ctrl-C stops every peer cleanly; gossip mode on real peers drops a
killed neighbour's edge and trains on."""

from __future__ import annotations

import os
import signal

import pytest

from tests.peer_util import Ring, kill_group, start, wait, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of the launcher still answers kill(0): look at its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_stops_all_peers() -> None:
    ring = Ring(4, rounds=200, steps=5)
    proc = None
    try:
        proc = start("launch", *ring.args("--out", str(ring.out)), log=ring.dir / "launch.log")
        assert wait_for(
            lambda: all(any(e["event"] == "round" for e in ring.events(n)) for n in ring.names),
            120,
        )
        pids = [next(e["pid"] for e in ring.events(n) if e["event"] == "start") for n in ring.names]
        os.kill(proc.pid, signal.SIGINT)
        assert wait(proc, 60) == 130
        log = (ring.dir / "launch.log").read_text()
        assert "stopping all peers" in log
        assert wait_for(lambda: not any(alive(p) for p in pids), 10), log[-2000:]
        for n in ring.names:
            stop = [e for e in ring.events(n) if e["event"] == "stopped"] or [
                e for e in ring.events(n) if e["event"] == "finished"
            ]
            assert f"{n} exited with status 130" in log or stop, n
    finally:
        if proc is not None:
            kill_group(proc)
        ring.cleanup()


def test_gossip_peers_drop_a_killed_neighbour_and_finish() -> None:
    ring = Ring(5, rounds=6, steps=5, algorithm="gossip", secure=False)
    try:
        proc = start(
            "launch",
            *ring.args("--out", str(ring.out), "--fault", "2:kill@2:0"),  # dies before sending
            log=ring.dir / "launch.log",
        )
        assert wait(proc, 200) == 137
        alive_names = ["0", "1", "3", "4"]
        for n in alive_names:
            assert ring.summary(n)["status"] == "finished"
        # only the ring neighbours of 2 (1 and 3) noticed; they dropped the edge for good
        for n in ("1", "3"):
            lost = [e for e in ring.events(n) if e["event"] == "lost"]
            assert lost and lost[0]["peers"] == ["2"] and lost[0]["round"] == 2
            later = [r for r in ring.metrics(n) if r["round"] > 2]
            assert later and all("2" not in r["members"] for r in later)
        for n in ("0", "4"):
            assert not [e for e in ring.events(n) if e["event"] == "lost"]
        # gossip models differ between peers, but every one learned something
        assert all(ring.summary(n)["accuracy"] > 0.5 for n in alive_names)
    finally:
        ring.cleanup()
