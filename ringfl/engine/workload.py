"""The workload interface of the round engine: what one party computes locally, and how
the shared state it holds is read and written. Every workload follows one pattern:

    local statistics / update  ->  (secure) sum with its contributors  ->  identical update
                                                                           on every member

The engine (`ringfl.engine.round`) owns the round: it reads the state (`get`), lets the
workload work locally (`local`), hands start and local state to the algorithm, which
forms the contribution and, from the sum, the new state that the engine writes back
(`set`). A workload never sees the network, the clock or another party's data.

Two kinds of workload run on the engine:

- `NeuralWorkload`: a torch model trained by SGD on this party's data; its state is the
  model, its contribution the weighted delta (`ringfl.algorithms`), for a configured
  number of rounds.
- `StatisticsWorkload`: any `Statistics` job — federated analytics, Newton logistic
  regression, boosted trees, metrics, a user's k-means (`ringfl.workloads`). Each step,
  the party computes a vector of sufficient statistics from its own rows, the engine's
  (secure) ring sum adds them (`StatisticsSum`), and every party applies the same
  deterministic update to the sum; it runs until the job says it is `done`. The adapter
  maps one step to one or two engine rounds (the agreed scale, `ringfl.engine.scale`).

Both run in the simulator and on real peers with no code per driver.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch import nn

from ringfl.algorithms.base import get_flat, set_flat
from ringfl.data import Dataset
from ringfl.engine import scale
from ringfl.errors import ConfigError, RingflError
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
        """The shared state as a flat float32 vector that later updates of this party
        leave as it is: a copy, or a read-only array the workload never writes."""
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

    @property
    def done(self) -> bool:
        """True when the job is finished before the configured number of rounds (the
        same on every member: decided from sums only)."""
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

    @property
    def done(self) -> bool:
        return False  # trains for the configured rounds

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

    @property
    def done(self) -> bool:
        return False


class Statistics(Protocol):
    """A statistics job, one instance per party (a sans-I/O state machine):

        while not job.done:
            v = job.statistics()    # this party's sufficient statistics, 1-D float64
            s = <sum of v over all parties>   (only the sum is revealed)
            job.apply(s)            # the same deterministic update on every party
        job.result()

    Invariants: `statistics()` returns a vector whose length depends only on the state
    (which every party shares), never on the party's own data; `apply` depends only on
    the state and the sum, so every party stays in the same state; values are finite.
    Optional: `scale_exponent()` -> a public E (the same on every party) with every
    |value| < 2^E, when the state implies one: the step then skips its SCALE round."""

    @property
    def done(self) -> bool: ...

    def statistics(self) -> np.ndarray: ...

    def apply(self, total: np.ndarray) -> None: ...

    def result(self) -> Any: ...


def check_vector(v: Any, where: str) -> np.ndarray:
    """`v` as a 1-D float64 array; refuses other shapes and non-finite values."""
    x = np.asarray(v, dtype=np.float64)
    if x.ndim != 1:
        raise ConfigError(f"{where}: statistics must be a 1-D vector, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x))[0])
        raise RingflError(f"{where}: statistics element {bad} is not finite ({x[bad]})")
    return x


@dataclass
class SumCounts:
    """What a `StatisticsWorkload` has summed so far: statistics vectors (`sums`),
    engine rounds they took (`rounds`: SCALE + SUM), statistics elements, the largest
    per-element error bound stated (`worst_resolution`, `ringfl.engine.scale`), and the
    seconds the job itself computed (`compute_s`: its `statistics` and `apply`)."""

    sums: int = 0
    rounds: int = 0
    elements: int = 0
    worst_resolution: float = 0.0
    compute_s: float = 0.0


class StatisticsWorkload:
    """A `Statistics` job as an engine workload (one per party; see the module
    docstring). `parties`: how many parties sum (for the stated resolution).

    Its state (`get`) is the vector it contributes while a round is pending (the scaled
    statistics, or the one-hot exponent vector of a SCALE round), else the last sum,
    which every party holds alike (so the driver's final hash is the same everywhere).
    The engine's `StatisticsSum` contributes it as it is and hands the sum back (`set`).
    It has no training data of its own to count (`num_samples` is 1: the setup sum then
    counts the parties) and no validation data."""

    def __init__(self, job: Statistics, *, parties: int) -> None:
        self.job = job
        self.parties = int(parties)
        self.counts = SumCounts()
        self._phase = "idle"  # idle | scale | sum: which round of the step comes next
        self._v: np.ndarray | None = None
        self._e: int | None = None
        self._out: np.ndarray | None = None  # the pending contribution
        self._last = np.zeros(0, dtype=np.float64)  # the last sum

    @property
    def name(self) -> str:
        return type(self.job).__name__

    @property
    def num_samples(self) -> int:
        return 1

    @property
    def num_val(self) -> int:
        return 0

    @property
    def num_classes(self) -> int:
        return 0

    @property
    def done(self) -> bool:
        return self._phase == "idle" and self.job.done

    def result(self) -> Any:
        """The job's result (the same on every party)."""
        return self.job.result()

    def get(self) -> np.ndarray:
        return (self._last if self._out is None else self._out).copy()

    def set(self, state: np.ndarray) -> None:
        total = np.asarray(state, dtype=np.float64)
        self._out = None
        self.counts.rounds += 1
        if self._phase == "scale":
            self._e = scale.agreed_exponent(total)
            self._last = total.copy()
            if self._e is not None:
                self._phase = "sum"
                return
            total = np.zeros(0)  # every party sent zeros: the sum is zeros, no SUM round
        assert self._v is not None
        s = scale.scale_up(total, self._e) if total.size else np.zeros_like(self._v)
        c = self.counts
        c.sums += 1
        c.elements += int(self._v.shape[0])
        c.worst_resolution = max(c.worst_resolution, scale.resolution(self.parties, self._e))
        self._phase, self._v, self._last = "idle", None, s
        t0 = time.perf_counter()
        self.job.apply(s.copy())
        c.compute_s += time.perf_counter() - t0

    def local(self, round_index: int) -> LocalStats:
        if self._phase == "idle":
            if self.job.done:
                raise RingflError(f"{self.name}: a round after the job is done")
            t0 = time.perf_counter()
            v = check_vector(self.job.statistics(), self.name)
            self.counts.compute_s += time.perf_counter() - t0
            self._v = v
            hint = getattr(self.job, "scale_exponent", None)  # optional (see Statistics)
            e = None if hint is None else hint()
            if e is None:
                self._phase = "scale"
                self._out = scale.exponent_onehot(v)
                return LocalStats(float("nan"))
            self._e = int(e)
            scale.check_bound(v, self._e, self.name)
            self._phase = "sum"
        assert self._v is not None
        self._out = scale.scale_down(self._v, self._e)
        return LocalStats(float("nan"))

    def evaluate(self) -> EvalCounts | None:
        return None


__all__ = [
    "AuxWorkload",
    "ClassifierWorkload",
    "EvalCounts",
    "LocalStats",
    "NeuralWorkload",
    "Statistics",
    "StatisticsWorkload",
    "SumCounts",
    "Workload",
    "check_vector",
]
