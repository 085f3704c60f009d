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


Rows = list[dict[int, float]]


def checked_number(value: object, what: str, source: str) -> float:
    """`value` as a float; TopologyError unless it is a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TopologyError(f"{source}: {what} is {value!r}, not a number")
    x = float(value)
    if not math.isfinite(x):
        raise TopologyError(f"{source}: {what} is {x}, not a finite number")
    if x < 0:
        raise TopologyError(f"{source}: {what} is negative ({x!r})")
    return x


def _finish_rows(rows: Rows, self_weights: list[float | None]) -> None:
    """Put W_ii in each row: the given self weight, else 1 - (sum of the row)."""
    for i, row in enumerate(rows):
        given = self_weights[i]
        row[i] = given if given is not None else 1.0 - math.fsum(row.values())


def metropolis_hastings_rows(g: nx.Graph) -> Rows:
    """Metropolis-Hastings weights as sparse rows: rows[i] = {j: W_ij} over peer ids,
    W_ij = 1 / (1 + max(d_i, d_j)) on edges and W_ii = 1 - sum_j W_ij."""
    idx = peer_index(g)
    edges = [(idx[u], idx[v]) for u, v in g.edges() if u != v]
    deg = [0] * len(idx)
    for i, j in edges:
        deg[i] += 1
        deg[j] += 1
    rows: Rows = [{} for _ in idx]
    for i, j in edges:
        rows[i][j] = rows[j][i] = 1.0 / (1.0 + max(deg[i], deg[j]))
    _finish_rows(rows, [None] * len(idx))
    return rows


def _rows_to_matrix(rows: Rows) -> np.ndarray:
    n = len(rows)
    w = np.zeros((n, n), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, x in row.items():
            w[i, j] = x
    return w


def metropolis_hastings(g: nx.Graph) -> np.ndarray:
    """Metropolis-Hastings weights, N x N in `peers(g)` order: symmetric, doubly
    stochastic, non-negative (see `metropolis_hastings_rows`)."""
    return _rows_to_matrix(metropolis_hastings_rows(g))


def _given_rows(g: nx.Graph, source: str) -> tuple[Rows, str | None]:
    """Rows from edge weights and self weights, and the first reason they are not a
    valid mixing matrix (None when they are one)."""
    idx = peer_index(g)
    rows: Rows = [{} for _ in idx]
    for u, v, data in g.edges(data=True):
        if u != v:
            x = checked_number(data[WEIGHT], f"weight of {edge_label(u, v)}", source)
            rows[idx[u]][idx[v]] = rows[idx[v]][idx[u]] = x
    problem = None
    self_weights: list[float | None] = []
    for i, node in enumerate(peers(g)):
        off = math.fsum(rows[i].values())
        given = g.nodes[node].get(SELF_WEIGHT)
        if given is None:
            self_weights.append(max(1.0 - off, 0.0))
            if 1.0 - off < -ROW_SUM_TOL and problem is None:
                problem = (
                    f"edge weights at {node_label(node)} sum to {off!r} > 1, so they are "
                    "not a mixing matrix (rows must sum to 1)"
                )
        else:
            diag = checked_number(given, f"self_weight of {node_label(node)}", source)
            self_weights.append(diag)
            total = math.fsum([diag, *rows[i].values()])
            if abs(total - 1.0) > ROW_SUM_TOL and problem is None:
                problem = (
                    f"row of {node_label(node)} sums to {total!r} (self_weight "
                    f"{diag!r} + edge weights {off!r}); a mixing matrix needs 1"
                )
    _finish_rows(rows, self_weights)
    return rows, problem


def mixing_decision(g: nx.Graph, source: str = "graph") -> tuple[str, Rows, str | None]:
    """(kind, sparse rows, note) by the weight rule in the module docstring; kind is
    "weights" or "metropolis-hastings", note explains a fallback (else None)."""
    mode = g.graph.get(MIXING)
    if mode is not None and mode not in MIXING_MODES:
        raise TopologyError(
            f"{source}: graph attribute 'mixing' is {mode!r}; use one of "
            + ", ".join(repr(m) for m in MIXING_MODES)
        )
    if mode == "metropolis-hastings":
        return "metropolis-hastings", metropolis_hastings_rows(g), None
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
        return "metropolis-hastings", metropolis_hastings_rows(g), None
    if not declared and not edges:
        return "metropolis-hastings", metropolis_hastings_rows(g), None
    rows, problem = _given_rows(g, source)
    if problem is None:
        return "weights", rows, None
    if declared:
        raise TopologyError(f"{source}: {problem} ({why})")
    note = f"edge weights ignored for mixing: {problem}"
    return "metropolis-hastings", metropolis_hastings_rows(g), note


def mixing_rows(g: nx.Graph, source: str = "graph") -> Rows:
    """The mixing matrix as sparse rows, rows[i] = {j: W_ij} over peer ids (neighbours
    and i itself): what one gossiping peer needs. Same rule as `mixing_matrix`."""
    return mixing_decision(g, source)[1]


def mixing_choice(g: nx.Graph, source: str = "graph") -> MixingChoice:
    """Decide W for `g` by the rule in the module docstring. Raises TopologyError for a
    declared mixing matrix that is invalid, partial weights, or a bad `mixing` value."""
    kind, rows, note = mixing_decision(g, source)
    return MixingChoice(kind, _rows_to_matrix(rows), note)


def check_mixing(g: nx.Graph, source: str = "graph") -> str | None:
    """Apply the weight rule without building an N x N matrix; raise TopologyError
    when it fails, else return the fallback note (None when there is none)."""
    return mixing_decision(g, source)[2]


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
    ev: np.ndarray
    if np.allclose(a, a.T, rtol=0.0, atol=1e-12):
        ev = np.linalg.eigvalsh((a + a.T) / 2.0)
    else:
        ev = np.linalg.eigvals(a)
    moduli = np.sort(np.abs(ev))[::-1]
    return float(1.0 - moduli[1])


_DENSE_MAX_N = 500


def _sparse_gap(rows: Rows) -> float | None:
    """1 - |lambda_2| of a symmetric sparse W by Lanczos (scipy), or None when it does not
    converge."""
    import scipy.sparse
    import scipy.sparse.linalg

    n = len(rows)
    ij = [(i, j, x) for i, row in enumerate(rows) for j, x in row.items()]
    w = scipy.sparse.csr_matrix(
        ([x for *_, x in ij], ([i for i, *_ in ij], [j for _, j, _ in ij])), shape=(n, n)
    )
    # A seeded start vector: deterministic, and not the all-ones eigenvector of lambda_1.
    v0 = np.random.default_rng(0).standard_normal(n)
    try:
        top = scipy.sparse.linalg.eigsh(
            w, k=2, which="LA", v0=v0, tol=1e-12, return_eigenvectors=False
        )
        low = scipy.sparse.linalg.eigsh(
            w, k=1, which="SA", v0=v0, tol=1e-12, return_eigenvectors=False
        )
    except scipy.sparse.linalg.ArpackNoConvergence:
        return None
    return float(1.0 - max(abs(min(top)), abs(low[0])))


def rows_spectral_gap(rows: Rows) -> float:
    """`spectral_gap` of the matrix given as sparse rows; above 500 peers a sparse
    eigensolver (scipy, when installed) instead of a dense N x N eigendecomposition."""
    if len(rows) > _DENSE_MAX_N:
        gap = _sparse_gap(rows)
        if gap is not None:
            return gap
    return spectral_gap(_rows_to_matrix(rows))


def graph_spectral_gap(g: nx.Graph, source: str = "graph") -> float:
    """`spectral_gap(mixing_matrix(g))`, sparse above 500 peers (see rows_spectral_gap)."""
    return rows_spectral_gap(mixing_rows(g, source))
