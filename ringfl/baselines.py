"""Baselines run with the same data, seeds, model, optimizer and sample budget as the
decentralized algorithms, so that comparisons are honest.

- `centralized`: one model trained on the pooled data (the union of all peers' data) for the
  same number of training samples that all peers together process in the federated run.
- `standalone`: every peer trains alone on its own data for the same number of rounds x
  local epochs/steps; reports the mean (and min/max) test accuracy over peers.
- server FedAvg (the classic hub-and-spoke parameter server) runs through the simulator
  with `algorithm.name = "server"`, see `ringfl.algorithms.server`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ringfl.config import TrainConfig
from ringfl.data import Dataset
from ringfl.local import LocalTrainer, evaluate
from ringfl.models import ModelSpec, build_model

# Data-order stream of the centralized baseline (distinct from every peer id).
CENTRAL_STREAM = 2**31 - 1


@dataclass(frozen=True)
class BaselineResult:
    """`accuracy`/`loss` on the test set; `samples`: training samples processed in total;
    `seconds`: wall time of training + evaluation."""

    method: str
    accuracy: float
    loss: float
    samples: int
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


def samples_per_round(sizes: Sequence[int], train: TrainConfig) -> list[int]:
    """Training samples each peer processes in one round (E*n_i, or the samples in S batches)."""
    out = []
    for n in sizes:
        if train.local_steps is None:
            out.append(int(train.epochs or 1) * int(n))
        else:
            full, rest = divmod(train.local_steps, math.ceil(n / train.batch_size))
            per_epoch = [min(train.batch_size, n - s) for s in range(0, n, train.batch_size)]
            out.append(full * n + sum(per_epoch[:rest]))
    return out


def sample_budget(sizes: Sequence[int], train: TrainConfig, rounds: int | None = None) -> int:
    """Training samples all peers process over `rounds` (default `train.rounds`)."""
    r = train.rounds if rounds is None else rounds
    return r * sum(samples_per_round(sizes, train))


def _trainer(model, data: Dataset, train: TrainConfig, seed: int, peer: int) -> LocalTrainer:
    return LocalTrainer(
        model,
        data,
        batch_size=train.batch_size,
        lr=train.lr,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        seed=seed,
        peer=peer,
    )


def centralized(
    pooled: Dataset,
    test: Dataset,
    model_spec: ModelSpec,
    train: TrainConfig,
    *,
    budget: int,
    seed: int,
) -> BaselineResult:
    """Train one model on `pooled` for `budget` samples (budget / len(pooled) epochs when
    that divides, else ceil(budget / batch_size) mini-batches), then evaluate on `test`."""
    t0 = time.perf_counter()
    num_classes = max(pooled.num_classes, test.num_classes)
    model = build_model(model_spec, pooled.input_shape, num_classes, seed)
    trainer = _trainer(model, pooled, train, seed, CENTRAL_STREAM)
    if budget % len(pooled) == 0:  # whole epochs: exactly `budget` samples
        stats = trainer.train(0, epochs=budget // len(pooled))
    else:
        stats = trainer.train(0, steps=max(1, math.ceil(budget / train.batch_size)))
    ev = evaluate(model, test)
    return BaselineResult(
        "centralized",
        ev.accuracy,
        ev.loss,
        stats.samples,
        time.perf_counter() - t0,
        {"steps": stats.steps, "epochs": stats.samples / len(pooled)},
    )


def standalone(
    parts: Sequence[Dataset],
    test: Dataset,
    model_spec: ModelSpec,
    train: TrainConfig,
    *,
    seed: int,
    rounds: int | None = None,
) -> BaselineResult:
    """Each peer trains alone on its part for `rounds` rounds of local epochs/steps."""
    t0 = time.perf_counter()
    r = train.rounds if rounds is None else rounds
    accs, losses, samples = [], [], 0
    for peer, part in enumerate(parts):
        num_classes = max(max(p.num_classes for p in parts), test.num_classes)
        model = build_model(model_spec, part.input_shape, num_classes, seed)
        trainer = _trainer(model, part, train, seed, peer)
        for k in range(r):
            samples += trainer.train(k, epochs=train.epochs, steps=train.local_steps).samples
        ev = evaluate(model, test)
        accs.append(ev.accuracy)
        losses.append(ev.loss)
    return BaselineResult(
        "standalone",
        float(np.mean(accs)),
        float(np.mean(losses)),
        samples,
        time.perf_counter() - t0,
        {"per_peer_accuracy": accs, "min_accuracy": min(accs), "max_accuracy": max(accs)},
    )
