"""The simulator's model of time: links, compute speed and availability.

- **Links.** A topology edge may carry `latency_ms` (one-way, ≥ 0) and `bandwidth_mbps`
  (megabits per second, > 0); the graph may carry both as defaults for every other pair
  (a ring or gossip neighbour pair that is an edge uses the edge's values; any other
  pair, e.g. a hub, the defaults). Without any: 0.05 ms and 8,000 Mbit/s (1 GB/s).
  `network_for(graph)` builds the `MemoryNetwork` with them.
- **Speed.** A node's `speed` (> 0, default 1) divides its local training time: a round
  of S local steps takes S · step_s / speed virtual seconds (`training_s`).
- **Availability.** Per-node offline intervals [offline_s, online_s) on the simulation's
  virtual clock, from a CSV file (`load_availability`: header `node,offline_s,online_s`;
  an empty `online_s` means the node never comes back) or drawn by `random_churn`
  (alternating exponential online/offline periods). A node going offline during a round
  crashes at that moment; a node that is offline when a round starts does not take part;
  a node online again at a round's start rejoins through the membership rules.

All values are read once, checked, and every problem names the file, node or edge.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from ringfl.errors import ConfigError, TopologyError
from ringfl.transport.memory import Link, MemoryNetwork

LATENCY = "latency_ms"
BANDWIDTH = "bandwidth_mbps"
SPEED = "speed"
#: Defaults when neither the edge nor the graph gives a value.
DEFAULT_LATENCY_MS = 0.05
DEFAULT_BANDWIDTH_MBPS = 8000.0


def _number(v: object, what: str, source: str, *, positive: bool) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TopologyError(f"{source}: {what} is {v!r}, not a number")
    try:
        x = float(v)
    except ValueError:
        raise TopologyError(f"{source}: {what} is {v!r}, not a number") from None
    if not math.isfinite(x) or (x <= 0 if positive else x < 0):
        need = "> 0" if positive else ">= 0"
        raise TopologyError(f"{source}: {what} must be a finite number {need}, got {v!r}")
    return x


def _link(data: Mapping, default: Link, what: str, source: str) -> Link:
    lat = default.latency_s
    bw = default.bandwidth_Bps
    if LATENCY in data:
        lat = _number(data[LATENCY], f"{LATENCY} of {what}", source, positive=False) / 1e3
    if BANDWIDTH in data:
        bw = _number(data[BANDWIDTH], f"{BANDWIDTH} of {what}", source, positive=True) * 1e6 / 8
    return Link(lat, bw)


def link_model(
    graph: nx.Graph, source: str = "topology"
) -> tuple[Link, dict[tuple[int, int], Link]]:
    """(default link, {(i, j): link}) from the graph's and its edges' `latency_ms` /
    `bandwidth_mbps` (peer ids i < j are node indices). Only edges with an attribute of
    their own are listed."""
    from ringfl.topology import peer_index

    default = _link(
        graph.graph,
        Link(DEFAULT_LATENCY_MS / 1e3, DEFAULT_BANDWIDTH_MBPS * 1e6 / 8),
        "the graph",
        source,
    )
    index = peer_index(graph)
    links: dict[tuple[int, int], Link] = {}
    for u, v, data in graph.edges(data=True):
        if LATENCY in data or BANDWIDTH in data:
            a, b = index[u], index[v]
            links[(min(a, b), max(a, b))] = _link(data, default, f"edge {u!r}-{v!r}", source)
    return default, links


def network_for(
    graph: nx.Graph, *, deadline_s: float = 1.0, source: str = "topology"
) -> MemoryNetwork:
    """The in-memory network with the topology's link latencies and bandwidths."""
    default, links = link_model(graph, source)
    return MemoryNetwork(default.latency_s, default.bandwidth_Bps, deadline_s, links=links)


def speeds(graph: nx.Graph, source: str = "topology") -> list[float]:
    """Every peer's compute speed (node attribute `speed`, default 1), in peer order."""
    from ringfl.topology import peers

    out = []
    for node in peers(graph):
        data = graph.nodes[node]
        out.append(
            _number(data[SPEED], f"{SPEED} of node {node!r}", source, positive=True)
            if SPEED in data
            else 1.0
        )
    return out


def training_s(steps: int, step_s: float, speed: float = 1.0, factor: float = 1.0) -> float:
    """Virtual seconds of a round's local training: steps · step_s · factor / speed."""
    return steps * step_s * factor / speed


