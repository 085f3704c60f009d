"""`Learner`: one peer's learning state — model, optimizer, data, algorithm — with no
knowledge of the transport. The simulator and a real ZeroMQ peer drive it the same way:

    machine = learner.setup_machine()          # once; None if the algorithm needs none
    if machine is not None:
        learner.finish_setup(<run machine with the other peers' machines>)
    for r in range(rounds):
        learner.local_round(r)
        machine = learner.machine_for_round(r)
        result = <run machine with the other peers' machines>   # Done.result
        learner.finish_round(r, result)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from ringfl.algorithms import Algorithm, get_flat, make_algorithm
from ringfl.collective.events import Machine
from ringfl.config import Config, TrainConfig
from ringfl.data import Dataset
from ringfl.local import EvalResult, LocalTrainer, TrainStats, evaluate
from ringfl.models import ModelSpec, build_model


def session_id(seed: int, tag: str = "ringfl") -> int:
    """A u64 session id derived from the shared seed (same on every peer)."""
    digest = hashlib.sha256(f"{tag}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Learner:
    """One peer: model, optimizer, data and algorithm, and nothing about transports."""

    def __init__(
        self,
        peer: int,
        model: nn.Module,
        trainer: LocalTrainer,
        algorithm: Algorithm,
        *,
        train: TrainConfig,
        session: int,
    ) -> None:
        self.peer = int(peer)
        self.model = model
        self.trainer = trainer
        self.algorithm = algorithm
        self.train_cfg = train
        self.session = int(session)
        self.last_stats: TrainStats | None = None

    @property
    def num_samples(self) -> int:
        """Training samples this peer holds (its FedAvg weight)."""
        return self.trainer.num_samples

    def setup_machine(self) -> Machine | None:
        """The one-off collective to run before round 0 (None: nothing to set up)."""
        return self.algorithm.setup(self)

    def finish_setup(self, result: Any) -> None:
        """Apply the setup collective's result."""
        self.algorithm.finish_setup(self, result)

    def local_round(self, round_index: int) -> TrainStats:
        """Start the round (the algorithm snapshots what it needs) and train locally."""
        self.algorithm.begin_round(self, round_index)
        self.last_stats = self.trainer.train(
            round_index, epochs=self.train_cfg.epochs, steps=self.train_cfg.local_steps
        )
        return self.last_stats

    def machine_for_round(self, round_index: int) -> Machine:
        """The collective this peer runs after local training in `round_index`."""
        return self.algorithm.machine(self, round_index)

    def finish_round(self, round_index: int, result: Any) -> None:
        """Apply the collective's result (`Done.result`) to the model."""
        self.algorithm.apply(self, round_index, result)

    def flat(self) -> np.ndarray:
        """The model's floating-point state as one float32 vector (a copy)."""
        return get_flat(self.model)

    def state_hash(self) -> str:
        """SHA-256 of the model's floating-point state: equal hashes, bit-identical models."""
        return hashlib.sha256(self.flat().tobytes()).hexdigest()

    def evaluate(self, test: Dataset) -> EvalResult:
        return evaluate(self.model, test)


def make_learner(
    peer: int,
    graph: Any,
    config: Config,
    data: Dataset,
    *,
    num_classes: int,
    model: ModelSpec | None = None,
    session: int | None = None,
    keys: Any = None,
    public_keys: Mapping[int, bytes | str] | None = None,
) -> Learner:
    """A `Learner` for `peer` of `graph` with its own `data`, as `config` says. Every peer
    builds its model from `config.seed`, so all start identical. `model` overrides
    `config.model` (e.g. a factory from Python). `keys`/`public_keys`: for secure sums
    (see `ringfl.algorithms.make_algorithm`)."""
    spec: ModelSpec = (
        model
        if model is not None
        else (config.model.name if config.model.layers is None else list(config.model.layers))
    )
    net = build_model(spec, data.input_shape, num_classes, config.seed)
    t = config.train
    trainer = LocalTrainer(
        net,
        data,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        prox_mu=t.prox_mu,
        seed=config.seed,
        peer=peer,
    )
    return Learner(
        peer,
        net,
        trainer,
        make_algorithm(config.algorithm, peer, graph, keys=keys, public_keys=public_keys),
        train=t,
        session=session_id(config.seed) if session is None else session,
    )
