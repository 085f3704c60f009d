"""The workload plug-in interface and the two generic drivers.

A workload is a sans-I/O state machine held by every party:

    while not w.done:
        v = w.statistics()      # this party's sufficient statistics, 1-D float64
        s = secure_sum(v)       # the sum over all parties (only the sum is revealed)
        w.apply(s)              # the same deterministic update on every party
    w.result()

Invariants a workload must keep: `statistics()` returns a vector whose length depends only
on the state (which every party shares), never on the party's own data; `apply` depends
only on the state and the sum, so all parties stay in the same state; the statistics are
finite. Nothing about a party leaves it except inside a sum.

Optional: `scale_exponent()` → a public E (the same on every party, from the shared
state) with every party's |value| < 2^E, when the workload knows one (e.g. counts bounded
by a row count agreed earlier). A secure sum then skips its SCALE round
(`ringfl.workloads.securesum`); a value beyond the bound is refused, never wrapped.

Two drivers run this loop: `run_party` (one party and a per-party `secure_sum`, e.g. a
real peer over ZeroMQ) and `run_parties` (all parties in one process and a `sum_all`
over the list of their vectors, e.g. the simulated secure ring or the plain sum of a
centralized reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ringfl.errors import ConfigError, RingflError

#: A party's secure sum: its own vector (and the optional public scale exponent) in, the
#: sum over all parties out.
PartySum = Callable[..., np.ndarray]
#: All parties' vectors (and the optional public scale exponent) in, the sum out.
SumAll = Callable[..., np.ndarray]

#: No workload of this package needs more rounds; a runaway loop is a bug.
MAX_ROUNDS = 100_000


@runtime_checkable
class Workload(Protocol):
    """One party's side of a workload (see the module docstring)."""

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


def scale_exponent(workload: Workload) -> int | None:
    """The workload's public scale exponent for its next sum, if it declares one."""
    hint = getattr(workload, "scale_exponent", None)
    return None if hint is None else hint()


def run_party(workload: Workload, secure_sum: PartySum) -> Any:
    """Drive one party's workload to the end with its `secure_sum`; returns its result."""
    for _ in range(MAX_ROUNDS):
        if workload.done:
            return workload.result()
        v = check_vector(workload.statistics(), type(workload).__name__)
        total = secure_sum(v, exponent=scale_exponent(workload))
        workload.apply(np.asarray(total, dtype=np.float64))
    raise RingflError(f"{type(workload).__name__}: no end after {MAX_ROUNDS} rounds")


def run_parties(workloads: Sequence[Workload], sum_all: SumAll) -> list[Any]:
    """Drive every party's workload in this process: each round, one `sum_all` over all
    parties' vectors, the sum applied by every party. Returns the results in order."""
    if not workloads:
        raise ConfigError("run_parties: no parties")
    name = type(workloads[0]).__name__
    for _ in range(MAX_ROUNDS):
        finished = {w.done for w in workloads}
        if len(finished) != 1:
            raise RingflError(f"{name}: parties disagree on whether the workload is done")
        if finished.pop():
            return [w.result() for w in workloads]
        vs = [check_vector(w.statistics(), f"{name} of party {i}") for i, w in enumerate(workloads)]
        if len({v.shape for v in vs}) != 1:
            raise RingflError(f"{name}: parties sent statistics of different lengths")
        total = np.asarray(sum_all(vs, exponent=scale_exponent(workloads[0])), dtype=np.float64)
        for w in workloads:
            w.apply(total.copy())
    raise RingflError(f"{name}: no end after {MAX_ROUNDS} rounds")


def plain_sum(vectors: list[np.ndarray], exponent: int | None = None) -> np.ndarray:
    """The float64 sum in party order, no masking: the centralized reference."""
    out = np.zeros_like(vectors[0], dtype=np.float64)
    for v in vectors:
        out += v
    return out


__all__ = [
    "MAX_ROUNDS",
    "PartySum",
    "SumAll",
    "Workload",
    "check_vector",
    "plain_sum",
    "run_parties",
    "run_party",
    "scale_exponent",
]
