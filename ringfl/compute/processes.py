"""`processes`: a pool of training worker processes on this machine, one torch thread
each, started by the driver itself (`ringfl.compute.worker`).

Two start methods:

- `fork` (the default on Linux): workers are forked once the data is loaded; they share
  the driver's memory (torch, the job, the parties' data) page for page until they
  write, so a worker costs little more than its transient model. Nothing is pickled to
  them. A forked worker runs only ringfl's training loop (torch, numpy, its socket), the
  way torch's DataLoader workers do; a program whose own threads hold locks that torch
  needs should ask for `spawn`.
- `spawn` (otherwise, or when asked): fresh interpreters (`python -m
  ringfl.compute.worker`), started with the backend so that they import torch while the
  driver loads the data; the parties' data goes into shared tables once and the job
  (model spec or factory, optimiser settings) is cloudpickled once to each.

Per round, the distinct start states, each party's local result and momentum buffers lie
in shared tables (`ringfl.compute.shm`), mapped by the driver and every worker; only
small task and result records travel over each worker's private socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import send_handle
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.compute.base import Backend
from ringfl.compute.job import TaskResult, Trainer, TrainTask
from ringfl.compute.shm import SharedTable
from ringfl.data import Dataset
from ringfl.errors import ConfigError
from ringfl.local import EvalResult

#: The most tasks sent to a worker in one message.
MAX_BATCH = 16
_END = object()  # a finished background iterator
#: How long a worker may take to stop before it is killed (seconds).
STOP_WAIT_S = 10.0
START_METHODS = ("auto", "fork", "spawn")


class _Worker:
    """One worker process (spawned or forked) and the driver's end of its socket."""

    def __init__(
        self, index: int, conn: Connection, pid: int, proc: subprocess.Popen[bytes] | None
    ):
        self.index = index
        self.conn = conn
        self.pid = pid
        self.proc = proc  # spawned: its Popen; forked: None
        self.code: int | None = None

    @staticmethod
    def spawn(index: int) -> _Worker:
        import ringfl

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # this worker's own thread settings, from its first instruction on
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        root = str(Path(ringfl.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            [root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        )
        fd = theirs.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ringfl.compute.worker", str(fd)],
            pass_fds=(fd,),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        return _Worker(index, Connection(ours.detach()), proc.pid, proc)

    @staticmethod
    def fork(
        index: int,
        backend: ProcessBackend,
        tables: dict[str, np.ndarray],
        siblings: Sequence[_Worker],
    ) -> _Worker:
        from ringfl.compute.worker import forked

        ours, theirs = socket.socketpair()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            ours.close()
            for w in siblings:  # so each sibling sees the driver go when it goes
                w.conn.close()
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
            forked(Connection(theirs.detach()), backend.job, backend.parts, tables, backend.test)
        theirs.close()
        return _Worker(index, Connection(ours.detach()), pid, None)

    def poll(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal)."""
        if self.proc is not None:
            return self.proc.poll()
        if self.code is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == self.pid:
                    self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the end; True when it ended."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def gone(self, doing: str) -> RuntimeError:
        self.wait(1.0)
        return RuntimeError(
            f"processes backend: worker {self.index} exited (code {self.poll()}) while "
            f"{doing}; its error output is above"
        )


class ProcessBackend(Backend):
    """Local training on `workers` worker processes (see the module docstring).
    `start`: "fork", "spawn" or "auto" (fork where possible)."""

    name = "processes"

    def __init__(self, workers: int, start: str = "auto") -> None:
        super().__init__()
        if workers < 1:
            raise ConfigError(f"processes backend: workers must be >= 1, got {workers}")
        if start not in START_METHODS:
            raise ConfigError(f"processes backend: start must be one of {START_METHODS}")
        from ringfl.compute import shm

        if not shm.available():
            raise ConfigError(
                "the processes backend needs Linux shared memory files (memfd); "
                "use backend 'inline' or 'ray'"
            )
        if start == "auto":
            start = "fork" if sys.platform.startswith("linux") else "spawn"
        self.workers = workers
        self.start = start
        self._pool: list[_Worker] = []
        if start == "spawn":  # now: they import torch while the driver loads the data
            self._pool = [_Worker.spawn(i) for i in range(workers)]
        self._tables: dict[str, SharedTable] = {}
        self._closed = False

    def _load(self) -> None:
        job = self.job
        trainer = Trainer(job)  # sizes only
        kinds = set(job.classes)
        width = max(trainer.model(k).size for k in kinds)
        n = job.num_parties
        t = self._tables
        t["starts"] = SharedTable((n, width), np.float32, "starts")
        t["outs"] = SharedTable((n, width), np.float32, "outs")
        if job.train.momentum > 0:
            msize = max(trainer.momentum_size(k) for k in kinds)
            t["moments"] = SharedTable((n, msize), np.float32, "moments")
        if self.start == "fork":
            arrays = {name: table.array for name, table in t.items()}
            for i in range(self.workers):
                self._pool.append(_Worker.fork(i, self, arrays, self._pool))
        else:
            self._send_job(t)
        for w in self._pool:
            reply = self._recv(w, "starting")
            if reply[0] != "ready":
                raise RuntimeError(f"processes backend: worker {w.index} answered {reply[0]!r}")
        for table in t.values():
            table.close()  # every worker has mapped it; the mappings keep it alive

    def _send_job(self, t: dict[str, SharedTable]) -> None:
        """Spawned workers: the parties' data into shared tables, then the job and every
        table's file descriptor to each worker."""
        import cloudpickle

        from ringfl.compute.worker import JobMessage

        job, parts = self.job, self.parts
        dtypes = {d.x.dtype for d in parts}
        if len(dtypes) != 1:
            raise ConfigError(
                f"processes backend: the parties' samples have different dtypes "
                f"{sorted(str(d) for d in dtypes)}; use backend 'inline'"
            )
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in parts])]).tolist()
        t["x"] = SharedTable((offsets[-1], *job.input_shape), dtypes.pop(), "x")
        t["y"] = SharedTable((offsets[-1],), np.int64, "y")
        held = []
        for d, a, b in zip(parts, offsets, offsets[1:], strict=False):
            t["x"].array[a:b] = d.x
            t["y"].array[a:b] = d.y
            held.append(Dataset(t["x"].array[a:b], t["y"].array[a:b], d.num_classes, d.name))
        self.parts = held  # the driver's view of the shared copy
        test = self.test
        if test is not None and len(test):
            t["tx"] = SharedTable(test.x.shape, test.x.dtype, "tx")
            t["ty"] = SharedTable(test.y.shape, test.y.dtype, "ty")
            t["tx"].array[...] = test.x
            t["ty"].array[...] = test.y
        message = JobMessage(
            job=job,
            tables={name: table.spec for name, table in t.items()},
            offsets=[int(o) for o in offsets],
            classes=list(job.classes),
            names=[d.name for d in parts],
            test=None if test is None or not len(test) else (test.num_classes, test.name),
        )
        blob = cloudpickle.dumps(message)
        for w in self._pool:
            try:
                w.conn.send(("job", list(sys.path), blob))
                for table in t.values():
                    assert table.fd is not None
                    send_handle(w.conn, table.fd, w.pid)
            except (BrokenPipeError, ConnectionResetError):
                raise w.gone("starting") from None

    def _recv(self, w: _Worker, doing: str) -> tuple[Any, ...]:
        while True:
            if wait([w.conn], timeout=1.0):
                try:
                    reply: tuple[Any, ...] = w.conn.recv()
                    return reply
                except (EOFError, ConnectionResetError):
                    raise w.gone(doing) from None
            if w.poll() is not None:
                raise w.gone(doing)

    def _execute(
        self,
        tasks: Sequence[TrainTask],
        starts: Sequence[np.ndarray],
        background: Iterator[None] | None = None,
    ) -> Iterator[tuple[TaskResult, np.ndarray]]:
        table = self._tables["starts"].array
        for k, s in enumerate(starts):
            table[k, : s.shape[0]] = s
        # small batches: one message per task costs more than a tiny task (logistic
        # regression at 10,000 parties), while a few batches per worker keep them balanced
        todo = deque(tasks)
        size = max(1, min(MAX_BATCH, len(tasks) // (16 * len(self._pool))))
        busy: dict[Any, tuple[_Worker, list[TrainTask]]] = {}  # by the worker's connection
        idle = list(self._pool)
        done: dict[int, TaskResult] = {}
        while todo or busy:
            while todo and idle:
                w = idle.pop()
                batch = [todo.popleft() for _ in range(min(size, len(todo)))]
                try:
                    w.conn.send(("tasks", batch))
                except (BrokenPipeError, ConnectionResetError):
                    raise w.gone(f"training peer {batch[0].peer}") from None
                busy[w.conn] = (w, batch)
            # while the workers train, the driver does a step of its background work
            # between polls (a step is ~1 ms, so a finished worker waits no longer)
            ready_now = wait(list(busy), timeout=0.0 if background is not None else 1.0)
            if not ready_now and background is not None:
                if next(background, _END) is _END:
                    background = None
                continue
            for ready in ready_now:
                w, batch = busy.pop(ready)
                try:
                    reply = w.conn.recv()
                except (EOFError, ConnectionResetError):
                    raise w.gone(f"training peer {batch[0].peer}") from None
                if reply[0] == "error":
                    raise RuntimeError(
                        f"peer {reply[1]}: local training failed in a worker process:\n{reply[2]}"
                    )
                results: list[TaskResult] = reply[1]
                for result in results:
                    done[result.peer] = result
                idle.append(w)
            for w, batch in busy.values():
                if w.poll() is not None:
                    raise w.gone(f"training peer {batch[0].peer}")
        outs = self._tables["outs"].array
        for task in tasks:
            yield done[task.peer], outs[task.peer, : task.length]

    def _evaluate(self, peers: list[int], test: Dataset) -> list[EvalResult]:
        if len(test) == 0:  # nothing to share out (and no empty shared table to map)
            return super()._evaluate(peers, test)
        # the states go into the start table (free between rounds), a share per worker
        store = self.store
        table = self._tables["starts"].array
        items = []
        for k, p in enumerate(peers):
            s = store.states[p]
            table[k, : s.shape[0]] = s
            items.append((k, p, int(s.shape[0]), store.extras[p] or None))
        pool = self._pool
        share = -(-len(items) // len(pool)) if items else 0
        asked = []
        for i, w in enumerate(pool):
            mine = items[i * share : (i + 1) * share]
            if not mine:
                continue
            try:
                w.conn.send(("eval", mine))
            except (BrokenPipeError, ConnectionResetError):
                raise w.gone(f"scoring peer {mine[0][1]}") from None
            asked.append(w)
        results: list[EvalResult] = []
        for w in asked:  # in order: worker i scored the i-th share
            reply = self._recv(w, "scoring models")
            if reply[0] == "error":
                raise RuntimeError(
                    f"peer {reply[1]}: evaluation failed in a worker process:\n{reply[2]}"
                )
            if reply[0] != "evals":
                raise RuntimeError(f"processes backend: worker {w.index} answered {reply[0]!r}")
            results.extend(reply[1])
        return results

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._pool:
            with contextlib.suppress(OSError):
                w.conn.send(("stop",))
        deadline = time.monotonic() + STOP_WAIT_S
        for w in self._pool:
            if not w.wait(max(0.1, deadline - time.monotonic())):
                w.kill()
                w.wait(STOP_WAIT_S)
            w.conn.close()
        for table in self._tables.values():
            table.close()


__all__ = ["START_METHODS", "ProcessBackend"]
