"""One gossip (neighbour-averaging) step as a sans-I/O state machine: x_i ← Σ_j W_ij x_j.

The peer sends its whole buffer, segment by segment, to every neighbour j ≠ i with
W_ij > 0 and expects the same neighbours' buffers back: the topology must be symmetric
(W_ij > 0 ⇔ W_ji > 0), which Metropolis–Hastings weights on an undirected graph are.

Segment k of the result is computed once segment k has arrived from every neighbour, by
adding the terms in a fixed order (own term first, then neighbours by increasing id), so
the result is bit-for-bit independent of arrival order. Received segments are held (as
the driver delivered them, no copy) until their segment is complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ringfl.collective.base import MachineBase, as_buffer, segment_elements, split
from ringfl.collective.events import Action, Kind, Message


def weights_row(weights: Any, peer: int) -> dict[int, float]:
    """Row `peer` of a mixing matrix (numpy array, peers indexed 0..n−1) as {j: W_ij > 0}."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or not 0 <= peer < w.shape[0]:
        raise ValueError(f"mixing matrix of shape {w.shape} has no row for peer {peer}")
    return {int(j): float(w[peer, j]) for j in np.flatnonzero(w[peer])}


class NeighbourAverage(MachineBase):
    """x_i ← W_ii·x_i + Σ_{j≠i} W_ij·x_j for a float buffer `data` (float32 or float64).

    `weights_row` maps peer ids to W_ij; entries ≤ 0 are ignored, W_ii is the entry for
    this peer itself (0 when absent). Weights are used as given (a row of a doubly
    stochastic matrix keeps the average). The result is a new array; `data` is sent
    zero-copy and must stay unmodified until the driver has finished the run.
    """

    kind = Kind.GOSSIP

    def __init__(
        self,
        peer: int,
        weights_row: Mapping[int, float],
        data: Any,
        *,
        session: int = 0,
        round: int = 0,
        segment_bytes: int = 1 << 20,
    ) -> None:
        x = as_buffer(data, f"gossip of peer {peer}")
        if x.dtype.kind != "f":
            raise ValueError(f"gossip of peer {peer}: needs a float buffer, got {x.dtype.name}")
        super().__init__(peer, session=session, round=round, dtype=x.dtype)
        self.x = x
        self.self_weight = 0.0
        self.weights: dict[int, float] = {}
        for j, w in weights_row.items():
            w = float(w)
            if not np.isfinite(w):
                raise ValueError(f"gossip of peer {peer}: weight W[{peer},{j}] = {w}")
            if int(j) == self.peer:
                self.self_weight = w
            elif w > 0:
                self.weights[int(j)] = w
        self.neighbours = sorted(self.weights)
        self.segments = split(0, x.shape[0], segment_elements(segment_bytes, x.dtype))
        # pending[k][j]: segment k from neighbour j, held until all neighbours sent k
        self._pending: list[dict[int, np.ndarray]] = [{} for _ in self.segments]
        self._complete = 0
        self._missing = {j: len(self.segments) for j in self.neighbours}
        self.out = np.empty_like(x)

    def start(self) -> list[Action]:
        actions: list[Action] = [
            self._send(j, 0, 0, k, self.x[a:b])
            for j in self.neighbours
            for k, (a, b) in enumerate(self.segments)
        ]
        if not self.neighbours:
            for k in range(len(self.segments)):
                self._combine(k)
            actions.append(self._finish(self.out))
        return actions

    def receive(self, message: Message) -> list[Action]:
        name = f"gossip of peer {self.peer}"
        h = self._accept_segment(message, name, self.weights, 0, self.segments, self._pending)
        pending = self._pending[h.segment]
        self._missing[h.sender] -= 1
        if len(pending) == len(self.neighbours):
            self._combine(h.segment)
            if self._complete == len(self.segments):
                return [self._finish(self.out)]
        return []

    def _combine(self, k: int) -> None:
        a, b = self.segments[k]
        dst = self.out[a:b]
        np.multiply(self.x[a:b], self.dtype.type(self.self_weight), out=dst)
        pending = self._pending[k]
        if pending:
            tmp = np.empty(b - a, dtype=self.dtype)
            for j in self.neighbours:
                np.multiply(pending[j], self.dtype.type(self.weights[j]), out=tmp)
                np.add(dst, tmp, out=dst)
        self._pending[k] = {}
        self._complete += 1

    def expecting(self) -> frozenset[int]:
        if self._done:
            return frozenset()
        return frozenset(j for j, m in self._missing.items() if m > 0)

    def _needs(self) -> set[int]:
        return set(self.neighbours)
