"""Mixing matrices and spectral gaps, checked against numpy and closed forms."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringfl.errors import TopologyError
from ringfl.topology import (
    graph_spectral_gap,
    make,
    metropolis_hastings,
    mixing_choice,
    mixing_matrix,
    mixing_rows,
    peers,
    spectral_gap,
)

KIND_SIZES = st.one_of(
    st.tuples(st.sampled_from(["ring", "complete", "star", "exponential"]), st.integers(1, 40)),
    st.tuples(st.just("torus"), st.sampled_from([4, 6, 8, 9, 12, 15, 16, 20, 25, 30, 36])),
    st.tuples(st.just("random-regular"), st.integers(5, 40)),
    st.tuples(st.just("small-world"), st.integers(5, 40)),
)


def assert_mixing_properties(g: nx.Graph, w: np.ndarray) -> None:
    n = g.number_of_nodes()
    assert w.shape == (n, n)
    assert np.array_equal(w, w.T)
    assert (w >= 0).all()
    assert np.allclose(w.sum(axis=0), 1.0, atol=1e-12)
    assert np.allclose(w.sum(axis=1), 1.0, atol=1e-12)
    # Support: W_ij > 0 exactly on the edges (and the diagonal may be anything >= 0).
    idx = {v: i for i, v in enumerate(peers(g))}
    adj = np.zeros((n, n), dtype=bool)
    for u, v in g.edges():
        adj[idx[u], idx[v]] = adj[idx[v], idx[u]] = True
    off = ~np.eye(n, dtype=bool)
    assert np.array_equal(w[off] > 0, adj[off])


def numpy_gap(w: np.ndarray) -> float:
    """Independent reference: general eigenvalue solver, second largest modulus."""
    if w.shape[0] == 1:
        return 1.0
    moduli = sorted(abs(complex(x)) for x in np.linalg.eigvals(w))
    return 1.0 - moduli[-2]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind_n=KIND_SIZES, seed=st.integers(0, 10_000), k=st.sampled_from([3, 4, 6]))
def test_generated_graphs_are_connected_and_mh_is_doubly_stochastic(kind_n, seed, k):
    kind, n = kind_n
    kw = {}
    if kind == "random-regular":
        kw = {"k": k if n * k % 2 == 0 and k < n else 2}
    if kind == "small-world":
        kw = {"k": 4 if n > 4 else 2, "p": (seed % 10) / 10}
    g = make(kind, n, seed=seed, **kw)
    assert g.number_of_nodes() == n
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0
    w = mixing_matrix(g)
    assert_mixing_properties(g, w)
    assert spectral_gap(w) == pytest.approx(numpy_gap(w), abs=1e-9)
    assert 0.0 < spectral_gap(w) <= 1.0 + 1e-12


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), p=st.floats(0.05, 0.9), seed=st.integers(0, 2**31 - 1))
def test_mh_on_random_connected_graphs(n, p, seed):
    g = nx.gnp_random_graph(n, p, seed=seed)
    g = g.subgraph(max(nx.connected_components(g), key=len)).copy()
    w = metropolis_hastings(g)
    assert_mixing_properties(g, w)
    # MH formula, entry by entry.
    idx = {v: i for i, v in enumerate(peers(g))}
    for u, v in g.edges():
        expected = 1.0 / (1 + max(g.degree(u), g.degree(v)))
        assert w[idx[u], idx[v]] == pytest.approx(expected, rel=1e-15)
    assert spectral_gap(w) == pytest.approx(numpy_gap(w), abs=1e-9)


@pytest.mark.parametrize("n", [3, 4, 7, 10, 31])
def test_ring_gap_matches_closed_form(n):
    # MH on a cycle: 1/3 to each neighbour and itself; eigenvalues 1/3 + 2/3 cos(2 pi k / n).
    w = mixing_matrix(make("ring", n))
    assert np.allclose(w[np.diag_indices(n)], 1 / 3)
    lam = [1 / 3 + 2 / 3 * math.cos(2 * math.pi * k / n) for k in range(1, n)]
    assert spectral_gap(w) == pytest.approx(1 - max(abs(x) for x in lam), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_complete_graph_averages_in_one_step(n):
    w = mixing_matrix(make("complete", n))
    assert np.allclose(w, 1.0 / n)
    assert spectral_gap(w) == pytest.approx(1.0, abs=1e-12)


def test_spectral_gap_edge_cases():
    assert spectral_gap(np.array([[1.0]])) == 1.0
    # Disconnected: two independent averaging blocks have eigenvalue 1 twice.
    block = np.full((2, 2), 0.5)
    w = np.block([[block, np.zeros((2, 2))], [np.zeros((2, 2)), block]])
    assert spectral_gap(w) == pytest.approx(0.0, abs=1e-12)
    # A non-symmetric (column-stochastic) matrix goes through the general solver.
    a = np.array([[0.5, 0.2, 0.0], [0.5, 0.3, 0.6], [0.0, 0.5, 0.4]])
    assert spectral_gap(a) == pytest.approx(numpy_gap(a), abs=1e-12)
    # Bipartite with no self weight: eigenvalue -1 gives gap 0.
    assert spectral_gap(np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        spectral_gap(np.ones((2, 3)))


def test_given_weights_are_used_in_peer_order():
    g = nx.Graph()
    g.add_nodes_from(["c", "a", "b"])  # peer order c, a, b
    g.add_edge("c", "a", weight=0.5)
    g.add_edge("a", "b", weight=0.25)
    g.add_edge("b", "c", weight=0.125)
    choice = mixing_choice(g)
    assert choice.kind == "weights" and choice.note is None
    expected = np.array([[1 - 0.625, 0.5, 0.125], [0.5, 1 - 0.75, 0.25], [0.125, 0.25, 1 - 0.375]])
    assert np.array_equal(choice.matrix, expected)
    g.nodes["a"]["self_weight"] = 0.25
    assert np.array_equal(mixing_matrix(g), expected)


def test_weights_that_are_not_a_mixing_matrix():
    g = nx.cycle_graph(5)
    nx.set_edge_attributes(g, 2.0, "weight")
    choice = mixing_choice(g, "plain.graphml")
    assert choice.kind == "metropolis-hastings"
    assert "edge weights at node 0 sum to 4.0 > 1" in choice.note
    assert np.array_equal(choice.matrix, metropolis_hastings(g))
    g.graph["mixing"] = "weights"
    with pytest.raises(TopologyError, match=r"^declared\.json: edge weights at node 0 sum to 4\.0"):
        mixing_choice(g, "declared.json")
    g.graph["mixing"] = "metropolis-hastings"
    assert mixing_choice(g).kind == "metropolis-hastings"
    assert mixing_choice(g).note is None
    # Explicit Metropolis-Hastings ignores partial weights too.
    g.edges[0, 1].pop("weight")
    assert mixing_choice(g).kind == "metropolis-hastings"
    g.graph.pop("mixing")
    with pytest.raises(TopologyError, match=r"has a weight but edge 0-1 has none"):
        mixing_choice(g)


def test_rows_within_tolerance():
    g = nx.cycle_graph(3)
    nx.set_edge_attributes(g, 0.5, "weight")  # self weight implied 0
    g.graph["mixing"] = "weights"
    assert np.allclose(mixing_matrix(g).diagonal(), 0.0)
    g.nodes[0]["self_weight"] = 1e-10  # row sums to 1 + 1e-10: within 1e-9
    mixing_matrix(g)
    g.nodes[0]["self_weight"] = 1e-8
    with pytest.raises(TopologyError, match=r"row of node 0 sums to"):
        mixing_matrix(g)


@pytest.mark.parametrize("kind", ["ring", "star", "random-regular"])
def test_sparse_rows_match_the_matrix(kind):
    g = make(kind, 12, seed=2)
    rows = mixing_rows(g)
    w = mixing_matrix(g)
    for i, row in enumerate(rows):
        assert set(row) == {i} | {j for j in range(12) if w[i, j] > 0 and j != i}
        for j in range(12):
            assert w[i, j] == row.get(j, 0.0)
        assert math.fsum(row.values()) == pytest.approx(1.0, abs=1e-15)


def test_sparse_spectral_gap_above_500_peers_matches_dense():
    g = make("random-regular", 510, seed=1, k=4)
    dense = np.linalg.eigvalsh(mixing_matrix(g))  # ascending
    expected = 1 - max(abs(dense[0]), abs(dense[-2]))
    assert graph_spectral_gap(g) == pytest.approx(expected, abs=1e-9)
