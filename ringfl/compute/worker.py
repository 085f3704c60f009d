"""A training worker of the `processes` backend. Two ways to start one:

- forked from the driver (`forked`): it inherits the job, the parties' data and the
  shared tables with the driver's memory (pages shared until written);
- spawned (`python -m ringfl.compute.worker FD`, FD one end of a private socket pair):
  it receives the job (cloudpickled by the driver that started it: the only pickles it
  reads come from its parent over that socket) and the shared tables' file descriptors.

Either way it sets its process-wide settings at its entry point (one torch thread), then
trains one task at a time: reads the party's start state, data and momentum, writes its
local state and momentum into the shared tables, and answers with the small
`TaskResult`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle

import numpy as np

from ringfl.compute.job import Trainer, TrainJob
from ringfl.data import Dataset

#: The driver's first message: ("job", import path, JobMessage as cloudpickle bytes); then
#: one file descriptor per table in `JobMessage.tables` order.


@dataclass(frozen=True)
class JobMessage:
    """The job, the shared tables, and where party p's samples lie in the data tables:
    rows offsets[p]:offsets[p + 1]."""

    job: object  # TrainJob
    tables: dict[str, object]  # name -> TableSpec
    offsets: list[int]
    classes: list[int]
    names: list[str]
    test: tuple[int, str] | None = None  # the test set's (classes, name): tables tx, ty


def serve(conn: Connection) -> int:
    """A spawned worker: receive the job and the tables, then train (`train_loop`)."""
    import cloudpickle

    from ringfl.compute.job import Trainer
    from ringfl.compute.shm import attach
    from ringfl.data import Dataset

    try:
        kind, path, blob = conn.recv()
    except EOFError:  # the driver closed before sending a job
        return 0
    if kind != "job":
        raise RuntimeError(f"compute worker: expected the job first, got {kind!r}")
    # the driver's import path first, so that a model factory pickled by reference
    # imports here as it does there
    for entry in reversed(path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # a pipe from the driver that forked/spawned this worker on this machine, never the
    # network: cloudpickle only ships the user's own code and job here
    msg: JobMessage = cloudpickle.loads(blob)
    tables = {}
    for name, spec in msg.tables.items():
        fd = recv_handle(conn)
        tables[name] = attach(fd, spec)  # type: ignore[arg-type]
        os.close(fd)
    x, y = tables["x"], tables["y"]
    o = msg.offsets
    parts = [
        Dataset(x[o[p] : o[p + 1]], y[o[p] : o[p + 1]], msg.classes[p], msg.names[p])
        for p in range(len(msg.classes))
    ]
    test = None
    if msg.test is not None:
        test = Dataset(tables["tx"], tables["ty"], msg.test[0], msg.test[1])
    trainer = Trainer(msg.job)  # type: ignore[arg-type]
    return train_loop(
        conn, trainer, parts, tables["starts"], tables["outs"], tables.get("moments"), test
    )


def train_loop(
    conn: Connection,
    trainer: Trainer,
    parts: Sequence[Dataset],
    starts: np.ndarray,
    outs: np.ndarray,
    moments: np.ndarray | None,
    test: Dataset | None = None,
) -> int:
    """Say ready, then train batches of tasks (or score models on `test`) until told to
    stop (or the driver goes)."""
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the driver is gone
            return 0
        if request[0] == "stop":
            return 0
        if request[0] == "eval":  # (row of the start table, peer, length, extras) each
            scores = []
            for k, p, length, extras in request[1]:
                try:
                    assert test is not None, "no test set in this worker"
                    scores.append(trainer.evaluate(p, starts[k, :length], extras, test))
                except Exception:
                    conn.send(("error", p, traceback.format_exc()))
                    break
            else:
                conn.send(("evals", scores))
            continue
        results = []
        for task in request[1]:
            p = task.peer
            try:
                start = np.asarray(starts[task.start, : task.length])
                mom = None if moments is None else moments[p]
                results.append(trainer.run(task, start, parts[p], outs[p], mom))
            except Exception:
                conn.send(("error", p, traceback.format_exc()))
                break
        else:
            conn.send(("done", results))


def forked(
    conn: Connection,
    job: TrainJob,
    parts: Sequence[Dataset],
    tables: dict[str, np.ndarray],
    test: Dataset | None,
) -> None:
    """The body of a worker forked from the driver (never returns): it inherited the job,
    the parties' data, the test set and the shared tables with the driver's memory."""
    code = 1
    try:
        import torch

        torch.set_num_threads(1)  # this process's setting, at its entry point
        trainer = Trainer(job)
        code = train_loop(
            conn, trainer, parts, tables["starts"], tables["outs"], tables.get("moments"), test
        )
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into the driver's stack (its atexit, its tests)


def main(argv: list[str]) -> int:
    # this process's own settings, at its entry point: one torch thread, as results
    # are bit-identical only at equal thread counts
    import torch

    torch.set_num_threads(1)
    conn = Connection(int(argv[1]))
    try:
        return serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    status = main(sys.argv)
    gc.freeze()  # no final collections over torch's objects (see `ringfl.cli.run`)
    sys.exit(status)
