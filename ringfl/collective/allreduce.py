"""Ring all-reduce (sum) as a sans-I/O state machine: reduce-scatter, then all-gather.

With N peers in ring order and an M-element buffer split into N chunks, the ring takes
2(N−1) steps and each peer sends 2(N−1)/N·M elements (the bandwidth-optimal bound).
Chunk c spans elements [c·M//N, (c+1)·M//N). At step s the peer at ring position r

    reduce-scatter (s < N−1):     sends chunk (r−s) mod N,     receives chunk (r−s−1) mod N
    all-gather (s = N−1+t):       sends chunk (r+1−t) mod N,   receives chunk (r−t) mod N

A received payload that is writable belongs to the machine (see `events.Message`): a
partial sum is added into it and that buffer is forwarded, and all-gather segments are
forwarded as received, so a ZeroMQ driver passes them on without a copy. Then no slice of
`out` leaves by reference (`out_shared` stays False unless `out` is `data`), and a caller
may reuse `out` as soon as the machine is done, before its driver has finished sending.

Each chunk is cut into segments of at most `segment_bytes` (at least two when the chunk has
two elements or more; an empty chunk is one empty segment), and every received segment is
handled on its own: add own contribution (reduce-scatter) or store (all-gather), then
forward it at the next step at once. So receiving, adding and sending pipeline segment by
segment, and messages may arrive in any order.

The result buffer (M elements) is allocated once. With read-only payloads it also holds
partial sums that are sent from it; such a slice is only overwritten by a later step whose
message is causally after the successor received the earlier one, so zero-copy sends are safe.
Integer dtypes wrap modulo 2^k (numpy array addition, no upcast).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ringfl.collective.base import (
    MachineBase,
    check_out,
    read_source,
    resolve_input,
    segment_elements,
    split,
    wire_dtype,
)
from ringfl.collective.events import Action, Kind, Message
from ringfl.errors import WireError

#: `source(start, stop)` returns this peer's contribution for elements [start, stop).
Source = Callable[[int, int], np.ndarray]


def ring_positions(peer: int, ring: Sequence[int]) -> tuple[list[int], int]:
    """Validate a ring (distinct int peer ids containing `peer`); return (ring, position)."""
    ids = [int(p) for p in ring]
    if len(set(ids)) != len(ids):
        raise ValueError(f"ring {ids} lists a peer twice")
    if int(peer) not in ids:
        raise ValueError(f"peer {peer} is not in the ring {ids}")
    return ids, ids.index(int(peer))


class RingAllReduce(MachineBase):
    """Sum of every ring member's 1-D buffer, delivered to each member as `Done(result)`.

    Give the contribution either as `data` (a 1-D array; it is read, never written) or as
    `source(start, stop)` plus `length` and `dtype` (or a `data` array that only supplies
    them). `source` is called lazily, once per segment, when the machine first needs that
    segment: at `start()` for the segments of its first chunk (1/N of the buffer), later
    for each segment as the partial sum for it arrives. Arrays returned by `source` for
    the first chunk are sent as they are (zero-copy), so they must not be modified until
    the driver has finished the run.

    `out` (optional) is where the result goes: a preallocated buffer to reuse across
    rounds, or `data` itself for an in-place all-reduce (each element of `data` is read
    before it is overwritten). All members must use the same length, dtype and
    `segment_bytes`. `bytes_sent` counts
    payload bytes, ≈ 2(N−1)/N·M·itemsize.
    """

    kind = Kind.ALLREDUCE

    def __init__(
        self,
        peer: int,
        ring: Sequence[int],
        data: Any = None,
        *,
        length: int | None = None,
        dtype: Any = None,
        source: Source | None = None,
        out: np.ndarray | None = None,
        session: int = 0,
        round: int = 0,
        segment_bytes: int = 1 << 20,
    ) -> None:
        self.ring, self.position = ring_positions(peer, ring)
        what = f"all-reduce of peer {peer}"
        self._data, length, dtype = resolve_input(what, data, length, dtype, source)
        super().__init__(peer, session=session, round=round, dtype=wire_dtype(dtype, what))
        self.length = length
        self._source = source
        n = self.n = len(self.ring)
        self.successor = self.ring[(self.position + 1) % n]
        self.predecessor = self.ring[(self.position - 1) % n]
        per = segment_elements(segment_bytes, self.dtype)
        m = self.length
        bounds = [c * m // n for c in range(n + 1)]
        self.segments = [split(bounds[c], bounds[c + 1], per, 2) for c in range(n)]
        self.steps = 2 * (n - 1)
        # received[s][k]: segment k of step s has arrived
        self._received = [
            bytearray(len(self.segments[self._recv_chunk(s)])) for s in range(self.steps)
        ]
        self._remaining = sum(len(r) for r in self._received)
        self.out = check_out(what, out, m, self.dtype)
        # a slice of `out` went out by reference (an in-place all-reduce, or a driver
        # whose payloads are read-only): `out` must stay unchanged until the run ends
        self.out_shared = self._data is not None and np.may_share_memory(self._data, self.out)

    # -- ring arithmetic -------------------------------------------------------------

    def _recv_chunk(self, step: int) -> int:
        n, r = self.n, self.position
        if step < n - 1:
            return (r - step - 1) % n
        return (r - (step - (n - 1))) % n

    def _send_chunk(self, step: int) -> int:
        n, r = self.n, self.position
        if step < n - 1:
            return (r - step) % n
        return (r + 1 - (step - (n - 1))) % n

    def _own(self, start: int, stop: int) -> np.ndarray:
        if self._source is None:
            assert self._data is not None
            return self._data[start:stop]
        return read_source(self._source, self.peer, self.dtype, start, stop)

    # -- Machine protocol ---------------------------------------------------------------

    def start(self) -> list[Action]:
        if self.n == 1:
            np.copyto(self.out, self._own(0, self.length))
            return [self._finish(self.out)]
        chunk = self._send_chunk(0)
        return [
            self._send(self.successor, 0, chunk, k, self._own(a, b))
            for k, (a, b) in enumerate(self.segments[chunk])
        ]

    def receive(self, message: Message) -> list[Action]:
        h = self._check_common(message)
        if h.sender != self.predecessor:
            raise WireError(
                f"all-reduce of peer {self.peer}: message from peer {h.sender}, "
                f"expected ring predecessor {self.predecessor}"
            )
        step = h.step
        if step >= self.steps:
            raise WireError(f"all-reduce of peer {self.peer}: step {step} ≥ {self.steps}")
        chunk = self._recv_chunk(step)
        if h.chunk != chunk:
            raise WireError(
                f"all-reduce of peer {self.peer}: chunk {h.chunk} at step {step}, expected {chunk}"
            )
        segs = self.segments[chunk]
        if h.segment >= len(segs):
            raise WireError(
                f"all-reduce of peer {self.peer}: segment {h.segment} of chunk {chunk} "
                f"(has {len(segs)})"
            )
        a, b = segs[h.segment]
        if h.length != b - a:
            raise WireError(
                f"all-reduce of peer {self.peer}: segment {h.segment} of chunk {chunk} has "
                f"{h.length} elements, expected {b - a}"
            )
        seen = self._received[step]
        if seen[h.segment]:
            raise WireError(
                f"all-reduce of peer {self.peer}: duplicate step {step} segment {h.segment}"
            )
        payload = message.payload
        dst = self.out[a:b]
        if step < self.n - 1 and payload.flags.writeable:
            # a partial sum: add into the received buffer and forward that (a driver
            # passes it on without copying or tracking it); the last one, this peer's
            # finished chunk, is also kept, so `out` itself never leaves by reference
            np.add(payload, self._own(a, b), out=payload)
            forward = payload
            if step == self.n - 2:
                np.copyto(dst, payload)
        elif step < self.n - 1:
            np.add(payload, self._own(a, b), out=dst)
            forward = dst
            self.out_shared = True
        else:
            np.copyto(dst, payload)
            forward = payload
        seen[h.segment] = 1
        self._remaining -= 1
        actions: list[Action] = []
        if step + 1 < self.steps:
            actions.append(self._send(self.successor, step + 1, chunk, h.segment, forward))
        if self._remaining == 0:
            actions.append(self._finish(self.out))
        return actions

    def expecting(self) -> frozenset[int]:
        return frozenset() if self._done or self.n == 1 else frozenset({self.predecessor})

    def _needs(self) -> set[int]:
        return set(self.ring) - {self.peer}
