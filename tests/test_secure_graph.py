"""Masking graph: shared, fresh per attempt, complete or k-regular, not the ring order, and
with a degree that meets the stated collusion bound (checked exactly and by simulation)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ringfl.errors import ConfigError
from ringfl.secure.graph import (
    COMPLETE_UP_TO,
    default_degree,
    degree_for,
    exposure_bound,
    masking_graph,
    permutation,
)

TABLE_N = (3, 4, 5, 8, 9, 16, 17, 32, 64, 100, 1000, 10000)
GAMMAS = (Fraction(1, 4), Fraction(1, 3), Fraction(1, 2))


def test_permutation_is_shared_and_fresh_per_round() -> None:
    ids = [3, 9, 1, 4, 7, 0, 2]
    p = permutation(ids, session=5, round=1)
    assert sorted(p) == sorted(ids)
    assert p == permutation(list(reversed(ids)), session=5, round=1)  # order of input irrelevant
    others = {tuple(permutation(ids, session=5, round=r)) for r in range(2, 12)}
    others |= {
        tuple(permutation(ids, session=6, round=1)),
        tuple(permutation(ids, session=5, round=1, attempt=1)),
    }
    assert len(others) >= 10


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_small_rings_use_the_complete_graph(n: int) -> None:
    g = masking_graph(range(n), session=1, round=1)
    for p in range(n):
        assert g[p] == frozenset(range(n)) - {p}


# -- the collusion bound ------------------------------------------------------------------


def _exposed_times_2_30(n: int, c: int, k: int) -> tuple[int, int]:
    """(n − c)·C(c, k)·2^30 and C(n − 1, k): the bound is met iff the first ≤ the second."""
    return (n - c) * math.comb(c, k) << 30, math.comb(n - 1, k)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("n", TABLE_N)
def test_degree_meets_the_bound_and_is_minimal(n: int, gamma: Fraction) -> None:
    k = degree_for(n, gamma)
    c = n * gamma.numerator // gamma.denominator
    assert 2 <= k <= n - 1 and k <= max(2, c + 1)
    lhs, rhs = _exposed_times_2_30(n, c, k)
    assert lhs <= rhs, (n, gamma, k)  # P(some honest peer exposed) ≤ 2^−30
    if k > 2:  # minimal: one fewer neighbour would break the bound
        lhs, rhs = _exposed_times_2_30(n, c, k - 1)
        assert lhs > rhs, (n, gamma, k)
    assert exposure_bound(n, k, c) == Fraction((n - c) * math.comb(c, k), math.comb(n - 1, k))
    # the degree the graph really uses: the bound's k, made even for odd n, or complete
    d = default_degree(n, collusion=gamma)
    if n <= COMPLETE_UP_TO or d == n - 1:
        assert d == n - 1
    else:
        assert d in (k, k + 1) and (n % 2 == 0 or d % 2 == 0)
        lhs, rhs = _exposed_times_2_30(n, c, d)
        assert lhs <= rhs


def test_degree_table_values() -> None:
    # the rows of docs/security.md ("Masking graph and collusion bound")
    got = {g: [degree_for(n, g) for n in TABLE_N] for g in GAMMAS}
    assert got[Fraction(1, 3)] == [2, 2, 2, 3, 4, 6, 6, 11, 17, 19, 25, 27]
    assert degree_for(16, 1 / 3) == degree_for(16, Fraction(1, 3)) == 6  # float γ read exactly
    assert degree_for(10_000, 0.29) == degree_for(10_000, Fraction(29, 100))


def test_stronger_targets_and_coalitions_need_more_neighbours() -> None:
    for n in (16, 100, 1000):
        ks = [degree_for(n, Fraction(1, 3), t) for t in (-10, -20, -30, -40)]
        assert ks == sorted(ks) and (ks[0] < ks[-1] or ks[0] == 6 == n // 3 + 1)
        gs = [degree_for(n, g) for g in (0, Fraction(1, 5), Fraction(1, 3), Fraction(2, 3))]
        assert gs == sorted(gs) and gs[0] == 2
    # a coalition of all other peers but one: the complete graph is all one can do
    assert degree_for(10, 0.9) == 9


def test_default_graph_degree_follows_the_collusion_model() -> None:
    for n, gamma in ((16, Fraction(1, 3)), (33, Fraction(1, 3)), (16, Fraction(1, 2)), (101, 0.25)):
        g = masking_graph(range(n), session=2, round=7, collusion=gamma)
        assert {len(nb) for nb in g.values()} == {default_degree(n, collusion=gamma)}
    assert {len(nb) for nb in masking_graph(range(16), session=2, round=7).values()} == {6}
    # complete_up_to = 0: the bound alone decides (a 4-cycle of 4 peers: c = 1 < 2)
    g4 = masking_graph(range(4), session=2, round=7, complete_up_to=0)
    assert {len(nb) for nb in g4.values()} == {2}


@pytest.mark.parametrize(("n", "coalition", "target_log2"), [(10, 3, -1), (12, 4, -2), (16, 5, -4)])
def test_exposure_formula_matches_simulation(n: int, coalition: int, target_log2: int) -> None:
    # A weak target keeps exposures frequent enough to count. Each honest peer's mask
    # neighbours are a uniformly random k-subset of the others, so the mean number of
    # exposed honest peers per attempt is exactly (n − c)·C(c, k)/C(n − 1, k), and the
    # fraction of attempts with any exposure is at most that (union bound).
    gamma = Fraction(coalition, n)
    k = degree_for(n, gamma, target_log2)
    assert 2 <= k < n - 1
    expected = float(exposure_bound(n, k, coalition))
    assert expected <= 2.0**target_log2
    rng = np.random.default_rng(n)
    colluders = {int(x) for x in rng.choice(n, coalition, replace=False)}
    honest = [p for p in range(n) if p not in colluders]
    counts = []
    rounds = 2500
    for r in range(rounds):
        g = masking_graph(range(n), session=11, round=r, degree=k, complete_up_to=0)
        counts.append(sum(g[p] <= colluders for p in honest))
    x = np.array(counts, dtype=np.float64)
    sem = x.std(ddof=1) / math.sqrt(rounds)
    assert abs(x.mean() - expected) < 4.5 * sem, (x.mean(), expected, sem)
    any_rate = float(np.mean(x > 0))
    assert any_rate <= expected + 4.5 * math.sqrt(expected / rounds)
    assert x.mean() > 0  # the counting itself can see an exposure


def _alternate_coalition_exposures(n: int, size: int, rounds: int, **graph_kw) -> int:
    """Honest peers exposed over `rounds` rounds by a coalition of `size` peers at
    alternate ring positions 0, 2, 4, … (so it flanks honest peers on the ring and sees
    their frames): an honest peer is exposed when all its mask neighbours collude."""
    ring = list(range(n))
    colluders = set(ring[0 : 2 * size : 2])
    assert len(colluders) == size
    honest = [p for p in ring if p not in colluders]
    exposed = 0
    for r in range(rounds):
        g = masking_graph(ring, session=21, round=r, **graph_kw)
        exposed += sum(g[p] <= colluders for p in honest)
    return exposed


def test_review_attack_at_16_peers() -> None:
    n, rounds = 16, 2000
    # the stated model (γ = 1/3): ⌊16/3⌋ = 5 colluders can never cover 6 mask neighbours
    assert default_degree(n) == 6
    assert _alternate_coalition_exposures(n, 5, rounds) == 0
    # the Shamir threshold's t − 1 = 8 colluders: sized with γ = 1/2 (degree 9), also safe
    assert default_degree(n, collusion=0.5) == 9
    assert _alternate_coalition_exposures(n, 8, rounds, collusion=0.5) == 0
    # control: 8 colluders are outside the γ = 1/3 model, and do expose peers of its
    # degree-6 graph, about as often as the formula says (8·C(8,6)/C(15,6) per round)
    seen = _alternate_coalition_exposures(n, 8, rounds)
    expected = rounds * float(exposure_bound(n, 6, 8))
    assert 0.5 * expected < seen < 1.5 * expected, (seen, expected)


def test_large_rings_use_a_symmetric_k_regular_graph() -> None:
    for n in (9, 10, 33, 100, 257):
        k = default_degree(n)
        g = masking_graph(range(n), session=2, round=7)
        for p, nb in g.items():
            assert p not in nb
            for q in nb:
                assert p in g[q]
        assert {len(nb) for nb in g.values()} == {k}
        g3 = masking_graph(range(n), session=2, round=7, degree=3 if n % 2 == 0 else 4)
        assert {len(nb) for nb in g3.values()} == {3 if n % 2 == 0 else 4}


def test_graph_does_not_follow_the_ring_order() -> None:
    # With the graph on the ring order, every peer would mask with both ring neighbours.
    n, k = 64, default_degree(64)
    ring_edges = 0
    rounds = 30
    for r in range(rounds):
        g = masking_graph(range(n), session=3, round=r)
        ring_edges += sum((p + 1) % n in g[p] for p in range(n))
    frac = ring_edges / (rounds * n)
    assert abs(frac - k / (n - 1)) < 0.08, frac  # as for a random graph of degree k


def test_bad_degrees_and_collusion_are_refused() -> None:
    with pytest.raises(ConfigError, match="degree"):
        masking_graph(range(20), session=0, round=0, degree=1)
    with pytest.raises(ConfigError, match="odd degree"):
        masking_graph(range(21), session=0, round=0, degree=3)
    with pytest.raises(ConfigError, match="twice"):
        masking_graph([1, 1, 2], session=0, round=0)
    for bad in (1.0, -0.1, "1/3", True):
        with pytest.raises(ConfigError, match="collusion"):
            masking_graph(range(20), session=0, round=0, collusion=bad)
    with pytest.raises(ConfigError, match="target_log2"):
        degree_for(20, 1 / 3, 3)
