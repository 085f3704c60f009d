"""What every learning algorithm shares. An algorithm works on flat float32 vectors only:
it never sees a model, a transport or a clock.

One round, whoever drives it (the round engine, `ringfl.engine.round`, in the simulator and
in a real peer alike):

    x = RoundInput(round, start, local, weight, index_session)
    contribution = algorithm.contribution(x)     # what this party puts into the round's sum
    ... the engine runs the (secure) sum over the round's members ...
    new = algorithm.aggregate(x, SumResult(total, contributors, failures))

`failures` are the members whose input is not in the sum (they crashed, were declared
gone, or were cut off), as in Flower's `aggregate_fit(results, failures)`; `total` is the
sum of the contributors' contributions (for a gossip step: the mixed vector).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from torch import nn

from ringfl.flat import flatten, floating_only, unflatten

#: How an algorithm's contributions are combined: a sum over the ring's members (secure or
#: plain), a neighbour-weighted mix (gossip), or a sum computed by a hub (server baseline).
Collective = Literal["ring", "neighbours", "star"]


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


@dataclass(frozen=True)
class RoundInput:
    """One party's view of a round. `start`: the state every member began the round with;
    `local`: this party's state after local work; `weight`: its share n_i / Σn of the
    training samples (0 for an auxiliary participant; raw n_i for the server baseline,
    whose hub sees counts anyway); `index_session`: randomness shared by all parties of
    the run (derived from the config seed, so a simulation and a real run draw alike)."""

    round: int
    start: np.ndarray
    local: np.ndarray
    weight: float
    index_session: int


@dataclass(frozen=True)
class SumResult:
    """A completed collective: `total` (the sum of the contributors' contributions, or the
    mixed vector of a gossip step), `contributors` (ring order) and `failures` (members
    of the round whose input is missing)."""

    total: np.ndarray
    contributors: tuple[int, ...]
    failures: tuple[int, ...] = ()


class Algorithm(Protocol):
    """A learning algorithm on flat vectors (see the module docstring)."""

    name: str
    collective: Collective

    def contribution(self, x: RoundInput) -> np.ndarray: ...

    def aggregate(self, x: RoundInput, result: SumResult) -> np.ndarray: ...


def finite_delta(x: RoundInput) -> tuple[np.ndarray, float]:
    """(local - start, weight), or (zeros, 0) when the delta is not finite: a party whose
    training diverged contributes nothing that round (its join flags still count)."""
    delta = x.local - x.start
    if not np.all(np.isfinite(delta)):
        return np.zeros_like(delta), 0.0
    return delta, x.weight


def weighted_payload(delta: np.ndarray, weight: float) -> np.ndarray:
    """[weight * delta..., weight] as float32: summed over peers it gives the numerator and
    denominator of the weighted mean in one collective."""
    out = np.empty(delta.shape[0] + 1, dtype=np.float32)
    np.multiply(delta, np.float32(weight), out=out[:-1])
    out[-1] = weight
    return out


def weighted_mean(result: np.ndarray) -> np.ndarray | None:
    """The weighted mean from a summed `weighted_payload`; None when no weight arrived."""
    total = result[-1]
    if not total > 0:
        return None
    mean: np.ndarray = (result[:-1] / total).astype(np.float32, copy=False)
    return mean
