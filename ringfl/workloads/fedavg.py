"""Neural FedAvg as a workload: the same interface as analytics, Newton and GBDT.

Each round every party trains the global model locally (`ringfl.local.LocalTrainer`) and
sends [n·delta, n] (n its sample count); the secure sum gives Σ n·delta and Σ n, and every
party applies global += Σ n·delta / Σ n. Only the weighted sum of the deltas and the total
sample count are revealed. (The peers' own ring learner, `ringfl.learner`, does the same
with membership and failure handling; this is the plug-in form.)
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ringfl.algorithms.base import get_flat, set_flat
from ringfl.data import Dataset
from ringfl.local import LocalTrainer


class FedAvgWorkload:
    """One party's FedAvg over `rounds` rounds on its `data` (model updated in place)."""

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        *,
        rounds: int,
        batch_size: int = 32,
        lr: float = 0.1,
        epochs: int | None = 1,
        steps: int | None = None,
        momentum: float = 0.0,
        seed: int = 0,
        peer: int = 0,
    ) -> None:
        self.model = model
        self.trainer = LocalTrainer(
            model, data, batch_size=batch_size, lr=lr, momentum=momentum, seed=seed, peer=peer
        )
        self.rounds, self.epochs, self.steps = rounds, epochs, steps
        self.weights = get_flat(model)  # the global model, float32
        self.round = 0

    @property
    def done(self) -> bool:
        return self.round >= self.rounds

    def statistics(self) -> np.ndarray:
        set_flat(self.model, self.weights)
        self.trainer.train(self.round, epochs=self.epochs, steps=self.steps)
        n = float(self.trainer.num_samples)
        delta = get_flat(self.model).astype(np.float64) - self.weights
        return np.concatenate([n * delta, [n]])

    def apply(self, total: np.ndarray) -> None:
        mean_delta = total[:-1] / total[-1]
        self.weights = (self.weights + mean_delta).astype(np.float32)
        set_flat(self.model, self.weights)
        self.round += 1

    def result(self) -> np.ndarray:
        return self.weights


__all__ = ["FedAvgWorkload"]
