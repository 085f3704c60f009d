"""The star sum of the server-FedAvg baseline (a hub adds the clients' buffers), as a
sans-I/O machine with two roles.

Each client sends its buffer to the hub (segment by segment, step 0); once every client's
segment k is in, the hub adds them in increasing client-id order (deterministic) and sends
the sum of segment k back to every client (step 1). Everyone finishes with the same sum.
Each client sends M elements and the hub N*M: the hub's link is the bottleneck the ring
avoids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ringfl.collective.base import MachineBase, segment_elements, split, wire_dtype
from ringfl.collective.events import Action, Kind, Message


class StarSum(MachineBase):
    """Sum of the clients' buffers, computed by `hub`. A client passes `data`; the hub
    passes `length` and `dtype` (it contributes nothing)."""

    kind = Kind.ALLREDUCE

    def __init__(
        self,
        peer: int,
        hub: int,
        clients: Sequence[int],
        data: Any = None,
        *,
        length: int | None = None,
        dtype: Any = np.float32,
        session: int = 0,
        round: int = 0,
        segment_bytes: int = 1 << 20,
    ) -> None:
        self.hub = int(hub)
        self.clients = sorted(int(c) for c in clients)
        if self.hub in self.clients or len(set(self.clients)) != len(self.clients):
            raise ValueError(f"star: hub {hub} and clients {list(clients)} must be distinct")
        self.is_hub = int(peer) == self.hub
        if not self.is_hub and int(peer) not in self.clients:
            raise ValueError(f"star: peer {peer} is neither the hub nor a client")
        if self.is_hub:
            if length is None:
                raise ValueError("star: the hub needs `length`")
            dt = wire_dtype(dtype, "star hub")
            self.data = None
        else:
            self.data = np.ascontiguousarray(np.asarray(data))
            if self.data.ndim != 1:
                raise ValueError(f"star: client {peer} data must be 1-D")
            dt = wire_dtype(self.data.dtype, f"star client {peer}")
            length = self.data.shape[0]
        super().__init__(peer, session=session, round=round, dtype=dt)
        self.length = int(length)
        self.segments = split(0, self.length, segment_elements(segment_bytes, dt))
        self.out = np.zeros(self.length, dtype=dt)
        # hub: pending[k][client] = segment k from that client; client: segments received
        self._pending: list[dict[int, np.ndarray]] = [{} for _ in self.segments]
        self._missing = len(self.segments) * (len(self.clients) if self.is_hub else 1)
        self._left = {c: len(self.segments) for c in (self.clients if self.is_hub else [hub])}

    @property
    def members(self) -> tuple[int, ...]:
        """The clients: a star has no recovery, so every client's input is in the sum."""
        return tuple(self.clients)

    def start(self) -> list[Action]:
        if self.is_hub:
            if not self.clients:
                return [self._finish(self.out)]
            return []
        assert self.data is not None
        return [
            self._send(self.hub, 0, 0, k, self.data[a:b]) for k, (a, b) in enumerate(self.segments)
        ]

    def receive(self, message: Message) -> list[Action]:
        name = f"star {'hub' if self.is_hub else 'client'} {self.peer}"
        expected_step, senders = (0, self.clients) if self.is_hub else (1, [self.hub])
        h = self._accept_segment(
            message, name, senders, expected_step, self.segments, self._pending
        )
        pending = self._pending[h.segment]
        a, b = self.segments[h.segment]
        self._missing -= 1
        self._left[h.sender] -= 1
        actions: list[Action] = []
        if self.is_hub:
            if len(pending) == len(self.clients):
                dst = self.out[a:b]
                for c in self.clients:  # fixed order: bit-for-bit deterministic
                    np.add(dst, pending[c], out=dst)
                self._pending[h.segment] = {}
                actions += [self._send(c, 1, 0, h.segment, dst) for c in self.clients]
        else:
            np.copyto(self.out[a:b], message.payload)
            self._pending[h.segment] = {h.sender: self.out[a:b]}
        if self._missing == 0:
            actions.append(self._finish(self.out))
        return actions

    def expecting(self) -> frozenset[int]:
        if self._done:
            return frozenset()
        return frozenset(c for c, left in self._left.items() if left > 0)

    def _needs(self) -> set[int]:
        return set(self.clients) if self.is_hub else {self.hub}


__all__ = ["StarSum"]
