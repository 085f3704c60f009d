"""Ring order: given rings are checked, searched rings are valid Hamiltonian cycles, and
graphs without one get an error that points to gossip mode."""

from __future__ import annotations

import networkx as nx
import pytest

from ringfl.errors import TopologyError
from ringfl.topology import (
    find_ring,
    is_hamiltonian_cycle,
    make,
    peers,
    ring_edges,
    ring_order,
)


def assert_cycle(g: nx.Graph, order: list) -> None:
    """Independent check: a permutation of the nodes whose cyclic steps are all edges."""
    assert sorted(map(str, order)) == sorted(map(str, g.nodes))
    assert len(set(order)) == g.number_of_nodes()
    n = len(order)
    if n >= 3:
        for i in range(n):
            assert g.has_edge(order[i], order[(i + 1) % n]), (order[i], order[(i + 1) % n])
    elif n == 2:
        assert g.has_edge(order[0], order[1])


GENERATED = [
    ("ring", 1, {}),
    ("ring", 2, {}),
    ("ring", 3, {}),
    ("ring", 7, {}),
    ("complete", 2, {}),
    ("complete", 7, {}),
    ("torus", 4, {}),
    ("torus", 9, {}),
    ("torus", 15, {}),
    ("torus", 16, {}),
    ("torus", 35, {}),
    ("torus", 12, {"rows": 2}),
    ("exponential", 3, {}),
    ("exponential", 13, {}),
    ("random-regular", 7, {"k": 4}),
    ("random-regular", 32, {"k": 4}),
    ("random-regular", 30, {"k": 3}),
    ("small-world", 9, {"k": 4}),
    ("small-world", 40, {"k": 4, "p": 0.2}),
]


@pytest.mark.parametrize(("kind", "n", "kw"), GENERATED, ids=[f"{k}-{n}" for k, n, _ in GENERATED])
def test_ring_order_on_generated_graphs(kind, n, kw):
    g = make(kind, n, seed=5, **kw)
    assert "ring" in g.graph  # every generated graph here is Hamiltonian
    given = ring_order(g)
    assert given == g.graph["ring"]
    assert_cycle(g, given)
    # Without the attribute the search must find a (possibly different) valid cycle.
    bare = g.copy()
    del bare.graph["ring"]
    found = ring_order(bare)
    assert_cycle(g, found)
    assert found[0] == peers(g)[0]
    assert found == ring_order(bare)  # deterministic


def test_tiny_rings():
    assert ring_order(nx.Graph([("a", "b")])) == ["a", "b"]
    one = nx.Graph()
    one.add_node("solo")
    assert ring_order(one) == ["solo"]
    assert ring_edges(["a"]) == [] and ring_edges(["a", "b"]) == [("a", "b")]
    assert ring_edges([1, 2, 3]) == [(1, 2), (2, 3), (3, 1)]


@pytest.mark.parametrize("n", [3, 4, 8])
def test_star_has_no_ring_and_points_to_gossip(n):
    g = make("star", n)
    assert "ring" not in g.graph
    with pytest.raises(
        TopologyError,
        match=r"^star\.json: no ring order: node 1 has only one neighbour.*gossip mode",
    ):
        ring_order(g, source="star.json")


def test_cut_vertex_has_no_ring():
    # Two triangles sharing node "hub" (a bowtie): every node has degree >= 2.
    g = nx.Graph([("a", "b"), ("b", "hub"), ("hub", "a"), ("hub", "c"), ("c", "d"), ("d", "hub")])
    with pytest.raises(TopologyError, match=r"node 'hub' is a cut vertex.*gossip mode"):
        ring_order(g)


def test_exhaustive_search_proves_none():
    # Petersen and Tutte graphs: 3-regular, 2-connected, not bipartite, no Hamiltonian cycle.
    for g in (nx.petersen_graph(), nx.tutte_graph()):
        result = find_ring(g)
        assert result.cycle is None and result.proven
        with pytest.raises(
            TopologyError, match=r"exhaustive search found no Hamiltonian cycle.*gossip"
        ):
            ring_order(g)
    with pytest.raises(TopologyError, match=r"bipartite with unequal sides \(5 and 4 nodes\)"):
        ring_order(nx.convert_node_labels_to_integers(nx.grid_2d_graph(3, 3)))


def test_step_bound_gives_a_clear_error():
    g = nx.random_regular_graph(3, 400, seed=4)
    with pytest.raises(
        TopologyError, match=r"no Hamiltonian cycle found within 50 search steps.*gossip"
    ):
        ring_order(g, max_steps=50)
    result = find_ring(g, max_steps=50)
    assert result.cycle is None and not result.proven


def test_large_graph_heuristic():
    g = nx.random_regular_graph(4, 300, seed=11)
    order = ring_order(g)
    assert_cycle(g, order)


def test_given_ring_is_checked():
    g = make("ring", 5)
    g.graph["ring"] = [0, 2, 4, 1, 3]
    with pytest.raises(TopologyError, match=r"^t: ring step 0 -> 2 is not an edge"):
        ring_order(g, source="t")
    g.graph["ring"] = [4, 3, 2, 1, 0]  # the stored order is returned as is
    assert ring_order(g) == [4, 3, 2, 1, 0]
    assert is_hamiltonian_cycle(g, [4, 3, 2, 1, 0])
    assert not is_hamiltonian_cycle(g, [0, 1, 2, 3])
