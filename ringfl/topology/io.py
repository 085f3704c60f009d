"""Read and write topology files. The format follows the file extension:

* `.json`     networkx node-link JSON (the primary format);
* `.graphml`  GraphML (the graph's `ring` is stored as a JSON string and decoded back);
* `.edgelist`, `.txt`  plain edge list: `u v [weight]` lines, `#` comments, a lone `u`
  declares a node; `#@ node ID {json}` and `#@ graph {json}` lines carry node and graph
  attributes (other tools read them as comments).

Nodes are inserted in file order, which fixes the peer ids (`peers(g)`). In GraphML and
edge lists node ids are text: when every id is a decimal integer they are read as ints.
The field reference is docs/topology-format.md.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Hashable
from pathlib import Path

import networkx as nx
import numpy as np
from defusedxml import DefusedXmlException, EntitiesForbidden
from defusedxml.ElementTree import fromstring as defused_fromstring

from ringfl.errors import TopologyError
from ringfl.topology.peers import RING, WEIGHT, edge_label, node_label
from ringfl.topology.validate import validate

FORMATS = {".json": "json", ".graphml": "graphml", ".edgelist": "edgelist", ".txt": "edgelist"}
_INT_ID = re.compile(r"-?(0|[1-9][0-9]*)")


def format_for(path: str | os.PathLike) -> str:
    """The format name for `path`'s extension; TopologyError for an unknown one."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise TopologyError(f"{path}: unknown topology format ({what}); use one of {known}")
    return FORMATS[suffix]


# ---------------------------------------------------------------- node-link JSON


def _json_id(value: object, what: str, source: str) -> Hashable:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TopologyError(f"{source}: {what} is {value!r}; node ids are ints or strings")
    return value


def read_json(text: str, source: str = "graph") -> nx.Graph:
    """Parse node-link JSON (as written by `write_json` or networkx's node_link_data)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TopologyError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(doc, dict):
        raise TopologyError(f"{source}: expected a JSON object with 'nodes' and 'edges'")
    if doc.get("directed", False):
        raise TopologyError(f"{source}: 'directed' is true; topologies are undirected")
    if doc.get("multigraph", False):
        raise TopologyError(f"{source}: 'multigraph' is true; parallel edges are not allowed")
    if "edges" in doc and "links" in doc:
        raise TopologyError(f"{source}: has both 'edges' and 'links'; use one")
    nodes = doc.get("nodes")
    edges = doc.get("edges", doc.get("links", []))
    attrs = doc.get("graph", {})
    if not isinstance(nodes, list):
        raise TopologyError(f"{source}: 'nodes' must be a list of objects with an 'id'")
    if not isinstance(edges, list):
        raise TopologyError(f"{source}: 'edges' must be a list of objects")
    if not isinstance(attrs, dict):
        raise TopologyError(f"{source}: 'graph' must be an object of graph attributes")
    g = nx.Graph()
    g.graph.update(attrs)
    for k, item in enumerate(nodes):
        if not isinstance(item, dict) or "id" not in item:
            raise TopologyError(f"{source}: nodes[{k}] is not an object with an 'id'")
        node = _json_id(item["id"], f"nodes[{k}].id", source)
        if node in g:
            raise TopologyError(f"{source}: nodes[{k}]: {node_label(node)} is listed twice")
        g.add_node(node, **{key: val for key, val in item.items() if key != "id"})
    for k, item in enumerate(edges):
        if not isinstance(item, dict) or "source" not in item or "target" not in item:
            raise TopologyError(f"{source}: edges[{k}] is not an object with source and target")
        u = _json_id(item["source"], f"edges[{k}].source", source)
        v = _json_id(item["target"], f"edges[{k}].target", source)
        for end in (u, v):
            if end not in g:
                raise TopologyError(
                    f"{source}: edges[{k}] ({edge_label(u, v)}) names unknown {node_label(end)}"
                )
        if g.has_edge(u, v):
            raise TopologyError(f"{source}: edges[{k}]: {edge_label(u, v)} is listed twice")
        g.add_edge(
            u, v, **{key: val for key, val in item.items() if key not in ("source", "target")}
        )
    return g


def _plain(value: object) -> object:
    """numpy scalars (e.g. a weight computed with numpy) as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"cannot store {type(value).__name__} value {value!r}")


def _dumps(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=_plain)
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"{exc} in a topology file") from None


def write_json(g: nx.Graph) -> str:
    """Node-link JSON, one node or edge per line (diff-friendly)."""
    lines = ["{", '  "directed": false,', '  "multigraph": false,']
    lines.append(f'  "graph": {_dumps(dict(g.graph))},')
    rows = []
    for node, data in g.nodes(data=True):
        if "id" in data:
            raise TopologyError(f"{node_label(node)} has an attribute named 'id'; rename it")
        rows.append("    " + _dumps({"id": node, **data}))
    lines.append('  "nodes": [' + ("\n" + ",\n".join(rows) + "\n  " if rows else "") + "],")
    rows = []
    for u, v, data in g.edges(data=True):
        if "source" in data or "target" in data:
            raise TopologyError(f"{edge_label(u, v)} has an attribute named source/target")
        rows.append("    " + _dumps({"source": u, "target": v, **data}))
    lines.append('  "edges": [' + ("\n" + ",\n".join(rows) + "\n  " if rows else "") + "]")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- GraphML and edge list


