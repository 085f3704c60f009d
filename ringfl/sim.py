"""One-process simulator: N parties, each with its own `RoundEngine` — the same engine,
algorithms, membership and recovery code a real peer runs — driven over the deterministic
`MemoryNetwork` (the real protocol machines and wire format) on a virtual clock.

    result = simulate(topology.make("ring", 8), config)
    result = simulate(graph, config, workload=lambda p: StatisticsWorkload(job[p], parties=n))

Each round: every live party trains locally (on a compute backend, `ringfl.compute`:
in this process, on local worker processes, or on Ray; on the virtual clock a local step
takes `step_s`, times a slow peer's factor), then all parties' collectives run together
on the in-memory network, in this process, then every party's engine applies the result. A fault schedule (`config.faults` and `faults=`; `ringfl.engine.faults`) is
carried out on virtual time: crashes, restarts (the restarted party rejoins through the
same join flags and handover as a real peer), false loss declarations, slow peers and
links, partitions. Every round's contributors, dropped and admitted parties are in
`SimResult.rounds`.

Workloads: neural by default (the config's model, trained on the party's data); or any
engine workload from `workload=` (a factory: party index -> its workload), e.g. a
statistics job (`ringfl.engine.workload.StatisticsWorkload`), which runs until it is
done (at most `train.rounds` rounds).

Data: each party gets only its own data — one file each (`data.files`), or its part of a
built-in dataset by the configured partitioner. Evaluation every `eval_every` rounds (and
after the last): on the public test set when there is one (ring, selective, server: the
model of the first live party, all hold the same; gossip: the mean over parties, the
accuracy of the mean model and the consensus distance); with per-party validation files,
the ring's secure sum of (correct, total, loss) as real peers report it.

Determinism: the same config and schedule give the same numbers, bit for bit, apart from
wall times, on every compute backend and worker count (at one torch thread per training
process: workers use one; `inline` uses the caller's threads, which entry points set).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from torch import nn

from ringfl.algorithms import REGISTRY, masks, set_flat
from ringfl.baselines import BaselineResult, centralized, sample_budget
from ringfl.collective.events import Machine
from ringfl.compute import Backend, BackendSpec, SimWorkload, TrainJob, open_backend
from ringfl.config import Config
from ringfl.data import Dataset
from ringfl.data.parties import PeerData, prepare_data, summarize_parts
from ringfl.engine.build import make_engine, model_spec, ring_of, session_id
from ringfl.engine.failure import AdaptiveDeadline, DeadlinePolicy
from ringfl.engine.faults import Fault, FaultPlan, resolve
from ringfl.engine.round import GlobalEval, Handover, RoundEngine, RoundRecord
from ringfl.engine.workload import AuxWorkload, Workload
from ringfl.errors import ConfigError
from ringfl.local import evaluate, evaluation_steps
from ringfl.models import ModelSpec
from ringfl.sim_clock import Availability, training_s
from ringfl.transport import bulk
from ringfl.transport.memory import Crash, Cut, MemoryNetwork, RunResult

METRIC_FIELDS = (
    "round",
    "accuracy",
    "loss",
    "mean_model_accuracy",
    "min_peer_accuracy",
    "consensus_distance",
    "train_loss",
    "bytes_sent_per_peer",
    "cum_bytes_per_peer",
    "hub_bytes_sent",
    "clipped",
    "compute_s",
    "comm_s",
    "virtual_comm_s",
    "time_s",
    "wall_s",
)
ROUND_FIELDS = (
    "round",
    "members",
    "contributors",
    "dropped",
    "admitted",
    "stopped",
    "offline",
    "virtual_s",
    "time_s",
)


@dataclass
class SimResult:
    """What a simulation produced. `metrics`: one dict per evaluated round (METRIC_FIELDS;
    None where not applicable); `rounds`: one dict per round (ROUND_FIELDS: who started
    it, contributed, was dropped, admitted or stopped, by node name). Byte counts are
    payload bytes sent per party (mean)."""

    config: Config
    algorithm: str
    secure: bool
    num_peers: int
    metrics: list[dict[str, Any]]
    final_accuracy: float
    final_loss: float
    bytes_per_peer: float
    compute_s: float
    comm_s: float
    wall_s: float
    engines: list[RoundEngine]
    data: PeerData | None  # None: workloads from a factory (no dataset of the config)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    records: list[RoundRecord] = field(default_factory=list)
    alive: list[int] = field(default_factory=list)
    setup_s: float = 0.0  # the one-off setup sum (ring modes: sample counts)
    setup_bytes_per_peer: float = 0.0
    phases: list[dict[str, float]] = field(default_factory=list)  # wall s per round by phase
    baseline: BaselineResult | None = None
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)
    backend: str = "inline"  # where local training ran (`ringfl.compute`)
    workers: int = 1

    @property
    def workloads(self) -> list[Workload]:
        """Every party's workload (e.g. a `StatisticsWorkload`: `.result()`)."""
        return [e.workload for e in self.engines]

    @property
    def learners(self) -> list[SimWorkload]:
        """The live parties' workloads (model, `flat()`, `state_hash()`)."""
        return [self.engines[p].workload for p in self.alive]  # type: ignore[misc]

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no models)."""
        b = self.baseline
        return {
            "algorithm": self.algorithm,
            "secure": self.secure,
            "num_peers": self.num_peers,
            "rounds": self.config.train.rounds,
            "final_accuracy": self.final_accuracy,
            "final_loss": self.final_loss,
            "bytes_per_peer": self.bytes_per_peer,
            "compute_s": self.compute_s,
            "comm_s": self.comm_s,
            "setup_s": self.setup_s,
            "setup_bytes_per_peer": self.setup_bytes_per_peer,
            "wall_s": self.wall_s,
            "backend": self.backend,
            "workers": self.workers,
            "faults": len(self.config.faults),
            "baseline": None
            if b is None
            else {
                "method": b.method,
                "accuracy": b.accuracy,
                "loss": b.loss,
                "samples": b.samples,
                "seconds": b.seconds,
                **b.detail,
            },
        }


def simulation_keys(seed: int, n: int) -> list[Any]:
    """Deterministic X25519 key pairs for `n` simulated peers (from `seed`; simulation
    only — real peers generate theirs with `PeerKeys.generate`)."""
    import hashlib

    from ringfl.secure.keys import PeerKeys

    return [
        PeerKeys.from_private_bytes(hashlib.sha256(f"ringfl-sim-key:{seed}:{p}".encode()).digest())
        for p in range(n)
    ]


def consensus_distance(flats: Sequence[np.ndarray]) -> float:
    """mean_i ||x_i - mean(x)|| (Euclidean), in float64."""
    x = np.stack([f.astype(np.float64) for f in flats])
    return float(np.linalg.norm(x - x.mean(axis=0), axis=1).mean())


class _Sim:
    """The simulator's loop (see the module docstring); only driving, no decisions."""

    def __init__(
        self,
        graph: nx.Graph,
        config: Config,
        data: PeerData | None,
        plan: FaultPlan,
        net: MemoryNetwork,
        model: ModelSpec | None,
        step_s: float,
        trainers: Backend,
        workload: Callable[[int], Workload] | None = None,
        availability: Availability | None = None,
        messages: bool = False,
    ) -> None:
        from ringfl.sim_clock import speeds
        from ringfl.topology import mixing_rows, peers

        self.config = config
        self.data = data
        self.plan = plan
        self.net = net
        self.model = model
        self.step_s = step_s
        self.trainers = trainers
        self.workload = workload
        self.names = [str(v) for v in peers(graph)]
        self.n = n = len(self.names)
        self.name = config.algorithm.name
        entry = REGISTRY[self.name]
        collective = entry.build(config.algorithm).collective
        self.collective = collective
        self.secure = masks(config.algorithm)
        self.session = session_id(config.seed)
        self.order = ring_of(graph) if collective == "ring" else tuple(range(n))
        self.rows = mixing_rows(graph) if collective == "neighbours" else None
        self.keys = simulation_keys(config.seed, n) if self.secure else [None] * n
        self.public = {p: k.public_bytes for p, k in enumerate(self.keys)} if self.secure else None
        if not plan.empty_plan and collective == "star":
            raise ConfigError("faults: the server baseline has no recovery; use ring or gossip")
        if plan.restarts and collective != "ring":
            raise ConfigError("faults: restarts are simulated for ring modes (ring, selective)")
        self.engines: list[RoundEngine] = [self._engine(p) for p in range(n)]
        self.hub: RoundEngine | None = None
        if collective == "star":
            self.hub = make_engine(
                n, n, config, AuxWorkload(self.engines[0].workload.get()), aux=True
            )
        self.alive: set[int] = set(range(n))
        self.stopped: set[int] = set()
        self._joining: dict[int, RoundEngine] = {}
        # the clock: speeds, availability, the engine's deadlines, simulated seconds so far
        self.speeds = speeds(graph)
        self.availability = availability or Availability()
        self.deadlines: dict[int, AdaptiveDeadline] | None = (
            {p: AdaptiveDeadline(DeadlinePolicy()) for p in range(n + 1)}
            if config.clock.deadlines == "engine"
            else None
        )
        self.clock = 0.0
        self.bulk = not messages
        self.phases: dict[str, float] = {}  # the last round's wall seconds by phase
        self._bulk_clipped: dict[int, int] | None = None
        self._long_term: dict[int, Any] = {}  # bulk secure sums: each party's X25519 cache
        self.away: set[int] = set()  # went offline or were declared stragglers: may rejoin
        if not self.availability.empty and collective == "star":
            raise ConfigError("clock: the server baseline has no recovery; no availability trace")

    def _engine(self, p: int) -> RoundEngine:
        # a new incarnation: initial model, fresh optimiser
        w: Any = self.workload(p) if self.workload is not None else self.trainers.workload(p)
        return make_engine(
            p,
            self.n,
            self.config,
            w,
            order=self.order,
            row=None if self.rows is None else self.rows[p],
            keys=self.keys[p],
            public_keys=self.public,
            plan=self.plan,
        )

    def _all(self) -> dict[int, RoundEngine]:
        out = {p: self.engines[p] for p in sorted(self.alive)}
        if self.hub is not None:
            out[self.n] = self.hub
        return out

    def setup(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        if self.bulk and self.collective == "ring":
            sent = self._bulk_setup()
            for e in self._all().values():
                e.begin(0, self.order, self.session)
            return time.perf_counter() - t0, sent
        machines = {p: m for p, e in self._all().items() if (m := e.setup_machine(self.session))}
        sent = 0.0
        if machines:
            run = self.net.run(machines)
            sent = float(np.mean([run.bytes_sent.get(p, 0) for p in range(self.n)]))
            for p in machines:
                self.engines[p].finish_setup(run.results[p])
        for e in self._all().values():
            e.begin(0, self.order, self.session)
        return time.perf_counter() - t0, sent

    def _bulk_setup(self) -> float:
        """The setup sum of counts in bulk (every party is live before round 0)."""
        from ringfl.engine.sums import SETUP_ROUND, setup_clip

        ring = list(self.order)
        data = {p: self.engines[p].setup_payload() for p in ring}
        prep = self._secure_prep(
            SETUP_ROUND,
            ring,
            dict(enumerate(self.engines)),
            self.session,
            clip=setup_clip(len(ring)),
        )
        if prep is None:
            result = bulk.plain_ring_sum(np.stack([data[p] for p in ring]))  # type: ignore[misc]
            stages: list[bulk.Gather | bulk.AllReduce] = [bulk.AllReduce(3, 8)]
        else:
            result = prep.sum(data.__getitem__).result  # type: ignore[arg-type]
            stages = bulk.secure_stages(ring, 3, prep.masking, prep.committee)
        sched = bulk.ring_schedule(self.net, ring, stages)
        for p in ring:
            self.engines[p].finish_setup(result)
        # the ring holds every party once, and a mean of integers is exact in any order
        return float(np.mean(sched.bytes_sent))

    def _restarts(self, r: int) -> list[int]:
        """Parties the schedule brings back as members of round r + 1: a fresh engine
        (a new process: nothing but its own data), whose join request reaches every live
        party before it builds round r's payload."""
        back = [p for p, at in self.plan.restarts.items() if at == r + 1]
        for p in back:
            self.engines[p] = self._engine(p)
            for q in sorted(self.alive):
                if self.engines[q].join_request(p, incarnation=r + 1):
                    self.engines[q].peers_lost({p}, self.engines[q].round)
        return back

    def _rejoins(self, r: int) -> list[int]:
        """Parties that were away (offline, or declared stragglers) and are online when
        round r starts. Ring modes: a fresh engine whose join request reaches every live
        party before round r's payload is built (a member from round r + 1, as a restart).
        Gossip: it takes a live neighbour's model and mixes again from round r."""
        back = [
            p
            for p in sorted(self.away)
            if p not in self._joining and self.availability.online(p, self.clock)
        ]
        ring = []
        for p in back:
            if self.collective == "neighbours":
                assert self.rows is not None
                nbrs = [q for q in sorted(self.rows[p]) if q != p and q in self.alive]
                if not nbrs:
                    continue
                self.away.discard(p)
                self.engines[p] = e = self._engine(p)
                model = self.engines[nbrs[0]].workload.get()
                e.accept_handover(Handover(r, (nbrs[0], p), model, 0.0), self.session)
                for q in sorted(self.alive):
                    self.engines[q].join_request(p, incarnation=r)
                self.alive.add(p)
                if self.deadlines is not None:
                    self.deadlines[p] = AdaptiveDeadline(DeadlinePolicy())
                continue
            self.away.discard(p)
            self.engines[p] = self._engine(p)
            self._joining[p] = self.engines[p]
            if self.deadlines is not None:
                self.deadlines[p] = AdaptiveDeadline(DeadlinePolicy())
            for q in sorted(self.alive):
                if self.engines[q].join_request(p, incarnation=r + 1):
                    self.engines[q].peers_lost({p}, self.engines[q].round)
            ring.append(p)
        return ring

    def _wrong_losses(self, r: int) -> list[int]:
        """A false declaration before round r: every live party learns that `lost` is gone
        (the LOST notice goes to everyone, the victim too), and the victim, told it was
        declared gone, rejoins as a new incarnation: its join request reaches everyone
        during round r, where it is still listed as a member, so it is flagged in round
        r + 1's payloads and is a member again from round r + 2 (as with real peers)."""
        victims = []
        for _declarer, lost in self.plan.wrong_losses.get(r, ()):
            if lost not in self.alive:
                continue
            victims.append(lost)
            for q in sorted(self.alive):
                self.engines[q].notice({lost}, r)
        for v in victims:
            assert self.engines[v].must_rejoin
            self.alive.discard(v)
            self.engines[v] = self._engine(v)
            self._joining[v] = self.engines[v]
            for q in sorted(self.alive):
                self.engines[q].join_request(v, incarnation=r + 1)
        return victims

    def round(
        self, r: int, later: Iterator[None] | None = None
    ) -> tuple[RunResult, dict[int, RoundRecord], list[float], float]:
        """Round r. `later`: steps of the driver's work that wait for nothing in this
        round (the last round's evaluation), done while the backend's workers train, after
        the secure sum's key work; the caller finishes what is left."""
        for p in self._restarts(r):
            self._joining[p] = self.engines[p]
        self._rejoins(r)
        self._wrong_losses(r)
        engines = self._all()
        handovers = {}
        for e in engines.values():
            for q in e.begin_round(r):
                h = e.handover(q)
                if h is not None and q in self._joining:
                    handovers[q] = h
        for q, h in handovers.items():
            j = self._joining.pop(q)
            j.accept_handover(h, self.session)
            j.begin_round(r)
            self.alive.add(q)
        engines = self._all()
        for p, e in list(engines.items()):
            if e.stop_reason is not None:
                self._stop(p)
        engines = self._all()
        # availability: offline at the round's start, or going offline during it
        offline_at = {
            p: t - self.clock
            for p in engines
            if p < self.n and (t := self.availability.next_offline(p, self.clock)) is not None
        }
        # a bulk secure sum's key work does not depend on the training: a backend with
        # workers lets the driver do it while it waits for them
        ring = self._bulk_ring(r, engines) if self.bulk else None
        prep = (
            self._secure_prep(r, ring, engines, engines[ring[0]].session)
            if ring is not None
            else None
        )
        t0 = time.perf_counter()
        losses, steps = [], {}
        # parties offline at the round's start do not train
        online = {p: e for p, e in engines.items() if offline_at.get(p, 1.0) > 0}
        work = [prep.steps()] if prep is not None else []
        work += [later] if later is not None else []
        background = itertools.chain(*work) if work else None
        for p, st in self.trainers.train_round(r, online, background).items():
            if p < self.n:
                losses.append(st.loss)
                steps[p] = st.steps
        compute = time.perf_counter() - t0
        start_at = {
            p: training_s(
                steps.get(p, 0),
                self.step_s,
                self.speeds[p] if p < self.n else 1.0,
                self.plan.slow_peers.get(p, 1.0),
            )
            for p in engines
        }
        self.phases = {"train_s": compute}
        if ring is not None:
            done = self._bulk_round(r, ring, engines, start_at, offline_at, prep)
            if done is not None:
                return done, self._finish_bulk(r, engines, done), losses, compute
        machines: dict[int, Machine] = {p: e.round_machine(r) for p, e in engines.items()}
        faults: list[Any] = [Crash(p, at_s=t) for p, t in offline_at.items()]
        for p in engines:
            k = self.plan.crash_at(p, r)
            if k is not None:
                faults.append(Crash(p, after_sends=k))
        cut = None
        for at in sorted(self.plan.partitions):
            if at <= r:
                cut = self.plan.partitions[at]
        if cut is not None:
            faults.append(Cut(frozenset(cut)))
        t1 = time.perf_counter()

        def on_lost(p: int, lost: frozenset[int]) -> bool:
            e = engines[p]
            e.peers_lost(lost, r)
            return e.stop_reason is None

        run = self.net.run(
            machines,
            faults,
            session=None,
            initial_lost={p: e.lost_at_start(r) for p, e in engines.items()},
            on_lost=on_lost,
            start_at=start_at,
            link_factor=dict(self.plan.slow_links),
            absent=[p for p in range(self.n) if p not in engines],
            deadlines=self.deadlines,
        )
        self.clock += run.virtual_time_s
        for p in run.dead:
            self.alive.discard(p)
            if p in offline_at or p in run.declared:
                self.away.add(p)
        for p in run.stopped:
            self._stop(p)
        records = {
            p: engines[p].finish_round(r, run.results[p], machines[p])
            for p in engines
            if p in run.results
        }
        self.phases["comm_s"] = time.perf_counter() - t1
        return run, records, losses, compute

    def done(self) -> bool:
        """Whether the live parties' workload is done (a statistics job; all agree)."""
        return any(self.engines[p].workload.done for p in self.alive)

    def _bulk_ring(self, r: int, engines: dict[int, RoundEngine]) -> list[int] | None:
        """The ring of round r when its sum may run in bulk as far as the round's start
        tells: ring collective, every member live and known to every member, no
        scheduled crash or partition. None: message by message."""
        if self.collective != "ring" or not engines:
            return None
        first = next(iter(engines.values())).members
        ring = list(first)
        # after a bulk round the members tuple is one shared object: compare by identity
        # first, else comparing N tuples of N members is O(N²) a round
        if sorted(ring) != sorted(engines) or any(
            (e.members is not first and e.members != first) or e.lost_at_start(r)
            for e in engines.values()
        ):
            return None
        if any(self.plan.crash_at(p, r) is not None for p in engines) or any(
            at <= r for at in self.plan.partitions
        ):
            return None
        return ring

    def _secure_prep(
        self,
        r: int,
        ring: list[int],
        engines: dict[int, RoundEngine],
        session: int,
        clip: float | None = None,
    ) -> bulk.SecurePrep | None:
        """The input-independent part of the bulk secure sum of round r (`SETUP_ROUND`:
        the setup sum) over `ring`, with the parties' word size and `clip` (None: theirs).
        None: the parties sum in the clear."""
        from ringfl.secure.aggregate import Masking

        sec0 = engines[ring[0]].secure
        if sec0 is None:
            return None
        secure = {p: engines[p].secure for p in ring}
        return bulk.SecurePrep(
            ring,
            {p: s.keys for p, s in secure.items() if s is not None},
            sec0.public_keys,
            session=session,
            round=r,
            masking=Masking(bits=sec0.bits, clip=sec0.clip if clip is None else clip),
            entropy={p: s.entropy for p, s in secure.items() if s is not None},
            long_term=self._long_term,
        )

    def _bulk_round(
        self,
        r: int,
        ring: list[int],
        engines: dict[int, RoundEngine],
        start_at: dict[int, float],
        offline_at: dict[int, float],
        prep: bulk.SecurePrep | None,
    ) -> RunResult | None:
        """The round's ring sum in bulk (`ringfl.transport.bulk`) over `ring`
        (`_bulk_ring`), when nothing goes wrong in it either: nobody going offline before
        the sum is done and no silence the deadlines would act on. `prep`: the secure
        sum's prepared keys (None: a plain sum). None: run it message by message."""
        t0 = time.perf_counter()
        first = engines[ring[0]].ring_payload(r)
        length = first.shape[0]
        stages: list[bulk.Gather | bulk.AllReduce] = (
            [bulk.AllReduce(length, 4)]
            if prep is None
            else bulk.secure_stages(ring, length, prep.masking, prep.committee)
        )
        sched = bulk.ring_schedule(
            self.net, ring, stages, start_at, link_factor=dict(self.plan.slow_links)
        )
        end = float(sched.finished_at.max())
        hard = 65.0 * self.net.deadline_s
        if self.deadlines is not None:
            pol = self.deadlines[ring[0]].policy
            hard = 2 * pol.max_s + pol.probe_max_s
        if any(t <= end for t in offline_at.values()) or float(sched.silence.max()) >= hard:
            return None
        # every party's payload in turn, into one reused buffer (no matrix of them all)
        row = np.empty_like(first)
        payload_s = 0.0

        def payload(p: int) -> np.ndarray:
            nonlocal payload_s
            if p == ring[0]:
                return first
            t = time.perf_counter()
            x = engines[p].ring_payload(r, out=row)
            payload_s += time.perf_counter() - t
            return x

        if prep is None:
            summed = bulk.RingSum(len(ring), length, first.dtype)
            for p in ring:
                summed.add(payload(p))
            result = summed.result()
            self.phases["masking_s"] = 0.0
        else:
            out = prep.sum(payload)
            result = out.result
            # payloads are the round's own work, not masking
            self.phases["masking_s"] = out.seconds["keys_s"] + out.seconds["mask_s"] - payload_s
            # key work done while the driver waited for the workers (inside train_s)
            self.phases["keys_ahead_s"] = out.seconds["keys_ahead_s"]
            self._bulk_clipped = out.clipped
        result.flags.writeable = False  # one array for every member
        if self.deadlines is not None:
            for i, p in enumerate(ring):
                self.deadlines[p].observe(float(sched.silence[i]))
        self.phases["comm_s"] = time.perf_counter() - t0 - self.phases["masking_s"]
        return RunResult(
            results=dict.fromkeys(ring, result),
            dead=frozenset(),
            bytes_sent={p: int(sched.bytes_sent[i]) for i, p in enumerate(ring)},
            messages_sent={p: int(sched.messages[i]) for i, p in enumerate(ring)},
            virtual_time_s=end,
            finished_at={p: float(sched.finished_at[i]) for i, p in enumerate(ring)},
        )

    def _finish_bulk(
        self, r: int, engines: dict[int, RoundEngine], run: RunResult
    ) -> dict[int, RoundRecord]:
        from ringfl.engine.round import SumOutcome

        t0 = time.perf_counter()
        self.clock += run.virtual_time_s
        members = tuple(run.results)
        if members and members == engines[members[0]].members:
            # the tuple every party already holds: their checks against it are identity
            members = engines[members[0]].members
        clipped = getattr(self, "_bulk_clipped", None) if self.secure else None
        records = {
            p: engines[p].finish_round(
                r,
                run.results[p],
                SumOutcome(
                    members,
                    clipped=None if clipped is None else clipped[p],
                    attempts=1 if self.secure else None,
                ),
            )
            for p in members
        }
        self._bulk_clipped = None
        self.phases["comm_s"] += time.perf_counter() - t0
        return records

    def _stop(self, p: int) -> None:
        self.alive.discard(p)
        self.stopped.add(p)


def simulate(
    graph: nx.Graph,
    config: Config,
    *,
    model: ModelSpec | None = None,
    out: str | Path | None = None,
    baseline: bool = True,
    progress: bool = True,
    network: MemoryNetwork | None = None,
    data: PeerData | None = None,
    faults: Sequence[Fault] = (),
    step_s: float | None = None,
    workload: Callable[[int], Workload] | None = None,
    backend: BackendSpec = "auto",
    availability: Availability | None = None,
    messages: bool = False,
) -> SimResult:
    """Simulate `config` on `graph` (party i = i-th node). `model` overrides config.model
    (e.g. a factory); `out`: write metrics/plots there (None: write nothing);
    `baseline`: also train the centralized baseline at the same sample budget;
    `network`: the in-memory network (default: the topology's `latency_ms` /
    `bandwidth_mbps`, else 50 us and 1 GB/s per link; `ringfl.sim_clock`);
    `data`: pre-loaded `PeerData` (default: `prepare_data(config, N)`); `faults`: more
    scheduled faults (added to `config.faults`); `step_s`: virtual seconds per local step
    at speed 1 (default `config.clock.step_s`); `availability`: offline intervals (default:
    `config.clock.availability` or its random churn); `messages`: run every ring sum
    message by message through the machines real peers run (default: a ring round that
    nothing can disturb is summed in bulk by `ringfl.transport.bulk` — the same bits,
    virtual times and bytes, orders of magnitude faster at large N);
    `workload`: party index -> its engine workload (default: the config's neural model on
    the party's data; then no dataset is loaded unless `data` is given). `backend`: where
    the parties' local training runs — "auto", "inline", "processes",
    "ray" or a spec from `ringfl.compute` (the results are the same bits on each)."""
    from ringfl.topology import peers

    n = len(peers(graph))
    if n < 1:
        raise ConfigError("topology has no peers")
    # workers start now and load torch while this process loads the data
    with open_backend(backend, n) as trainers:
        return _simulate(
            graph,
            config,
            model=model,
            out=out,
            baseline=baseline,
            progress=progress,
            network=network,
            data=data,
            faults=faults,
            step_s=step_s,
            trainers=trainers,
            workload=workload,
            availability=availability,
            messages=messages,
        )


def _simulate(
    graph: nx.Graph,
    config: Config,
    *,
    model: ModelSpec | None,
    out: str | Path | None,
    baseline: bool,
    progress: bool,
    network: MemoryNetwork | None,
    data: PeerData | None,
    faults: Sequence[Fault],
    step_s: float | None,
    trainers: Backend,
    workload: Callable[[int], Workload] | None,
    availability: Availability | None,
    messages: bool,
) -> SimResult:
    from tqdm.auto import tqdm

    from ringfl.topology import peers

    t_start = time.perf_counter()
    n = len(peers(graph))
    if n < 1:
        raise ConfigError("topology has no peers")
    if workload is None:
        data = prepare_data(config, n) if data is None else data
        if len(data.parties) != n:
            raise ConfigError(f"data: {len(data.parties)} parties for {n} peers")
        try:
            job = TrainJob.of(config, model_spec(config, model), data.parts)
        except ValueError as exc:
            raise ConfigError(f"data: {exc}") from None
        held = trainers.load(job, data.parts, [p.val for p in data.parties], data.test)
        # the backend may hold the training sets in shared memory: keep only that copy
        data = dataclasses.replace(
            data,
            parties=[
                dataclasses.replace(d, train=t) for d, t in zip(data.parties, held, strict=True)
            ],
        )
    names = [str(v) for v in peers(graph)]
    plan = resolve([*config.faults, *faults], names)
    from ringfl.sim_clock import network_for

    if availability is None:
        availability = _availability(config, names)
    sim = _Sim(
        graph,
        config,
        data,
        plan,
        network or network_for(graph),
        model,
        config.clock.step_s if step_s is None else step_s,
        trainers,
        workload,
        availability,
        messages,
    )
    setup_s, setup_bytes = sim.setup()
    rounds = config.train.rounds
    metrics: list[dict[str, Any]] = []
    round_rows: list[dict[str, Any]] = []
    records: list[RoundRecord] = []
    cum_bytes = 0.0
    compute_total = comm_total = 0.0
    scratch = None
    bar = tqdm(range(rounds), desc=f"{sim.name} x{n}", unit="round", disable=not progress)
    last_eval: dict[str, Any] = {}
    phases: list[dict[str, Any]] = []
    pending_eval: dict[int, GlobalEval] = {}
    deferred: Iterator[None] | None = None  # the last evaluation, while the next round trains
    for r in bar:
        if sim.done():
            break
        t0 = time.perf_counter()
        run, recs, train_losses, compute = sim.round(r, deferred)
        t2 = time.perf_counter()
        for _ in deferred or ():  # what the backend left (inline: all of it)
            pass
        deferred = None
        phases.append({"round": r, **sim.phases, "wall_s": t2 - t0})
        compute_total += compute
        comm_total += t2 - t0 - compute
        sent = float(np.mean([run.bytes_sent.get(p, 0) for p in range(n)]))
        cum_bytes += sent
        rec = _agreed(recs, sim.collective, r, [p for p in run.messages_sent if p < n])
        if rec is not None:
            records.append(rec)
            if rec.evaluation is not None:
                pending_eval[rec.evaluation.round] = rec.evaluation
        round_rows.append(
            {
                "round": r,
                "members": [names[p] for p in (rec.members if rec else ())],
                "contributors": [names[p] for p in (rec.contributors if rec else ())],
                "dropped": [names[p] for p in (rec.dropped if rec else ())],
                "admitted": [names[p] for p in (rec.admitted if rec else ())],
                "stopped": [names[p] for p in sorted(run.stopped)],
                "offline": [names[p] for p in sorted(sim.away)],
                "virtual_s": run.virtual_time_s,
                "time_s": sim.clock,
            }
        )
        if (r + 1) % config.eval_every and r + 1 != rounds and not sim.done():
            continue
        row: dict[str, Any] = dict.fromkeys(METRIC_FIELDS)
        row.update(
            round=r + 1,
            train_loss=float(np.mean(train_losses)) if train_losses else None,
            bytes_sent_per_peer=sent,
            cum_bytes_per_peer=cum_bytes,
            hub_bytes_sent=run.bytes_sent.get(n) if sim.collective == "star" else None,
            compute_s=compute,
            comm_s=t2 - t0 - compute,
            virtual_comm_s=run.virtual_time_s,
            time_s=sim.clock,
            clipped=sum(x.clipped or 0 for x in recs.values()) if sim.secure else None,
        )
        live = [sim.engines[p] for p in sorted(sim.alive)]
        test = None if data is None else data.test
        if test is not None and sim.collective == "neighbours":
            flats = [e.workload.get() for e in live]
            if all(isinstance(e.workload, SimWorkload) for e in live):
                evs = trainers.evaluate([e.peer for e in live])  # shared out to its workers
            else:
                evs = [evaluate(e.workload.model, test) for e in live]  # type: ignore[attr-defined]
            if scratch is None:
                scratch = copy.deepcopy(live[0].workload.model)  # type: ignore[attr-defined]
            mean = np.stack(flats).astype(np.float64).mean(axis=0)
            set_flat(scratch, mean.astype(np.float32))
            row.update(
                accuracy=float(np.mean([e.accuracy for e in evs])),
                loss=float(np.mean([e.loss for e in evs])),
                min_peer_accuracy=float(min(e.accuracy for e in evs)),
                mean_model_accuracy=evaluate(scratch, test).accuracy,
                consensus_distance=consensus_distance(flats),
            )
        elif test is not None and live and isinstance(live[0].workload, SimWorkload):
            # its model is a copy: evaluated while a backend's workers train the next round
            deferred = _evaluate_into(row, live[0].workload.model, test, bar, t_start)
        elif test is not None and live:
            ev = evaluate(live[0].workload.model, test)  # type: ignore[attr-defined]
            row.update(accuracy=ev.accuracy, loss=ev.loss)
        row["wall_s"] = time.perf_counter() - t_start
        metrics.append(row)
        last_eval = row
        if row["accuracy"] is not None:
            bar.set_postfix(acc=f"{row['accuracy']:.4f}")
    for _ in deferred or ():
        pass
    bar.close()
    # with per-party validation data: the ring's secure sum of evaluation counts
    closing = {p: m for p, e in sim._all().items() if (m := e.closing_machine(rounds))}
    if closing:
        run = sim.net.run(closing)
        finals = {p: sim._all()[p].finish_closing(rounds, run.results[p]) for p in closing}
        final = finals[min(finals)]
        if final is not None:
            pending_eval[final.round] = final
        for row in metrics:
            ge = pending_eval.get(row["round"] - 1)
            if ge is not None and row["accuracy"] is None:
                row.update(accuracy=ge.accuracy, loss=ge.loss)
    base = None
    if baseline and data is not None and data.test is not None:
        budget = sample_budget([len(p) for p in data.parts], config.train)
        base = centralized(
            data.pooled,
            data.test,
            model_spec(config, model),
            config.train,
            budget=budget,
            seed=config.seed,
        )
    final_acc = last_eval.get("accuracy")
    final_loss = last_eval.get("loss")
    result = SimResult(
        config=config,
        algorithm=sim.name,
        secure=sim.secure,
        num_peers=n,
        metrics=metrics,
        final_accuracy=float("nan") if final_acc is None else float(final_acc),
        final_loss=float("nan") if final_loss is None else float(final_loss),
        bytes_per_peer=cum_bytes,
        compute_s=compute_total,
        comm_s=comm_total,
        wall_s=time.perf_counter() - t_start,
        engines=sim.engines,
        data=data,
        rounds=round_rows,
        records=records,
        alive=sorted(sim.alive),
        setup_s=setup_s,
        setup_bytes_per_peer=setup_bytes,
        phases=phases,
        baseline=base,
        backend=trainers.name,
        workers=trainers.workers,
    )
    if out is not None:
        write_outputs(result, Path(out))
    return result


def _evaluate_into(
    row: dict[str, Any], model: nn.Module, test: Dataset, bar: Any, t_start: float
) -> Iterator[None]:
    """Evaluate `model` on `test` a batch at a time (`evaluation_steps`: the same bits as
    `evaluate`), then fill in the round's metrics `row` (`wall_s`: seconds since
    `t_start`) and the progress bar."""
    ev = yield from evaluation_steps(model, test)
    row.update(accuracy=ev.accuracy, loss=ev.loss, wall_s=time.perf_counter() - t_start)
    bar.set_postfix(acc=f"{ev.accuracy:.4f}")


def _availability(config: Config, names: Sequence[str]) -> Availability | None:
    """The config's availability: a trace file, or random churn up to
    `clock.churn_horizon_s`."""
    from ringfl.sim_clock import load_availability, random_churn

    c = config.clock
    if c.availability is not None:
        return load_availability(c.availability, names)
    if c.churn_up_s is not None:
        return random_churn(
            len(names),
            c.churn_horizon_s,
            mean_up_s=c.churn_up_s,
            mean_down_s=c.churn_down_s,
            fraction=c.churn_fraction,
            seed=c.churn_seed,
        )
    return None


def _agreed(
    recs: dict[int, RoundRecord], collective: str, r: int, started: Sequence[int] = ()
) -> RoundRecord | None:
    """The round's record. Ring modes: every finisher must report the same membership (a
    disagreement is a bug in the engine or a protocol, never a user error). Gossip: who
    took part, and the union of the edges each party dropped."""
    if not recs:
        return None
    first = recs[min(recs)]
    if collective == "ring":
        # bulk rounds hand every party the same tuple: identity first, so that N records
        # do not hash N-long tuples each (O(N²): seconds a round at 30,000 parties)
        differ = [
            x
            for x in recs.values()
            if not (x.contributors is first.contributors or x.contributors == first.contributors)
            or x.admitted != first.admitted
        ]
        if differ:
            seen = {(x.contributors, x.admitted) for x in (first, *differ)}
            raise RuntimeError(f"round {r}: parties disagree on the round's membership: {seen}")
        return first
    if collective == "star":
        return first
    return dataclasses.replace(
        first,
        members=tuple(sorted(started)),
        contributors=tuple(sorted(recs)),
        dropped=tuple(sorted(set(started) - set(recs))),
    )


def write_outputs(result: SimResult, out: Path) -> list[Path]:
    """See `ringfl.sim_outputs.write_outputs`."""
    from ringfl.sim_outputs import write_outputs as write

    return write(result, out)


__all__ = [
    "METRIC_FIELDS",
    "ROUND_FIELDS",
    "PeerData",
    "SimResult",
    "consensus_distance",
    "prepare_data",
    "simulate",
    "simulation_keys",
    "summarize_parts",
    "write_outputs",
]
