"""Every validation rule: one TopologyError whose message names the file and the
offending node or edge. Bad graphs are written with save(check=False) and loaded back,
so the message must carry the file name."""

from __future__ import annotations

import math
import re

import networkx as nx
import pytest

from ringfl.errors import TopologyError
from ringfl.topology import address_problem, load, make, save, validate


def ring(n: int = 4) -> nx.Graph:
    g = nx.cycle_graph(n)
    return g


def with_node(g: nx.Graph, node, **attrs) -> nx.Graph:
    g.nodes[node].update(attrs)
    return g


def with_edge(g: nx.Graph, u, v, **attrs) -> nx.Graph:
    g.edges[u, v].update(attrs)
    return g


def weighted_ring(n: int = 4, w: float = 0.25) -> nx.Graph:
    g = ring(n)
    nx.set_edge_attributes(g, w, "weight")
    return g


def many_components() -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(10))
    g.add_edge(0, 1)
    return g


def declared(g: nx.Graph) -> nx.Graph:
    g.graph["mixing"] = "weights"
    return g


CASES = [
    # (graph builder, regex the message must match after "bad.json: ")
    ("empty", nx.Graph, r"the topology is empty"),
    ("self-loop", lambda: nx.Graph([(0, 1), (1, 2), (2, 0), (2, 2)]), r"self-loop on node 2"),
    (
        "disconnected",
        lambda: nx.Graph([(0, 1), (1, 2), ("x", "y")]),
        r"disconnected: 2 components: \{0, 1, 2\}; \{'x', 'y'\}",
    ),
    (
        "disconnected-truncated",
        many_components,
        r"disconnected: 9 components: \{0, 1\}; \{2\}; \{3\}; \.\.\. \(6 more\)",
    ),
    (
        "address-no-port",
        lambda: with_node(ring(), 2, address="tcp://127.0.0.1"),
        r"address of node 2 'tcp://127\.0\.0\.1' is malformed",
    ),
    (
        "address-port-zero",
        lambda: with_node(ring(), 1, address="tcp://10.0.0.1:0"),
        r"address of node 1 'tcp://10\.0\.0\.1:0' has port 0 outside 1\.\.65535",
    ),
    (
        "address-port-big",
        lambda: with_node(ring(), 1, address="tcp://h:70000"),
        r"address of node 1 'tcp://h:70000' has port 70000 outside",
    ),
    (
        "address-scheme",
        lambda: with_node(ring(), 3, address="http://h:80"),
        r"address of node 3 'http://h:80' is malformed \(expected tcp://HOST:PORT or ipc://PATH\)",
    ),
    (
        "address-ipc-empty",
        lambda: with_node(ring(), 0, address="ipc://"),
        r"address of node 0 'ipc://' is malformed",
    ),
    (
        "address-ipc-long",
        lambda: with_node(ring(), 0, address="ipc:///" + "x" * 120),
        r"address of node 0 .* longer than 107 bytes",
    ),
    (
        "address-not-string",
        lambda: with_node(ring(), 0, address=23000),
        r"address of node 0 is 23000, not a string",
    ),
    (
        "address-duplicate",
        lambda: with_node(
            with_node(ring(), 0, address="tcp://127.0.0.1:23000"),
            3,
            address="tcp://127.0.0.1:23000",
        ),
        r"node 0 and node 3 have the same address 'tcp://127\.0\.0\.1:23000'",
    ),
    (
        "key-blank",
        lambda: with_node(ring(), 1, public_key=""),
        r"public_key of node 1 is ''",
    ),
    (
        "key-duplicate",
        lambda: with_node(with_node(ring(), 1, public_key="ab" * 32), 2, public_key="ab" * 32),
        r"node 1 and node 2 have the same public_key",
    ),
    (
        "weight-negative",
        lambda: with_edge(weighted_ring(), 1, 2, weight=-0.25),
        r"weight of edge 1-2 is negative \(-0\.25\)",
    ),
    (
        "weight-nan",
        lambda: with_edge(weighted_ring(), 2, 3, weight=math.nan),
        r"weight of edge 2-3 is nan, not a finite number",
    ),
    (
        "weight-inf",
        lambda: with_edge(weighted_ring(), 0, 1, weight=math.inf),
        r"weight of edge 0-1 is inf, not a finite number",
    ),
    (
        "weight-text",
        lambda: with_edge(weighted_ring(), 0, 1, weight="heavy"),
        r"weight of edge 0-1 is 'heavy', not a number",
    ),
    (
        "weight-partial",
        lambda: with_edge(ring(), 1, 2, weight=0.5),
        r"edge 1-2 has a weight but edge 0-1 has none \(3 of 4 edges unweighted\)",
    ),
    (
        "weights-row-over-one",
        lambda: declared(weighted_ring(4, 0.6)),
        r"edge weights at node 0 sum to 1\.2 > 1.*graph attribute mixing='weights'",
    ),
    (
        "self-weight-row",
        lambda: with_node(weighted_ring(4, 0.25), 2, self_weight=0.25),
        r"row of node 2 sums to 0\.75 .*a mixing matrix needs 1 \(node 2 has a self_weight\)",
    ),
    (
        "self-weight-negative",
        lambda: with_node(weighted_ring(4, 0.25), 3, self_weight=-0.5),
        r"self_weight of node 3 is negative",
    ),
    (
        "declared-no-weights",
        lambda: declared(ring()),
        r"mixing='weights'.*but no edge has a weight \(e\.g\. edge 0-1\)",
    ),
    (
        "mixing-unknown",
        lambda: nx.Graph(ring(), mixing="fast"),
        r"graph attribute 'mixing' is 'fast'",
    ),
    (
        "ring-unknown-node",
        lambda: nx.Graph(ring(), ring=[0, 1, 2, 9]),
        r"ring names unknown node 9",
    ),
    (
        "ring-repeat",
        lambda: nx.Graph(ring(), ring=[0, 1, 0, 3]),
        r"ring lists node 0 twice",
    ),
    (
        "ring-missing",
        lambda: nx.Graph(ring(), ring=[0, 1, 2]),
        r"ring misses 1 node\(s\): 3",
    ),
    (
        "ring-not-edge",
        lambda: nx.Graph(ring(), ring=[0, 2, 1, 3]),
        r"ring step 0 -> 2 is not an edge of the graph",
    ),
    (
        "ring-not-list",
        lambda: nx.Graph(ring(), ring=7),
        r"ring must be a list of node ids",
    ),
]


