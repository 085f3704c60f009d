"""Learning algorithms: per-round hooks that turn a peer's state into a collective and
apply its result (see `base`). `ring`: server-free FedAvg by (secure) ring all-reduce;
`gossip`: D-PSGD neighbour averaging; `selective`: Shokri-Shmatikov selective sharing;
`server`: the hub-and-spoke FedAvg baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx

from ringfl.algorithms.base import Algorithm, get_flat, set_flat
from ringfl.algorithms.gossip import GossipAverage
from ringfl.algorithms.ring import (
    SETUP_ROUND,
    RingAverage,
    SecureSettings,
    secure_available,
    sum_machine,
)
from ringfl.algorithms.selective import SelectiveAverage, shared_indices
from ringfl.algorithms.server import ServerAverage, StarSum
from ringfl.config import GOSSIP_NOT_MASKED, AlgorithmConfig
from ringfl.errors import ConfigError

ALGORITHM_NAMES = ("ring", "gossip", "selective", "server")


def ring_of(graph: nx.Graph) -> list[int]:
    """The ring order of `graph` as peer ids (indices in `topology.peers(graph)`)."""
    from ringfl.topology import peer_index, ring_order

    index = peer_index(graph)
    return [index[node] for node in ring_order(graph)]


def make_algorithm(
    cfg: AlgorithmConfig,
    peer: int,
    graph: nx.Graph,
    *,
    keys: Any = None,
    public_keys: Mapping[int, bytes | str] | None = None,
    ring: Sequence[int] | None = None,
    mixing_row: Mapping[int, float] | None = None,
) -> Algorithm:
    """The algorithm object for `peer` in `graph` as configured. `server` uses a hub with
    id N (one past the last peer) and ignores the graph's edges.

    Secure ring/selective (`cfg.secure`): `keys` is this peer's `PeerKeys`;
    `public_keys` maps peer ids to public keys (default: the nodes' `public_key`
    attributes in the topology file). `ring` (peer ids in ring order) and `mixing_row`
    ({j: W_ij}) may be passed precomputed, e.g. once for all simulated peers."""
    from ringfl.topology import PUBLIC_KEY, mixing_rows, peers

    secure = None
    if cfg.secure and cfg.name in ("ring", "selective"):
        if keys is None:
            raise ConfigError(f"algorithm.secure: peer {peer} has no key pair for secure sums")
        if public_keys is None:
            nodes = peers(graph)
            missing = [str(v) for v in nodes if not graph.nodes[v].get(PUBLIC_KEY)]
            if missing:
                raise ConfigError(
                    f"algorithm.secure: topology nodes without public_key: {', '.join(missing[:8])}"
                )
            public_keys = {i: graph.nodes[v][PUBLIC_KEY] for i, v in enumerate(nodes)}
        secure = SecureSettings(keys, dict(public_keys), clip=cfg.clip)
    if cfg.name in ("ring", "selective") and ring is None:
        ring = ring_of(graph)
    if cfg.name == "ring":
        return RingAverage(ring, secure=secure)
    if cfg.name == "selective":
        return SelectiveAverage(ring, cfg.share_fraction, secure=secure)
    if cfg.name == "gossip":
        if cfg.secure:  # a Config built without validation: still never send plain models
            raise ConfigError(f"algorithm.secure: {GOSSIP_NOT_MASKED}")
        return GossipAverage(mixing_rows(graph)[peer] if mixing_row is None else mixing_row)
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
    "SETUP_ROUND",
    "SecureSettings",
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
