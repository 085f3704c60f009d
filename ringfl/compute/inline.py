"""`inline`: every party's local training, one after another, in the driver process and
thread, with the caller's torch threads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ringfl.compute.base import Backend
from ringfl.compute.job import TaskResult, Trainer, TrainTask


def rows(n: int, width: int) -> np.ndarray:
    """An (n, width) float32 table whose pages are allocated only when written."""
    return np.zeros((n, max(width, 1)), dtype=np.float32)


class InlineBackend(Backend):
    """Training in the driver (see the module docstring). Holds each party's local
    result of the round (one row per party, written only when it trains) and, with
    momentum, each party's momentum buffers."""

    name = "inline"

    def _load(self) -> None:
        job = self.job
        self.trainer = Trainer(job)
        n = job.num_parties
        sizes = [self.trainer.model(k).size for k in set(job.classes)]
        self.outs = rows(n, max(sizes))
        self.moments = None
        if job.train.momentum > 0:
            msize = max(self.trainer.momentum_size(k) for k in set(job.classes))
            self.moments = rows(n, msize)

    def _execute(
        self,
        tasks: Sequence[TrainTask],
        starts: Sequence[np.ndarray],
        background: Iterator[None] | None = None,  # left to the caller
    ) -> Iterator[tuple[TaskResult, np.ndarray]]:
        # a start that is a party's local result of an earlier round lies in `outs`,
        # which this round overwrites: copy those first
        safe = [np.array(s) if np.may_share_memory(s, self.outs) else s for s in starts]
        for t in tasks:
            p = t.peer
            mom = None if self.moments is None else self.moments[p]
            result = self.trainer.run(t, safe[t.start], self.parts[p], self.outs[p], mom)
            yield result, self.outs[p, : t.length]


__all__ = ["InlineBackend"]
