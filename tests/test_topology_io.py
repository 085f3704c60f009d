"""Reading and writing topology files: round trips through every format, plain networkx
files, parse errors, atomic save."""

from __future__ import annotations

import json
import os
import stat

import networkx as nx
import numpy as np
import pytest

from ringfl.errors import TopologyError
from ringfl.topology import (
    assign_local_addresses,
    load,
    make,
    metropolis_hastings,
    mixing_choice,
    peers,
    save,
)
from ringfl.topology import io as tio

EXTS = (".json", ".graphml", ".edgelist", ".txt")


def rich_graph() -> nx.Graph:
    """String ids, addresses, keys, a full mixing matrix with self weights, a ring."""
    g = nx.Graph(name="rich", mixing="weights")
    names = ["alpha", "b-2", "c.3", "d_4", "e5"]
    for i, name in enumerate(names):
        g.add_node(
            name,
            address=f"tcp://peer{i}.example.org:{23000 + i}" if i != 2 else "ipc:///tmp/r/c3",
            public_key=f"{i:02x}" * 32 if i % 2 else f"Z85+key/{i}.-:+=^!*?&<>()[]{{}}@%$#",
        )
    edges = [(names[i], names[(i + 1) % 5]) for i in range(5)] + [("alpha", "c.3")]
    g.add_edges_from(edges)
    w = metropolis_hastings(g)
    idx = {n: i for i, n in enumerate(names)}
    for u, v in g.edges():
        g.edges[u, v]["weight"] = float(w[idx[u], idx[v]])
    for n in names:
        g.nodes[n]["self_weight"] = float(w[idx[n], idx[n]])
    g.graph["ring"] = ["alpha", "b-2", "c.3", "d_4", "e5"]
    return g


def assert_same(g: nx.Graph, h: nx.Graph) -> None:
    assert peers(h) == peers(g)
    assert [type(n) for n in peers(h)] == [type(n) for n in peers(g)]
    for n in g.nodes:
        assert dict(h.nodes[n]) == dict(g.nodes[n]), n
    assert {frozenset(e) for e in h.edges()} == {frozenset(e) for e in g.edges()}
    for u, v, d in g.edges(data=True):
        assert dict(h.edges[u, v]) == d
    assert dict(h.graph) == dict(g.graph)


def graphs_to_roundtrip():
    out = [("rich", rich_graph())]
    for kind, n in [("ring", 1), ("ring", 2), ("complete", 3), ("torus", 9), ("star", 7)]:
        g = make(kind, n)
        assign_local_addresses(g, 23500)
        out.append((f"{kind}-{n}", g))
    out.append(("random-regular-10", make("random-regular", 10, seed=3, k=3)))
    out.append(("small-world-12", make("small-world", 12, seed=1, k=4, p=0.3)))
    return out


@pytest.mark.parametrize("ext", EXTS)
@pytest.mark.parametrize(
    ("name", "g"), graphs_to_roundtrip(), ids=lambda x: x[0] if isinstance(x, str) else ""
)
def test_round_trip_preserves_everything(tmp_path, ext, name, g):
    path = tmp_path / f"{name}{ext}"
    save(g, path)
    h = load(path)
    assert_same(g, h)
    # And again: a second round trip is byte-identical.
    path2 = tmp_path / f"{name}-again{ext}"
    save(h, path2)
    assert path2.read_bytes() == path.read_bytes()


@pytest.mark.parametrize("ext", EXTS)
def test_round_trip_keeps_weights_exact(tmp_path, ext):
    g = rich_graph()
    path = tmp_path / f"w{ext}"
    save(g, path)
    assert (mixing_choice(load(path)).matrix == mixing_choice(g).matrix).all()
    assert mixing_choice(load(path)).kind == "weights"