@dataclass
class Availability:
    """Per-peer offline intervals [offline_s, online_s) on the virtual clock (sorted,
    disjoint; `inf` = never back). Peers without intervals are always online."""

    offline: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    def online(self, peer: int, t: float) -> bool:
        """Whether `peer` is online at virtual time `t`."""
        return not any(a <= t < b for a, b in self.offline.get(peer, ()))

    def next_offline(self, peer: int, t: float) -> float | None:
        """The first moment ≥ `t` at which `peer` is offline (`t` itself when it is
        offline then), or None."""
        for a, b in self.offline.get(peer, ()):
            if b > t:
                return max(a, t)
        return None

    @property
    def empty(self) -> bool:
        return not any(self.offline.values())

    def rows(self, names: Sequence[str]) -> list[tuple[str, float, float]]:
        """(node, offline_s, online_s) rows, by peer then time."""
        return [(names[p], a, b) for p in sorted(self.offline) for a, b in self.offline[p]]


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def load_availability(path: str | Path, names: Sequence[str]) -> Availability:
    """Offline intervals from a CSV file with the header `node,offline_s,online_s` (node
    names as in the topology; seconds of virtual time; an empty `online_s`: never back).
    Overlapping intervals of a node are merged. `ConfigError` names the file and line."""
    path = Path(path)
    index = {n: i for i, n in enumerate(names)}
    offline: dict[int, list[tuple[float, float]]] = {}
    try:
        with path.open(newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != ["node", "offline_s", "online_s"]:
                raise ConfigError(
                    f"{path}:1: expected the header 'node,offline_s,online_s', got {header!r}"
                )
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 3:
                    raise ConfigError(f"{path}:{line}: expected 3 fields, got {len(row)}")
                node, off, on = (c.strip() for c in row)
                if node not in index:
                    raise ConfigError(f"{path}:{line}: node {node!r} is not in the topology")
                try:
                    a = float(off)
                    b = float(on) if on else math.inf
                except ValueError:
                    raise ConfigError(
                        f"{path}:{line}: offline_s/online_s must be numbers, got {off!r}, {on!r}"
                    ) from None
                if not (math.isfinite(a) and a >= 0 and b > a):
                    raise ConfigError(
                        f"{path}:{line}: need 0 <= offline_s < online_s, got {off!r}, {on!r}"
                    )
                offline.setdefault(index[node], []).append((a, b))
    except FileNotFoundError:
        raise ConfigError(f"{path}: availability trace not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read availability trace: {exc}") from None
    return Availability({p: _merge(v) for p, v in offline.items()})


def write_availability(av: Availability, path: str | Path, names: Sequence[str]) -> Path:
    """Write `av` in the format `load_availability` reads."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["node", "offline_s", "online_s"])
        for node, a, b in av.rows(names):
            w.writerow([node, repr(a), "" if math.isinf(b) else repr(b)])
    return path


def random_churn(
    n_peers: int,
    horizon_s: float,
    *,
    mean_up_s: float,
    mean_down_s: float,
    fraction: float = 1.0,
    seed: int = 0,
) -> Availability:
    """Random churn up to `horizon_s`: a seeded choice of round(fraction · N) peers
    alternate exponential online (mean `mean_up_s`) and offline (mean `mean_down_s`)
    periods, starting online. Same arguments, same trace."""
    if not (mean_up_s > 0 and mean_down_s > 0 and 0 <= fraction <= 1 and horizon_s >= 0):
        raise ConfigError(
            "random churn: need mean_up_s > 0, mean_down_s > 0, 0 <= fraction <= 1, horizon >= 0"
        )
    rng = np.random.default_rng([seed, n_peers])
    chosen = sorted(rng.choice(n_peers, size=round(fraction * n_peers), replace=False).tolist())
    offline: dict[int, list[tuple[float, float]]] = {}
    for p in chosen:
        # one stream per peer: a longer horizon extends the same trace
        rng = np.random.default_rng([seed, n_peers, p])
        t, spans = 0.0, []
        while True:
            t += float(rng.exponential(mean_up_s))
            if t >= horizon_s:
                break
            down = float(rng.exponential(mean_down_s))
            spans.append((t, t + down))
            t += down
        if spans:
            offline[int(p)] = spans
    return Availability(offline)


__all__ = [
    "BANDWIDTH",
    "LATENCY",
    "SPEED",
    "Availability",
    "link_model",
    "load_availability",
    "network_for",
    "random_churn",
    "speeds",
    "training_s",
    "write_availability",
]
