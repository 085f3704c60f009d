"""A fault schedule: what goes wrong, when, in rounds and sends (never in seconds), so that
the simulator and real peers replay the same run.

    [[faults]]
    kind = "crash"        # node dies in `round` right after its `after_sends`-th message left
    node = "2"
    round = 2
    after_sends = 3
    [[faults]]
    kind = "restart"      # a crashed node comes back; it is a member again from `round` on
    node = "2"
    round = 4
    [[faults]]
    kind = "wrong_loss"   # `node` declares the live `lost` gone in `round` (a false suspicion)
    node = "0"
    lost = "3"
    round = 1
    [[faults]]
    kind = "slow_peer"    # local training of `node` takes `factor` times longer
    node = "1"
    factor = 4.0
    [[faults]]
    kind = "slow_link"    # messages between `node` and `peer` move `factor` times slower
    node = "1"
    peer = "2"
    factor = 10.0
    [[faults]]
    kind = "partition"    # from `round` on, `nodes` are cut off from the others
    nodes = ["3", "4"]
    round = 2

Nodes are named as in the topology (str(node id)); `resolve` turns names into peer ids.
A schedule is plain data: the simulator carries it out on virtual time, a real peer
carries out its own crash (it kills itself), `ringfl launch` restarts, and every peer
pins a restarted peer's admission to its scheduled round (`Membership.not_before`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ringfl.errors import ConfigError

FAULT_KINDS = ("crash", "restart", "wrong_loss", "slow_peer", "slow_link", "partition")


@dataclass(frozen=True)
class Fault:
    """One scheduled fault (see the module docstring for the fields of each kind)."""

    kind: str
    node: str = ""
    round: int = 0
    after_sends: int = 0
    lost: str = ""
    peer: str = ""
    factor: float = 1.0
    nodes: tuple[str, ...] = ()


_FIELDS = {
    "crash": ("node", "round", "after_sends"),
    "restart": ("node", "round"),
    "wrong_loss": ("node", "lost", "round"),
    "slow_peer": ("node", "factor"),
    "slow_link": ("node", "peer", "factor"),
    "partition": ("nodes", "round"),
}
_REQUIRED = {
    "crash": ("node", "round"),
    "restart": ("node", "round"),
    "wrong_loss": ("node", "lost", "round"),
    "slow_peer": ("node", "factor"),
    "slow_link": ("node", "peer", "factor"),
    "partition": ("nodes", "round"),
}


def fault_from_dict(raw: Mapping[str, Any], where: str) -> Fault:
    """A `Fault` from a config table; `ConfigError` naming `where` and the field."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a table")
    kind = raw.get("kind")
    if kind not in _FIELDS:
        raise ConfigError(f"{where}.kind: must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
    allowed = {"kind", *_FIELDS[kind]}
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{where}.{key}: not a field of a {kind!r} fault "
                f"(fields: {', '.join(sorted(allowed))})"
            )
    for key in _REQUIRED[kind]:
        if key not in raw:
            raise ConfigError(f"{where}.{key}: a {kind!r} fault needs it")
    kw: dict[str, Any] = {"kind": kind}
    for key in ("node", "lost", "peer"):
        if key in raw:
            kw[key] = str(raw[key])
    for key in ("round", "after_sends"):
        if key in raw:
            v = raw[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{where}.{key}: must be an integer >= 0, got {v!r}")
            kw[key] = v
    if "factor" in raw:
        v = raw["factor"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 1:
            raise ConfigError(f"{where}.factor: must be a number >= 1, got {v!r}")
        kw["factor"] = float(v)
    if "nodes" in raw:
        v = raw["nodes"]
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}.nodes: must be a non-empty list of node names")
        kw["nodes"] = tuple(str(x) for x in v)
    return Fault(**kw)


@dataclass(frozen=True)
class FaultPlan:
    """A schedule resolved to peer ids (index in `topology.peers(graph)`)."""

    crashes: Mapping[int, tuple[int, int]]  # peer -> (round, after_sends)
    restarts: Mapping[int, int]  # peer -> round it is a member again
    wrong_losses: Mapping[int, tuple[tuple[int, int], ...]]  # round -> ((declarer, lost),)
    slow_peers: Mapping[int, float]
    slow_links: Mapping[tuple[int, int], float]  # (a, b) with a < b -> factor
    partitions: Mapping[int, frozenset[int]]  # round -> minority side

    @staticmethod
    def empty() -> FaultPlan:
        return FaultPlan({}, {}, {}, {}, {}, {})

    @property
    def admissions(self) -> dict[int, int]:
        """The round from which each scheduled rejoiner is a member again: a restart's
        round, or r + 2 for the victim of a false declaration in round r (its join request
        is summed in r + 1, where it is no longer a member)."""
        out = dict(self.restarts)
        for r, pairs in self.wrong_losses.items():
            for _, victim in pairs:
                out[victim] = max(out.get(victim, 0), r + 2)
        return out

    def crash_at(self, peer: int, round_index: int) -> int | None:
        """`after_sends` when `peer` crashes in `round_index`, else None."""
        c = self.crashes.get(peer)
        return c[1] if c is not None and c[0] == round_index else None

    @property
    def empty_plan(self) -> bool:
        return not any(
            (
                self.crashes,
                self.restarts,
                self.wrong_losses,
                self.slow_peers,
                self.slow_links,
                self.partitions,
            )
        )


def resolve(faults: Sequence[Fault], names: Sequence[str], *, source: str = "faults") -> FaultPlan:
    """Resolve node names (`names[i]` is peer i's name) and check the schedule is coherent."""
    index = {n: i for i, n in enumerate(names)}

    def peer(name: str, where: str) -> int:
        if name not in index:
            shown = ", ".join(list(index)[:10])
            raise ConfigError(f"{where}: node {name!r} is not in the topology (nodes: {shown})")
        return index[name]

    crashes: dict[int, tuple[int, int]] = {}
    restarts: dict[int, int] = {}
    wrong: dict[int, list[tuple[int, int]]] = {}
    slow: dict[int, float] = {}
    links: dict[tuple[int, int], float] = {}
    parts: dict[int, frozenset[int]] = {}
    for i, f in enumerate(faults):
        where = f"{source}[{i}]"
        if f.kind == "crash":
            p = peer(f.node, f"{where}.node")
            if p in crashes:
                raise ConfigError(f"{where}: node {f.node!r} crashes twice (one crash per node)")
            crashes[p] = (f.round, f.after_sends)
        elif f.kind == "restart":
            p = peer(f.node, f"{where}.node")
            if p not in crashes or crashes[p][0] >= f.round:
                raise ConfigError(
                    f"{where}: node {f.node!r} restarts in round {f.round}, which is not after "
                    "a crash of it"
                )
            if crashes[p][0] + 2 > f.round:
                raise ConfigError(
                    f"{where}: a node crashed in round r can be a member again from round r + 2 "
                    f"on (its loss is known in r, its join request is summed in r + 1); got "
                    f"crash in {crashes[p][0]}, restart in {f.round}"
                )
            restarts[p] = f.round
        elif f.kind == "wrong_loss":
            a, b = peer(f.node, f"{where}.node"), peer(f.lost, f"{where}.lost")
            if a == b:
                raise ConfigError(f"{where}: a node cannot declare itself lost")
            wrong.setdefault(f.round, []).append((a, b))
        elif f.kind == "slow_peer":
            slow[peer(f.node, f"{where}.node")] = f.factor
        elif f.kind == "slow_link":
            a, b = peer(f.node, f"{where}.node"), peer(f.peer, f"{where}.peer")
            links[(min(a, b), max(a, b))] = f.factor
        elif f.kind == "partition":
            side = frozenset(peer(x, f"{where}.nodes") for x in f.nodes)
            if 2 * len(side) >= len(names):
                raise ConfigError(
                    f"{where}.nodes: the cut-off side must be a minority of the "
                    f"{len(names)} peers, got {len(side)}"
                )
            parts[f.round] = side
    return FaultPlan(crashes, restarts, {r: tuple(v) for r, v in wrong.items()}, slow, links, parts)


__all__ = ["FAULT_KINDS", "Fault", "FaultPlan", "fault_from_dict", "resolve"]
