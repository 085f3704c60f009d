"""Runs this party's part of one task run: its real peer process, and nothing else.

This is the one place that knows how a standing node drives the engine. Every kind runs
as one real peer of the round engine (`ringfl.peer.node.PeerNode`) in a process of its
own; a run is:

1. `prepare`: write into the run folder the run's topology (the participants, each at
   the endpoint it announced for this run, with the link and masking public keys from the
   node topology, the ring in participant order) and what the kind needs:
   - train: the party's peer config (the task's shared config and this party's
     per-party field values; the public test set) and, for a scheduled re-run, the last
     run's model as a round-0 checkpoint, so training continues from it. The party's
     own data (its catalog file restricted to the task's columns, `data/train.npz`) goes
     to the peer with `--data`: the weights come from the engine's secure setup sum.
   - analytics, newton, gbdt: the query or task (`job.json`, the spec's [config]); the
     party's table restricted to the task's columns and the label (`data/table.csv`).
2. `PeerProcess.start`: `python -m ringfl peer --topology ... --node ... --config ...
   --keys ... --data ... --out ...` (train), or `python -m ringfl analytics|fit ...
   --data ... --peer-dir ...` (the statistics kinds, the same peer with a statistics
   job), in its own session, output to `peer.log`.
3. `PeerProcess.wait`: wait for the exit, then read the peer's `summary.json` (status,
   hash of the final state — the model, or a statistics job's last sum — which every
   party holds alike), with `metrics.jsonl` and `model.npz` / `model.json` /
   `result.json` left in the folder for the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from ringfl import topology
from ringfl.peer.identity import MASK_KEY

#: Task kinds this node's engine can run (the other kinds are refused with a reason).
SUPPORTED_KINDS = ("train", "analytics", "newton", "gbdt")
#: Where each statistics kind leaves its result in the run folder.
RESULT_FILES = {"analytics": "result.json", "newton": "model.json", "gbdt": "model.json"}


@dataclass
class RunRequest:
    """Everything one run of one party needs (paths are this party's own)."""

    task: str
    run: int
    node: str
    participants: list[str]
    endpoints: dict[str, str]  # participant -> tcp://host:port of its peer in this run
    node_graph: nx.Graph  # the standing topology (public keys)
    keys: Path  # this party's key directory
    folder: Path  # the run folder (created)
    config: dict[str, Any]  # train: shared config + this party's values (no [data]); else
    # the query (analytics) or task (newton, gbdt)
    train: Path  # this party's data, already restricted to the task's columns
    test: Path | None = None  # train: the evaluation set
    warm_start: Path | None = None  # model.npz of the last run, for scheduled re-runs
    pace_s: float = 0.0
    kind: str = "train"


@dataclass
class RunOutcome:
    """How a run ended for this party."""

    status: str  # succeeded | failed | cancelled
    hash: str = ""
    accuracy: float | None = None
    loss: float | None = None
    rounds: int | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_event(self, run: int) -> dict[str, Any]:
        return {
            "run": run,
            "status": self.status,
            "hash": self.hash,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "rounds": self.rounds,
            "reason": self.reason[:500],
        }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list) and not any(isinstance(x, dict) for x in v):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def toml_text(cfg: dict[str, Any]) -> str:
    """A small TOML writer for engine configs: scalars, lists, tables, arrays of tables."""

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    top, tables = [], []
    for k, v in cfg.items():
        if not isinstance(v, dict):
            top.append(f"{k} = {_toml_value(v)}")
            continue
        lines = [f"[{k}]"]
        lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items() if not is_tables(vv)]
        for kk, vv in v.items():
            if is_tables(vv):
                for item in vv:
                    lines.append(f"[[{k}.{kk}]]")
                    lines += [f"{json.dumps(a)} = {_toml_value(b)}" for a, b in item.items()]
        tables.append("\n".join(lines))
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def run_topology(req: RunRequest) -> nx.Graph:
    """The participants as a ring, each at its endpoint for this run."""
    g = nx.Graph()
    for p in req.participants:
        src = req.node_graph.nodes[p]
        attrs = {topology.ADDRESS: req.endpoints[p]}
        for key in (topology.PUBLIC_KEY, MASK_KEY):
            if key in src:
                attrs[key] = src[key]
        g.add_node(p, **attrs)
    n = len(req.participants)
    for i in range(n if n > 2 else n - 1):
        g.add_edge(req.participants[i], req.participants[(i + 1) % n])
    if n > 2:
        g.graph[topology.RING] = list(req.participants)
    return g


def prepare(req: RunRequest) -> list[str]:
    """Write the run's files (see the module docstring); returns the peer command line."""
    from ringfl import checkpoint

    req.folder.mkdir(parents=True, exist_ok=True)
    topo = req.folder / "topology.json"
    topology.save(run_topology(req), topo)
    if req.kind != "train":
        return _statistics_command(req, topo)
    cfg = dict(req.config)
    cfg["output"] = str(req.folder)
    cfg["data"] = {"dataset": "files"}  # this party's own file comes with --data
    if req.test is not None:  # absolute: the config resolves paths against its folder
        cfg["data"]["test"] = str(req.test.resolve())
    conf = req.folder / "config.toml"
    conf.write_text(toml_text(cfg))
    out = req.folder / "peer"
    if req.warm_start is not None and not (out / "checkpoint.npz").exists():
        last = checkpoint.load(req.warm_start)
        checkpoint.save(
            out / "checkpoint.npz",
            {"model": last.arrays["model"]},
            {"round": 0, "node": req.node, "hash": last.meta.get("hash", ""), "warm": True},
        )
    cmd = [
        sys.executable, "-m", "ringfl", "peer",
        "--topology", str(topo), "--node", req.node, "--config", str(conf),
        "--keys", str(req.keys), "--out", str(out), "--data", str(req.train.resolve()),
        "--startup-timeout", "60", "--join-timeout", "60",
    ]  # fmt: skip
    if req.pace_s > 0:
        cmd += ["--min-round-seconds", str(req.pace_s)]
    return cmd