def test_graphml_ring_as_comma_list(tmp_path):
    g = make("ring", 4)
    g.graph["ring"] = "3, 2,1,0"  # what a hand-written GraphML file might carry
    data = tio.write_graphml(g)
    path = tmp_path / "comma.graphml"
    path.write_bytes(data)
    assert load(path).graph["ring"] == [3, 2, 1, 0]


def test_string_ids_that_look_like_ints_become_ints_in_text_formats(tmp_path):
    g = nx.Graph()
    g.add_edges_from([("2", "10"), ("10", "7"), ("7", "2")])
    g.graph["ring"] = ["2", "10", "7"]
    save(g, tmp_path / "s.graphml")
    h = load(tmp_path / "s.graphml")
    assert peers(h) == [2, 10, 7] and h.graph["ring"] == [2, 10, 7]
    # Not all canonical integers ("007"): every id stays a string.
    g2 = nx.relabel_nodes(g, {"7": "007"})
    g2.graph["ring"] = ["2", "10", "007"]
    save(g2, tmp_path / "s2.edgelist")
    assert peers(load(tmp_path / "s2.edgelist")) == ["2", "10", "007"]


def test_plain_networkx_files_load(tmp_path):
    g = nx.karate_club_graph()
    nx.write_graphml(g, tmp_path / "karate.graphml")
    h = load(tmp_path / "karate.graphml")
    assert peers(h) == list(range(34))
    assert h.nodes[0]["club"] == "Mr. Hi" and h.edges[0, 1]["weight"] == 4
    choice = mixing_choice(h)
    assert choice.kind == "metropolis-hastings" and "not a mixing matrix" in choice.note

    for key in ("edges", "links"):  # networkx's node_link_data, new and old edge key
        doc = nx.node_link_data(g, edges=key)
        (tmp_path / f"karate-{key}.json").write_text(json.dumps(doc))
        k = load(tmp_path / f"karate-{key}.json")
        assert peers(k) == list(range(34)) and k.number_of_edges() == 78
        assert k.edges[0, 1]["weight"] == 4

    h5 = nx.cycle_graph(5)
    nx.set_edge_attributes(h5, 0.25, "weight")
    nx.write_weighted_edgelist(h5, tmp_path / "c5.edgelist")
    c5 = load(tmp_path / "c5.edgelist")
    assert c5.edges[0, 1]["weight"] == 0.25
    assert mixing_choice(c5).kind == "weights"


