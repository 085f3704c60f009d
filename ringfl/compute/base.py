"""What every compute backend does for the simulator: hold the parties' state
(`StateStore`), hand the round engine a `SimWorkload` per party, and run a round's local
training (`train_round`) — where, is the backend's business (`_execute`).

    backend.load(job, parts, vals, test)    # once, before the first round
    engine = make_engine(..., backend.workload(p), ...)   # p's (new) incarnation
    stats = backend.train_round(r, engines) # every live party's local work of round r
    scores = backend.evaluate(peers)        # their models on the test set (gossip)
    backend.close()

The protocol, the network and the virtual clock stay in the driver: only local training
and the scoring of models move. Results are the same bits on every backend and worker
count (each task reads only its party's start state, data, momentum and integer buffers,
and writes only its own).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import numpy as np

from ringfl.compute.job import TaskResult, TrainJob, TrainTask
from ringfl.compute.store import SimWorkload, StateStore
from ringfl.data import Dataset
from ringfl.engine.round import RoundEngine
from ringfl.engine.workload import LocalStats
from ringfl.local import EvalResult, evaluate


class Backend:
    """A compute backend (see the module docstring). `name`: inline, processes or ray;
    `workers`: how many trainings it runs at once (a hint for reports)."""

    name = "backend"

    def __init__(self) -> None:
        self.workers = 1
        self._store: StateStore | None = None
        self.parts: list[Dataset] = []
        self.vals: list[Dataset | None] = []
        self.test: Dataset | None = None

    @property
    def store(self) -> StateStore:
        if self._store is None:
            raise RuntimeError(f"{self.name} backend: load(job, ...) first")
        return self._store

    @property
    def job(self) -> TrainJob:
        return self.store.job

    def load(
        self,
        job: TrainJob,
        parts: Sequence[Dataset],
        vals: Sequence[Dataset | None],
        test: Dataset | None = None,
    ) -> list[Dataset]:
        """Prepare to train the parties of `job` (training data `parts`, validation
        data `vals`, evaluated in the driver) and to score their models on `test`
        (`evaluate`). Returns the training sets as the backend holds them (`processes`:
        in shared memory), so the caller can drop its own copy."""
        if len(parts) != job.num_parties or len(vals) != job.num_parties:
            raise ValueError(
                f"{job.num_parties} parties in the job, {len(parts)} training and "
                f"{len(vals)} validation sets"
            )
        self._store = StateStore.create(job)
        self.parts, self.vals, self.test = list(parts), list(vals), test
        self._load()
        return list(self.parts)

    def workload(self, peer: int) -> SimWorkload:
        """The workload of a new incarnation of party `peer` (initial model, fresh
        optimiser)."""
        self.store.reset(peer)
        self._reset(peer)
        return SimWorkload(peer, self.store, self.parts[peer], self.vals[peer])

    def train_round(
        self,
        round_index: int,
        engines: Mapping[int, RoundEngine],
        background: Iterator[None] | None = None,
    ) -> dict[int, LocalStats]:
        """Every engine's local work of round `round_index` (`engine.train`): the
        simulated parties' training runs on this backend first (none when no training
        job was loaded: e.g. statistics workloads compute in their engines).

        `background`: short steps of the driver's own work that do not depend on this
        round's training; a backend that trains elsewhere runs them while it waits for
        its workers, and leaves the rest to the caller (inline runs none of them)."""
        if self._store is None:
            return {p: e.train(round_index) for p, e in engines.items()}
        store = self._store
        starts: list[np.ndarray] = []
        row: dict[int, int] = {}
        tasks: list[TrainTask] = []
        for p, e in engines.items():
            w = e.workload
            if e.aux or not isinstance(w, SimWorkload) or w.store is not store:
                continue
            s = store.states[p]
            k = row.setdefault(id(s), len(starts))
            if k == len(starts):
                starts.append(s)
            tasks.append(
                TrainTask(p, round_index, k, int(s.shape[0]), store.momentum[p], store.extras[p])
            )
        # largest first (LPT): with uneven parties a pool of workers finishes the round
        # sooner (e.g. 8 Dirichlet(0.5) MNIST parties on 2 workers: 477 instead of 565
        # steps on the busiest worker); the order changes no bits, tasks are independent
        tasks.sort(key=lambda t: -len(self.parts[t.peer]))
        for result, local in self._execute(tasks, starts, background):
            store.accept(result, round_index, local)
        return {p: e.train(round_index) for p, e in engines.items()}

    def evaluate(self, peers: Sequence[int]) -> list[EvalResult]:
        """Each party's current model scored on the test set given to `load`, in the order
        of `peers`: the same bits as `evaluate(workload.model, test)`. Where the backend
        has workers, they share the parties out."""
        if self.test is None:
            raise RuntimeError(f"{self.name} backend: no test set was loaded")
        return self._evaluate(list(peers), self.test)

    # -- what a backend implements ------------------------------------------------------------

    def _evaluate(self, peers: list[int], test: Dataset) -> list[EvalResult]:
        """`evaluate`; by default here in the driver, one party after another."""
        return [evaluate(self.store.module(p, scratch=False), test) for p in peers]

    def _load(self) -> None:
        """Ship the job and the parties' data to where training runs."""

    def _reset(self, peer: int) -> None:
        """Forget party `peer`'s private training state (momentum) held here."""

    def _execute(
        self,
        tasks: Sequence[TrainTask],
        starts: Sequence[np.ndarray],
        background: Iterator[None] | None = None,
    ) -> Iterator[tuple[TaskResult, np.ndarray]]:
        """Run `tasks` (task.start indexes `starts`); yield each result with the
        party's local state, which must stay unchanged until that party trains again.
        `background`: see `train_round`."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop workers and release what the backend holds (idempotent)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["Backend"]
