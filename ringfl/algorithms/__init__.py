"""Learning algorithms on flat vectors (see `base`), in one registry table: `ring`
(server-free FedAvg by (secure) ring all-reduce), `gossip` (D-PSGD neighbour averaging),
`selective` (Shokri-Shmatikov selective sharing), `server` (the hub-and-spoke FedAvg
baseline). FedProx is `ring` with `train.prox_mu` > 0 (a local-training option)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ringfl.algorithms.base import (
    Algorithm,
    RoundInput,
    SumResult,
    get_flat,
    set_flat,
    weighted_mean,
    weighted_payload,
)
from ringfl.algorithms.gossip import GossipAverage
from ringfl.algorithms.ring import RingAverage
from ringfl.algorithms.selective import SelectiveAverage, shared_indices
from ringfl.algorithms.server import ServerAverage
from ringfl.config import GOSSIP_NOT_MASKED, AlgorithmConfig
from ringfl.errors import ConfigError


@dataclass(frozen=True)
class AlgorithmEntry:
    """One row of the registry: how to build the algorithm, whether it can mask its sums,
    and whether real peers run it (`ringfl peer`) or only the simulator."""

    build: Callable[[AlgorithmConfig], Algorithm]
    secure: bool
    real_peers: bool
    summary: str


REGISTRY: dict[str, AlgorithmEntry] = {
    "ring": AlgorithmEntry(
        lambda c: RingAverage(), True, True, "FedAvg by (secure) ring all-reduce"
    ),
    "gossip": AlgorithmEntry(
        lambda c: GossipAverage(), False, True, "D-PSGD: one neighbour-averaging step a round"
    ),
    "selective": AlgorithmEntry(
        lambda c: SelectiveAverage(c.share_fraction),
        True,
        True,
        "share a fraction of the delta entries per round (DSSGD)",
    ),
    "server": AlgorithmEntry(
        lambda c: ServerAverage(),
        False,
        False,
        "baseline: a hub (auxiliary participant) sums the deltas",
    ),
}
ALGORITHM_NAMES = tuple(REGISTRY)


def make_algorithm(cfg: AlgorithmConfig) -> Algorithm:
    """The algorithm object `cfg` names (`cfg` is validated by `ringfl.config`).

    Never sends plain models silently: gossip with `secure = true` (a config built without
    validation) is a `ConfigError`."""
    try:
        entry = REGISTRY[cfg.name]
    except KeyError:
        raise ValueError(
            f"algorithm {cfg.name!r} is not one of {', '.join(ALGORITHM_NAMES)}"
        ) from None
    if cfg.name == "gossip" and cfg.secure:
        raise ConfigError(f"algorithm.secure: {GOSSIP_NOT_MASKED}")
    return entry.build(cfg)


def masks(cfg: AlgorithmConfig) -> bool:
    """Whether the sums of this configuration are masked (secure aggregation)."""
    return cfg.secure and REGISTRY[cfg.name].secure


__all__ = [
    "ALGORITHM_NAMES",
    "REGISTRY",
    "Algorithm",
    "AlgorithmEntry",
    "GossipAverage",
    "RingAverage",
    "RoundInput",
    "SelectiveAverage",
    "ServerAverage",
    "SumResult",
    "get_flat",
    "make_algorithm",
    "masks",
    "set_flat",
    "shared_indices",
    "weighted_mean",
    "weighted_payload",
]
