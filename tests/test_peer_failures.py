"""Real peer processes that fail: a peer SIGKILLed in the middle of a round's masked
all-reduce (the survivors finish that round with the exact sum of their own deltas and
train on), and the killed peer restarted (it rejoins and ends with the same model)."""

from __future__ import annotations

import numpy as np
import pytest

from ringfl.collective.resilient import RetryingRingSum
from ringfl.errors import PeerTimeout
from ringfl.transport.memory import Crash, MemoryNetwork
from tests.peer_util import (
    Ring,
    check_every_round_is_the_exact_sum,
    reference_ring_run,
    saved_rounds,
    start,
    wait,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_kill_9_mid_round_survivors_finish_with_the_exact_sum() -> None:
    ring = Ring(5, rounds=6, steps=5)
    try:
        proc = start(
            "launch",
            *ring.args("--out", str(ring.out), "--save-deltas", "--fault", "2:kill@2:3"),
            log=ring.dir / "launch.log",
        )
        code = wait(proc, 200)
        log = (ring.dir / "launch.log").read_text()
        assert "2 exited with status 137" in log, log[-3000:]  # really SIGKILLed
        assert code == 137, log[-3000:]
        alive = [n for n in ring.names if n != "2"]
        hashes = {ring.summary(n)["hash"] for n in alive}
        assert len(hashes) == 1
        members, sizes = check_every_round_is_the_exact_sum(ring, alive)
        assert members[1] == [0, 1, 2, 3, 4]
        assert members[2] == [0, 1, 3, 4]  # killed in the middle of round 2's sum
        assert sizes[2] == 5 and sizes[3] == 4
        assert all(members[r] == [0, 1, 3, 4] for r in range(3, 6))
        # only peer 2's ring successor timed out on it; the others learnt from its notice
        declared = {n for n in alive if any(e["event"] == "lost" for e in ring.events(n))}
        assert declared == {"3"}
        for n in ["0", "1", "4"]:
            notes = [e for e in ring.events(n) if e["event"] == "peer_gone"]
            assert notes and notes[0]["peers"] == ["2"] and notes[0]["round"] == 2
        # the final model is the exact result of these rounds
        want = reference_ring_run(ring, members, sizes)
        assert np.array_equal(ring.final_model("0"), want)
    finally:
        ring.cleanup()


RESTART = """
[[faults]]
kind = "crash"
node = "2"
round = 2
after_sends = 3
[[faults]]
kind = "restart"
node = "2"
round = 5
"""


def test_restarted_peer_rejoins_and_ends_with_the_same_model() -> None:
    """The schedule crashes peer 2 in round 2 and restarts it as a member of round 5: the
    launcher starts it again (same directory: it loads its checkpoint, finds a running
    ring, asks to join); the survivors admit it exactly at round 5 (its join request is
    pinned to that round), its ring predecessor hands it round 5's start model, and every
    peer ends with the same model — no timing decides any of it."""
    ring = Ring(5, rounds=8, steps=5)
    try:
        ring.config.write_text(ring.config.read_text() + RESTART)
        proc = start(
            "launch", *ring.args("--out", str(ring.out), "--save-deltas"),
            log=ring.dir / "launch.log",
        )  # fmt: skip
        code = wait(proc, 200)
        log = (ring.dir / "launch.log").read_text()
        assert code == 137 and "restarted 2 (fault schedule)" in log, log[-3000:]
        hashes = {n: ring.summary(n)["hash"] for n in ring.names}
        assert len(set(hashes.values())) == 1, hashes
        events2 = ring.events("2")
        kinds = [e["event"] for e in events2]
        assert "checkpoint_loaded" in kinds and "joining" in kinds
        assert [e["round"] for e in events2 if e["event"] == "rejoined"] == [5]
        alive = [n for n in ring.names if n != "2"]
        members, sizes = check_every_round_is_the_exact_sum(ring, alive)
        everyone, without = [0, 1, 2, 3, 4], [0, 1, 3, 4]
        assert [members[r] for r in range(8)] == [everyone] * 2 + [without] * 3 + [everyone] * 3
        admitted = {r["round"]: r["admitted"] for r in ring.metrics("0")}
        assert admitted[4] == ["2"] and all(admitted[r] == [] for r in admitted if r != 4)
        assert np.array_equal(ring.final_model("2"), reference_ring_run(ring, members, sizes))
    finally:
        ring.cleanup()


def test_minority_left_after_failures_stops_with_a_clear_message() -> None:
    ring = Ring(5, rounds=6, steps=5)
    try:
        kills = [x for n in ("0", "1", "2") for x in ("--fault", f"{n}:kill@2:1")]
        proc = start(
            "launch", *ring.args("--out", str(ring.out), *kills), log=ring.dir / "launch.log"
        )
        wait(proc, 200)
        log = (ring.dir / "launch.log").read_text()
        for name in ("3", "4"):
            assert f"{name} exited with status 3" in log, log[-3000:]
            stop = [e for e in ring.events(name) if e["event"] == "stopped"]
            assert stop and "strict majority" in stop[0]["reason"], stop
            assert "only 2 of 5 peers reachable" in stop[0]["reason"]
            assert ring.summary(name)["status"] == "stopped"
            # it never trained on alone: its last completed round is the one before
            assert [r["round"] for r in ring.metrics(name)] == [0, 1]
    finally:
        ring.cleanup()


def test_plain_ring_killed_late_hands_the_finished_sum_to_the_others() -> None:
    """Without masking: peer 2 dies after it contributed but before everyone has the sum;
    the peers that finished hand their sum (RESULT) to those still waiting. Which peers
    finish on their own is decided by the data dependencies of the all-reduce alone (the
    crash lets exactly 15 messages out): the same machines on the in-memory network with
    the same crash say who, and exactly the others adopt."""
    ring = Ring(5, rounds=5, steps=5, secure=False)
    try:
        proc = start(
            "launch",
            *ring.args("--out", str(ring.out), "--save-deltas", "--fault", "2:kill@2:15"),
            log=ring.dir / "launch.log",
        )
        assert wait(proc, 200) == 137
        alive = [n for n in ring.names if n != "2"]
        assert len({ring.summary(n)["hash"] for n in alive}) == 1
        saved = {n: saved_rounds(ring, n) for n in ring.names}
        length = saved["0"][2].arrays["payload"].shape[0]
        machines = {
            p: RetryingRingSum(p, range(5), np.zeros(length, np.float32), session=1, round=2)
            for p in range(5)
        }
        with pytest.raises(PeerTimeout):  # the unfinished wait for the finished: no RESULT here
            MemoryNetwork().run(machines, [Crash(2, after_sends=15)])
        on_their_own = {ring.names[p] for p in range(5) if p != 2 and machines[p].done}
        adopted = {
            n: [e["round"] for e in ring.events(n) if e["event"] == "result_adopted"] for n in alive
        }
        assert on_their_own and set(alive) - on_their_own  # both kinds occur
        assert adopted == {n: ([] if n in on_their_own else [2]) for n in alive}
        assert "result" not in saved["2"][2].arrays  # it died inside round 2's sum
        for r in range(5):
            who = {tuple(saved[n][r].meta["members"]) for n in alive}
            assert len(who) == 1
            members = list(who.pop())
            assert members == ([0, 1, 2, 3, 4] if r <= 2 else [0, 1, 3, 4])
            results = {saved[n][r].arrays["result"].tobytes() for n in alive}
            assert len(results) == 1  # the same bits on every survivor
            got = saved[alive[0]][r].arrays["result"]
            want = np.sum([saved[ring.names[p]][r].arrays["payload"] for p in members], axis=0)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    finally:
        ring.cleanup()
