"""`processes`: a pool of training worker processes on this machine, one torch thread
each (`python -m ringfl.compute.worker`), started by the driver itself.

Data paths: the parties' training data, the round's distinct start states, each party's
local result and momentum buffers lie in shared tables (`ringfl.compute.shm`), mapped by
the driver and every worker; only small task and result records travel over each
worker's private socket. The job (model spec or factory, optimiser settings) is
cloudpickled once to each worker. Workers start when the backend is created, so they
import torch while the driver loads the data.
"""

from __future__ import annotations

import contextlib
import os
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

#: How long a worker may take to stop before it is killed (seconds).
STOP_WAIT_S = 10.0


class _Worker:
    """One worker process and the driver's end of its socket."""

    def __init__(self, index: int) -> None:
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
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringfl.compute.worker", str(fd)],
            pass_fds=(fd,),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.pid: int | None = None

    def gone(self, doing: str) -> RuntimeError:
        code = self.proc.poll()
        return RuntimeError(
            f"processes backend: worker {self.index} exited (code {code}) while {doing}; "
            "its error output is above"
        )


class ProcessBackend(Backend):
    """Local training on `workers` worker processes (see the module docstring)."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        super().__init__()
        if workers < 1:
            raise ConfigError(f"processes backend: workers must be >= 1, got {workers}")
        from ringfl.compute import shm

        if not shm.available():
            raise ConfigError(
                "the processes backend needs Linux shared memory files (memfd); "
                "use backend 'inline' or 'ray'"
            )
        self.workers = workers
        self._pool = [_Worker(i) for i in range(workers)]
        self._tables: dict[str, SharedTable] = {}
        self._closed = False

    def _load(self) -> None:
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
        total = offsets[-1]
        trainer = Trainer(job)  # sizes only (models are small next to the data)
        kinds = set(job.classes)
        width = max(trainer.model(k).size for k in kinds)
        n = job.num_parties
        t = self._tables
        t["x"] = SharedTable((total, *job.input_shape), dtypes.pop(), "x")
        t["y"] = SharedTable((total,), np.int64, "y")
        held = []
        for d, a, b in zip(parts, offsets, offsets[1:], strict=False):
            t["x"].array[a:b] = d.x
            t["y"].array[a:b] = d.y
            held.append(Dataset(t["x"].array[a:b], t["y"].array[a:b], d.num_classes, d.name))
        self.parts = held  # the driver's view of the shared copy
        t["starts"] = SharedTable((n, width), np.float32, "starts")
        t["outs"] = SharedTable((n, width), np.float32, "outs")
        if job.train.momentum > 0:
            msize = max(trainer.momentum_size(k) for k in kinds)
            t["moments"] = SharedTable((n, msize), np.float32, "moments")
        message = JobMessage(
            job=job,
            tables={name: table.spec for name, table in t.items()},
            offsets=[int(o) for o in offsets],
            classes=list(job.classes),
            names=[d.name for d in parts],
        )
        blob = cloudpickle.dumps(message)
        for w in self._pool:
            try:
                w.conn.send(("job", list(sys.path), blob))
                for table in t.values():
                    assert table.fd is not None
                    send_handle(w.conn, table.fd, w.proc.pid)
            except (BrokenPipeError, ConnectionResetError):
                raise w.gone("starting") from None
        for w in self._pool:
            reply = self._recv(w, "starting")
            if reply[0] != "ready":
                raise RuntimeError(f"processes backend: worker {w.index} answered {reply[0]!r}")
            w.pid = reply[1]
        for table in t.values():
            table.close()  # every worker has mapped it; the mappings keep it alive

    def _recv(self, w: _Worker, doing: str) -> tuple[Any, ...]:
        while True:
            if wait([w.conn], timeout=1.0):
                try:
                    reply: tuple[Any, ...] = w.conn.recv()
                    return reply
                except (EOFError, ConnectionResetError):
                    raise w.gone(doing) from None
            if w.proc.poll() is not None:
                raise w.gone(doing)

    def _execute(
        self, tasks: Sequence[TrainTask], starts: Sequence[np.ndarray]
    ) -> Iterator[tuple[TaskResult, np.ndarray]]:
        table = self._tables["starts"].array
        for k, s in enumerate(starts):
            table[k, : s.shape[0]] = s
        todo = deque(tasks)
        busy: dict[Any, tuple[_Worker, TrainTask]] = {}  # by the worker's connection
        idle = list(self._pool)
        done: dict[int, TaskResult] = {}
        while todo or busy:
            while todo and idle:
                w = idle.pop()
                task = todo.popleft()
                try:
                    w.conn.send(("task", task))
                except (BrokenPipeError, ConnectionResetError):
                    raise w.gone(f"training peer {task.peer}") from None
                busy[w.conn] = (w, task)
            for ready in wait(list(busy), timeout=1.0):
                w, task = busy.pop(ready)
                try:
                    reply = w.conn.recv()
                except (EOFError, ConnectionResetError):
                    raise w.gone(f"training peer {task.peer}") from None
                if reply[0] == "error":
                    raise RuntimeError(
                        f"peer {reply[1]}: local training failed in a worker process:\n{reply[2]}"
                    )
                result: TaskResult = reply[1]
                done[task.peer] = result
                idle.append(w)
            for w, task in busy.values():
                if w.proc.poll() is not None:
                    raise w.gone(f"training peer {task.peer}")
        outs = self._tables["outs"].array
        for task in tasks:
            yield done[task.peer], outs[task.peer, : task.length]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._pool:
            with contextlib.suppress(OSError):
                w.conn.send(("stop",))
        deadline = time.monotonic() + STOP_WAIT_S
        for w in self._pool:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(timeout=STOP_WAIT_S)
            w.conn.close()
        for table in self._tables.values():
            table.close()


__all__ = ["ProcessBackend"]
