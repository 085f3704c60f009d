"""Learning algorithms: per-round hooks that turn a peer's state into a collective and
apply its result (see `base`). `ring`: server-free FedAvg by (secure) ring all-reduce;
`gossip`: D-PSGD neighbour averaging; `selective`: Shokri-Shmatikov selective sharing;
`server`: the hub-and-spoke FedAvg baseline."""

from __future__ import annotations

import networkx as nx

from ringfl.algorithms.base import Algorithm, get_flat, set_flat
from ringfl.algorithms.gossip import GossipAverage
from ringfl.algorithms.ring import RingAverage, secure_available, sum_machine
from ringfl.algorithms.selective import SelectiveAverage, shared_indices
from ringfl.algorithms.server import ServerAverage, StarSum
from ringfl.config import AlgorithmConfig
from ringfl.errors import ConfigError

ALGORITHM_NAMES = ("ring", "gossip", "selective", "server")


def ring_of(graph: nx.Graph) -> list[int]:
    """The ring order of `graph` as peer ids (indices in `topology.peers(graph)`)."""
    from ringfl.topology import peer_index, ring_order

    index = peer_index(graph)
    return [index[node] for node in ring_order(graph)]


def make_algorithm(cfg: AlgorithmConfig, peer: int, graph: nx.Graph) -> Algorithm:
    """The algorithm object for `peer` in `graph` as configured. `server` uses a hub with
    id N (one past the last peer) and ignores the graph's edges."""
    from ringfl.topology import mixing_matrix, peers

    if cfg.name == "ring":
        return RingAverage(ring_of(graph), secure=cfg.secure)
    if cfg.name == "selective":
        return SelectiveAverage(ring_of(graph), cfg.share_fraction, secure=cfg.secure)
    if cfg.name == "gossip":
        w = mixing_matrix(graph)
        return GossipAverage({j: float(w[peer, j]) for j in range(w.shape[0]) if w[peer, j] > 0})
    if cfg.name == "server":
        n = len(peers(graph))
        return ServerAverage(hub=n, clients=range(n))
    raise ConfigError(
        f"algorithm.name must be one of {', '.join(ALGORITHM_NAMES)}; got {cfg.name!r}"
    )


__all__ = [
    "ALGORITHM_NAMES",
    "Algorithm",
    "GossipAverage",
    "RingAverage",
    "SelectiveAverage",
    "ServerAverage",
    "StarSum",
    "get_flat",
    "make_algorithm",
    "ring_of",
    "secure_available",
    "set_flat",
    "shared_indices",
    "sum_machine",
]