def test_edgelist_syntax(tmp_path):
    text = (
        "# a comment\n"
        "\n"
        "solo   # a node on its own line\n"
        "a b 0.25  # inline comment\n"
        "b c 0.25\n"
        "c a 0.25\n"
        "a solo 0.5\n"
        '#@ node b {"address": "tcp://127.0.0.1:23001"}\n'
    )
    path = tmp_path / "hand.txt"
    path.write_text(text)
    g = load(path)
    assert peers(g) == ["solo", "a", "b", "c"]
    assert g.nodes["b"]["address"] == "tcp://127.0.0.1:23001"
    assert mixing_choice(g).kind == "weights"
    # One node, no edges: a legal N = 1 topology.
    (tmp_path / "one.txt").write_text("only\n")
    assert peers(load(tmp_path / "one.txt")) == ["only"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a b c d\n", r"bad\.edgelist:1: expected 'u v \[weight\]', got 4 fields"),
        ("a b\nb c x1\n", r"bad\.edgelist:2: weight 'x1' of edge b-c is not a number"),
        ("a b\nb c\nb a\n", r"bad\.edgelist:3: edge b-a is listed twice \(first on line 1\)"),
        ("#@ frob 1\n", r"bad\.edgelist:1: unknown directive"),
        ("#@ node a {not json}\n", r"bad\.edgelist:1: bad attributes"),
        ("#@ node a {}\n#@ node a {}\n", r"bad\.edgelist:2: node 'a' is declared twice"),
        ("#@ graph [1, 2]\n", r"bad\.edgelist:1: bad attributes"),
    ],
)
def test_edgelist_errors_name_file_and_line(tmp_path, text, match):
    path = tmp_path / "bad.edgelist"
    path.write_text(text)
    with pytest.raises(TopologyError, match=match):
        load(path)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ('{"nodes": [', r"bad\.json: not valid JSON \(line 1, column"),
        ("[1, 2]", r"bad\.json: expected a JSON object"),
        ('{"nodes": [{"name": 1}]}', r"bad\.json: nodes\[0\] is not an object with an 'id'"),
        ('{"nodes": [{"id": 1.5}]}', r"bad\.json: nodes\[0\]\.id is 1\.5"),
        ('{"nodes": [{"id": 0}, {"id": 0}]}', r"bad\.json: nodes\[1\]: node 0 is listed twice"),
        (
            '{"nodes": [{"id": 0}], "edges": [{"source": 0, "target": 9}]}',
            r"bad\.json: edges\[0\] \(edge 0-9\) names unknown node 9",
        ),
        (
            '{"nodes": [{"id": 0}, {"id": 1}], "edges": [{"source": 0, "target": 1},'
            ' {"source": 1, "target": 0}]}',
            r"bad\.json: edges\[1\]: edge 1-0 is listed twice",
        ),
        ('{"directed": true, "nodes": []}', r"bad\.json: 'directed' is true"),
        ('{"nodes": [], "edges": [], "links": []}', r"bad\.json: has both 'edges' and 'links'"),
        ('{"nodes": {}}', r"bad\.json: 'nodes' must be a list"),
    ],
)
def test_json_errors_name_file(tmp_path, doc, match):
    path = tmp_path / "bad.json"
    path.write_text(doc)
    with pytest.raises(TopologyError, match=match):
        load(path)


def test_graphml_errors(tmp_path):
    bad = tmp_path / "bad.graphml"
    bad.write_text("<graphml><graph><node id='a'></graph>")
    with pytest.raises(TopologyError, match=r"bad\.graphml: not valid GraphML"):
        load(bad)
    d = nx.DiGraph([(0, 1), (1, 0)])
    nx.write_graphml(d, tmp_path / "dir.graphml")
    with pytest.raises(TopologyError, match=r"dir\.graphml: the graph is directed"):
        load(tmp_path / "dir.graphml")
    m = nx.MultiGraph([(0, 1), (0, 1), (1, 2), (2, 0)])
    nx.write_graphml(m, tmp_path / "multi.graphml")
    with pytest.raises(TopologyError, match=r"multi\.graphml: edge 0-1 appears 2 times"):
        load(tmp_path / "multi.graphml")


