"""The workload interface of the round engine: what one party computes locally, and how
the shared state it holds is read and written. Every workload follows one pattern:

    local statistics / update  ->  (secure) sum with its contributors  ->  identical update
                                                                           on every member

The engine (`ringfl.engine.round`) owns the round: it reads the state (`get`), lets the
workload work locally (`local`), hands start and local state to the algorithm, which
forms the contribution and, from the sum, the new state that the engine writes back
(`set`). A workload never sees the network, the clock or another party's data.

`NeuralWorkload` (a torch model trained by SGD on this party's data) is the first
instance; federated analytics, Newton logistic regression or boosted trees plug in the
same way: `get`/`set` a flat float vector of sufficient statistics or parameters,
`local` computes this party's part, and an algorithm turns contributions into the sum and
the sum into the shared update.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from torch import nn

from ringfl.algorithms.base import get_flat, set_flat
from ringfl.data import Dataset
from ringfl.local import LocalTrainer, evaluate


@dataclass(frozen=True)
class LocalStats:
    """What one party's local work did: `loss` (mean training loss; NaN if none),
    `steps` and `samples` processed."""

    loss: float
    steps: int = 0
    samples: int = 0


@dataclass(frozen=True)
class EvalCounts:
    """Evaluation on one party's own validation data, as sums: correctly classified
    samples, samples, and the sum of per-sample losses. Only sums of these leave a party."""

    correct: float
    total: float
    loss_sum: float


def eval_counts(model: nn.Module, val: Dataset) -> EvalCounts:
    """`model` evaluated on `val`, as the sums that may leave a party."""
    ev = evaluate(model, val)
    n = float(ev.samples)
    return EvalCounts(correct=round(ev.accuracy * n), total=n, loss_sum=ev.loss * n)


class Workload(Protocol):
    """One party's side of a federated job (see the module docstring)."""

    @property
    def num_samples(self) -> int:
        """This party's training samples (its weight; leaves it only inside a secure sum)."""
        ...

    @property
    def num_val(self) -> int:
        """This party's validation samples (0: it has none)."""
        ...

    def get(self) -> np.ndarray:
        """The shared state as a flat float32 vector (a copy)."""
        ...

    def set(self, state: np.ndarray) -> None:
        """Replace the shared state (the same bits on every member)."""
        ...

    def local(self, round_index: int) -> LocalStats:
        """This party's local work of a round (changes its local state)."""
        ...

    def evaluate(self) -> EvalCounts | None:
        """Evaluate the current state on this party's validation data (None: none)."""
        ...


class ClassifierWorkload(Workload, Protocol):
    """A workload whose model has a number of output classes (the setup sum checks that
    all parties agree on it)."""

    @property
    def num_classes(self) -> int: ...


class NeuralWorkload:
    """A torch model trained by local SGD (`LocalTrainer`) on this party's data; `val` is
    its own validation set (or None). `epochs`/`steps`: local work per round."""

    def __init__(
        self,
        model: nn.Module,
        trainer: LocalTrainer,
        *,
        epochs: int | None,
        steps: int | None,
        val: Dataset | None = None,
    ) -> None:
        self.model = model
        self.trainer = trainer
        self.epochs = epochs
        self.steps = steps
        self.val = val

    @property
    def num_samples(self) -> int:
        return self.trainer.num_samples

    @property
    def num_val(self) -> int:
        return 0 if self.val is None else len(self.val)

    @property
    def num_classes(self) -> int:
        """The model's output classes (from this party's data or the config)."""
        return self.trainer.data.num_classes

    def get(self) -> np.ndarray:
        return get_flat(self.model)

    def set(self, state: np.ndarray) -> None:
        set_flat(self.model, state)

    def local(self, round_index: int) -> LocalStats:
        s = self.trainer.train(round_index, epochs=self.epochs, steps=self.steps)
        return LocalStats(loss=s.loss, steps=s.steps, samples=s.samples)

    def evaluate(self) -> EvalCounts | None:
        if self.val is None or len(self.val) == 0:
            return None
        return eval_counts(self.model, self.val)

    # conveniences for drivers and tests
    def flat(self) -> np.ndarray:
        """The model's floating-point state as one float32 vector (a copy)."""
        return get_flat(self.model)

    def state_hash(self) -> str:
        """SHA-256 of the model's floating-point state: equal hashes, bit-identical models."""
        return hashlib.sha256(self.flat().tobytes()).hexdigest()


class AuxWorkload:
    """An auxiliary participant's workload (the server baseline's hub, a helper that only
    relays or adds): no data, no training, no evaluation; it holds the shared state so it
    can hand it to others. Its weight is zero."""

    def __init__(self, state: np.ndarray) -> None:
        self._state = np.array(state, dtype=np.float32, copy=True)

    @property
    def num_samples(self) -> int:
        return 0

    @property
    def num_val(self) -> int:
        return 0

    @property
    def num_classes(self) -> int:
        return 0

    def get(self) -> np.ndarray:
        return self._state.copy()

    def set(self, state: np.ndarray) -> None:
        self._state = np.array(state, dtype=np.float32, copy=True)

    def local(self, round_index: int) -> LocalStats:
        return LocalStats(loss=float("nan"))

    def evaluate(self) -> EvalCounts | None:
        return None


__all__ = [
    "AuxWorkload",
    "ClassifierWorkload",
    "EvalCounts",
    "LocalStats",
    "NeuralWorkload",
    "Workload",
    "eval_counts",
]
