"""What the simulator's parties train, as plain data a worker can rebuild anywhere: the
model (built-in name, layer list or a factory, shipped to workers that ringfl spawns with
cloudpickle), the optimiser settings, the seed, and each party's training data; and the
one routine every backend runs for a party's round (`Trainer.run`).

A party's training state between rounds is (model state, momentum buffers, integer
buffers). The model state lives in the driver (`ringfl.compute.store`); a worker holds
one transient model per number of classes and loads a party's state into it for each
task, so the same routine gives the same bits wherever it runs, as long as torch runs
with the same number of threads (one in every worker; the caller's in `inline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ringfl.config import Config, TrainConfig
from ringfl.data import Dataset
from ringfl.engine.workload import LocalStats
from ringfl.flat import FlatSpec, flatten, unflatten
from ringfl.local import EvalResult, LocalTrainer, evaluate
from ringfl.models import ModelSpec, build_model

#: dtypes of the model state that `get_flat` carries; other entries (integer buffers such
#: as BatchNorm's counters) travel beside it as a party's `extras`.
FLOATS = (torch.float32, torch.float64)


@dataclass(frozen=True)
class TrainJob:
    """Everything needed to train any party of one simulation. `model`: the model spec
    (name, layers or zero-argument factory); `input_shape`: one sample's shape;
    `classes[p]`: party p's number of classes (its model's outputs); `seed`: the config
    seed (initial weights, data order); `train`: optimiser and local work per round;
    `sizes[p]`: party p's training samples."""

    model: ModelSpec
    input_shape: tuple[int, ...]
    classes: tuple[int, ...]
    seed: int
    train: TrainConfig
    sizes: tuple[int, ...]

    @property
    def num_parties(self) -> int:
        return len(self.classes)

    @staticmethod
    def of(config: Config, model: ModelSpec, parts: Sequence[Dataset]) -> TrainJob:
        """The job of `config` with model spec `model` over the parties' training data."""
        shapes = {d.input_shape for d in parts}
        if len(shapes) > 1:
            raise ValueError(f"the parties' samples have different shapes: {sorted(shapes)}")
        return TrainJob(
            model=model,
            input_shape=parts[0].input_shape,
            classes=tuple(d.num_classes for d in parts),
            seed=config.seed,
            train=config.train,
            sizes=tuple(len(d) for d in parts),
        )

    def build(self, num_classes: int) -> nn.Module:
        """The initial model of a party with `num_classes` classes (the same on all)."""
        return build_model(self.model, self.input_shape, num_classes, self.seed)


@dataclass(frozen=True)
class TrainTask:
    """Train party `peer` for round `round` from the start state in row `start` of the
    round's start table (`length` floats). `momentum`: the party has momentum buffers
    from earlier rounds (False: the optimiser starts without, as a fresh one does);
    `extras`: its integer buffers (e.g. BatchNorm's counters), by state_dict key."""

    peer: int
    round: int
    start: int
    length: int
    momentum: bool = False
    extras: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class TaskResult:
    """What a task did: the party's `stats`, whether it now has momentum buffers, and its
    integer buffers after training."""

    peer: int
    stats: LocalStats
    momentum: bool
    extras: dict[str, np.ndarray] | None = None


@dataclass
class _Model:
    module: nn.Module
    spec: FlatSpec  # of the trainable parameters (the momentum buffers' layout)
    extra_keys: tuple[str, ...]
    # numpy views of the module's float tensors in `get_flat` order, and their ranges in
    # a flat state: loading and saving a party's state copies into and out of them, the
    # same copies as `set_flat`/`get_flat` without rebuilding the state dict and its
    # spec for every task: 4 µs instead of 100 µs a task for logistic regression (of
    # ~1.5 ms in all, at tens of thousands of parties), 50 instead of 300 for the MLP
    views: list[tuple[np.ndarray, int, int]]
    size: int  # floats in get_flat(module)

    @staticmethod
    def of(module: nn.Module) -> _Model:
        params = [p for p in module.parameters() if p.requires_grad]
        _, spec = flatten([p.detach() for p in params])
        state = module.state_dict()
        extra = tuple(k for k, v in state.items() if v.dtype not in FLOATS)
        views, at = [], 0
        for v in state.values():  # numpy views of the module's storage, any strides
            if v.dtype in FLOATS:
                views.append((v.numpy(), at, at + v.numel()))
                at += v.numel()
        return _Model(module, spec, extra, views, at)

    def load(self, state: np.ndarray, extras: dict[str, np.ndarray] | None = None) -> None:
        """`set_flat(module, state)` (the same bits), and the integer buffers `extras`."""
        for view, a, b in self.views:
            view[...] = state[a:b].reshape(view.shape)
        if extras:
            module_state = self.module.state_dict()
            for k, v in extras.items():
                module_state[k].copy_(torch.from_numpy(np.array(v)))

    def save(self, out: np.ndarray) -> None:
        """`out[:size] = get_flat(module)`: the same bits."""
        for view, a, b in self.views:
            out[a:b] = view.reshape(-1)


