"""Local training on one peer: mini-batch SGD (momentum, weight decay, optional FedProx
term) for E epochs or S steps per round, and evaluation.

Determinism: the data order of round r on peer p is a permutation drawn from
(seed, p, r), and any randomness inside the model (dropout) runs under a torch generator
forked and seeded from the same triple, so one peer's training never depends on what other
simulated peers in the same process did. The number of torch threads is the caller's
business (`torch.set_num_threads`): several training processes on one machine should each
use 1.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ringfl.data import Dataset
from ringfl.errors import ConfigError


@dataclass(frozen=True)
class TrainStats:
    """What one call of `LocalTrainer.train` did. `loss`: mean mini-batch training loss."""

    steps: int
    samples: int
    loss: float


@dataclass(frozen=True)
class EvalResult:
    """Test metrics: `accuracy` in [0, 1], `loss` the mean cross-entropy per sample."""

    accuracy: float
    loss: float
    samples: int


def _stream_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class SGD:
    """Mini-batch SGD with momentum and weight decay, the same update as
    `torch.optim.SGD` (dampening 0, no Nesterov):

        g = grad + weight_decay * w;  buf = momentum * buf + g  (buf = g at first);  w -= lr * buf

    A few lines instead of `torch.optim` keep the import of torch's compiler stack
    (several seconds on a busy machine) out of every peer's start-up."""

    def __init__(
        self,
        params: list[torch.Tensor],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.buffers: list[torch.Tensor] | None = None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        if len(params) != len(self.params):
            raise RuntimeError("SGD.step: every parameter needs a gradient")
        grads: list[torch.Tensor] | tuple[torch.Tensor, ...] = [
            p.grad for p in params if p.grad is not None
        ]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        if self.momentum:
            if self.buffers is None:
                self.buffers = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = self.buffers
        torch._foreach_add_(params, grads, alpha=-self.lr)


class LocalTrainer:
    """SGD on `data` for `model` (updated in place). The optimizer (and its momentum) lives
    as long as the trainer, across rounds; algorithms write new weights into the same
    parameter tensors, so the optimizer keeps pointing at them.

    FedProx: with `prox_mu` > 0, each round adds mu/2 * ||w - w_start||^2 to the loss, where
    w_start are the weights at the start of the round (the global/mixed model)."""

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        *,
        batch_size: int,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        prox_mu: float = 0.0,
        seed: int = 0,
        peer: int = 0,
    ) -> None:
        if len(data) == 0:
            raise ConfigError(f"peer {peer}: has no training samples")
        if batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.prox_mu = prox_mu
        self.seed = seed
        self.peer = peer
        self._x = torch.from_numpy(data.x)
        self._y = torch.from_numpy(data.y)
        self.optimizer = SGD(
            [p for p in model.parameters() if p.requires_grad],
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
        )

    @property
    def num_samples(self) -> int:
        return len(self.data)

    def steps_for(self, epochs: int | None, steps: int | None) -> int:
        """Mini-batch steps one round takes: `steps`, or `epochs` full passes (the last
        batch of a pass may be short)."""
        if steps is not None:
            return steps
        assert epochs is not None
        return epochs * math.ceil(len(self.data) / self.batch_size)

    def _batches(self, round_index: int, total_steps: int):
        rng = np.random.default_rng([self.seed, self.peer, round_index])
        n, b, done = len(self.data), self.batch_size, 0
        while done < total_steps:
            perm = torch.from_numpy(rng.permutation(n))
            for start in range(0, n, b):
                if done == total_steps:
                    return
                yield perm[start : start + b]
                done += 1

    def train(
        self, round_index: int, *, epochs: int | None = 1, steps: int | None = None
    ) -> TrainStats:
        """Train for `epochs` passes or `steps` mini-batches (steps wins when given)."""
        total = self.steps_for(epochs, steps)
        model = self.model
        params = [p for p in model.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params] if self.prox_mu > 0 else None
        model.train()
        loss_sum, samples, done = 0.0, 0, 0
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only (what fork_rng(devices=[]) restores): torch.manual_seed
            # also queues lazy seeding of every accelerator, with a stack trace each time
            torch.default_generator.manual_seed(_stream_seed(self.seed, self.peer, round_index, 1))
            for idx in self._batches(round_index, total):
                # index_select: the same copy as x[idx], in about half the time
                xb, yb = self._x.index_select(0, idx), self._y.index_select(0, idx)
                self.optimizer.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                if anchor is not None:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                    loss = loss + 0.5 * self.prox_mu * prox
                loss.backward()
                self.optimizer.step()
                loss_sum += float(loss.detach())
                samples += len(idx)
                done += 1
        return TrainStats(steps=done, samples=samples, loss=loss_sum / max(done, 1))


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1000) -> EvalResult:
    """Accuracy and mean cross-entropy of `model` on `data` (eval mode, no grad)."""
    steps = evaluation_steps(model, data, batch_size)
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            result: EvalResult = finished.value
            return result


def evaluation_steps(
    model: nn.Module, data: Dataset, batch_size: int = 1000
) -> Generator[None, None, EvalResult]:
    """`evaluate` one batch at a time: yields after each batch and returns the result
    (the same bits: the same batches, summed in the same order). No grad and eval mode
    hold only inside a batch, so a caller may do its own work between the steps."""
    correct, loss_sum = 0, 0.0
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    for start in range(0, len(data), batch_size):
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(x[start : start + batch_size])
                yb = y[start : start + batch_size]
                loss_sum += float(F.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(dim=1) == yb).sum())
        finally:
            model.train(was_training)
        yield
    n = max(len(data), 1)
    return EvalResult(accuracy=correct / n, loss=loss_sum / n, samples=len(data))
