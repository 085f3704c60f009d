"""Ring all-gather of one uint8 blob per ring member (the secure sum's small laps)."""

from __future__ import annotations

import numpy as np

from ringfl.errors import WireError


class Gather:
    """At step s a member sends its successor the blob that originated s hops upstream of
    it; n − 1 steps, after which every member holds every member's blob."""

    def __init__(self, me: int, ring: list[int], own: np.ndarray) -> None:
        self.me = me
        self.ring = ring
        self.n = n = len(ring)
        self.pos = ring.index(me)
        self.succ = ring[(self.pos + 1) % n]
        self.pred = ring[(self.pos - 1) % n]
        self.blobs: dict[int, np.ndarray] = {me: own}

    @property
    def complete(self) -> bool:
        return len(self.blobs) == self.n

    def first(self) -> list[tuple[int, int, np.ndarray]]:
        """(step, origin, blob) to send at the start."""
        return [] if self.n == 1 else [(0, self.me, self.blobs[self.me])]

    def origin_at(self, step: int) -> int:
        """The member whose blob arrives at `step`."""
        return self.ring[(self.pos - 1 - step) % self.n]

    def check(self, sender: int, step: int, origin: int) -> None:
        if sender != self.pred:
            raise WireError(f"from peer {sender}, expected ring predecessor {self.pred}")
        if step >= self.n - 1:
            raise WireError(f"step {step} ≥ {self.n - 1}")
        want = self.origin_at(step)
        if origin != want:
            raise WireError(f"blob of peer {origin} at step {step}, expected peer {want}")
        if origin in self.blobs:
            raise WireError(f"duplicate blob of peer {origin}")

    def take(self, step: int, origin: int, blob: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
        """Store a checked blob; returns what to forward."""
        self.blobs[origin] = blob
        return [(step + 1, origin, blob)] if step + 2 < self.n else []
