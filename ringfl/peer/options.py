"""What `ringfl peer` takes (`PeerOptions`), which node a process is, the run's data
session, and the exceptions that end a peer's run."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from ringfl.config import Config
from ringfl.data.parties import PartyData
from ringfl.engine.failure import DeadlinePolicy
from ringfl.errors import ConfigError, RingflError, TopologyError

#: Environment variables that name this process's node (first match wins): a node id,
#: then a peer index (position in the topology's node list).
NODE_ENV = "RINGFL_NODE"
INDEX_ENVS = ("RINGFL_PEER_INDEX", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


class PeerStopped(RingflError):
    """The peer stopped before the end of training (minority partition, start-up timeout)."""


class Rejoin(Exception):
    """This peer was declared gone by the others: rejoin as a new incarnation."""


@dataclass
class PeerOptions:
    """What `ringfl peer` takes (paths as given on the command line)."""

    topology: str
    config: str | Config  # a config file, or a config built in Python
    node: str | None = None
    keys: str | None = None
    out: str | None = None
    insecure: bool = False
    bind: str | None = None
    deadline: DeadlinePolicy = field(default_factory=DeadlinePolicy)
    startup_timeout_s: float = 120.0
    join_timeout_s: float = 120.0
    save_deltas: bool = False
    min_round_s: float = 0.0
    fresh: bool = False
    faults: tuple[str, ...] = ()
    verbose: bool = False
    console: TextIO | None = sys.stderr
    data: str | None = None  # this party's own training file (`--data`)
    val: str | None = None  # its own validation file (`--val`)
    party: PartyData | None = None  # this party's data, loaded already (launch, Python API)
    model: Any = None  # a model factory or layer list (Python API), else the config's
    # this party's engine workload, built from its peer index (Python API: a statistics
    # job of `ringfl.workloads`); None: the config's neural model on the party's data
    workload: Callable[[int], Any] | None = None
    max_elements: int | None = None  # largest vector a sum may carry (default: the model's)
    hold: tuple[int, str] | None = None  # test hook: before round R, wait until FILE exists


def resolve_node(graph: Any, node: str | None, env: Mapping[str, str] | None = None) -> Hashable:
    """The topology node this process runs: `node` (matched against str(node id)), else
    $RINGFL_NODE, else a peer index from $RINGFL_PEER_INDEX, $SLURM_PROCID,
    $OMPI_COMM_WORLD_RANK or $PMI_RANK."""
    from ringfl.topology import peers

    env = dict(os.environ) if env is None else env
    nodes = peers(graph)
    by_name = {str(n): n for n in nodes}
    name = node if node is not None else env.get(NODE_ENV)
    if name is not None:
        if name not in by_name:
            shown = ", ".join(list(by_name)[:10])
            raise TopologyError(f"node {name!r} is not in the topology (nodes: {shown})")
        return by_name[name]
    for var in INDEX_ENVS:
        if var in env:
            try:
                i = int(env[var])
            except ValueError:
                raise ConfigError(f"${var} = {env[var]!r} is not a peer index") from None
            if not 0 <= i < len(nodes):
                raise ConfigError(f"${var} = {i}, but the topology has {len(nodes)} peers")
            return nodes[i]
    raise ConfigError(
        f"which node is this? give --node NAME or set ${NODE_ENV} (or a peer index in "
        f"${', $'.join(INDEX_ENVS)})"
    )


def data_session(seed: int, incarnations: dict[int, int]) -> int:
    """The u64 session of a run: from the seed and every starting peer's incarnation."""
    text = f"ringfl-run:{seed}:" + ",".join(f"{p}={i}" for p, i in sorted(incarnations.items()))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


__all__ = [
    "INDEX_ENVS",
    "NODE_ENV",
    "PeerOptions",
    "PeerStopped",
    "Rejoin",
    "data_session",
    "resolve_node",
]
