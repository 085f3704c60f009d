"""Canonical peer order and the attribute names ringfl reads from a topology graph.

A peer's int id everywhere in ringfl is its index in `peers(g)`: the node order as
stored in the topology file (networkx keeps insertion order, and every reader in
`ringfl.topology.io` inserts nodes in file order).
"""

from __future__ import annotations

from collections.abc import Hashable

import networkx as nx

ADDRESS = "address"  # node: "tcp://host:port" or "ipc://path"
PUBLIC_KEY = "public_key"  # node: the peer's public key as a string (Z85 or hex)
SELF_WEIGHT = "self_weight"  # node: W_ii of a given mixing matrix
WEIGHT = "weight"  # edge: W_ij of a given mixing matrix
RING = "ring"  # graph: explicit ring order, a list of node ids
MIXING = "mixing"  # graph: "weights" | "metropolis-hastings" (absent: decide from the weights)


def peers(g: nx.Graph) -> list[Hashable]:
    """The canonical peer order: node order as stored in the file. Index = peer id."""
    return list(g.nodes)


def peer_index(g: nx.Graph) -> dict[Hashable, int]:
    """Map node id -> peer id (its index in `peers(g)`)."""
    return {node: i for i, node in enumerate(g.nodes)}


def node_label(node: Hashable) -> str:
    """How messages name a node: `node 3` for an int id, `node 'a'` for a string id."""
    return f"node {node!r}"


def edge_label(u: Hashable, v: Hashable) -> str:
    """How messages name an edge: `edge 0-1`, `edge 'a'-'b'`."""
    return f"edge {u!r}-{v!r}"


def summarize(items: list, limit: int = 8) -> str:
    """`0, 1, 2` or `0, 1, ... (40 in all)` for long lists in one-line messages."""
    shown = ", ".join(repr(x) for x in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items)} in all)"
    return shown
