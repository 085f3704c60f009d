"""Where the simulator's parties train: compute backends.

The simulator (`ringfl.sim`) keeps the protocol machines, the in-memory network and the
virtual clock in its own process; each round, the live parties' local training runs on a
backend and gives the same bits on every one of them:

- `Inline()`: one party after another in the driver (the caller's torch threads);
- `Processes(workers)`: a pool of worker processes on this machine, one torch thread
  each; the parties' data, states and momentum in shared memory;
- `Ray(address, num_cpus, num_gpus)`: one Ray task per party and round, on a Ray cluster
  or a local Ray instance (`pip install 'ringfl[ray]'`).

`"auto"` (the default) picks `Processes` when more than one core is free (the cores this
process may use minus the one-minute load average), one worker per free core, and
`Inline` otherwise. Bit-identical results need the same torch thread count for training
everywhere: workers use one, so run `inline` with `torch.set_num_threads(1)` to compare
(`ringfl simulate` does by default).

    from ringfl.compute import Processes
    simulate(graph, config, backend=Processes(workers=4))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ringfl.compute.base import Backend
from ringfl.compute.job import TaskResult, TrainJob, TrainTask
from ringfl.compute.store import SimWorkload, StateStore
from ringfl.errors import ConfigError

BACKENDS = ("auto", "inline", "processes", "ray")


@dataclass(frozen=True)
class Inline:
    """Train in the driver, one party after another."""


@dataclass(frozen=True)
class Processes:
    """Train on `workers` local worker processes (None: one per core this process may
    use). `start`: "fork" (workers share the driver's memory; "auto" on Linux) or
    "spawn" (fresh interpreters)."""

    workers: int | None = None
    start: str = "auto"


@dataclass(frozen=True)
class Ray:
    """Train as Ray tasks. `address`: the Ray cluster (e.g. "auto" or
    "ray://head:10001"; None: the caller's `ray.init`, else a new local instance);
    `num_cpus`/`num_gpus`: Ray resources per party's task; `init`: more `ray.init`
    arguments when ringfl starts Ray itself."""

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    init: Mapping[str, Any] = field(default_factory=dict)


BackendSpec = str | Inline | Processes | Ray


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores() -> float:
    """Cores this process may use minus the one-minute load average (>= 0)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(0.0, usable_cores() - load)


def choose(spec: BackendSpec, parties: int) -> Inline | Processes | Ray:
    """The backend spec `spec` stands for, for a run of `parties` parties (see the
    module docstring for "auto")."""
    from ringfl.compute import shm

    if isinstance(spec, Inline | Processes | Ray):
        return spec
    if spec == "inline":
        return Inline()
    if spec == "processes":
        return Processes()
    if spec == "ray":
        return Ray()
    if spec != "auto":
        raise ConfigError(f"unknown compute backend {spec!r}; one of {', '.join(BACKENDS)}")
    free = free_cores()
    if free > 1 and parties > 1 and shm.available():
        return Processes(workers=min(parties, usable_cores(), math.ceil(free)))
    return Inline()


def open_backend(spec: BackendSpec, parties: int) -> Backend:
    """Start the backend `spec` stands for (workers start now). Close it when done (or
    use it as a context manager)."""
    chosen = choose(spec, parties)
    if isinstance(chosen, Inline):
        from ringfl.compute.inline import InlineBackend

        return InlineBackend()
    if isinstance(chosen, Processes):
        from ringfl.compute.processes import ProcessBackend

        workers = chosen.workers or usable_cores()
        return ProcessBackend(max(1, min(workers, parties)), start=chosen.start)
    from ringfl.compute.ray_backend import RayBackend

    return RayBackend(
        chosen.address, num_cpus=chosen.num_cpus, num_gpus=chosen.num_gpus, init=chosen.init
    )


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "Inline",
    "Processes",
    "Ray",
    "SimWorkload",
    "StateStore",
    "TaskResult",
    "TrainJob",
    "TrainTask",
    "choose",
    "free_cores",
    "open_backend",
    "usable_cores",
]
