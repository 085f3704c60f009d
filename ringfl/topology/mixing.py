"""Mixing matrices for gossip averaging (x_i <- sum_j W_ij x_j) and their spectral gap.

Rule for edge weights (documented in docs/topology-format.md):

* graph attribute `mixing = "metropolis-hastings"`: edge weights are ordinary data and
  never used for mixing; W is Metropolis-Hastings.
* graph attribute `mixing = "weights"`, or any node with a `self_weight`: the edge weights
  are declared to be the mixing matrix; every edge needs one and they must form a valid
  mixing matrix, or it is an error.
* no declaration: if every edge has a weight and they form a valid mixing matrix, it is
  used; if they do not (e.g. interaction counts in a plain networkx graph), W falls back to
  Metropolis-Hastings and `MixingChoice.note` says why. No weights at all: Metropolis-Hastings.
  Some edges weighted and others not: an error (unless mixing is "metropolis-hastings").

A valid mixing matrix is non-negative, symmetric (always, the graph is undirected) and
every row sums to 1 within `ROW_SUM_TOL`. W_ii is the node's `self_weight` when given,
else 1 - (sum of its edge weights), which must then be >= 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import networkx as nx
import numpy as np

from ringfl.errors import TopologyError
from ringfl.topology.peers import (
    MIXING,
    SELF_WEIGHT,
    WEIGHT,
    edge_label,
    node_label,
    peer_index,
    peers,
)

ROW_SUM_TOL = 1e-9
MIXING_MODES = ("weights", "metropolis-hastings")


class MixingChoice(NamedTuple):
    """Which W a graph gets: `kind` is "weights" or "metropolis-hastings"; `matrix` is
    N x N in `peers(g)` order; `note` explains a fallback (None when there is none)."""

    kind: str
    matrix: np.ndarray
    note: str | None


def metropolis_hastings(g: nx.Graph) -> np.ndarray:
    """Metropolis-Hastings weights: W_ij = 1 / (1 + max(d_i, d_j)) on edges,
    W_ii = 1 - sum_j W_ij. Symmetric, doubly stochastic, non-negative."""
    idx = peer_index(g)
    n = len(idx)
    deg = [0] * n
    for u, v in g.edges():
        if u != v:
            deg[idx[u]] += 1
            deg[idx[v]] += 1
    w = np.zeros((n, n), dtype=np.float64)
    for u, v in g.edges():
        if u == v:
            continue
        i, j = idx[u], idx[v]
        w[i, j] = w[j, i] = 1.0 / (1.0 + max(deg[i], deg[j]))
    w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
    return w


def _weight_value(g: nx.Graph, value: object, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TopologyError(f"{source}: {what} is {value!r}, not a number")
    x = float(value)
    if not math.isfinite(x):
        raise TopologyError(f"{source}: {what} is {x}, not a finite number")
    if x < 0:
        raise TopologyError(f"{source}: {what} is negative ({x})")
    return x


def _given_matrix(g: nx.Graph, source: str) -> tuple[np.ndarray, str | None]:
    """W from edge weights and self weights, and the first reason it is not a valid
    mixing matrix (None when it is one)."""
    idx = peer_index(g)
    nodes = peers(g)
    n = len(nodes)
    w = np.zeros((n, n), dtype=np.float64)
    for u, v, data in g.edges(data=True):
        if u == v:
            continue
        x = _weight_value(g, data[WEIGHT], f"weight of {edge_label(u, v)}", source)
        w[idx[u], idx[v]] = w[idx[v], idx[u]] = x
    problem = None
    for i, node in enumerate(nodes):
        off = float(w[i].sum())
        given = g.nodes[node].get(SELF_WEIGHT)
        if given is None:
            diag = 1.0 - off
            if diag < -ROW_SUM_TOL and problem is None:
                problem = (
                    f"edge weights at {node_label(node)} sum to {off!r} > 1, so they are "
                    "not a mixing matrix (rows must sum to 1)"
                )
            w[i, i] = max(diag, 0.0)
        else:
            diag = _weight_value(g, given, f"self_weight of {node_label(node)}", source)
            w[i, i] = diag
            if abs(diag + off - 1.0) > ROW_SUM_TOL and problem is None:
                problem = (
                    f"row of {node_label(node)} sums to {diag + off!r} (self_weight "
                    f"{diag!r} + edge weights {off!r}); a mixing matrix needs 1"
                )
    return w, problem


def mixing_choice(g: nx.Graph, source: str = "graph") -> MixingChoice:
    """Decide W for `g` by the rule in the module docstring. Raises TopologyError for a
    declared mixing matrix that is invalid, partial weights, or a bad `mixing` value."""
    mode = g.graph.get(MIXING)
    if mode is not None and mode not in MIXING_MODES:
        raise TopologyError(
            f"{source}: graph attribute 'mixing' is {mode!r}; use one of "
            + ", ".join(repr(m) for m in MIXING_MODES)
        )
    if mode == "metropolis-hastings":
        return MixingChoice("metropolis-hastings", metropolis_hastings(g), None)
    edges = [(u, v, d) for u, v, d in g.edges(data=True) if u != v]
    weighted = [(u, v) for u, v, d in edges if WEIGHT in d]
    unweighted = [(u, v) for u, v, d in edges if WEIGHT not in d]
    self_weighted = [n for n, d in g.nodes(data=True) if SELF_WEIGHT in d]
    declared = mode == "weights" or bool(self_weighted)
    why = (
        "graph attribute mixing='weights'"
        if mode == "weights"
        else (f"{node_label(self_weighted[0])} has a self_weight" if self_weighted else "")
    )
    if weighted and unweighted:
        (a, b), (c, d) = weighted[0], unweighted[0]
        raise TopologyError(
            f"{source}: {edge_label(a, b)} has a weight but {edge_label(c, d)} has none "
            f"({len(unweighted)} of {len(edges)} edges unweighted); give every edge a "
            "weight (a mixing matrix) or none (Metropolis-Hastings)"
        )
    if not weighted and edges:
        if declared:
            raise TopologyError(
                f"{source}: {why}, so edge weights are the mixing matrix, but no edge "
                f"has a weight (e.g. {edge_label(*unweighted[0])})"
            )
        return MixingChoice("metropolis-hastings", metropolis_hastings(g), None)
    if not declared and not edges:
        return MixingChoice("metropolis-hastings", metropolis_hastings(g), None)
    w, problem = _given_matrix(g, source)
    if problem is None:
        return MixingChoice("weights", w, None)
    if declared:
        raise TopologyError(f"{source}: {problem} ({why})")
    return MixingChoice(
        "metropolis-hastings",
        metropolis_hastings(g),
        f"edge weights ignored for mixing: {problem}",
    )


def mixing_matrix(g: nx.Graph, source: str = "graph") -> np.ndarray:
    """The N x N mixing matrix in `peers(g)` order: the given weights when they are a
    mixing matrix (see module docstring), else Metropolis-Hastings."""
    return mixing_choice(g, source).matrix


def spectral_gap(w: np.ndarray) -> float:
    """1 - |lambda_2|: one minus the second largest eigenvalue modulus of W.

    1.0 for a 1 x 1 matrix (consensus is immediate); about 0 for a disconnected graph.
    Larger is faster mixing: the consensus distance shrinks about (1 - gap) per step."""
    a = np.asarray(w, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"spectral_gap needs a square matrix, got shape {a.shape}")
    n = a.shape[0]
    if n == 0:
        raise ValueError("spectral_gap needs a non-empty matrix")
    if n == 1:
        return 1.0
    if np.allclose(a, a.T, rtol=0.0, atol=1e-12):
        ev = np.linalg.eigvalsh((a + a.T) / 2.0)
    else:
        ev = np.linalg.eigvals(a)
    moduli = np.sort(np.abs(ev))[::-1]
    return float(1.0 - moduli[1])
