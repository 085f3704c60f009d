"""Generators: shapes against networkx references, seeds, bad parameters, addresses."""

from __future__ import annotations

import networkx as nx
import pytest

from ringfl.errors import TopologyError
from ringfl.topology import KINDS, assign_local_addresses, make, peers, torus_shape


def edge_set(g: nx.Graph) -> set[frozenset]:
    return {frozenset(e) for e in g.edges()}


@pytest.mark.parametrize(
    ("n", "shape"),
    [(4, (2, 2)), (12, (3, 4)), (15, (3, 5)), (16, (4, 4)), (32, (4, 8)), (36, (6, 6))],
)
def test_torus_is_most_square(n, shape):
    assert torus_shape(n) == shape


@pytest.mark.parametrize(("rows", "cols"), [(3, 3), (3, 5), (4, 4), (2, 6), (5, 4)])
def test_torus_matches_networkx_periodic_grid(rows, cols):
    g = make("torus", rows * cols, rows=rows)
    ref = nx.grid_2d_graph(rows, cols, periodic=True)
    ref = nx.relabel_nodes(ref, {(r, c): r * cols + c for r, c in ref.nodes})
    assert edge_set(g) == edge_set(ref)
    assert (g.graph["rows"], g.graph["cols"]) == (rows, cols)
    assert peers(g) == list(range(rows * cols))


@pytest.mark.parametrize("n", [2, 3, 7, 11])
def test_torus_refuses_bad_sizes(n):
    with pytest.raises(TopologyError, match=f"torus: n={n} does not factor"):
        make("torus", n)
    with pytest.raises(TopologyError, match="rows=5 must divide n=12"):
        make("torus", 12, rows=5)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 16, 33])
def test_exponential_graph_edges(n):
    expected = set()
    step = 1
    while step < n:
        expected |= {frozenset((i, (i + step) % n)) for i in range(n) if (i + step) % n != i}
        step *= 2
    assert edge_set(make("exponential", n)) == expected


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_ring_complete_star_shapes(n):
    assert edge_set(make("ring", n)) == edge_set(nx.cycle_graph(n)) - {frozenset((0,))}
    assert edge_set(make("complete", n)) == edge_set(nx.complete_graph(n))
    assert edge_set(make("star", n)) == {frozenset((0, i)) for i in range(1, n)}


def test_random_kinds_are_seeded():
    for kind, kw in (("random-regular", {"k": 4}), ("small-world", {"k": 4, "p": 0.3})):
        a, b = make(kind, 30, seed=7, **kw), make(kind, 30, seed=7, **kw)
        c = make(kind, 30, seed=8, **kw)
        assert edge_set(a) == edge_set(b) and a.graph == b.graph
        assert edge_set(a) != edge_set(c)
        assert nx.is_connected(a)
    g = make("random-regular", 30, seed=7, k=4)
    assert {d for _, d in g.degree()} == {4}
    assert g.graph["generator"] == "random-regular" and g.graph["seed"] == 7


def test_random_regular_k2_retries_until_connected():
    g = make("random-regular", 20, seed=1, k=2)
    assert nx.is_connected(g) and nx.is_isomorphic(g, nx.cycle_graph(20))


@pytest.mark.parametrize(
    ("kind", "n", "kw", "match"),
    [
        ("random-regular", 7, {"k": 3}, r"n\*k must be even"),
        ("random-regular", 4, {"k": 4}, r"k=4 must be in 0\.\.n-1"),
        ("random-regular", 6, {"k": 1}, r"k=1 cannot be connected"),
        ("small-world", 4, {"k": 4}, r"needs n > k"),
        ("small-world", 10, {"k": 3}, r"k=3 must be even"),
        ("small-world", 10, {"p": 1.5}, r"p=1\.5 must be in \[0, 1\]"),
        ("ring", 0, {}, r"n=0 must be an int >= 1"),
        ("ring", 5, {"k": 2}, r"ring: does not take parameter\(s\) k"),
        ("hypercube", 8, {}, r"unknown topology kind 'hypercube'"),
    ],
)
def test_bad_parameters(kind, n, kw, match):
    with pytest.raises(TopologyError, match=match):
        make(kind, n, **kw)


def test_aliases_and_all_kinds():
    assert edge_set(make("exponential-2", 8)) == edge_set(make("exponential", 8))
    assert edge_set(make("watts_strogatz", 12)) == edge_set(make("small-world", 12))
    for kind in KINDS:
        g = make(kind, 16)
        assert nx.is_connected(g) and peers(g) == list(range(16))


def test_local_addresses():
    g = assign_local_addresses(make("ring", 5), 23000)
    assert [g.nodes[i]["address"] for i in peers(g)] == [
        f"tcp://127.0.0.1:{23000 + i}" for i in range(5)
    ]
    assign_local_addresses(make("ring", 1), 65535)
    with pytest.raises(TopologyError, match=r"ports 65535\.\.65536, outside 1\.\.65535"):
        assign_local_addresses(make("ring", 2), 65535)
    with pytest.raises(TopologyError, match=r"base port 0"):
        assign_local_addresses(make("ring", 2), 0)
