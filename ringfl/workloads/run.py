"""Run statistics jobs (`ringfl.engine.workload.Statistics`: analytics, Newton, GBDT,
metrics, a user's own) on the round engine — the same engine, secure sum and membership
code as neural training — with either of its two drivers, and no code per job:

    # every party in this process: the simulator (in-memory network, real masking)
    run = simulate_jobs([KMeans(rows, k=3) for rows in tables])
    run.result                                  # the same on every party

    # this one party as a real peer (ZeroMQ + CURVE to the others of the topology)
    run = run_peer(KMeans(my_rows, k=3), "topo.json", node="a", keys="keys/")

`run_centralized` is the reference: the plain float64 sum of every party's statistics in
one process, no network (e.g. one party holding all rows).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.config import AlgorithmConfig, Config, TrainConfig
from ringfl.engine.workload import Statistics, StatisticsWorkload, SumCounts, check_vector
from ringfl.errors import ConfigError, RingflError

#: No job of this package needs more engine rounds; a runaway loop is a bug.
MAX_ROUNDS = 100_000


@dataclass
class JobRun:
    """How a statistics job ran. `results`: every simulated party's result, or this real
    party's alone; `counts`: sums and rounds (this party's, or party 0's);
    `bytes_sent`: payload bytes sent per party (by node name); `contributors`: every
    round's contributors (node names); `sum_seconds`: wall time not spent computing the
    jobs' statistics and updates (secure sums, start-up, the engine)."""

    results: list[Any]
    counts: SumCounts
    parties: int
    node: str | None = None
    bytes_sent: dict[str, int] = field(default_factory=dict)
    contributors: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    sum_seconds: float = 0.0

    @property
    def result(self) -> Any:
        return self.results[0]

    def info(self) -> dict[str, Any]:
        """A JSON-serialisable summary (for reports)."""
        c = self.counts
        return {
            "parties": self.parties,
            "node": self.node,
            "secure_sums": c.sums,
            "secure_rounds": c.rounds,
            "bytes_sent": dict(self.bytes_sent),
            "seconds": round(self.seconds, 6),
            "seconds_in_secure_sum": round(self.sum_seconds, 6),
            "worst_resolution": c.worst_resolution,
        }


def job_config(*, seed: int = 0, secure: bool = True) -> Config:
    """The engine config of a statistics job: ring sums (masked when `secure`), rounds
    until the job is done (at most `MAX_ROUNDS`)."""
    return Config(
        seed=seed,
        train=TrainConfig(rounds=MAX_ROUNDS),
        algorithm=AlgorithmConfig(name="ring", secure=secure),
    )


def _check_done(w: StatisticsWorkload) -> Any:
    if not w.done:
        raise RingflError(f"{w.name}: no end after {MAX_ROUNDS} rounds")
    return w.result()


def simulate_jobs(
    jobs: Sequence[Statistics], *, seed: int = 0, secure: bool = True, network: Any = None
) -> JobRun:
    """Every party's job in this process, on the simulator (`ringfl.sim.simulate`: one
    engine per party over the in-memory network, real keys and masking; keys and session
    from `seed`). At least 3 parties when `secure` (a masked sum needs 3 contributors)."""
    from ringfl import topology
    from ringfl.sim import simulate

    n = len(jobs)
    if n < 2:
        raise ConfigError(
            f"simulate_jobs needs at least 2 parties, got {n} (one party has nothing to "
            "sum with: use run_centralized)"
        )
    if secure and n < 3:
        raise ConfigError(
            f"a secure sum needs at least 3 parties, got {n} (with 2, each would learn "
            "the other's statistics from the sum)"
        )
    adapters = [StatisticsWorkload(j, parties=n) for j in jobs]
    t0 = time.perf_counter()
    sim = simulate(
        topology.make("ring", n),
        job_config(seed=seed, secure=secure),
        workload=lambda p: adapters[p],
        baseline=False,
        progress=False,
        network=network,
    )
    names = [str(v) for v in range(n)]
    results = [_check_done(a) for a in adapters]
    wall = time.perf_counter() - t0
    return JobRun(
        results=results,
        counts=adapters[0].counts,
        parties=n,
        bytes_sent={names[p]: int(b) for p, b in enumerate(_bytes(sim, n))},
        contributors=[list(r["contributors"]) for r in sim.rounds],
        seconds=wall,
        sum_seconds=wall - sum(a.counts.compute_s for a in adapters),
    )


