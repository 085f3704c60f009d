"""Validation of a topology graph. Every problem raises ONE `TopologyError` whose message
names the source (file) and the offending node or edge. The rules are listed in
docs/topology-format.md; `validate` checks them in this order and stops at the first."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable

import networkx as nx

from ringfl.errors import TopologyError
from ringfl.topology.mixing import check_mixing, checked_number
from ringfl.topology.peers import (
    ADDRESS,
    PUBLIC_KEY,
    RING,
    SELF_WEIGHT,
    WEIGHT,
    edge_label,
    node_label,
    summarize,
)
from ringfl.topology.ring import ring_problem

_TCP = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})")
_IPC_MAX_PATH_BYTES = 107  # sun_path of a Unix socket, less the terminating NUL
_MAX_COMPONENTS_SHOWN = 3


def address_problem(address: object) -> str | None:
    """Why `address` is not a peer address (None when it is fine).

    Accepted: `tcp://HOST:PORT` (HOST a name, IPv4 address or [IPv6], PORT 1..65535)
    and `ipc://PATH` (PATH non-empty, at most 107 bytes, no whitespace)."""
    if not isinstance(address, str):
        return f"is {address!r}, not a string"
    if address.startswith("tcp://"):
        m = _TCP.fullmatch(address)
        if not m:
            return f"{address!r} is malformed (expected tcp://HOST:PORT)"
        port = int(m.group(2))
        if not 1 <= port <= 65535:
            return f"{address!r} has port {port} outside 1..65535"
        return None
    if address.startswith("ipc://"):
        path = address[len("ipc://") :]
        if not path or any(c.isspace() for c in path) or "\0" in path:
            return f"{address!r} is malformed (expected ipc://PATH without spaces)"
        if len(path.encode()) > _IPC_MAX_PATH_BYTES:
            return f"{address!r} has a path longer than {_IPC_MAX_PATH_BYTES} bytes"
        return None
    return f"{address!r} is malformed (expected tcp://HOST:PORT or ipc://PATH)"


def _check_kind(g: object, source: str) -> None:
    if not isinstance(g, nx.Graph):
        raise TopologyError(f"{source}: not a networkx graph ({type(g).__name__})")
    if g.is_directed():
        raise TopologyError(f"{source}: the graph is directed; topologies are undirected")
    if g.is_multigraph():
        for u, v in g.edges():
            if g.number_of_edges(u, v) > 1:
                raise TopologyError(
                    f"{source}: {edge_label(u, v)} appears {g.number_of_edges(u, v)} times; "
                    "parallel edges are not allowed"
                )
        raise TopologyError(f"{source}: the graph is a multigraph; use a simple graph")


def _check_nodes(g: nx.Graph, source: str) -> None:
    if g.number_of_nodes() == 0:
        raise TopologyError(f"{source}: the topology is empty (no nodes)")
    for node in g.nodes:
        if isinstance(node, bool) or not isinstance(node, (int, str)):
            raise TopologyError(
                f"{source}: node id {node!r} is a {type(node).__name__}; ids are ints or strings"
            )
        if isinstance(node, str) and not node.strip():
            raise TopologyError(f"{source}: a node id is empty or blank ({node!r})")
    for u, v in nx.selfloop_edges(g):
        raise TopologyError(f"{source}: self-loop on {node_label(u)} (edge {u!r}-{v!r})")


def _check_connected(g: nx.Graph, source: str) -> None:
    if nx.is_connected(g):
        return
    order = {node: i for i, node in enumerate(g.nodes)}
    comps = sorted(
        (sorted(c, key=order.__getitem__) for c in nx.connected_components(g)),
        key=lambda c: -len(c),
    )
    shown = "; ".join(f"{{{summarize(c, 6)}}}" for c in comps[:_MAX_COMPONENTS_SHOWN])
    more = (
        f"; ... ({len(comps) - _MAX_COMPONENTS_SHOWN} more)"
        if len(comps) > _MAX_COMPONENTS_SHOWN
        else ""
    )
    raise TopologyError(
        f"{source}: the graph is disconnected: {len(comps)} components: {shown}{more}"
    )


def _check_node_attrs(g: nx.Graph, source: str) -> None:
    by_address: dict[str, Hashable] = {}
    by_key: dict[str, Hashable] = {}
    for node, data in g.nodes(data=True):
        if ADDRESS in data:
            addr = data[ADDRESS]
            problem = address_problem(addr)
            if problem:
                raise TopologyError(f"{source}: address of {node_label(node)} {problem}")
            if addr in by_address:
                raise TopologyError(
                    f"{source}: {node_label(by_address[addr])} and {node_label(node)} "
                    f"have the same address {addr!r}"
                )
            by_address[addr] = node
        if PUBLIC_KEY in data:
            key = data[PUBLIC_KEY]
            if not isinstance(key, str) or not key or any(c.isspace() for c in key):
                raise TopologyError(
                    f"{source}: public_key of {node_label(node)} is {key!r}; "
                    "expected a non-empty string without spaces (Z85 or hex)"
                )
            if key in by_key:
                raise TopologyError(
                    f"{source}: {node_label(by_key[key])} and {node_label(node)} "
                    "have the same public_key"
                )
            by_key[key] = node
        if SELF_WEIGHT in data:
            checked_number(data[SELF_WEIGHT], f"self_weight of {node_label(node)}", source)


def _check_edge_weights(g: nx.Graph, source: str) -> None:
    for u, v, data in g.edges(data=True):
        if WEIGHT in data:
            checked_number(data[WEIGHT], f"weight of {edge_label(u, v)}", source)


def _clock_number(v: object, what: str, source: str, positive: bool) -> None:
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    if not ok or (v <= 0 if positive else v < 0):  # type: ignore[operator]
        need = "> 0" if positive else ">= 0"
        raise TopologyError(f"{source}: {what} must be a finite number {need}, got {v!r}")


def _check_clock_attrs(g: nx.Graph, source: str) -> None:
    """The simulator's clock attributes: `latency_ms` (>= 0) and `bandwidth_mbps` (> 0) on
    edges and the graph, `speed` (> 0) on nodes."""
    for key, positive in (("latency_ms", False), ("bandwidth_mbps", True)):
        if key in g.graph:
            _clock_number(g.graph[key], f"the graph's {key}", source, positive)
        for u, v, data in g.edges(data=True):
            if key in data:
                _clock_number(data[key], f"{key} of {edge_label(u, v)}", source, positive)
    for node, data in g.nodes(data=True):
        if "speed" in data:
            _clock_number(data["speed"], f"speed of {node_label(node)}", source, True)


def validate(g: nx.Graph, source: str = "graph") -> None:
    """Check `g` as a ringfl topology; raise `TopologyError` naming `source` and the
    offending node or edge at the first problem. Returns None when `g` is valid."""
    _check_kind(g, source)
    _check_nodes(g, source)
    _check_connected(g, source)
    _check_node_attrs(g, source)
    _check_edge_weights(g, source)
    check_mixing(g, source)
    _check_clock_attrs(g, source)
    if RING in g.graph:
        problem = ring_problem(g, g.graph[RING])
        if problem:
            raise TopologyError(f"{source}: {problem}")
