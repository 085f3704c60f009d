"""The engine's pure parts, fed by hand: the failure detector on a made-up clock,
membership round by round, the step codec, and an engine round without any network."""

from __future__ import annotations

import numpy as np
import pytest

from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy, FailureDetector
from ringfl.engine.membership import Membership
from ringfl.wire import StepCodec


def detector(**kw) -> FailureDetector:
    policy = DeadlinePolicy(min_s=4.0, max_s=10.0, initial_s=4.0, probe_min_s=0.5, **kw)
    return FailureDetector(AdaptiveDeadline(policy), started=100.0)


def test_silent_peer_is_probed_then_declared_at_the_deadline() -> None:
    d = detector()  # deadline 4 s, probe window 2 s
    v = d.poll(101.0, {3})
    assert v.probe == () and v.declare == () and v.wake_at == pytest.approx(102.0)
    v = d.poll(102.5, {3})
    assert v.probe == (3,) and v.wake_at == pytest.approx(104.5)
    assert d.poll(103.0, {3}).probe == ()  # asked once
    v = d.poll(104.5, {3})
    assert v.declare == (3,) and 3 in d.lost
    assert d.poll(105.0, {3}).declare == ()  # declared once


def test_a_peer_that_answers_the_probe_is_alive() -> None:
    d = detector()
    assert d.poll(102.5, {1, 2}).probe == (1, 2)
    d.heard(1, 103.0)  # 1 answers (any message counts); 2 does not
    v = d.poll(104.5, {1, 2})
    assert v.declare == (2,) and 1 not in d.lost
    # 1 is left alone for a while, then asked again if the silence goes on
    assert d.poll(105.0, {1}).probe == ()
    assert d.poll(107.0, {1}).probe == (1,)


def test_progress_resets_the_silence_and_the_longest_silence_feeds_the_deadline() -> None:
    d = detector()
    d.progress(101.5)
    assert d.poll(103.0, {4}).probe == ()  # 1.5 s of silence only
    d.progress(103.0)
    d.close(103.5)
    assert d.deadline.observations == 1 and d.deadline.ewma == pytest.approx(1.5)


def test_a_stall_with_everyone_answering_is_bounded() -> None:
    d = detector()
    assert d.hard_limit_s == pytest.approx(2 * 10.0 + 5.0)
    t = 100.0
    while t < 126:
        v = d.poll(t, {5})
        for p in v.probe:
            d.heard(p, t + 0.01)  # always answers, never makes progress
        if v.declare:
            break
        t += 0.25
    assert v.stalled and v.declare == (5,) and t == 125  # at the hard limit exactly


def test_membership_flags_admissions_and_the_majority_rule() -> None:
    m = Membership(peer=0, n_peers=5, order=(0, 1, 2, 3, 4), not_before={2: 4})
    m.begin(0, range(5))
    assert m.majority_problem() is None
    assert m.lose({2}, 0) == {2} and m.lost_in(0) == {2}
    dropped, admitted = m.commit(0, [0, 1, 3, 4], [])
    assert dropped == [2] and admitted == [] and m.members == (0, 1, 3, 4)
    assert m.candidates() == (2,)  # the one non-member: the only flag slot
    assert m.request_join(2, incarnation=7) is False  # not a member: just a request
    assert m.flags(1) == [] and m.flags(2) == []  # pinned: flagged in round 3 only
    assert m.awaited_joiners(3) == []
    assert m.flags(3) == [2]
    m.commit(1, [0, 1, 3, 4], [])
    m.commit(2, [0, 1, 3, 4], [])
    dropped, admitted = m.commit(3, [0, 1, 3, 4], [2])
    assert admitted == [2] and m.members == (0, 1, 2, 3, 4) and m.round == 4
    assert m.candidates() == ()
    assert m.to_serve(4) == []  # 1 is 2's predecessor, not 0
    assert Membership(
        1, 5, (0, 1, 2, 3, 4), admitted_round={2: 4}, members=(0, 1, 2, 3, 4)
    ).to_serve(4) == [2]
    m.lose({1, 3}, 4)
    assert m.majority_problem() is None  # 3 of 5 still reachable
    m.lose({4}, 4)
    assert "only 2 of 5 peers reachable" in (m.majority_problem() or "")


def test_awaited_joiners_name_the_pinned_restart() -> None:
    m = Membership(peer=0, n_peers=3, order=(0, 1, 2), not_before={1: 3})
    m.begin(2, [0, 2])
    assert m.awaited_joiners(2) == [1]
    m.request_join(1, incarnation=1)
    assert m.awaited_joiners(2) == [] and m.flags(2) == [1]


def test_step_codec_round_trips_and_refuses_overflow() -> None:
    c = StepCodec((("attempt", 20), ("step", 12)))
    v = c.pack(attempt=0xABCDE, step=0x123)
    assert v < 2**32 and c.unpack(v) == {"attempt": 0xABCDE, "step": 0x123}
    assert c.limit("step") == 4095
    with pytest.raises(ValueError, match="does not fit"):
        c.pack(attempt=0, step=4096)
    with pytest.raises(ValueError):
        StepCodec((("a", 20), ("b", 20)))
    assert np.uint32(c.pack(attempt=2**20 - 1, step=2**12 - 1)) == 2**32 - 1


def test_memory_network_probes_a_slow_peer_and_declares_a_dead_one() -> None:
    """The in-memory network runs the same failure detector on virtual time: a peer that
    starts long after the deadline answers probes and is waited for; a crashed one is
    declared, and every survivor learns it at the same virtual moment."""
    from ringfl.collective.resilient import RetryingRingSum
    from ringfl.transport.memory import Crash, MemoryNetwork

    def machines():
        return {
            p: RetryingRingSum(p, range(4), np.full(10, p + 1.0, np.float32), session=1, round=0)
            for p in range(4)
        }

    slow = machines()
    res = MemoryNetwork(deadline_s=1.0).run(slow, start_at={2: 5.0})
    assert all(slow[p].members == (0, 1, 2, 3) for p in range(4))
    assert res.virtual_time_s >= 5.0 and all(r[0] == 10.0 for r in res.results.values())

    told: dict[int, tuple[float, frozenset[int]]] = {}
    dead = machines()
    net = MemoryNetwork(deadline_s=1.0)
    run_net = net.run(
        dead,
        [Crash(2, after_sends=0)],
        on_lost=lambda p, lost: told.setdefault(p, (0.0, lost)) is not None,
    )
    assert sorted(told) == [0, 1, 3] and {lost for _, lost in told.values()} == {frozenset({2})}
    assert all(dead[p].members == (0, 1, 3) for p in (0, 1, 3))
    assert all(run_net.results[p][0] == 1.0 + 2.0 + 4.0 for p in (0, 1, 3))


def test_the_algorithm_registry_is_the_one_list_of_names() -> None:
    """The config validates names without importing torch; both lists must be the same."""
    from ringfl.algorithms import ALGORITHM_NAMES, REGISTRY
    from ringfl.config import ALGORITHMS

    assert ALGORITHMS == ALGORITHM_NAMES == tuple(REGISTRY)
    assert [n for n, e in REGISTRY.items() if e.real_peers] == ["ring", "gossip", "selective"]
