"""What every learning algorithm shares: the per-round protocol between a `Learner` and
its algorithm, and reading/writing a model as one flat float32 vector.

A round, whoever drives it (the simulator or a real peer over ZeroMQ):

    once, before round 0:               # e.g. the ring's sum of sample counts
        machine = learner.setup_machine()   # None when the algorithm needs no setup
        ... run it ...; learner.finish_setup(result)
    each round r:
    learner.local_round(r)              # algorithm.begin_round, then local training
    machine = learner.machine_for_round(r)   # a sans-I/O collective (ringfl.collective)
    ... a driver runs `machine` with the other peers' machines ...
    learner.finish_round(r, result)     # the collective's Done.result -> new weights

Algorithms never see a transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from torch import nn

from ringfl.collective.events import Machine
from ringfl.flat import flatten, floating_only, unflatten

if TYPE_CHECKING:
    from ringfl.learner import Learner


def get_flat(model: nn.Module) -> np.ndarray:
    """A float32 copy of the model's floating-point state (parameters and float buffers)."""
    buf, _ = flatten(floating_only(model.state_dict()))
    return np.array(buf, dtype=np.float32, copy=True)


def set_flat(model: nn.Module, vec: np.ndarray) -> None:
    """Write `vec` (as produced by `get_flat`) into the model's tensors, in place (so an
    optimizer keeps pointing at the same parameters)."""
    state = floating_only(model.state_dict())
    _, spec = flatten(state) if len(state) else (None, None)
    if spec is None:
        return
    unflatten(np.ascontiguousarray(vec, dtype=spec.dtype), spec, into=state)


class Algorithm(Protocol):
    """A learning algorithm's per-round hooks (see module docstring)."""

    name: str

    def setup(self, learner: Learner) -> Machine | None: ...

    def finish_setup(self, learner: Learner, result: Any) -> None: ...

    def begin_round(self, learner: Learner, round_index: int) -> None: ...

    def machine(self, learner: Learner, round_index: int) -> Machine: ...

    def apply(self, learner: Learner, round_index: int, result: Any) -> None: ...


def weighted_payload(delta: np.ndarray, weight: float) -> np.ndarray:
    """[weight * delta..., weight] as float32: summed over peers it gives the numerator and
    denominator of the weighted mean in one collective."""
    out = np.empty(delta.shape[0] + 1, dtype=np.float32)
    np.multiply(delta, np.float32(weight), out=out[:-1])
    out[-1] = weight
    return out


def weighted_mean(result: np.ndarray) -> np.ndarray:
    """The weighted mean from a summed `weighted_payload`."""
    total = result[-1]
    if not total > 0:
        raise ValueError(f"summed weights are {total}, expected > 0")
    return (result[:-1] / total).astype(np.float32, copy=False)
