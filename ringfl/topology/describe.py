"""A summary of a topology for people: the numbers `ringfl topology check` prints and
the table in topology/README.md."""

from __future__ import annotations

from typing import Any

import networkx as nx

from ringfl.errors import TopologyError
from ringfl.topology.mixing import mixing_decision, rows_spectral_gap
from ringfl.topology.peers import ADDRESS, PUBLIC_KEY, RING
from ringfl.topology.ring import DEFAULT_TIME_LIMIT_S, ring_order


def describe(
    g: nx.Graph, source: str = "graph", *, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> dict[str, Any]:
    """Summary of a valid topology: nodes, edges, degree_min/degree_max, diameter,
    mixing ("weights" or "metropolis-hastings") and mixing_note, spectral_gap of W,
    ring (list of node ids, or None), ring_source ("file" or "search"), ring_error
    (why there is no ring), addresses and public_keys (how many nodes carry one)."""
    degrees = [d for _, d in g.degree()]
    kind, rows, note = mixing_decision(g, source)
    info: dict[str, Any] = {
        "source": source,
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "degree_min": min(degrees) if degrees else 0,
        "degree_max": max(degrees) if degrees else 0,
        "diameter": nx.diameter(g) if g.number_of_nodes() else 0,
        "mixing": kind,
        "mixing_note": note,
        "spectral_gap": rows_spectral_gap(rows),
        "ring": None,
        "ring_source": None,
        "ring_error": None,
        "addresses": sum(1 for _, d in g.nodes(data=True) if ADDRESS in d),
        "public_keys": sum(1 for _, d in g.nodes(data=True) if PUBLIC_KEY in d),
    }
    try:
        info["ring"] = ring_order(g, time_limit_s, source=source)
        info["ring_source"] = "file" if RING in g.graph else "search"
    except TopologyError as exc:
        info["ring_error"] = str(exc)
    return info