def test_unreadable_and_unknown_format(tmp_path):
    with pytest.raises(TopologyError, match=r"missing\.json: cannot read topology file"):
        load(tmp_path / "missing.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(TopologyError, match=r"dir\.json: cannot read topology file"):
        load(tmp_path / "dir.json")
    (tmp_path / "t.yaml").write_text("nodes: []")
    with pytest.raises(
        TopologyError, match=r"t\.yaml: unknown topology format \(extension '\.yaml'\)"
    ):
        load(tmp_path / "t.yaml")
    with pytest.raises(TopologyError, match=r"noext: unknown topology format \(no extension\)"):
        load(tmp_path / "noext")
    (tmp_path / "latin.json").write_bytes(b'{"nodes": [{"id": "\xe9"}]}')
    with pytest.raises(TopologyError, match=r"latin\.json: not UTF-8"):
        load(tmp_path / "latin.json")
    with pytest.raises(TopologyError, match=r"\.yaml: unknown topology format"):
        save(make("ring", 3), tmp_path / "out.yaml")


def test_save_is_atomic_and_shareable(tmp_path):
    path = tmp_path / "t.json"
    save(make("ring", 5), path)
    before = path.read_bytes()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    # A graph GraphML cannot store: the write fails and the old file is untouched.
    gpath = tmp_path / "t.graphml"
    save(make("ring", 5), gpath)
    gbefore = gpath.read_bytes()
    g = make("ring", 5)
    g.nodes[0]["tags"] = ["x", "y"]
    with pytest.raises(TopologyError, match=r"t\.graphml: cannot store node attribute 'tags'"):
        save(g, gpath)
    assert gpath.read_bytes() == gbefore
    # An invalid graph is refused before anything is written.
    bad = make("ring", 5)
    bad.add_edge(0, 0)
    with pytest.raises(TopologyError, match=r"t\.json: self-loop on node 0"):
        save(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.graphml", "t.json"]
    with pytest.raises(TopologyError, match="cannot write topology file"):
        save(make("ring", 3), tmp_path / "no" / "such" / "dir.json")


@pytest.mark.parametrize("ext", EXTS)
def test_numpy_scalars_are_stored_as_numbers(tmp_path, ext):
    g = nx.cycle_graph(4)
    w = metropolis_hastings(g)  # numpy float64 entries
    for u, v in g.edges():
        g.edges[u, v]["weight"] = w[u, v]
    g.nodes[0]["rank"] = np.int64(3)
    save(g, tmp_path / f"np{ext}")
    h = load(tmp_path / f"np{ext}")
    assert h.edges[0, 1]["weight"] == pytest.approx(1 / 3, abs=0) and h.nodes[0]["rank"] == 3
    assert type(h.edges[0, 1]["weight"]) is float


def test_values_json_cannot_store_are_refused(tmp_path):
    g = make("ring", 3)
    g.nodes[0]["blob"] = object()
    with pytest.raises(TopologyError, match=r"t\.json: cannot store object value"):
        save(g, tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("bad_id", ["a b", "x#y", ""])
def test_edgelist_refuses_ids_it_cannot_store(tmp_path, bad_id):
    g = nx.Graph([(bad_id, "ok"), ("ok", "z"), ("z", bad_id)])
    with pytest.raises(
        TopologyError, match=r"t\.edgelist: node .* cannot be stored in an edge list"
    ):
        save(g, tmp_path / "t.edgelist", check=False)


# -- hostile XML: parsed with defusedxml -------------------------------------------------

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE graphml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key id="d0" for="node" attr.name="address" attr.type="string"/>
  <graph edgedefault="undirected">
    <node id="0"><data key="d0">&lol9;</data></node>
    <node id="1"/><node id="2"/>
    <edge source="0" target="1"/><edge source="1" target="2"/><edge source="2" target="0"/>
  </graph>
</graphml>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE graphml [ <!ENTITY secret SYSTEM "file://{path}"> ]>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key id="d0" for="node" attr.name="address" attr.type="string"/>
  <graph edgedefault="undirected">
    <node id="0"><data key="d0">&secret;</data></node>
    <node id="1"/><node id="2"/>
    <edge source="0" target="1"/><edge source="1" target="2"/><edge source="2" target="0"/>
  </graph>
</graphml>
"""


def test_graphml_entity_bomb_is_refused(tmp_path):
    path = tmp_path / "laughs.graphml"
    path.write_text(LAUGHS)
    with pytest.raises(
        TopologyError, match=r"laughs\.graphml: refused GraphML: it declares the XML entity"
    ):
        load(path)


def test_graphml_external_entity_is_refused_and_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    path = tmp_path / "xxe.graphml"
    path.write_text(XXE.format(path=secret))
    with pytest.raises(TopologyError, match=r"xxe\.graphml: refused GraphML") as info:
        load(path)
    assert "TOP-SECRET-VALUE" not in str(info.value)
    # the same graph without the entity is fine (the refusal is about the entity only)
    plain = tmp_path / "plain.graphml"
    lines = [x for x in XXE.splitlines() if "DOCTYPE" not in x]
    plain.write_text("\n".join(lines).replace("&secret;", "ipc:///tmp/x.sock"))
    assert load(plain, check=False).nodes[0]["address"] == "ipc:///tmp/x.sock"
