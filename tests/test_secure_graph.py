"""Masking graph: shared, fresh per round, complete or k-regular, not the ring order."""

from __future__ import annotations

import math

import pytest

from ringfl.errors import ConfigError
from ringfl.secure.graph import default_degree, masking_graph, permutation


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


@pytest.mark.parametrize("n", [9, 10, 33, 100, 257])
def test_large_rings_use_a_symmetric_k_regular_graph(n: int) -> None:
    k = default_degree(n)
    assert k == 2 * math.ceil(math.log2(n))
    g = masking_graph(range(n), session=2, round=7)
    for p, nb in g.items():
        assert p not in nb
        for q in nb:
            assert p in g[q]
    assert {len(nb) for nb in g.values()} == ({k} if k < n - 1 else {n - 1})
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


def test_bad_degrees_are_refused() -> None:
    with pytest.raises(ConfigError, match="degree"):
        masking_graph(range(20), session=0, round=0, degree=1)
    with pytest.raises(ConfigError, match="odd degree"):
        masking_graph(range(21), session=0, round=0, degree=3)
    with pytest.raises(ConfigError, match="twice"):
        masking_graph([1, 1, 2], session=0, round=0)
