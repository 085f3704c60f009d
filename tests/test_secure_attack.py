"""Attack before you fix: coalitions try every linear way to unmask, in every schedule.

For N ∈ {4, 5, 8}, every crash point and every wrong loss declaration of every peer (a
the ring's first peer at N = 8, to keep the suite fast), each single peer and each pair of ring
neighbours pools exactly what it holds (tests/secure_attack.py says what and how) and
must learn no honest peer's input beyond what the sum itself reveals. Positive controls
show that the same attacker does unmask when it should be able to.
"""

from __future__ import annotations

import pytest
from secure_attack import ROUND, SESSION, Run, attack, leaks_in, run, schedules

from ringfl.secure.aggregate import Masking


def _check_schedules(n: int, seed: int, peers=None) -> int:
    tried = 0
    for faults in schedules(n, seed, peers):
        r = run(n, seed, faults)
        leaks = leaks_in(r)
        assert not leaks, f"N={n} faults={faults}: {leaks[:3]}"
        tried += 1
    return tried


@pytest.mark.parametrize("n", [4, 5])
def test_no_coalition_unmasks_anyone_at_any_crash_or_declaration_point(n: int) -> None:
    assert _check_schedules(n, seed=n) > 20 * n


def test_no_coalition_unmasks_anyone_in_a_ring_of_eight() -> None:
    r = run(8, 8)
    # every point of the ring's first peer (the lead of the old protocol, whose self mask
    # was the only one); all peers at N = 4 and 5 above
    assert _check_schedules(8, 8, peers=[r.ring[0]]) > 100


def _mask_neighbour_coalition(r: Run, victim: int, masking: Masking) -> tuple[int, ...]:
    graph = masking.graph(r.ring, session=SESSION, round=ROUND, attempt=0)
    succ = r.ring[(r.ring.index(victim) + 1) % len(r.ring)]
    return tuple(sorted(graph[victim] | {succ}))


def test_positive_control_all_mask_neighbours_and_the_successor_unmask() -> None:
    """With a sparse masking graph, a victim's mask neighbours plus its ring successor
    (who receives its masked chunk at reduce-scatter step 0) can read that chunk: the
    attacker must find it."""
    masking = Masking(degree=2, complete_up_to=0)
    r = run(8, 21, masking=masking)
    assert not r.aborted
    victim = r.ring[3]
    group = _mask_neighbour_coalition(r, victim, masking)
    assert len(group) <= 3
    leaks = attack(r, group, {})
    assert any(leak.victim == victim for leak in leaks)


def test_positive_control_what_the_sum_reveals_is_not_counted() -> None:
    """All other peers together know the victim's input from the sum alone: the attacker
    must classify that as allowed, not as a leak (and find nothing else)."""
    r = run(4, 22)
    others = tuple(p for p in r.ring if p != r.ring[0])
    assert attack(r, others, {}) == []
