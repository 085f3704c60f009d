"""`ringfl.launch`: start the local peers of a topology from Python, each as its own
process, with the caller's model factory and data loader.

The factory and the loader are plain Python callables (closures, lambdas, classes defined
in a notebook): they are serialized with cloudpickle and written to each child's stdin.
That is the only place ringfl unpickles anything, and only bytes that this process wrote
to a process it spawned on this machine; nothing from the network is ever unpickled.
Each child calls `data(node)` itself, so every party loads only its own data.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfl.data import Dataset
from ringfl.data.parties import PartyData

#: What a data loader returns for a node: its training set, or (train, validation or
#: None), or a full `PartyData`.
PartyLoader = Callable[[str], "Dataset | tuple[Dataset, Dataset | None] | PartyData"]


@dataclass(frozen=True)
class LaunchResult:
    """Exit status of every local peer (0: finished; 137: killed, e.g. a scheduled crash),
    and each peer's output directory."""

    status: dict[str, int]
    out: dict[str, Path]

    @property
    def ok(self) -> bool:
        return all(code == 0 for code in self.status.values())


def party_from_loader(loader: PartyLoader, node: str, num_classes: int | None) -> PartyData:
    """Call the user's loader for `node` and make a `PartyData` of what it returns."""
    got = loader(node)
    if isinstance(got, PartyData):
        return got
    train, val = got if isinstance(got, tuple) else (got, None)
    if not isinstance(train, Dataset) or (val is not None and not isinstance(val, Dataset)):
        raise TypeError(
            f"data loader for node {node!r} must return a Dataset, (Dataset, Dataset | None) "
            f"or PartyData; got {type(got).__name__}"
        )
    k = num_classes or max(d.num_classes for d in (train, val) if d is not None)
    train = Dataset(train.x, train.y, k, train.name)
    val = None if val is None else Dataset(val.x, val.y, k, val.name)
    return PartyData(train, val, None, k)


def launch(
    topology: str | os.PathLike[str],
    config: str | os.PathLike[str],
    *,
    model: Any = None,
    data: PartyLoader | None = None,
    keys: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] = "runs/peers",
    nodes: Sequence[str] | None = None,
    insecure: bool = False,
    extra_args: Sequence[str] = (),
    timeout_s: float | None = None,
) -> LaunchResult:
    """Run every local node of `topology` (or `nodes`) as its own `ringfl peer` process and
    wait for all; a node the config's fault schedule restarts is started again after its
    crash. `model`: a zero-argument `nn.Module` factory (or a layer list / built-in name);
    `data`: `data(node) -> Dataset | (train, val | None) | PartyData`, called in that
    node's process. `timeout_s`: stop everyone (SIGKILL) after this long."""
    import cloudpickle

    from ringfl import topology as topo
    from ringfl.config import load_config
    from ringfl.engine.faults import resolve
    from ringfl.peer.launch import local_nodes

    if model is not None and not (callable(model) or isinstance(model, (str, list))):
        raise TypeError(f"model must be a factory, a layer list or a name, got {type(model)}")
    if data is not None and not callable(data):
        raise TypeError(f"data must be a callable data(node) -> ..., got {type(data)}")
    g = topo.load(topology)
    cfg = load_config(Path(config))
    names = [str(x) for x in local_nodes(g, list(nodes) if nodes else None)]
    plan = resolve(cfg.faults, [str(v) for v in topo.peers(g)], source=str(config))
    all_names = [str(v) for v in topo.peers(g)]
    restart = {all_names[p] for p in plan.restarts}
    code = cloudpickle.dumps({"model": model, "data": data})
    out = Path(out)
    base = [sys.executable, "-m", "ringfl", "peer", "--topology", str(topology)]
    base += ["--config", str(config), "--code-stdin", *extra_args]
    if keys is not None:
        base += ["--keys", str(keys)]
    if insecure:
        base.append("--insecure")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[Any] = []

    def spawn(name: str) -> None:
        (out / name).mkdir(parents=True, exist_ok=True)
        log = open(out / name / "console.log", "ab")  # noqa: SIM115 (closed below)
        logs.append(log)
        p = subprocess.Popen(
            [*base, "--node", name, "--out", str(out / name)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert p.stdin is not None
        p.stdin.write(code)
        p.stdin.close()
        procs[name] = p

    for name in names:
        spawn(name)
    status: dict[str, int] = {}
    end = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while len(status) < len(names):
            for name, p in list(procs.items()):
                if name in status or p.poll() is None:
                    continue
                rc = 128 - p.returncode if p.returncode < 0 else p.returncode
                if rc == 137 and name in restart:
                    restart.discard(name)  # the schedule's restart: once
                    spawn(name)
                    continue
                status[name] = rc
            if end is not None and time.monotonic() > end:
                raise TimeoutError(f"ringfl.launch: peers still running after {timeout_s} s")
            time.sleep(0.05)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for log in logs:
            log.close()
    return LaunchResult(status, {n: out / n for n in names})


__all__ = ["LaunchResult", "PartyLoader", "launch", "party_from_loader"]
