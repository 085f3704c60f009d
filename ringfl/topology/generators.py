"""Topology generators. Every generator is seeded, returns a connected simple graph with
int nodes 0..n-1 stored in that order (so peer id = node id), and records how it was made
in graph attributes (`generator`, and `seed`, `k`, `p`, `rows`, `cols` where they apply).

ring, complete, torus and exponential are Hamiltonian by construction and get their
`ring` attribute directly; for the others `make` runs the (deterministic) ring search and
stores the cycle it finds, so no peer ever has to search.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import networkx as nx

from ringfl.errors import TopologyError
from ringfl.topology.peers import ADDRESS, RING, peers
from ringfl.topology.ring import find_ring, is_hamiltonian_cycle

KINDS = ("ring", "complete", "star", "torus", "exponential", "random-regular", "small-world")
_ALIASES = {
    "exponential-2": "exponential",
    "exp": "exponential",
    "regular": "random-regular",
    "watts-strogatz": "small-world",
}
MAX_TRIES = 100


def _graph(n: int, edges: Iterable[tuple[int, int]], **attrs: object) -> nx.Graph:
    g = nx.Graph(**attrs)
    g.add_nodes_from(range(n))
    g.add_edges_from(sorted({(min(u, v), max(u, v)) for u, v in edges if u != v}))
    return g


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise TopologyError(message)


def ring_graph(n: int) -> nx.Graph:
    """Cycle 0-1-...-(n-1)-0 (n = 1: one node; n = 2: one edge)."""
    g = _graph(n, ((i, (i + 1) % n) for i in range(n)), generator="ring")
    g.graph[RING] = list(range(n))
    return g


def complete_graph(n: int) -> nx.Graph:
    """Every pair of peers adjacent."""
    g = _graph(n, ((i, j) for i in range(n) for j in range(i + 1, n)), generator="complete")
    g.graph[RING] = list(range(n))
    return g


def star_graph(n: int) -> nx.Graph:
    """Hub 0 joined to 1..n-1. No ring for n >= 3 (the hub is a cut vertex)."""
    return _graph(n, ((0, i) for i in range(1, n)), generator="star")


def torus_shape(n: int) -> tuple[int, int]:
    """The most square rows x cols = n with 2 <= rows <= cols; TopologyError if n is
    prime or < 4."""
    for rows in range(math.isqrt(n), 1, -1):
        if n % rows == 0:
            return rows, n // rows
    raise TopologyError(
        f"torus: n={n} does not factor into rows x cols with both >= 2; "
        "choose n like 4, 6, 9, 16 (or use kind ring)"
    )


def _torus_cycle(rows: int, cols: int) -> list[int]:
    """A Hamiltonian cycle of the rows x cols torus (node r*cols + c)."""

    def comb(r_n: int, c_n: int) -> list[tuple[int, int]]:
        # Down column 0, then snake back up through columns 1.. (r_n even).
        cyc = [(r, 0) for r in range(r_n)]
        for k, r in enumerate(range(r_n - 1, -1, -1)):
            cs = range(1, c_n) if k % 2 == 0 else range(c_n - 1, 0, -1)
            cyc.extend((r, c) for c in cs)
        return cyc

    if rows % 2 == 0:
        cells = comb(rows, cols)
    elif cols % 2 == 0:
        cells = [(r, c) for c, r in comb(cols, rows)]
    else:
        # Both odd: comb the first rows-1 rows, then replace the step (rows-2, 1) ->
        # (rows-2, 2) with a detour through the whole last row, using its wrap edge.
        cells = comb(rows - 1, cols)
        last = rows - 1
        k = cells.index((rows - 2, 1))
        assert cells[k + 1] == (rows - 2, 2)
        detour = [(last, c) for c in range(1, -1, -1)] + [(last, c) for c in range(cols - 1, 1, -1)]
        cells[k + 1 : k + 1] = detour
    return [r * cols + c for r, c in cells]


def torus_graph(n: int, rows: int | None = None) -> nx.Graph:
    """2-D grid with wrap-around; rows x cols = n, the most square shape unless `rows`
    is given. Node r*cols + c is at row r, column c."""
    if rows is None:
        rows, cols = torus_shape(n)
    else:
        _need(
            rows >= 2 and n % rows == 0 and n // rows >= 2,
            f"torus: rows={rows} must divide n={n} with rows >= 2 and cols >= 2",
        )
        cols = n // rows
    edges = []
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            edges.append((i, r * cols + (c + 1) % cols))
            edges.append((i, ((r + 1) % rows) * cols + c))
    g = _graph(n, edges, generator="torus", rows=rows, cols=cols)
    g.graph[RING] = _torus_cycle(rows, cols)
    return g


def exponential_graph(n: int) -> nx.Graph:
    """Peer i joined to i +- 2^k (mod n) for every 2^k < n (the exponential-2 graph)."""
    edges: list[tuple[int, int]] = []
    step = 1
    while step < n:
        edges.extend((i, (i + step) % n) for i in range(n))
        step *= 2
    g = _graph(n, edges, generator="exponential")
    g.graph[RING] = list(range(n))
    return g


def random_regular_graph(n: int, k: int = 4, seed: int = 0) -> nx.Graph:
    """A connected random k-regular graph: networkx's generator with seeds seed,
    seed+1, ... until the graph is connected (at most MAX_TRIES tries)."""
    _need(n >= 1, f"random-regular: n={n} must be >= 1")
    _need(0 <= k < n, f"random-regular: k={k} must be in 0..n-1 (n={n})")
    _need(n * k % 2 == 0, f"random-regular: n*k must be even (n={n}, k={k})")
    _need(n <= 2 or k >= 2, f"random-regular: k={k} cannot be connected for n={n}; use k >= 2")
    for t in range(MAX_TRIES):
        h = nx.random_regular_graph(k, n, seed=seed + t) if n > 1 else nx.empty_graph(1)
        if nx.is_connected(h):
            return _graph(n, h.edges(), generator="random-regular", k=k, seed=seed)
    raise TopologyError(
        f"random-regular: no connected {k}-regular graph on {n} nodes in {MAX_TRIES} "
        f"tries from seed {seed}; use a larger k"
    )


def small_world_graph(n: int, k: int = 4, p: float = 0.1, seed: int = 0) -> nx.Graph:
    """Connected Watts-Strogatz small world: a ring lattice where each peer is joined to
    its k nearest neighbours (k even), each edge rewired with probability p."""
    _need(k >= 2 and k % 2 == 0, f"small-world: k={k} must be even and >= 2")
    _need(n > k, f"small-world: needs n > k (n={n}, k={k})")
    _need(0.0 <= p <= 1.0, f"small-world: p={p} must be in [0, 1]")
    try:
        h = nx.connected_watts_strogatz_graph(n, k, p, tries=MAX_TRIES, seed=seed)
    except nx.NetworkXError as exc:
        raise TopologyError(f"small-world: {exc} (n={n}, k={k}, p={p}, seed={seed})") from None
    return _graph(n, h.edges(), generator="small-world", k=k, p=float(p), seed=seed)


_BUILDERS: dict[str, tuple[Callable[..., nx.Graph], tuple[str, ...]]] = {
    "ring": (ring_graph, ()),
    "complete": (complete_graph, ()),
    "star": (star_graph, ()),
    "torus": (torus_graph, ("rows",)),
    "exponential": (exponential_graph, ()),
    "random-regular": (random_regular_graph, ("k", "seed")),
    "small-world": (small_world_graph, ("k", "p", "seed")),
}


def make(kind: str, n: int, seed: int = 0, **kw: object) -> nx.Graph:
    """Generate a topology of `kind` (one of KINDS) with `n` peers, nodes 0..n-1.

    Keyword parameters: `k` (random-regular degree, small-world neighbours; default 4),
    `p` (small-world rewiring probability, default 0.1), `rows` (torus). A parameter the
    kind does not take is a TopologyError. Sets `ring` when the graph has one."""
    name = _ALIASES.get(kind.replace("_", "-"), kind.replace("_", "-"))
    if name not in _BUILDERS:
        raise TopologyError(f"unknown topology kind {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TopologyError(f"{name}: n={n!r} must be an int >= 1")
    build, takes = _BUILDERS[name]
    extra = sorted(set(kw) - set(takes))
    if extra:
        raise TopologyError(f"{name}: does not take parameter(s) {', '.join(extra)}")
    args = {key: val for key, val in kw.items() if val is not None}
    if "seed" in takes:
        args["seed"] = seed
    g = build(n, **args)
    if RING not in g.graph:
        # The default step budget, and a time limit so generous that the step budget is
        # what stops the search: the same arguments always give the same file.
        found = find_ring(g, time_limit_s=600.0)
        if found.cycle is not None:
            g.graph[RING] = found.cycle
    assert nx.is_connected(g) and (RING not in g.graph or is_hamiltonian_cycle(g, g.graph[RING]))
    return g


def assign_local_addresses(g: nx.Graph, base_port: int, host: str = "127.0.0.1") -> nx.Graph:
    """Give peer i the address tcp://HOST:(base_port + i), in `peers(g)` order, so N
    peers can run on one machine. Modifies and returns `g`. Ports must lie in 1..65535."""
    n = g.number_of_nodes()
    if isinstance(base_port, bool) or not isinstance(base_port, int):
        raise TopologyError(f"base port {base_port!r} is not an int")
    if base_port < 1 or base_port + n - 1 > 65535:
        raise TopologyError(
            f"base port {base_port} with {n} peers needs ports {base_port}..{base_port + n - 1}, "
            "outside 1..65535"
        )
    for i, node in enumerate(peers(g)):
        g.nodes[node][ADDRESS] = f"tcp://{host}:{base_port + i}"
    return g
