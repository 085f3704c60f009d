"""Ring broadcast as a sans-I/O state machine: the root's buffer travels along the ring.

The root cuts its buffer into fixed segments of `segment_bytes` (the last one shorter; an
empty buffer is one empty segment) and sends them to its successor; every other peer
stores each segment and forwards it at once, so segments pipeline along the ring. The last
peer before the root does not forward. Header fields: step 0, chunk = number of segments,
segment = index. Works for any wire dtype; uint8 carries blobs (state transfer, specs).

A receiver either knows the length (an int; the buffer is allocated once and segments are
copied into place) or does not (`None`): then it learns the segment count from the first
message, refuses more than `max_length` elements, keeps the received segments and joins
them once at the end (one copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ringfl.collective.allreduce import ring_positions
from ringfl.collective.base import MachineBase, as_buffer, segment_elements, wire_dtype
from ringfl.collective.events import Action, Kind, Message
from ringfl.errors import ConfigError, WireError


class RingBroadcast(MachineBase):
    """Deliver the root's 1-D buffer to every ring member as `Done(buffer)`.

    `data_or_length`: at the root the buffer (ndarray, or bytes → uint8); elsewhere its
    length in elements, or `None` when unknown (then `max_length` bounds it). Non-roots
    give `dtype` (default uint8). The root is done right after `start()`; its result is
    its own buffer, which is sent zero-copy and must stay unmodified until the driver has
    finished the run.
    """

    kind = Kind.BROADCAST

    def __init__(
        self,
        peer: int,
        ring: Sequence[int],
        root: int,
        data_or_length: Any,
        *,
        dtype: Any = np.uint8,
        max_length: int | None = None,
        session: int = 0,
        round: int = 0,
        segment_bytes: int = 1 << 20,
    ) -> None:
        self.ring, self.position = ring_positions(peer, ring)
        if int(root) not in self.ring:
            raise ConfigError(f"broadcast root {root} is not in the ring {self.ring}")
        self.root = int(root)
        what = f"broadcast of peer {peer}"
        self.data: np.ndarray | None = None
        self.length: int | None
        if int(peer) == self.root:
            if isinstance(data_or_length, bytes | bytearray | memoryview):
                data_or_length = np.frombuffer(data_or_length, dtype=np.uint8)
            if not isinstance(data_or_length, np.ndarray):
                raise ConfigError(f"{what}: the root must give its buffer")
            self.data = as_buffer(data_or_length, what)
            dt = self.data.dtype
            self.length = self.data.shape[0]
        else:
            dt = wire_dtype(dtype, what)
            if data_or_length is None:
                if max_length is None:
                    raise ConfigError(f"{what}: unknown length needs max_length")
                self.length = None
            elif isinstance(data_or_length, int | np.integer) and int(data_or_length) >= 0:
                self.length = int(data_or_length)
            else:
                raise ConfigError(f"{what}: expected a length (int ≥ 0) or None")
        super().__init__(peer, session=session, round=round, dtype=dt)
        self.max_length = max_length
        self.per = segment_elements(segment_bytes, dt)
        n = len(self.ring)
        self.successor = self.ring[(self.position + 1) % n]
        self.predecessor = self.ring[(self.position - 1) % n]
        self.forwards = self.successor != self.root
        self.total: int | None = None
        self.out: np.ndarray | None = None
        self._parts: dict[int, np.ndarray] = {}
        if self.length is not None:
            self._set_total(max(1, -(-self.length // self.per)))
            if self.data is None:
                self.out = np.empty(self.length, dtype=dt)

    def _set_total(self, total: int) -> None:
        self.total = total
        self._seen = bytearray(total)
        self._remaining = total

    def start(self) -> list[Action]:
        if self.peer != self.root:
            return []
        assert self.data is not None and self.total is not None
        actions: list[Action] = []
        if self.successor != self.root:
            m = self.data.shape[0]
            for k in range(self.total):
                part = self.data[k * self.per : min((k + 1) * self.per, m)]
                actions.append(self._send(self.successor, 0, self.total, k, part))
        actions.append(self._finish(self.data))
        return actions

    def receive(self, message: Message) -> list[Action]:
        h = self._check_common(message)
        name = f"broadcast of peer {self.peer}"
        if h.sender != self.predecessor:
            raise WireError(f"{name}: message from {h.sender}, expected {self.predecessor}")
        if h.step != 0:
            raise WireError(f"{name}: step {h.step}, expected 0")
        if self.total is None:
            assert self.max_length is not None
            if h.chunk < 1 or (h.chunk - 1) * self.per > self.max_length:
                raise WireError(f"{name}: {h.chunk} segments exceed max_length {self.max_length}")
        elif h.chunk != self.total:
            raise WireError(f"{name}: {h.chunk} segments announced, expected {self.total}")
        total = h.chunk
        if h.segment >= total:
            raise WireError(f"{name}: segment {h.segment} ≥ {total}")
        last = h.segment == total - 1
        if self.length is not None:
            want = min((h.segment + 1) * self.per, self.length) - h.segment * self.per
            ok = h.length == want
        elif last:
            ok = h.length <= self.per and (total - 1) * self.per + h.length <= self.max_length
        else:
            ok = h.length == self.per
        if not ok:
            raise WireError(f"{name}: segment {h.segment} of {total} has {h.length} elements")
        if self.total is not None and self._seen[h.segment]:
            raise WireError(f"{name}: duplicate segment {h.segment}")
        if self.total is None:
            self._set_total(total)
        self._seen[h.segment] = 1
        self._remaining -= 1
        payload = message.payload
        if self.out is not None:
            start = h.segment * self.per
            np.copyto(self.out[start : start + h.length], payload)
        else:
            self._parts[h.segment] = payload
        actions: list[Action] = []
        if self.forwards:  # pass on the received buffer itself (no copy in a driver)
            actions.append(self._send(self.successor, 0, total, h.segment, payload))
        if self._remaining == 0:
            if self.out is None:
                self.out = np.concatenate([self._parts[k] for k in range(total)])
                self._parts = {}
            actions.append(self._finish(self.out))
        return actions

    def expecting(self) -> frozenset[int]:
        if self._done or self.peer == self.root:
            return frozenset()
        return frozenset({self.predecessor})

    def _needs(self) -> set[int]:
        if self.peer == self.root:
            return set()
        n = len(self.ring)
        i = self.ring.index(self.root)
        path = set()
        while self.ring[i] != self.peer:
            path.add(self.ring[i])
            i = (i + 1) % n
        return path
