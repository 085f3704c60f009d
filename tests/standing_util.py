"""Helpers for the standing-node tests: a set of parties on loopback (topology, keys,
catalogs, policies), node processes, and an impersonator that speaks the node protocol
with one party's keys (to send what an honest node never would)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ringfl.standing.client import Node
from ringfl.standing.example import make_example
from tests.peer_util import free_ports

ROOT = Path(__file__).resolve().parents[1]

POLICY = """\
proposers = "*"
kinds = ["train", "analytics"]
datasets = ["digits"]
[columns.digits]
deny = ["pixel0"]
[limits]
max_rounds = {max_rounds}
max_model_params = 100000
min_parties = 2
[fields]
"train.lr" = "writable"
"train.local_steps" = "writable"
"train.batch_size" = "readable"
"train.momentum" = "private"
[defaults]
"train.batch_size" = 32
"train.momentum" = 0.5
"""


def wait_until(cond: Any, timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `cond()` until it returns something truthy (bounded); returns that value."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def task_spec(participants: list[str], **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "digits-logreg",
        "kind": "train",
        "participants": participants,
        "datasets": {p: "digits" for p in participants},
        "columns": [f"pixel{i}" for i in range(1, 64)],
        "config": {
            "seed": 1,
            "model": {"name": "logreg"},
            "train": {"rounds": 3, "local_steps": 5, "lr": 0.1},
            "algorithm": {"name": "ring", "secure": True},
        },
    }
    spec.update(over)
    return spec


def analytics_spec(participants: list[str], **over: Any) -> dict[str, Any]:
    """A secure analytics task over the example's digits tables."""
    spec: dict[str, Any] = {
        "name": "digits-stats",
        "kind": "analytics",
        "participants": participants,
        "datasets": {p: "digits" for p in participants},
        "columns": [f"pixel{i}" for i in range(1, 64)],
        "config": {
            "min_count": 10,
            "ops": [
                {"op": "mean", "column": "pixel20"},
                {"op": "std", "column": "pixel20"},
                {"op": "groupby", "by": "label", "groups": [0, 1], "column": "pixel30"},
            ],
        },
    }
    spec.update(over)
    return spec


class Parties:
    """Parties of one test network in `root`; `start(p)` runs p's node as a process."""

    def __init__(self, root: Path, parties: tuple[str, ...], max_rounds: dict[str, int]) -> None:
        self.root = root
        self.parties = parties
        make_example(root, ports=tuple(free_ports(len(parties))), parties=parties)
        for p in parties:
            (root / p / "policy.toml").write_text(POLICY.format(max_rounds=max_rounds.get(p, 50)))
        self.procs: dict[str, subprocess.Popen] = {}

    def state(self, p: str) -> Path:
        return self.root / p / "state"

    def start(self, p: str, timeout: float = 60.0) -> Node:
        info = self.state(p) / "api.json"
        info.unlink(missing_ok=True)
        cmd = [
            sys.executable, "-m", "ringfl", "node", "serve",
            "--topology", str(self.root / "topology.json"), "--keys", str(self.root / "keys" / p),
            "--catalog", str(self.root / p / "catalog.toml"),
            "--policy", str(self.root / p / "policy.toml"), "--state", str(self.state(p)),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        log = open(self.root / f"{p}.out", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs[p] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self.client(p, timeout)

    def client(self, p: str, timeout: float = 60.0) -> Node:
        proc = self.procs[p]

        def ready() -> Node | None:
            if proc.poll() is not None:
                out = (self.root / f"{p}.out").read_text()[-2000:]
                raise AssertionError(f"node {p} exited with {proc.returncode}:\n{out}")
            try:
                info = json.loads((self.state(p) / "api.json").read_text())
            except (OSError, ValueError):
                return None
            return Node(info["url"], token_file=self.state(p) / "api.token", timeout=30)

        return wait_until(ready, timeout, f"node {p} to serve")

    def kill(self, p: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(p)
        proc.send_signal(sig)
        proc.wait(30)

    def stop_all(self) -> None:
        for p in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(p, signal.SIGTERM)


class Impersonator:
    """Speaks the node protocol as party `me` (with its real keys) to one node: sends
    crafted events and collects the refusals it gets back."""

    def __init__(self, parties: Parties, me: str) -> None:
        from ringfl import topology
        from ringfl.peer.identity import Identity, topology_keys
        from ringfl.standing.signing import SigningKey
        from ringfl.standing.transport import Transport

        g = topology.load(parties.root / "topology.json")
        self.names = [str(n) for n in topology.peers(g)]
        self.me = me
        self.signer = SigningKey.load(parties.root / "keys" / me)
        self.refusals: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.seq: dict[str, int] = {}
        endpoints = {i: g.nodes[n]["address"] for i, n in enumerate(self.names)}
        self.transport = Transport(
            self.names.index(me),
            endpoints,
            Identity.load(parties.root / "keys" / me),
            topology_keys(g).curve or {},
            self._on_message,
        )
        self.transport.start()

    def _on_message(self, idx: int, raw: bytes) -> None:
        msg = json.loads(raw)
        if msg.get("t") == "refused":
            self.refusals.put(msg)

    def send_raw(self, to: str, payload: bytes) -> None:
        self.transport.send(self.names.index(to), payload)

    def send_event(self, to: str, ev: dict[str, Any]) -> None:
        self.seq[to] = self.seq.get(to, 0) + 1
        msg = {"t": "ev", "seq": self.seq[to], "ev": ev}
        self.send_raw(to, json.dumps(msg).encode())

    def proposal(
        self,
        spec: dict[str, Any],
        *,
        expires_in: float = 60.0,
        origin: str | None = None,
        checked: bool = True,
    ) -> dict[str, Any]:
        """An event proposing `spec`, signed with this party's key (unless edited later);
        `checked`: `spec` is put in normal form first (False: sent as it is)."""
        from ringfl.standing.service import task_id
        from ringfl.standing.spec import parse_spec

        origin = origin or self.me
        nonce = secrets.token_hex(16)
        now = time.time()
        body = {
            "v": 1, "task": task_id(origin, nonce), "origin": origin, "kind": "proposed",
            "time": now, "data": {"spec": parse_spec(spec) if checked else spec, "nonce": nonce, "expires": now + expires_in},
        }  # fmt: skip
        return {**body, "sig": self.signer.sign(body)}

    def next_refusal(self, timeout: float = 10.0) -> dict[str, Any]:
        try:
            return self.refusals.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no refusal within {timeout:g} s") from None

    def close(self) -> None:
        self.transport.stop()
