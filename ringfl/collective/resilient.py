"""Collectives that survive lost peers, for real peers without secure masking (the secure
all-reduce has its own recovery, `ringfl.secure.aggregate`).

`RetryingRingSum`: a plain ring all-reduce that, when peers are lost, starts a new attempt
among the survivors (ring order, gaps skipped). An attempt is named by a tag derived from
the set of lost peers, carried in the high bits of the header's `step`, so messages of
different attempts never mix: a message of another attempt with more lost peers is held
back (this peer will learn of them), one with fewer is stale and rejected. A peer that
already holds the sum when a loss is reported keeps it and hands it on (`result_for`/
`adopt`): the driver sends it to the peers that still ask (a RESULT control message), so
once any peer finished with a sum, every survivor ends with that same sum.

`ResilientNeighbourAverage`: a gossip step that drops a lost neighbour's edge: its weight
moves to the peer itself, and the segments still missing are computed without it.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ringfl.collective.allreduce import RingAllReduce, ring_positions
from ringfl.collective.events import Action, Done, Header, Kind, Message, Send
from ringfl.collective.gossip import NeighbourAverage
from ringfl.errors import WireError
from ringfl.wire import StepCodec

#: `Header.step` of a retrying sum: the attempt's tag, then the inner all-reduce's step.
STEP = StepCodec((("attempt", 20), ("step", 12)))
_MAX_HELD = 1 << 16


def attempt_tag(dead: set[int]) -> int:
    """20-bit name of an attempt: number of lost peers (4 bits) and a CRC of their ids."""
    ids = b"".join(int(p).to_bytes(4, "little") for p in sorted(dead))
    return ((len(dead) & 0xF) << 16) | (zlib.crc32(ids) & 0xFFFF)


class RetryingRingSum:
    """Sum of the members' 1-D buffers over a ring, restarted among the survivors when
    peers are lost. After `Done`: `members` (whose inputs the sum contains, ring order)."""

    kind = Kind.ALLREDUCE
    kinds = (Kind.ALLREDUCE,)

    def __init__(
        self,
        peer: int,
        ring: Sequence[int],
        data: np.ndarray,
        *,
        session: int,
        round: int,
        segment_bytes: int = 1 << 20,
    ) -> None:
        self.ring, _ = ring_positions(peer, ring)
        if 2 * (len(self.ring) - 1) > STEP.limit("step"):
            raise ValueError(
                f"RetryingRingSum supports up to {(STEP.limit('step') + 1) // 2} peers"
            )
        self.peer = int(peer)
        self.data = np.ascontiguousarray(data)
        self.session = int(session)
        self.round = int(round)
        self.segment_bytes = segment_bytes
        self.dead: set[int] = set()
        self.members: tuple[int, ...] = ()
        self.result: np.ndarray | None = None
        self._done = False
        self._held: list[Message] = []
        self.bytes_sent = 0
        self._new_attempt()

    @property
    def done(self) -> bool:
        return self._done

    def _live(self) -> list[int]:
        return [p for p in self.ring if p not in self.dead]

    def _new_attempt(self) -> None:
        self.tag = attempt_tag(self.dead)
        self.live = self._live()
        self.inner = RingAllReduce(
            self.peer,
            self.live,
            self.data,
            session=self.session,
            round=self.round,
            segment_bytes=self.segment_bytes,
        )

    def _wrap(self, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Send):
                h = a.message.header
                header = Header(
                    h.kind, h.session, h.round, STEP.pack(attempt=self.tag, step=h.step),
                    h.chunk, h.segment, h.sender, h.dtype, h.length,
                )  # fmt: skip
                self.bytes_sent += a.message.payload.nbytes
                out.append(Send(a.to, Message(header, a.message.payload)))
            else:
                out.append(self._finish(np.asarray(a.result), tuple(self.live)))
        return out

    def _finish(self, result: np.ndarray, members: tuple[int, ...]) -> Done:
        self._done = True
        self.result = result
        self.members = members
        self._held.clear()
        return Done(result)

    def start(self) -> list[Action]:
        return self._wrap(self.inner.start())

    def receive(self, message: Message) -> list[Action]:
        h = message.header
        if self._done:
            raise WireError(f"ring sum of peer {self.peer} already finished")
        if h.sender in self.dead:
            raise WireError(f"ring sum: message from peer {h.sender}, which was declared lost")
        fields = STEP.unpack(h.step)
        tag, step = fields["attempt"], fields["step"]
        if tag != self.tag:
            if (tag >> 16) > len(self.dead) & 0xF and len(self._held) < _MAX_HELD:
                self._held.append(message)
                return []
            raise WireError(f"ring sum: message of another attempt ({tag:#x}, now {self.tag:#x})")
        inner = Header(
            h.kind, h.session, h.round, step, h.chunk, h.segment, h.sender, h.dtype, h.length
        )
        return self._wrap(self.inner.receive(Message(inner, message.payload)))

    def peers_lost(self, peers: frozenset[int]) -> list[Action]:
        new = {int(p) for p in peers if int(p) in self.ring} - self.dead - {self.peer}
        if not new or self._done:
            return []
        self.dead |= new
        self._new_attempt()
        out = self._wrap(self.inner.start())
        held, self._held = self._held, []
        for m in held:
            if self._done:
                break
            with contextlib.suppress(WireError):
                out += self.receive(m)
        return out

    def adopt(self, result: np.ndarray, members: Sequence[int]) -> list[Action]:
        """Finish with a sum another peer already completed (a RESULT message)."""
        if self._done:
            return []
        if result.shape != self.data.shape or result.dtype != self.data.dtype:
            raise WireError(f"ring sum: adopted result has shape {result.shape}/{result.dtype}")
        if not set(members) <= set(self.ring) or self.peer not in members:
            raise WireError(f"ring sum: adopted result has members {list(members)}")
        return [self._finish(np.array(result), tuple(members))]

    def expecting(self) -> frozenset[int]:
        return frozenset() if self._done else self.inner.expecting()


class ResilientNeighbourAverage(NeighbourAverage):
    """`NeighbourAverage` whose lost neighbours are dropped: their weight moves to this
    peer, and segments not yet combined are combined without them."""

    def __init__(self, peer: int, weights_row: Mapping[int, float], data: Any, **kw: Any) -> None:
        super().__init__(peer, weights_row, data, **kw)
        self.dropped: set[int] = set()
        self._combined: set[int] = set()

    def _combine(self, k: int) -> None:
        super()._combine(k)
        self._combined.add(k)

    def peers_lost(self, peers: frozenset[int]) -> list[Action]:
        gone = {int(p) for p in peers} & set(self.neighbours)
        if not gone or self._done:
            return []
        for j in gone:
            self.self_weight += self.weights.pop(j)
            self._missing.pop(j, None)
            for pending in self._pending:
                pending.pop(j, None)
        self.dropped |= gone
        self.neighbours = sorted(self.weights)
        for k, pending in enumerate(self._pending):
            if k not in self._combined and len(pending) == len(self.neighbours):
                self._combine(k)
        if self._complete == len(self.segments):
            return [self._finish(self.out)]
        return []

    @property
    def members(self) -> tuple[int, ...]:
        """Whose values the mixed vector contains: this peer and the neighbours kept."""
        return tuple(sorted({self.peer, *self.neighbours}))

    def receive(self, message: Message) -> list[Action]:
        if message.header.sender in self.dropped:
            raise WireError(f"gossip of peer {self.peer}: peer {message.header.sender} was lost")
        return super().receive(message)


__all__ = ["ResilientNeighbourAverage", "RetryingRingSum", "attempt_tag"]
