"""Drawing a topology to an image file with matplotlib's Agg canvas (no pyplot, no
global backend state): nodes labelled with their ids, the ring order as a highlighted
cycle when the graph has one.

Layouts: "grid" (a torus made by `make`: rows x cols, wrap-around edges drawn as arcs),
"ring" (nodes on a circle in ring order), "kamada-kawai", "spring" (seeded), "circular"
(file order). "auto" picks grid for a torus, else ring when there is a ring, else
kamada-kawai (spring above 200 nodes).
"""

from __future__ import annotations

import os

import networkx as nx

from ringfl.errors import TopologyError
from ringfl.topology.describe import describe
from ringfl.topology.ring import ring_edges

LAYOUTS = ("auto", "grid", "ring", "kamada-kawai", "spring", "circular")
_RING_COLOR = "#d62728"
_EDGE_COLOR = "#a8a8a8"


def _grid_shape(g: nx.Graph) -> tuple[int, int] | None:
    rows, cols = g.graph.get("rows"), g.graph.get("cols")
    if (
        isinstance(rows, int)
        and isinstance(cols, int)
        and rows * cols == g.number_of_nodes()
        and set(g.nodes) == set(range(rows * cols))
    ):
        return rows, cols
    return None


def _positions(g: nx.Graph, layout: str, ring: list | None, seed: int) -> tuple[str, dict]:
    if layout == "auto":
        if _grid_shape(g):
            layout = "grid"
        elif ring:
            layout = "ring"
        else:
            layout = "kamada-kawai" if g.number_of_nodes() <= 200 else "spring"
    if layout == "grid":
        shape = _grid_shape(g)
        if shape is None:
            raise TopologyError("layout 'grid' needs a torus made by `ringfl topology make`")
        cols = shape[1]
        return layout, {i: (float(i % cols), -float(i // cols)) for i in g.nodes}
    if layout == "ring":
        if not ring:
            raise TopologyError("layout 'ring' needs a ring order; this graph has none")
        return layout, nx.circular_layout(nx.path_graph(ring))
    if layout == "kamada-kawai":
        return layout, nx.kamada_kawai_layout(g)
    if layout == "spring":
        return layout, nx.spring_layout(g, seed=seed)
    if layout == "circular":
        return layout, nx.circular_layout(g)
    raise TopologyError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def draw(
    g: nx.Graph,
    path: str | os.PathLike,
    *,
    source: str = "graph",
    layout: str = "auto",
    seed: int = 0,
    title: str | None = None,
) -> dict:
    """Draw the valid topology `g` to `path` (format from the extension, e.g. .png or
    .svg). Returns `describe(g)`, whose ring (if any) is highlighted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    info = describe(g, source)
    ring = info["ring"]
    used, pos = _positions(g, layout, ring, seed)
    n = g.number_of_nodes()
    size = 6.0 if n <= 64 else 10.0
    fig = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    ax.set_aspect("equal")
    on_ring = {frozenset(e) for e in ring_edges(ring)} if ring else set()
    node_size = 420 if n <= 64 else max(30, 12000 // n)
    edges = sorted(g.edges(), key=lambda e: frozenset(e) in on_ring)  # ring edges on top
    for u, v in edges:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        highlighted = frozenset((u, v)) in on_ring
        # In a grid, a wrap-around edge spans the whole row or column: bend it outward.
        long_edge = used == "grid" and abs(x0 - x1) + abs(y0 - y1) > 1.5
        ax.add_patch(
            FancyArrowPatch(
                (x0, y0),
                (x1, y1),
                arrowstyle="-",
                connectionstyle=f"arc3,rad={0.25 if long_edge else 0.0}",
                color=_RING_COLOR if highlighted else _EDGE_COLOR,
                linewidth=2.8 if highlighted else 1.0,
                zorder=2 if highlighted else 1,
                shrinkA=0,
                shrinkB=0,
            )
        )
    nx.draw_networkx_nodes(
        g, pos, ax=ax, node_size=node_size, node_color="#1f77b4", edgecolors="white"
    )
    if n <= 200:
        nx.draw_networkx_labels(g, pos, ax=ax, font_size=9 if n <= 64 else 6, font_color="white")
    ax.autoscale_view()
    ax.margins(0.12)
    ring_text = "ring order in red" if ring else "no ring order (gossip only)"
    heading = title or os.path.basename(str(source))
    ax.set_title(
        f"{heading}: {info['nodes']} nodes, {info['edges']} edges, "
        f"spectral gap {info['spectral_gap']:.3f}\n{ring_text}",
        fontsize=10,
    )
    fig.tight_layout()
    try:
        fig.savefig(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise TopologyError(f"{path}: cannot write drawing ({exc})") from None
    return info