def _relabel_int_ids(g: nx.Graph) -> nx.Graph:
    """Text ids that are all decimal integers become ints (order kept)."""
    if not all(isinstance(n, str) and _INT_ID.fullmatch(n) for n in g.nodes):
        return g
    return nx.relabel_nodes(g, {n: int(n) for n in g.nodes}, copy=True)


def _decode_ring(g: nx.Graph, source: str) -> None:
    """A text `ring` (JSON list, or comma-separated ids) back to a list of node ids."""
    ring = g.graph.get(RING)
    if isinstance(ring, str):
        text = ring.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TopologyError(
                    f"{source}: graph attribute 'ring' is not a JSON list: {exc}"
                ) from None
        else:
            items = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(ring, list):
        items = ring
    else:
        return
    by_text = {str(n): n for n in g.nodes}
    g.graph[RING] = [x if x in g else by_text.get(str(x), x) for x in items]


def _vet_xml(data: bytes, source: str) -> None:
    """Parse `data` with defusedxml, which refuses entity declarations (the "billion
    laughs" expansion) and external entities or references (XXE), whatever the version of
    the system's expat. networkx parses with the standard library; handing it only bytes
    that passed here keeps that safe without patching the standard library process-wide."""
    try:
        defused_fromstring(data)
    except EntitiesForbidden as exc:
        raise TopologyError(
            f"{source}: refused GraphML: it declares the XML entity {exc.name!r}; "
            "entity declarations are not allowed (entity expansion and external-entity "
            "attacks)"
        ) from None
    except DefusedXmlException as exc:
        raise TopologyError(
            f"{source}: refused GraphML: {type(exc).__name__} (external references and "
            "entity declarations are not allowed)"
        ) from None
    except Exception as exc:  # the XML parser raises several types
        raise TopologyError(f"{source}: not valid GraphML ({type(exc).__name__}: {exc})") from None


def read_graphml(data: bytes, source: str = "graph") -> nx.Graph:
    """Parse GraphML (any networkx-readable file; ringfl attributes are optional).
    XML entity declarations and external references are refused (`_vet_xml`)."""
    _vet_xml(data, source)
    try:
        g = nx.read_graphml(io.BytesIO(data), node_type=str)
    except Exception as exc:  # the XML parser and networkx raise many types
        raise TopologyError(f"{source}: not valid GraphML ({type(exc).__name__}: {exc})") from None
    # GraphML key defaults apply to every node/edge that lacks the attribute.
    node_default = g.graph.pop("node_default", None) or {}
    edge_default = g.graph.pop("edge_default", None) or {}
    for _, attrs in g.nodes(data=True):
        for key, val in node_default.items():
            attrs.setdefault(key, val)
    for *_, attrs in g.edges(data=True):
        for key, val in edge_default.items():
            attrs.setdefault(key, val)
    g = _relabel_int_ids(g)
    _decode_ring(g, source)
    return g


def write_graphml(g: nx.Graph) -> bytes:
    """GraphML bytes; the `ring` list is stored as a JSON string."""
    h = g.copy()
    for data in (
        h.graph,
        *(d for _, d in h.nodes(data=True)),
        *(d for *_, d in h.edges(data=True)),
    ):
        for key, val in data.items():
            if isinstance(val, np.generic):
                data[key] = val.item()
    if isinstance(h.graph.get(RING), (list, tuple)):
        h.graph[RING] = json.dumps(list(h.graph[RING]))
    for where, items in (
        ("graph", [("graph", h.graph)]),
        ("node", list(h.nodes(data=True))),
        ("edge", [((u, v), d) for u, v, d in h.edges(data=True)]),
    ):
        for owner, data in items:
            for key, val in data.items():
                if val is None or isinstance(val, (list, tuple, dict, set)):
                    raise TopologyError(
                        f"cannot store {where} attribute {key!r} of {owner!r} in GraphML "
                        f"(value {val!r}); use .json"
                    )
    buf = io.BytesIO()
    try:
        nx.write_graphml(h, buf)
    except (nx.NetworkXError, TypeError, ValueError) as exc:
        raise TopologyError(f"cannot write GraphML: {exc}") from None
    return buf.getvalue()


def _edgelist_id(token: str, lineno: int, source: str) -> str:
    if token.startswith("#"):
        raise TopologyError(f"{source}:{lineno}: node id {token!r} starts with '#'")
    return token


