"""`ray`: each party's local training of a round is one Ray task, placed by Ray's own
scheduler on a cluster (or a local Ray instance) with the resources asked per party
(`num_cpus`, `num_gpus`). The driver keeps the protocol, the network and the clock.

Data paths: the job, each party's data and the test set are put into Ray's object store
once; each round puts the distinct start states (one in ring mode) and passes each
party's momentum buffers; a task returns the party's local state and momentum. Scoring
the parties' models (`evaluate`, every round of a gossip run) is a Ray task per model. Ray moves these
between machines with its own serialisation: use a cluster you control (docs/training.md).
Tasks train with one torch thread (results are bit-identical to `inline` at one thread);
`num_cpus` is what Ray reserves for a task.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ringfl.compute.base import Backend
from ringfl.compute.job import TaskResult, Trainer, TrainJob, TrainTask
from ringfl.data import Dataset
from ringfl.errors import ConfigError
from ringfl.local import EvalResult


def train_task(
    job: TrainJob,
    data: tuple[np.ndarray, np.ndarray, int, str],
    start: np.ndarray,
    momentum: np.ndarray | None,
    task: TrainTask,
) -> tuple[TaskResult, np.ndarray, np.ndarray | None]:
    """One party's round in a Ray worker: (result, local state, momentum or None)."""
    import torch

    # a Ray worker runs ringfl's tasks only through here: its torch threads are set here
    torch.set_num_threads(1)
    x, y, classes, name = data
    # objects from Ray's store are read-only; training reads them only, but torch wants
    # writable arrays
    d = Dataset(np.array(x), np.array(y), classes, name)
    trainer = Trainer(job)
    k = job.classes[task.peer]
    out = np.empty(trainer.model(k).size, dtype=np.float32)
    mom = None
    if job.train.momentum > 0:
        size = trainer.momentum_size(k)
        mom = np.zeros(size, np.float32) if momentum is None else np.array(momentum)
    result = trainer.run(task, np.asarray(start), d, out, mom)
    return result, out, (mom if result.momentum else None)


def evaluate_task(
    job: TrainJob,
    test: tuple[np.ndarray, np.ndarray, int, str],
    peer: int,
    state: np.ndarray,
    extras: dict[str, np.ndarray] | None,
) -> EvalResult:
    """One party's model scored on the test set in a Ray worker."""
    import torch

    torch.set_num_threads(1)
    x, y, classes, name = test
    d = Dataset(np.array(x), np.array(y), classes, name)  # writable, as in `train_task`
    return Trainer(job).evaluate(peer, np.asarray(state), extras, d)


class RayBackend(Backend):
    """Local training as Ray tasks (see the module docstring). `address`: the cluster
    to join (None: a running `ray.init` of the caller, else a new local instance);
    `num_cpus`/`num_gpus`: resources per party's task; `init`: more `ray.init`
    arguments when ringfl starts Ray."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        init: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray backend needs Ray: pip install 'ringfl[ray]'") from None
        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            ray.init(address=address, **dict(init or {}))
            self._owns = True
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        self.workers = max(1, int(resources.get("CPU", 1) // max(num_cpus, 1e-9)))
        self._remote = ray.remote(train_task).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._score = ray.remote(evaluate_task).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._moments: list[np.ndarray | None] = []

    def _load(self) -> None:
        ray = self.ray
        self._job_ref = ray.put(self.job)
        self._data_refs = [ray.put((d.x, d.y, d.num_classes, d.name)) for d in self.parts]
        self._moments = [None] * self.job.num_parties
        t = self.test
        self._test_ref = None if t is None else ray.put((t.x, t.y, t.num_classes, t.name))

    def _reset(self, peer: int) -> None:
        if self._moments:
            self._moments[peer] = None

    def _execute(
        self,
        tasks: Sequence[TrainTask],
        starts: Sequence[np.ndarray],
        background: Iterator[None] | None = None,
    ) -> Iterator[tuple[TaskResult, np.ndarray]]:
        ray = self.ray
        refs = [ray.put(s) for s in starts]
        futures = [
            self._remote.remote(
                self._job_ref,
                self._data_refs[t.peer],
                refs[t.start],
                self._moments[t.peer] if t.momentum else None,
                t,
            )
            for t in tasks
        ]
        for _ in background or ():  # the driver's own work while the cluster trains
            pass
        for t, (result, local, mom) in zip(tasks, ray.get(futures), strict=True):
            self._moments[t.peer] = mom
            yield result, local

    def _evaluate(self, peers: list[int], test: Dataset) -> list[EvalResult]:
        store, test_ref = self.store, self._test_ref
        assert test_ref is not None  # `load` put the test set
        futures = [
            self._score.remote(self._job_ref, test_ref, p, store.states[p], store.extras[p] or None)
            for p in peers
        ]
        return list(self.ray.get(futures))

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns = False


__all__ = ["RayBackend", "train_task"]
