"""The driver's copy of every simulated party's state, and the workload the round engine
sees for a simulated party.

States are immutable float32 arrays; parties whose states are bitwise equal share one
array. In ring mode every member ends a round with the same bits, so N parties hold one
model between rounds (plus, during a round, each party's local result, which the
collective needs anyway).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ringfl.algorithms.base import set_flat
from ringfl.compute.job import TaskResult, TrainJob
from ringfl.data import Dataset
from ringfl.engine.workload import EvalCounts, LocalStats, eval_counts


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """True when `a` and `b` have the same dtype, shape and bytes."""
    if a is b:
        return True
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    width = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return bool(np.array_equal(a.view(width), b.view(width)))


def frozen(a: np.ndarray) -> np.ndarray:
    """`a` as a read-only float32 array (a copy unless it already is one)."""
    if a.dtype == np.float32 and not a.flags.writeable and a.flags.c_contiguous:
        return a
    out = np.array(a, dtype=np.float32, copy=True)
    out.flags.writeable = False
    return out


@dataclass
class StateStore:
    """Every party's current state (`states[p]`, shared between equal parties), whether
    it has momentum buffers, its integer buffers, and the local result a backend
    computed for the round it trains next (`pending`)."""

    job: TrainJob
    states: list[np.ndarray]
    extras: list[dict[str, np.ndarray] | None]
    initial_extras: dict[int, dict[str, np.ndarray] | None]
    momentum: list[bool]
    initial: dict[int, np.ndarray]
    pending: dict[int, tuple[int, LocalStats]] = field(default_factory=dict)
    _last: np.ndarray | None = None
    _eval: dict[int, nn.Module] = field(default_factory=dict)

    @staticmethod
    def create(job: TrainJob) -> StateStore:
        """Every party at its initial model (built from the seed: the same on all)."""
        from ringfl.algorithms.base import get_flat
        from ringfl.compute.job import FLOATS

        initial: dict[int, np.ndarray] = {}
        initial_extras: dict[int, dict[str, np.ndarray] | None] = {}
        for k in sorted(set(job.classes)):
            module = job.build(k)
            initial[k] = frozen(get_flat(module))
            ex = {
                name: v.detach().numpy().copy()
                for name, v in module.state_dict().items()
                if v.dtype not in FLOATS
            }
            initial_extras[k] = ex or None
        n = job.num_parties
        return StateStore(
            job=job,
            states=[initial[job.classes[p]] for p in range(n)],
            extras=[initial_extras[job.classes[p]] for p in range(n)],
            initial_extras=initial_extras,
            momentum=[False] * n,
            initial=initial,
        )

    def reset(self, p: int) -> None:
        """Party p starts afresh (a new incarnation): initial model, no momentum."""
        k = self.job.classes[p]
        self.states[p] = self.initial[k]
        self.extras[p] = self.initial_extras[k]
        self.momentum[p] = False
        self.pending.pop(p, None)

    def put(self, p: int, state: np.ndarray) -> None:
        """Party p's state is now `state` (copied, or shared with an equal state)."""
        last = self._last
        if last is not None and same_bits(last, np.asarray(state)):
            self.states[p] = last
            return
        self.states[p] = self._last = frozen(np.asarray(state))

    def accept(self, result: TaskResult, round_index: int, local: np.ndarray) -> None:
        """A backend trained party `result.peer` for `round_index`: `local` (read-only
        afterwards) is its state after local work."""
        p = result.peer
        view = np.asarray(local).view()  # no copy: the backend keeps the row until p trains again
        view.flags.writeable = False
        self.states[p] = view
        self.momentum[p] = result.momentum
        if result.extras is not None:
            self.extras[p] = result.extras
        self.pending[p] = (round_index, result.stats)

    def module(self, p: int, *, scratch: bool) -> nn.Module:
        """A model holding party p's state: a fresh one, or (`scratch`) the store's
        evaluation model for p's number of classes, overwritten by the next call."""
        k = self.job.classes[p]
        m = self._eval.get(k) if scratch else None
        if m is None:
            m = self.job.build(k)
            if scratch:
                self._eval[k] = m
        set_flat(m, self.states[p])
        ex = self.extras[p]
        if ex:
            state = m.state_dict()
            for name, v in ex.items():
                state[name].copy_(torch.from_numpy(np.array(v)))
        return m


class SimWorkload:
    """A simulated party's workload (the `Workload` the round engine drives): its state
    lives in the backend's `StateStore`; its local work is done by the backend
    (`Backend.train_round`), which hands the result to `local`. `val`: the party's own
    validation data (evaluated here, in the driver)."""

    def __init__(self, peer: int, store: StateStore, data: Dataset, val: Dataset | None) -> None:
        self.peer = peer
        self.store = store
        self.data = data
        self.val = val

    @property
    def num_samples(self) -> int:
        return len(self.data)

    @property
    def num_val(self) -> int:
        return 0 if self.val is None else len(self.val)

    @property
    def num_classes(self) -> int:
        return self.store.job.classes[self.peer]

    @property
    def done(self) -> bool:
        return False  # trains for the configured rounds

    def get(self) -> np.ndarray:
        # the stored state itself: read-only, never changed in place (a new state is a
        # new array), so the round's snapshot and local copy cost nothing per party
        return self.store.states[self.peer]

    def set(self, state: np.ndarray) -> None:
        self.store.put(self.peer, state)

    def local(self, round_index: int) -> LocalStats:
        done = self.store.pending.pop(self.peer, None)
        if done is None or done[0] != round_index:
            raise RuntimeError(
                f"peer {self.peer}: round {round_index} was not trained by the compute backend"
            )
        return done[1]

    def evaluate(self) -> EvalCounts | None:
        if self.val is None or len(self.val) == 0:
            return None
        return eval_counts(self.store.module(self.peer, scratch=True), self.val)

    # conveniences for drivers and tests (as on `NeuralWorkload`)
    @property
    def model(self) -> nn.Module:
        """A new torch model holding this party's current state (changing it changes
        nothing here)."""
        return self.store.module(self.peer, scratch=False)

    def flat(self) -> np.ndarray:
        """The model's floating-point state as one float32 vector (a copy)."""
        return self.get().copy()

    def state_hash(self) -> str:
        """SHA-256 of the model's floating-point state: equal hashes, bit-identical models."""
        return hashlib.sha256(self.store.states[self.peer].tobytes()).hexdigest()


__all__ = ["SimWorkload", "StateStore", "frozen", "same_bits"]