def _statistics_command(req: RunRequest, topo: Path) -> list[str]:
    """A statistics kind: the query or task file, and `ringfl analytics|fit` as one real
    peer of the run (its peer folder is `peer/`, as for train)."""
    f = req.folder
    job = f / "job.json"
    job.write_text(json.dumps(req.config, indent=1) + "\n")
    cmd = [sys.executable, "-m", "ringfl"]
    if req.kind == "analytics":
        cmd += ["analytics", "--query", str(job)]
    else:
        task = {**req.config, "workload": req.kind}
        job.write_text(json.dumps(task, indent=1) + "\n")
        cmd += ["fit", "--task", str(job), "--report", str(f / "report.json")]
    cmd += [
        "--topology", str(topo), "--node", req.node, "--keys", str(req.keys),
        "--data", str(req.train.resolve()), "-o", str(f / RESULT_FILES[req.kind]),
        "--peer-dir", str(f / "peer"), "--startup-timeout", "60", "--events",
    ]  # fmt: skip
    return cmd


def read_outcome(folder: Path, returncode: int | None) -> RunOutcome:
    """This party's outcome from the peer's `summary.json` (and its exit status)."""
    out = folder / "peer"
    try:
        s = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        s = {}
    if s.get("status") == "finished" and returncode in (0, None):
        accuracy, loss = s.get("accuracy"), s.get("loss")
        try:  # a fitted tabular model: its secure training metrics
            m = json.loads((folder / "report.json").read_text())["train_metrics"]
            accuracy, loss = m.get("accuracy"), m.get("log_loss", m.get("mse"))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return RunOutcome(
            "succeeded",
            hash=str(s.get("hash", "")),
            accuracy=accuracy,
            loss=loss,
            rounds=s.get("round"),
        )
    reason = s.get("reason") or f"the peer exited with status {returncode}"
    if returncode is not None and returncode < 0:
        reason = f"the peer was stopped by signal {-returncode}"
    tail = log_tail(folder / "peer.log", 3)
    return RunOutcome("failed", reason=str(reason), extra={"log": tail})


def log_tail(path: Path, n: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


def metrics(folder: Path) -> list[dict[str, Any]]:
    """The peer's per-round metrics so far (skips a half-written last line)."""
    rows = []
    try:
        with open(folder / "peer" / "metrics.jsonl") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break
    except OSError:
        pass
    return rows


class PeerProcess:
    """This party's peer process of one run: start (or adopt after a node restart),
    wait, stop."""

    def __init__(self, folder: Path, cmd: list[str] | None = None) -> None:
        self.folder = folder
        self.cmd = cmd
        self.proc: Any = None
        self.pid: int | None = None
        self.stopped = threading.Event()

    def start(self) -> int:
        import subprocess

        assert self.cmd is not None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.folder / "peer.log", "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C at the node's terminal does not hit it
                env=env,
            )
        self.pid = self.proc.pid
        return self.pid

    def adopt(self, pid: int) -> bool:
        """Follow a peer started by an earlier incarnation of this node; False when that
        process is gone (or the pid now belongs to something else)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if str(self.folder).encode() not in cmdline:
            return False
        self.pid = pid
        return True

    def wait(self) -> RunOutcome:
        """Block until the process exits; then its outcome."""
        if self.proc is not None:
            rc = self.proc.wait()
        else:
            while _alive(self.pid):
                time.sleep(0.2)  # not our child: no wait() possible, poll its /proc entry
            rc = None
        outcome = read_outcome(self.folder, rc)
        if self.stopped.is_set() and outcome.status != "succeeded":
            outcome = RunOutcome("cancelled", reason="stopped by this node")
        return outcome

    def stop(self) -> None:
        """SIGTERM the peer (it checkpoints and exits)."""
        self.stopped.set()
        if self.pid is not None and _alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def write_predictions(
    folder: Path, config: dict[str, Any], test: Path, classes: int
) -> Path | None:
    """Predicted classes of the final model on this party's test file, as CSV
    (row, predicted, label). Local to this party, like the model."""
    import torch

    from ringfl import checkpoint
    from ringfl.algorithms.base import set_flat
    from ringfl.models import build_model

    model_file = folder / "peer" / "model.npz"
    if not model_file.exists() or not test.exists():  # statistics kinds: no neural model
        return None
    with np.load(test, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    m = config.get("model", {})
    spec = m.get("layers") or m.get("name", "mlp")
    net = build_model(spec, x.shape[1:], classes, int(config.get("seed", 0)))
    set_flat(net, checkpoint.load(model_file).arrays["model"])
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).argmax(1).numpy()
    dest = folder / "predictions.csv"
    rows = "\n".join(
        f"{i},{int(p)},{int(t)}" for i, (p, t) in enumerate(zip(pred, y, strict=False))
    )
    dest.write_text("row,predicted,label\n" + rows + "\n")
    return dest


__all__ = [
    "RESULT_FILES",
    "SUPPORTED_KINDS",
    "PeerProcess",
    "RunOutcome",
    "RunRequest",
    "log_tail",
    "metrics",
    "prepare",
    "read_outcome",
    "run_topology",
    "toml_text",
    "write_predictions",
]