def read_edgelist(text: str, source: str = "graph") -> nx.Graph:
    """Parse an edge list (module docstring)."""
    g = nx.Graph()
    declared: set[str] = set()
    edge_line: dict[tuple[str, str], int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#@"):
            parts = line.split(maxsplit=3)
            what = parts[1] if len(parts) > 1 else ""
            try:
                if what == "graph" and len(parts) >= 3:
                    attrs = json.loads(line.split(maxsplit=2)[2])
                    if not isinstance(attrs, dict):
                        raise ValueError("not a JSON object")
                    g.graph.update(attrs)
                    continue
                if what == "node" and len(parts) >= 3:
                    node = _edgelist_id(parts[2], lineno, source)
                    attrs = json.loads(parts[3]) if len(parts) == 4 else {}
                    if not isinstance(attrs, dict):
                        raise ValueError("not a JSON object")
                    if node in declared:
                        raise TopologyError(f"{source}:{lineno}: node {node!r} is declared twice")
                    declared.add(node)
                    g.add_node(node, **attrs)
                    continue
            except (json.JSONDecodeError, ValueError) as exc:
                raise TopologyError(
                    f"{source}:{lineno}: bad attributes in {line!r} ({exc})"
                ) from None
            raise TopologyError(
                f"{source}:{lineno}: unknown directive {line!r} "
                "(expected '#@ node ID {json}' or '#@ graph {json}')"
            )
        tokens = line.split("#", 1)[0].split()
        if not tokens:
            continue
        if len(tokens) == 1:
            node = _edgelist_id(tokens[0], lineno, source)
            if node in declared:
                raise TopologyError(f"{source}:{lineno}: node {node!r} is declared twice")
            declared.add(node)
            g.add_node(node)
            continue
        if len(tokens) > 3:
            raise TopologyError(
                f"{source}:{lineno}: expected 'u v [weight]', got {len(tokens)} fields: {line!r}"
            )
        u = _edgelist_id(tokens[0], lineno, source)
        v = _edgelist_id(tokens[1], lineno, source)
        key = (u, v) if u <= v else (v, u)
        if key in edge_line:
            raise TopologyError(
                f"{source}:{lineno}: edge {u}-{v} is listed twice (first on line {edge_line[key]})"
            )
        edge_line[key] = lineno
        attrs = {}
        if len(tokens) == 3:
            try:
                attrs[WEIGHT] = float(tokens[2])
            except ValueError:
                raise TopologyError(
                    f"{source}:{lineno}: weight {tokens[2]!r} of edge {u}-{v} is not a number"
                ) from None
        g.add_edge(u, v, **attrs)
    g = _relabel_int_ids(g)
    _decode_ring(g, source)
    return g


def _format_weight(value: object) -> str:
    """Shortest text that reads back as the same float (numpy scalars included)."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(value)


def write_edgelist(g: nx.Graph) -> str:
    """Edge-list text: node declarations first (fixing peer order), then edges. Edge
    attributes other than `weight` are not stored in this format."""
    out = [
        "# ringfl topology, edge list: 'u v [weight]' lines; '#@' lines carry attributes",
    ]
    if g.graph:
        out.append("#@ graph " + _dumps(dict(g.graph)))
    for node, data in g.nodes(data=True):
        text = str(node)
        if not text or any(c.isspace() for c in text) or "#" in text:
            raise TopologyError(
                f"{node_label(node)} cannot be stored in an edge list (blank, spaces or '#'); "
                "use .json"
            )
        out.append(f"#@ node {text} {_dumps(data)}" if data else text)
    for u, v, data in g.edges(data=True):
        out.append(f"{u} {v} {_format_weight(data[WEIGHT])}" if WEIGHT in data else f"{u} {v}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- files


def parse(data: bytes, fmt: str, source: str = "graph") -> nx.Graph:
    """Parse file contents in format `fmt` ("json", "graphml", "edgelist"); no validation."""
    if fmt == "graphml":
        return read_graphml(data, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TopologyError(f"{source}: not UTF-8 text ({exc})") from None
    if fmt == "json":
        return read_json(text, source)
    if fmt == "edgelist":
        return read_edgelist(text, source)
    raise TopologyError(f"{source}: unknown topology format {fmt!r}")


def serialize(g: nx.Graph, fmt: str) -> bytes:
    """File contents of `g` in format `fmt`."""
    if fmt == "json":
        return write_json(g).encode("utf-8")
    if fmt == "graphml":
        return write_graphml(g)
    if fmt == "edgelist":
        return write_edgelist(g).encode("utf-8")
    raise TopologyError(f"unknown topology format {fmt!r}")


def load(path: str | os.PathLike, *, check: bool = True) -> nx.Graph:
    """Read the topology file at `path` (format from its extension) and validate it
    (unless `check` is False). Raises TopologyError naming the file."""
    fmt = format_for(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read topology file ({exc.strerror or exc})") from None
    g = parse(data, fmt, str(path))
    if check:
        validate(g, str(path))
    return g


def save(g: nx.Graph, path: str | os.PathLike, *, check: bool = True) -> None:
    """Write `g` to `path` (format from its extension) atomically: a temporary file in
    the same folder, then os.replace. Validates first unless `check` is False."""
    fmt = format_for(path)
    if check:
        validate(g, str(path))
    try:
        data = serialize(g, fmt)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise TopologyError(f"{path}: cannot write topology file ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file 0600; a topology file is meant to be shared.
            mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise TopologyError(f"{path}: cannot write topology file ({exc.strerror or exc})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
