"""Helpers for the real-peer tests: topologies with keys, configs, launching peers as real
processes, reading their outputs, and a reference computation of a ring run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ringfl import checkpoint, topology
from ringfl.peer.identity import generate_for_topology
from ringfl.secure.fixedpoint import FixedPoint

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
seed = {seed}
eval_every = 1
[data]
dataset = "digits"
[partition]
name = "iid"
[model]
name = "logreg"
[train]
rounds = {rounds}
local_steps = {steps}
batch_size = 32
lr = 0.1
momentum = 0.0
[algorithm]
name = "{algorithm}"
secure = {secure}
"""


def short_dir() -> Path:
    """A short temporary directory (ipc socket paths must stay under 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="rfl", dir="/tmp"))


class Ring:
    """A topology file (ipc or tcp addresses, optional keys), a config and output dirs."""

    def __init__(
        self,
        n: int,
        *,
        kind: str = "ring",
        rounds: int = 4,
        steps: int = 5,
        seed: int = 3,
        secure: bool = True,
        keys: bool = True,
        algorithm: str = "ring",
        addresses: list[str] | None = None,
        deadline_min: float = 4.0,
    ) -> None:
        self.dir = short_dir()
        # every peer of a test run gets this floor on its deadline, so its probe window is
        # at least half of it: a live peer on a loaded test machine (other jobs on 2 cores)
        # answers a PING in far less, and is not declared gone; the tests check what a
        # failure does, not how fast it is detected
        self.deadline_min = deadline_min
        self.n = n
        g = topology.make(kind, n)
        for i, node in enumerate(topology.peers(g)):
            g.nodes[node]["address"] = addresses[i] if addresses else f"ipc://{self.dir}/p{i}.sock"
        self.keys = self.dir / "keys"
        if keys:
            generate_for_topology(g, self.keys)
        self.graph = g
        self.topology = self.dir / "topo.json"
        topology.save(g, self.topology)
        self.config = self.dir / "run.toml"
        self.config.write_text(
            CONFIG.format(
                seed=seed,
                rounds=rounds,
                steps=steps,
                algorithm=algorithm,
                secure="true" if secure else "false",
            )
        )
        self.out = self.dir / "out"
        self.names = [str(x) for x in topology.peers(g)]

    def cleanup(self) -> None:
        """Remove the run's files (kept when $RINGFL_KEEP_TEST_DIRS is set, to debug)."""
        if os.environ.get("RINGFL_KEEP_TEST_DIRS"):
            print(f"kept {self.dir}")
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def args(self, *extra: str, insecure: bool = False) -> list[str]:
        a = ["--topology", str(self.topology), "--config", str(self.config)]
        a += ["--deadline-min", f"{self.deadline_min:g}"]
        if (self.keys).exists():
            a += ["--keys", str(self.keys)]
        if insecure:
            a.append("--insecure")
        return a + list(extra)

    def peer_dir(self, name: str) -> Path:
        return self.out / name

    def summary(self, name: str) -> dict:
        return json.loads((self.peer_dir(name) / "summary.json").read_text())

    def events(self, name: str) -> list[dict]:
        from ringfl.peer.eventlog import read_events

        path = self.peer_dir(name) / "events.jsonl"
        return read_events(path) if path.exists() else []

    def metrics(self, name: str) -> list[dict]:
        path = self.peer_dir(name) / "metrics.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def final_model(self, name: str) -> np.ndarray:
        return checkpoint.load(self.peer_dir(name) / "model.npz").arrays["model"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e["OMP_NUM_THREADS"] = "1"
    return e


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ringfl", *args]


def start(*args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        cli(*args), env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a process (bounded); kill its whole group if it runs over."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_for(pred, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def reference_ring_run(
    ring: Ring,
    members_by_round: dict[int, list[int]] | None = None,
    ring_size_by_round: dict[int, int] | None = None,
    nonfinite: set[tuple[int, int]] = frozenset(),
):
    """The exact final model of a ring run, computed in this process: every member trains
    from the same start with the same code, payloads are summed in the secure codec's
    fixed point (or float32 in ring order when not masked), and the mean is applied the
    way peers apply it. `members_by_round[r]`: contributors of round r (default: all);
    `ring_size_by_round[r]`: members when round r started (sets the fixed-point codec);
    `nonfinite`: (round, peer) pairs whose delta was not finite (they contribute zero)."""
    import torch

    from ringfl.algorithms.base import weighted_mean, weighted_payload
    from ringfl.config import load_config
    from ringfl.data.parties import PartyData
    from ringfl.engine.build import neural_workload
    from ringfl.engine.membership import with_flags
    from ringfl.engine.round import EVAL_SLOTS
    from ringfl.secure.fixedpoint import FixedPoint
    from ringfl.sim import prepare_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(ring.config)
        n = ring.n
        data = prepare_data(cfg, n)
        sizes = [len(p) for p in data.parts]
        workloads = [
            neural_workload(p, cfg, PartyData(data.parts[p], None, None, data.num_classes))
            for p in range(n)
        ]
        model = workloads[0].get()
        for r in range(cfg.train.rounds):
            members = (members_by_round or {}).get(r, list(range(n)))
            payloads = []
            for p in members:
                w = workloads[p]
                w.set(model)
                w.local(r)
                delta = w.get() - model
                weight = sizes[p] / sum(sizes)
                if (r, p) in nonfinite:
                    delta, weight = np.zeros_like(delta), 0.0
                body = with_flags(weighted_payload(delta, weight), [], ())
                payloads.append(np.concatenate([body, np.zeros(EVAL_SLOTS, np.float32)]))
            codec = FixedPoint.for_peers((ring_size_by_round or {}).get(r, len(members)))
            total = np.zeros(payloads[0].shape, dtype=codec.word_dtype)
            for x in payloads:
                np.add(total, codec.encode(x)[0], out=total)
            result = codec.decode(total, out=np.empty(total.shape, np.float32))
            mean = weighted_mean(result[: model.shape[0] + 1])
            if mean is not None:
                model = (model + mean).astype(np.float32)
        return model
    finally:
        torch.set_num_threads(threads)


def saved_rounds(ring: Ring, name: str) -> dict[int, checkpoint.Checkpoint]:
    folder = ring.peer_dir(name) / "deltas"
    out = {}
    for f in sorted(folder.glob("round-*.npz")):
        ck = checkpoint.load(f)
        out[int(ck.meta["round"])] = ck
    return out


def check_every_round_is_the_exact_sum(ring: Ring, alive: list[str]) -> tuple[dict, dict]:
    """Each survivor's summed result of every round equals the fixed-point sum of the
    saved payloads of that round's contributors; returns (members, ring sizes) by round."""
    saved = {name: saved_rounds(ring, name) for name in ring.names}
    members, sizes = {}, {}
    rounds = sorted(saved[alive[0]])
    for r in rounds:
        metas = {name: saved[name][r].meta for name in alive if "result" in saved[name][r].arrays}
        contributors = {tuple(m["members"]) for m in metas.values()}
        assert len(contributors) == 1, (r, contributors)
        who = list(contributors.pop())
        ring_at_start = {len(m["ring"]) for m in metas.values()}
        assert len(ring_at_start) == 1
        codec = FixedPoint.for_peers(ring_at_start.pop())
        total = np.zeros(saved[alive[0]][r].arrays["payload"].shape, codec.word_dtype)
        for p in who:
            np.add(total, codec.encode(saved[ring.names[p]][r].arrays["payload"])[0], out=total)
        want = codec.decode(total, out=np.empty(total.shape, np.float32))
        for name in metas:
            assert np.array_equal(saved[name][r].arrays["result"], want), (r, name)
        members[r], sizes[r] = who, len(metas[next(iter(metas))]["ring"])
    return members, sizes


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports below the kernel's ephemeral range that are free now (the
    parties bind them a moment later; a file shared by peers cannot say port 0)."""
    rng = random.Random(os.getpid())
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports
