"""A training worker of the `processes` backend: `python -m ringfl.compute.worker FD`,
started by the driver with one end of a private socket pair as FD.

It sets its process-wide settings here, at its entry point (one torch thread), receives
the job (cloudpickled by the driver that started it: the only pickles it reads come from
its parent over that socket) and the shared tables' file descriptors, then trains one
task at a time: reads the party's start state, data and momentum from the shared tables,
writes its local state and momentum back, and answers with the small `TaskResult`.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle

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


def serve(conn: Connection) -> int:
    import cloudpickle
    import numpy as np

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
    msg: JobMessage = cloudpickle.loads(blob)
    tables = {}
    for name, spec in msg.tables.items():
        fd = recv_handle(conn)
        tables[name] = attach(fd, spec)  # type: ignore[arg-type]
        os.close(fd)
    trainer = Trainer(msg.job)  # type: ignore[arg-type]
    x, y, starts, outs = tables["x"], tables["y"], tables["starts"], tables["outs"]
    moments = tables.get("moments")
    data: dict[int, Dataset] = {}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the driver is gone
            return 0
        if request[0] == "stop":
            return 0
        task = request[1]
        p = task.peer
        try:
            d = data.get(p)
            if d is None:
                a, b = msg.offsets[p], msg.offsets[p + 1]
                d = data[p] = Dataset(x[a:b], y[a:b], msg.classes[p], msg.names[p])
            start = np.asarray(starts[task.start, : task.length])
            mom = None if moments is None else moments[p]
            result = trainer.run(task, start, d, outs[p], mom)
        except Exception:
            conn.send(("error", p, traceback.format_exc()))
            continue
        conn.send(("done", result))


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
    sys.exit(main(sys.argv))
