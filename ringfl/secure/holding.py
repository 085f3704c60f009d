"""Bounded holding of frames that arrived before the machine can take them.

A fast predecessor may send the next stage's frames (or, after a loss, the next epoch's)
before this peer gets there. They are held, keyed by (epoch, stage), until the machine
enters that stage; entering it takes them in arrival order. Holding is bounded by count
and by payload bytes, a slot (epoch, stage, step, chunk, segment, sender) is held once,
and the caller checks each frame's length and plausibility before it is held, so no peer
can make another hold more than a round's worth of legitimate frames. Taking is linear
in the number of held frames.
"""

from __future__ import annotations

from collections import OrderedDict

from ringfl.collective.events import Message
from ringfl.errors import WireError


class HeldFrames:
    def __init__(self, max_frames: int, max_bytes: int) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("HeldFrames: bounds must be positive")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._by_key: dict[tuple[int, int], OrderedDict[tuple, Message]] = {}
        self.frames = 0
        self.bytes = 0
        self.peak_bytes = 0

    def hold(self, epoch: int, stage: int, slot: tuple, message: Message) -> None:
        """Hold `message`; `WireError` if its slot is taken or a bound would be passed."""
        size = message.payload.nbytes
        bucket = self._by_key.setdefault((epoch, stage), OrderedDict())
        if slot in bucket:
            raise WireError(f"a frame for slot {slot} is already held")
        if self.frames + 1 > self.max_frames or self.bytes + size > self.max_bytes:
            raise WireError(
                f"holding bound reached ({self.frames} frames, {self.bytes} bytes; at most "
                f"{self.max_frames} frames, {self.max_bytes} bytes)"
            )
        bucket[slot] = message
        self.frames += 1
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def take(self, epoch: int, stage: int) -> list[Message]:
        """The frames held for (epoch, stage), oldest first; drops those of earlier
        (epoch, stage) keys, which can no longer be taken."""
        now = (epoch, stage)
        stale = [k for k in self._by_key if k < now]
        for k in stale:
            self._release(self._by_key.pop(k))
        bucket = self._by_key.pop(now, None)
        if not bucket:
            return []
        self._release(bucket)
        return list(bucket.values())

    def clear(self) -> None:
        for bucket in self._by_key.values():
            self._release(bucket)
        self._by_key.clear()

    def _release(self, bucket: OrderedDict[tuple, Message]) -> None:
        self.frames -= len(bucket)
        self.bytes -= sum(m.payload.nbytes for m in bucket.values())
