"""The real-peer secure sum: one party per process, ZeroMQ links with CURVE, each party
holding only its own data. A thin driver: it only moves vectors.

    with PeerSecureSum("topo.json", node="a", keys="keys/") as secure_sum:
        result = run_party(workload, secure_sum)

It reuses the peer pieces: `PeerLink` (CURVE-authenticated links, adaptive deadlines,
probes), `CurveSecurity` (the topology's public keys as the allowlist) and the identity
files of `ringfl keys generate`. Each call runs `SecureRingAllReduce` machines over the
topology's ring order, with the same two rounds (SCALE, SUM) and the same resolution as
`ringfl.workloads.securesum.SimulatedSecureSum`, so a real run and a simulated run give
the same sums, bit for bit.

Start-up: the first call agrees on a fresh session with a plain ring all-reduce of random
numbers (the session binds the masking keys; no two runs share one); it doubles as the
start barrier, so its deadline (`startup_s`) allows for peers that start late.
A party that drops out makes the workload fail with an error naming it: a workload's state
is only consistent when every sum has every party.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Hashable
from typing import Any

import numpy as np

from ringfl.collective.allreduce import RingAllReduce
from ringfl.errors import ConfigError, RingflError, TopologyError
from ringfl.secure.aggregate import SecureRingAllReduce
from ringfl.workloads.securesum import (
    MASKING,
    SumStats,
    agreed_exponent,
    check_bound,
    exponent_onehot,
    resolution,
    scale_down,
    scale_up,
)


def _resolve_node(nodes: list[Hashable], node: str | None) -> Hashable:
    """The node named `node`, else $RINGFL_NODE, else the index in $RINGFL_PEER_INDEX.
    (As `ringfl.peer.node.resolve_node`, which is not imported here: it pulls in torch,
    seconds of start-up per party that a tabular workload does not need.)"""
    by_name = {str(n): n for n in nodes}
    name = node if node is not None else os.environ.get("RINGFL_NODE")
    if name is not None:
        if name not in by_name:
            shown = ", ".join(list(by_name)[:10])
            raise TopologyError(f"node {name!r} is not in the topology (nodes: {shown})")
        return by_name[name]
    index = os.environ.get("RINGFL_PEER_INDEX")
    if index is not None and index.isdigit() and int(index) < len(nodes):
        return nodes[int(index)]
    raise ConfigError("which node is this? give --node NAME (or set $RINGFL_NODE)")


class PeerSecureSum:
    """A party's `secure_sum` over real peers (see the module docstring). `node`: this
    party's node in the topology file; `keys`: its key directory (or one with a
    sub-directory per node). `insecure`: plain links without CURVE (masking still on)."""

    def __init__(
        self,
        topology_path: str | os.PathLike[str],
        node: str | None,
        keys: str | os.PathLike[str] | None,
        *,
        insecure: bool = False,
        deadline_s: float = 5.0,
        startup_s: float = 60.0,
        max_elements: int = 1 << 26,
    ) -> None:
        import zmq

        from ringfl import topology
        from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy
        from ringfl.peer.curve import CurveSecurity
        from ringfl.peer.identity import Identity, find_identity_dir, topology_keys
        from ringfl.peer.link import PeerLink

        src = str(topology_path)
        g = topology.load(topology_path)
        self.nodes: list[Hashable] = topology.peers(g)
        self.n = len(self.nodes)
        if self.n < 2:
            raise TopologyError(f"{src}: a secure sum needs at least 2 parties")
        self.node = _resolve_node(self.nodes, node)
        index = topology.peer_index(g)
        self.peer = index[self.node]
        missing = [repr(x) for x in self.nodes if topology.ADDRESS not in g.nodes[x]]
        if missing:
            raise TopologyError(f"{src}: no address for node(s) {', '.join(missing[:8])}")
        endpoints = {i: g.nodes[x][topology.ADDRESS] for i, x in enumerate(self.nodes)}
        self.ring = [index[x] for x in topology.ring_order(g, source=src)]
        tk = topology_keys(g, src)
        if tk.mask is None:
            raise ConfigError(
                f"{src} has no mask_key attributes: run `ringfl keys generate --topology {src} "
                "--out KEYS` (secure sums need the masking keys)"
            )
        if not insecure and tk.curve is None:
            raise ConfigError(f"{src} has no public keys for CURVE links (or pass --insecure)")
        if keys is None:
            raise ConfigError("--keys DIR is needed (this party's key directory)")
        self.identity = Identity.load(find_identity_dir(keys, self.node))
        if tk.mask[self.peer] != self.identity.mask.public_bytes:
            raise ConfigError(f"the mask key in {keys} is not the mask_key of node {self.node!r}")
        self.public_keys = tk.mask
        self.context: zmq.Context | None = zmq.Context()
        self.security = None
        authenticate = None
        if not insecure:
            assert tk.curve is not None
            self.security = CurveSecurity(self.identity, self.peer, tk.curve, self.context)
            self.security.start()
            authenticate = self.security.authenticated_peer
        self.deadline_s = deadline_s
        self.startup_s = startup_s
        self._policy = DeadlinePolicy
        self._deadline_cls = AdaptiveDeadline
        self.link = PeerLink(
            self.peer,
            endpoints,
            n_peers=self.n,
            deadline=AdaptiveDeadline(
                DeadlinePolicy(min_s=startup_s, max_s=startup_s * 2, initial_s=startup_s)
            ),
            authenticate=authenticate,
            context=self.context,
            security=self.security,
            max_elements=max_elements,
            linger_ms=5000,
        )
        self.link.set_endpoints(endpoints)
        self.session: int | None = None
        self.round = 0
        self.stats = SumStats(bytes_sent={self.peer: 0})
        self.last_resolution = 0.0

    # -- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> PeerSecureSum:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None  # type: ignore[assignment]
        if self.security is not None:
            self.security.stop()
            self.security = None
        if self.context is not None:
            self.context.term()
            self.context = None

    # -- sums -------------------------------------------------------------------------------

    def _agree_session(self) -> None:
        """A shared fresh session (and a start barrier): the ring all-reduce of every
        party's random numbers; every party hashes the same sum."""
        mine = np.frombuffer(os.urandom(8), dtype=np.uint16).astype(np.float64)
        machine = RingAllReduce(self.peer, self.ring, mine, session=0, round=0)
        total = self.link.run_machine(machine, round=0)
        digest = hashlib.sha256(np.asarray(total, dtype=np.float64).tobytes()).digest()
        self.session = int.from_bytes(digest[:8], "big") or 1
        self.link.data_session = self.session
        self.link.deadline = self._deadline_cls(
            self._policy(min_s=self.deadline_s, initial_s=self.deadline_s)
        )
        self.link.hard_limit_s = 2 * self.link.deadline.policy.max_s + 5.0

    def _wire_bytes(self) -> int:
        from ringfl.wire import HEADER_SIZE

        return self.link.bytes_sent + self.link.messages_sent * HEADER_SIZE

    def masked_sum(self, v: np.ndarray) -> np.ndarray:
        """One secure all-reduce round of a vector within ±1."""
        if self.session is None:
            self._agree_session()
        assert self.session is not None
        t0 = time.perf_counter()
        self.round += 1
        machine = SecureRingAllReduce(
            self.peer,
            self.ring,
            np.ascontiguousarray(v, dtype=np.float64),
            self.identity.mask,
            self.public_keys,
            session=self.session,
            round=self.round,
            masking=MASKING,
        )
        sent0 = self._wire_bytes()
        total = self.link.run_machine(machine, round=self.round)
        if machine.members != tuple(self.ring):
            gone = sorted(set(self.ring) - set(machine.members))
            names = ", ".join(str(self.nodes[p]) for p in gone)
            raise RingflError(f"party {names} dropped out of secure sum {self.round}; stopping")
        self.stats.rounds += 1
        self.stats.bytes_sent[self.peer] += self._wire_bytes() - sent0
        self.stats.seconds += time.perf_counter() - t0
        return np.array(total, dtype=np.float64)

    def __call__(self, v: np.ndarray, exponent: int | None = None) -> np.ndarray:
        """This party's share of a secure sum: its vector in, the sum over all parties out
        (`exponent`: the workload's public bound, as in `SimulatedSecureSum`)."""
        v = np.asarray(v, dtype=np.float64)
        if exponent is None:
            e = agreed_exponent(self.masked_sum(exponent_onehot(v)))
        else:
            e = int(exponent)
            check_bound(v, e, f"party {self.nodes[self.peer]}")
        total = scale_up(self.masked_sum(scale_down(v, e)), e)
        self.last_resolution = resolution(self.n, e)
        self.stats.worst_resolution = max(self.stats.worst_resolution, self.last_resolution)
        self.stats.sums += 1
        self.stats.elements += int(v.shape[0])
        return total

    def summary(self) -> dict[str, Any]:
        return {
            "node": str(self.node),
            "parties": self.n,
            "secure_sums": self.stats.sums,
            "rounds": self.stats.rounds,
            "bytes_sent": self.stats.bytes_sent[self.peer],
            "seconds_in_sum": round(self.stats.seconds, 6),
        }


__all__ = ["PeerSecureSum"]
