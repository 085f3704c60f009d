"""Ring order: the Hamiltonian cycle that ring all-reduce runs on.

`ring_order(g)` returns the graph's `ring` attribute when it has one (checked), else
searches for a Hamiltonian cycle:

1. N = 1 and N = 2 are rings ([a] and [a, b]).
2. Quick proofs that there is none: a node with fewer than two neighbours, a cut vertex,
   a bipartite graph with unequal sides.
3. The stored node order itself, if consecutive nodes are adjacent (true for the ring,
   complete and exponential generators).
4. Exact depth-first search from the first peer, neighbours tried fewest-onward-moves
   first (Warnsdorff), pruned when an unvisited node is left with fewer than two usable
   neighbours, when the first peer can no longer be reached, or (N <= 128) when the
   unvisited nodes fall apart. If it runs to the end there is no cycle (a proof).
5. When half of the step budget is spent without an answer (large graphs), Posa's
   randomized rotation-extension heuristic (seeded, restarted on dead ends) with the rest.
   It does well on random regular and small-world graphs of hundreds of nodes.

Everything is a pure function of the graph and `max_steps`, so every peer that loads
the same file computes the same ring. `time_limit_s` is only a safety stop: it can turn
a success into an error, never change which cycle is returned. For many machines, bake
the ring into the file (`ringfl topology make` does this) so no search is needed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import networkx as nx

from ringfl.errors import TopologyError
from ringfl.topology.peers import RING, node_label, peers, summarize

DEFAULT_MAX_STEPS = 200_000
DEFAULT_TIME_LIMIT_S = 10.0
_CONNECTIVITY_PRUNE_MAX_N = 128
GOSSIP_HINT = (
    "ring mode needs a Hamiltonian cycle; use gossip mode on this topology, or give the "
    "graph an explicit 'ring' attribute"
)


class RingSearch(NamedTuple):
    """Outcome of `find_ring`: `cycle` (None if not found), `proven` (True when it is
    certain that no cycle exists), `reason` (why there is none), `steps` spent."""

    cycle: list | None
    proven: bool
    reason: str
    steps: int


def ring_problem(g: nx.Graph, order: Sequence[Hashable]) -> str | None:
    """Why `order` is not a Hamiltonian cycle of `g` (None when it is one)."""
    if isinstance(order, (str, bytes)) or not isinstance(order, Sequence):
        return f"ring must be a list of node ids, not {type(order).__name__}"
    seen: set = set()
    for node in order:
        try:
            known = node in g
        except TypeError:
            known = False
        if not known:
            return f"ring names unknown node {node!r}"
        if node in seen:
            return f"ring lists {node_label(node)} twice"
        seen.add(node)
    missing = [n for n in g.nodes if n not in seen]
    if missing:
        return f"ring misses {len(missing)} node(s): {summarize(missing)}"
    n = len(order)
    if n >= 2:
        for i in range(n if n > 2 else 1):
            a, b = order[i], order[(i + 1) % n]
            if not g.has_edge(a, b):
                return f"ring step {a!r} -> {b!r} is not an edge of the graph"
    return None


def is_hamiltonian_cycle(g: nx.Graph, order: Sequence[Hashable]) -> bool:
    """True when `order` visits every node once and consecutive nodes (and last -> first)
    are adjacent. [a] and [a, b] count for N = 1 and N = 2."""
    return ring_problem(g, order) is None


def _no_cycle_reason(g: nx.Graph) -> str | None:
    """A quick proof that a connected graph with N >= 3 nodes has no Hamiltonian cycle."""
    for node in g.nodes:
        d = g.degree(node)
        if d < 2:
            nbrs = list(g.neighbors(node))
            has = f"only one neighbour ({nbrs[0]!r})" if nbrs else "no neighbours"
            return f"{node_label(node)} has {has}"
    for node in nx.articulation_points(g):
        return f"{node_label(node)} is a cut vertex (removing it disconnects the graph)"
    if nx.is_connected(g) and nx.is_bipartite(g):
        a, b = nx.bipartite.sets(g)
        if len(a) != len(b):
            return f"the graph is bipartite with unequal sides ({len(a)} and {len(b)} nodes)"
    return None


def _canonical(cycle: list[int]) -> list[int]:
    """Rotate to start at peer 0 and orient so the second peer id < the last."""
    k = cycle.index(0)
    c = cycle[k:] + cycle[:k]
    if len(c) > 2 and c[1] > c[-1]:
        c = [c[0]] + c[1:][::-1]
    return c


class _Budget:
    def __init__(self, max_steps: int, time_limit_s: float) -> None:
        self.left = max_steps
        self.deadline = time.monotonic() + time_limit_s
        self.timed_out = False

    def spend(self) -> bool:
        """Take one step; False when the budget (steps or time) is gone."""
        if self.left <= 0:
            return False
        self.left -= 1
        if self.left % 1024 == 0 and time.monotonic() > self.deadline:
            self.timed_out = True
            self.left = 0
            return False
        return True


def _connected(adj: list[int], mask: int) -> bool:
    if mask == 0:
        return True
    reached = mask & -mask
    frontier = reached
    while frontier:
        grow = 0
        f = frontier
        while f:
            low = f & -f
            grow |= adj[low.bit_length() - 1]
            f ^= low
        frontier = grow & mask & ~reached
        reached |= frontier
    return reached == mask


def _dfs(adj: list[int], n: int, budget: _Budget, steps_cap: int, rng: random.Random | None):
    """Depth-first search for a Hamiltonian cycle through peer 0.
    Returns ("found", cycle) | ("none", None) | ("unknown", None)."""
    start = 0
    start_bit = 1
    check_connected = n <= _CONNECTIVITY_PRUNE_MAX_N

    def candidates(v: int, unvisited: int) -> list[int]:
        opts = []
        m = adj[v] & unvisited
        while m:
            low = m & -m
            opts.append(low.bit_length() - 1)
            m ^= low
        # pop() takes the last: fewest onward moves first; ties by lower id, or at
        # random (seeded) in a restart.
        if rng is None:
            opts.sort(key=lambda w: ((adj[w] & unvisited).bit_count(), -w), reverse=True)
        else:
            rng.shuffle(opts)
            opts.sort(key=lambda w: (adj[w] & unvisited).bit_count(), reverse=True)
        return opts

    full = (1 << n) - 1
    unvisited = full & ~start_bit
    path = [start]
    stack = [candidates(start, unvisited)]
    spent = 0
    while stack:
        opts = stack[-1]
        if not opts:
            stack.pop()
            v = path.pop()
            if v != start:
                unvisited |= 1 << v
            continue
        if spent >= steps_cap or not budget.spend():
            return "unknown", None
        spent += 1
        v = opts.pop()
        cur = path[-1]
        rest = unvisited & ~(1 << v)
        if rest == 0:
            if adj[v] & start_bit:
                return "found", path + [v]
            continue
        if not adj[start] & rest:
            continue
        usable = rest | (1 << v) | start_bit
        ok = True
        m = adj[cur] & rest
        while m:
            low = m & -m
            if (adj[low.bit_length() - 1] & usable).bit_count() < 2:
                ok = False
                break
            m ^= low
        if not ok or (check_connected and not _connected(adj, rest)):
            continue
        path.append(v)
        unvisited = rest
        stack.append(candidates(v, unvisited))
    return "none", None


def _posa(adj_list: list[list[int]], n: int, budget: _Budget, rng: random.Random):
    """Randomized Posa rotation-extension: grow a path from peer 0; when its end has no
    unvisited neighbour, rotate (pick a neighbour p[i] of the end, reverse p[i+1:]) to
    get a new end. Closes the cycle when the end is adjacent to peer 0.
    Returns ("found", cycle) | ("unknown", None)."""
    path = [0]
    pos = [-1] * n
    pos[0] = 0
    while True:
        end = path[-1]
        fresh = [w for w in adj_list[end] if pos[w] < 0]
        if fresh:
            w = min(fresh, key=lambda x: (sum(1 for y in adj_list[x] if pos[y] < 0), rng.random()))
            if not budget.spend():
                return "unknown", None
            pos[w] = len(path)
            path.append(w)
            continue
        if len(path) == n and 0 in adj_list[end] and n >= 3:
            return "found", path
        choices = [w for w in adj_list[end] if pos[w] < len(path) - 2 and pos[w] >= 0]
        if not choices:
            return "unknown", None
        i = pos[rng.choice(choices)]
        # A rotation costs O(segment); charge it in steps of 64 nodes.
        for _ in range(1 + (len(path) - i) // 64):
            if not budget.spend():
                return "unknown", None
        path[i + 1 :] = path[i + 1 :][::-1]
        for k in range(i + 1, len(path)):
            pos[path[k]] = k


def default_max_steps(n: int) -> int:
    """The default search budget for an n-node graph: max(200 000, 200 n) steps."""
    return max(DEFAULT_MAX_STEPS, 200 * n)


def find_ring(
    g: nx.Graph,
    *,
    max_steps: int | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> RingSearch:
    """Search `g` (connected, no self-loops) for a Hamiltonian cycle; ignores the `ring`
    attribute. Returns node ids in a canonical rotation (starting at the first peer).
    `max_steps` defaults to `default_max_steps(n)`."""
    nodes = peers(g)
    n = len(nodes)
    if max_steps is None:
        max_steps = default_max_steps(n)
    if n == 0:
        return RingSearch(None, True, "the graph is empty", 0)
    if n <= 2:
        if n == 2 and not g.has_edge(nodes[0], nodes[1]):
            return RingSearch(None, True, "the two nodes are not adjacent", 0)
        return RingSearch(list(nodes), False, "", 0)
    if not nx.is_connected(g):
        return RingSearch(None, True, "the graph is disconnected", 0)
    reason = _no_cycle_reason(g)
    if reason:
        return RingSearch(None, True, reason, 0)
    if is_hamiltonian_cycle(g, nodes):
        return RingSearch(list(nodes), False, "", 0)
    index = {node: i for i, node in enumerate(nodes)}
    adj = [0] * n
    adj_list: list[list[int]] = [[] for _ in range(n)]
    for u, v in g.edges():
        if u != v:
            i, j = index[u], index[v]
            adj[i] |= 1 << j
            adj[j] |= 1 << i
            adj_list[i].append(j)
            adj_list[j].append(i)
    budget = _Budget(max_steps, time_limit_s)
    # Small graphs: exact search with half the budget (it can prove there is none).
    # Large graphs: exact search rarely helps there, so it gets a small share.
    dfs_share = max_steps // 2 if n <= _CONNECTIVITY_PRUNE_MAX_N else min(max_steps // 2, 20_000)
    status, cycle = _dfs(adj, n, budget, max(1, dfs_share), None)
    if status == "unknown":
        rng = random.Random(0)
        while status == "unknown" and budget.left > 0:
            status, cycle = _posa(adj_list, n, budget, rng)
    spent = max_steps - budget.left
    if status == "found":
        return RingSearch([nodes[i] for i in _canonical(cycle)], False, "", spent)
    if status == "none":
        return RingSearch(None, True, "exhaustive search found no Hamiltonian cycle", spent)
    stop = f"{time_limit_s:g} s time limit" if budget.timed_out else f"{max_steps} search steps"
    return RingSearch(None, False, f"no Hamiltonian cycle found within {stop}", spent)


def ring_order(
    g: nx.Graph,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    *,
    max_steps: int | None = None,
    source: str = "graph",
) -> list:
    """The ring order (node ids) of `g`: its `ring` attribute when present (checked to
    be a Hamiltonian cycle), else a Hamiltonian cycle found by search (module docstring).
    Raises TopologyError, pointing to gossip mode, when there is none or none is found."""
    given = g.graph.get(RING)
    if given is not None:
        problem = ring_problem(g, given)
        if problem:
            raise TopologyError(f"{source}: {problem}")
        return list(given)
    result = find_ring(g, max_steps=max_steps, time_limit_s=time_limit_s)
    if result.cycle is None:
        raise TopologyError(f"{source}: no ring order: {result.reason}; {GOSSIP_HINT}")
    return result.cycle


def ring_edges(order: Sequence[Hashable]) -> list[tuple[Hashable, Hashable]]:
    """The edges a ring order uses: (o[0], o[1]), ..., (o[-1], o[0]); one edge for N = 2."""
    n = len(order)
    if n < 2:
        return []
    if n == 2:
        return [(order[0], order[1])]
    return [(order[i], order[(i + 1) % n]) for i in range(n)]


__all__ = [
    "GOSSIP_HINT",
    "RingSearch",
    "find_ring",
    "is_hamiltonian_cycle",
    "ring_edges",
    "ring_order",
    "ring_problem",
]