@pytest.mark.parametrize(("name", "build", "match"), CASES, ids=[c[0] for c in CASES])
def test_validation_error_names_file_and_culprit(tmp_path, name, build, match):
    path = tmp_path / "bad.json"
    save(build(), path, check=False)
    with pytest.raises(TopologyError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert re.search(match, message), message


def test_same_rules_on_a_graph_in_memory():
    with pytest.raises(TopologyError, match=r"^peer-config: self-loop on node 'a'"):
        validate(nx.Graph([("a", "b"), ("b", "c"), ("c", "a"), ("a", "a")]), "peer-config")
    with pytest.raises(TopologyError, match=r"^g: the graph is directed"):
        validate(nx.DiGraph([(0, 1)]), "g")
    with pytest.raises(TopologyError, match=r"^g: edge 0-1 appears 2 times"):
        validate(nx.MultiGraph([(0, 1), (0, 1)]), "g")
    with pytest.raises(TopologyError, match=r"^g: node id 1\.5 is a float"):
        validate(nx.Graph([(0, 1.5)]), "g")
    with pytest.raises(TopologyError, match=r"^g: not a networkx graph"):
        validate({"nodes": []}, "g")


def test_valid_topologies_pass():
    for g in (make("ring", 1), make("ring", 2), make("star", 3), make("torus", 6)):
        validate(g, "ok")
    # Weights that do form a mixing matrix, with implied and explicit self weights.
    g = nx.cycle_graph(3)
    nx.set_edge_attributes(g, 1 / 3, "weight")
    validate(g, "ok")
    g.nodes[0]["self_weight"] = 1 / 3
    validate(g, "ok")
    # A plain graph whose weights are not a mixing matrix is still valid (see mixing rule).
    validate(nx.karate_club_graph(), "karate")


@pytest.mark.parametrize(
    "address",
    [
        "tcp://127.0.0.1:1",
        "tcp://localhost:65535",
        "tcp://peer-3.example.org:23000",
        "tcp://[::1]:5555",
        "ipc:///tmp/ringfl/p0",
        "ipc://relative.sock",
    ],
)
def test_good_addresses(address):
    assert address_problem(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "tcp://127.0.0.1:65536",
        "tcp://:23000",
        "tcp://a b:1",
        "tcp://h:-1",
        "tcp://h:1x",
        "udp://h:1",
        "127.0.0.1:23000",
        "ipc://a b",
        None,
        b"tcp://h:1",
    ],
)
def test_bad_addresses(address):
    assert address_problem(address)