def _bytes(sim: Any, n: int) -> list[float]:
    # SimResult keeps the mean per party; the ring is symmetric, so every party sends it
    total = sim.bytes_per_peer + sim.setup_bytes_per_peer
    return [total] * n


def run_peer(
    job: Statistics,
    topology_path: str | os.PathLike[str],
    *,
    node: str | None,
    keys: str | os.PathLike[str] | None,
    insecure: bool = False,
    secure: bool = True,
    seed: int = 0,
    deadline_s: float = 5.0,
    startup_s: float = 60.0,
    out: str | os.PathLike[str] | None = None,
    console: Any = None,
    max_elements: int = 1 << 26,
) -> JobRun:
    """This party's job as a real peer (`ringfl.peer.node.PeerNode`: the start-up
    handshake, CURVE links, failure detector and event log of every peer). `out`: the
    peer's folder (events.jsonl, metrics.jsonl, summary.json; default
    `runs/jobs/<node>`); `deadline_s`: the least time to wait for a silent peer;
    `startup_s`: how long to wait for the others to start; `max_elements`: the largest
    statistics vector accepted from the network."""
    from ringfl import topology
    from ringfl.engine.failure import DeadlinePolicy
    from ringfl.peer.node import PeerNode, PeerOptions, resolve_node

    g = topology.load(topology_path)
    n = len(topology.peers(g))
    me = str(resolve_node(g, node))
    adapter = StatisticsWorkload(job, parties=n)
    opts = PeerOptions(
        topology=str(topology_path),
        config=job_config(seed=seed, secure=secure),
        node=me,
        keys=None if keys is None else str(keys),
        out=str(out) if out is not None else str(Path("runs") / "jobs" / me),
        insecure=insecure,
        deadline=DeadlinePolicy(
            min_s=deadline_s, initial_s=deadline_s, max_s=max(30.0, deadline_s)
        ),
        startup_timeout_s=startup_s,
        fresh=True,  # a statistics job cannot resume from a checkpoint: start afresh
        console=console,
        workload=lambda p: adapter,
        max_elements=max_elements,
    )
    t0 = time.perf_counter()
    peer = PeerNode(opts)
    peer.run()
    rows = _metrics_rows(peer.metrics_path)
    wall = time.perf_counter() - t0
    return JobRun(
        results=[_check_done(adapter)],
        counts=adapter.counts,
        parties=n,
        node=me,
        bytes_sent={me: int(rows[-1]["bytes_sent"]) if rows else 0},
        contributors=[list(r["members"]) for r in rows],
        seconds=wall,
        sum_seconds=wall - adapter.counts.compute_s,
    )


def _metrics_rows(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_centralized(jobs: Sequence[Statistics]) -> list[Any]:
    """The centralized reference: every party's job in this process, each step summed in
    float64 in party order, no network and no fixed point. Returns the results."""
    if not jobs:
        raise ConfigError("run_centralized: no parties")
    name = type(jobs[0]).__name__
    for _ in range(MAX_ROUNDS):
        finished = {j.done for j in jobs}
        if len(finished) != 1:
            raise RingflError(f"{name}: parties disagree on whether the job is done")
        if finished.pop():
            return [j.result() for j in jobs]
        vs = [check_vector(j.statistics(), f"{name} of party {i}") for i, j in enumerate(jobs)]
        if len({v.shape for v in vs}) != 1:
            raise RingflError(f"{name}: parties sent statistics of different lengths")
        total = np.zeros_like(vs[0])
        for v in vs:
            total += v
        for j in jobs:
            j.apply(total.copy())
    raise RingflError(f"{name}: no end after {MAX_ROUNDS} rounds")


def run_jobs(jobs: Sequence[Statistics], *, secure: bool = True, seed: int = 0) -> list[Any]:
    """Every party's results: on the simulated secure ring (`secure`), else the
    centralized reference."""
    if secure:
        return simulate_jobs(jobs, seed=seed).results
    return run_centralized(jobs)


__all__ = [
    "MAX_ROUNDS",
    "JobRun",
    "job_config",
    "run_centralized",
    "run_jobs",
    "run_peer",
    "simulate_jobs",
]