@dataclass
class Trainer:
    """Runs tasks of `job` in one process: one transient model per number of classes,
    loaded with each party's state in turn (so a worker holds no party's model between
    tasks). Momentum buffers are read from and written to the row the caller passes
    (shared memory in `processes`), in place."""

    job: TrainJob
    _models: dict[int, _Model] = field(default_factory=dict)

    def model(self, num_classes: int) -> _Model:
        m = self._models.get(num_classes)
        if m is None:
            m = self._models[num_classes] = _Model.of(self.job.build(num_classes))
        return m

    def momentum_size(self, num_classes: int) -> int:
        """Floats in a party's momentum buffers (its trainable parameters)."""
        return self.model(num_classes).spec.numel

    def run(
        self,
        task: TrainTask,
        start: np.ndarray,
        data: Dataset,
        out: np.ndarray,
        momentum: np.ndarray | None,
    ) -> TaskResult:
        """Train `task.peer` on `data` from `start`; write its local state into `out`
        (at least `task.length` floats) and its momentum buffers into `momentum` (a
        writable float32 row of `momentum_size` floats, or None when momentum is 0)."""
        m = self.model(self.job.classes[task.peer])
        if start.shape[0] != m.size:
            raise ValueError(
                f"peer {task.peer}: start state has {start.shape[0]} floats, model {m.size}"
            )
        m.load(start, task.extras)
        t = self.job.train
        trainer = LocalTrainer(
            m.module,
            data,
            batch_size=t.batch_size,
            lr=t.lr,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            prox_mu=t.prox_mu,
            seed=self.job.seed,
            peer=task.peer,
        )
        held = momentum is not None and t.momentum > 0
        if held and task.momentum:
            assert momentum is not None
            # views of the caller's row: SGD updates them in place
            views = unflatten(momentum[: m.spec.numel], m.spec)
            trainer.optimizer.buffers = list(views)  # type: ignore[arg-type]
        s = trainer.train(task.round, epochs=t.epochs, steps=t.local_steps)
        has = False
        if held and trainer.optimizer.buffers is not None:
            assert momentum is not None
            if not task.momentum:
                buf, _ = flatten(list(trainer.optimizer.buffers))
                momentum[: m.spec.numel] = buf
            has = True
        m.save(out)
        extras = None
        if m.extra_keys:
            state = m.module.state_dict()
            extras = {k: state[k].detach().numpy().copy() for k in m.extra_keys}
        return TaskResult(
            task.peer, LocalStats(loss=s.loss, steps=s.steps, samples=s.samples), has, extras
        )

    def evaluate(
        self, peer: int, state: np.ndarray, extras: dict[str, np.ndarray] | None, data: Dataset
    ) -> EvalResult:
        """Party `peer`'s model with `state` (and its integer buffers `extras`) scored on
        `data`: the same bits as `evaluate` of a fresh model holding that state."""
        m = self.model(self.job.classes[peer])
        if state.shape[0] != m.size:
            raise ValueError(f"peer {peer}: state has {state.shape[0]} floats, model {m.size}")
        m.load(state, extras)
        return evaluate(m.module, data)


__all__ = ["FLOATS", "TaskResult", "TrainJob", "TrainTask", "Trainer"]
