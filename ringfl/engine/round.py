"""`RoundEngine`: one party's rounds as a sans-I/O component — workload + algorithm +
membership + failure policy. The simulator (`ringfl.sim`, virtual time, in-memory
network) and a real peer (`ringfl.peer.node`, ZeroMQ) drive it the same way:

    m = engine.setup_machine()            # ring modes: the secure sum of sample counts
    <run m with the others>; engine.finish_setup(m.result)
    engine.begin(round, members, session)
    each round r, until engine.finished(rounds):
        serve = engine.begin_round(r)     # members this party hands the start state to
        <send engine.handover(p) to each p in serve>
        engine.train(r)                   # local work (a driver may run it in a thread)
        m = engine.round_machine(r)       # the round's collective (a sans-I/O machine)
        <run m; report engine.lost_at_start(r) to it, and every later loss>
        record = engine.finish_round(r, result, m)
    m = engine.closing_machine()          # ring modes with validation data: final metrics
    <run m>; engine.finish_closing(result)

Events a driver feeds in at any time: `join_request(p, incarnation)` (a restarted party
asks to join), `peers_lost(peers, round)` (declared by the failure detector or learnt
from another party's notice). Decisions the engine queues instead of raising through the
driver: `stop_reason` (this party reaches only a minority and must stop) and
`must_rejoin` (others declared this party gone). Nothing here reads a clock, opens a
socket, or touches another party's data.

Ring payload of a party in round r (float32):

    [algorithm contribution | join flags (N) | evaluation (3)]

The evaluation slot carries (correct, total, loss_sum / LOSS_SCALE) / T_val of the
round's start model on the party's own validation data (T_val: the setup sum of
validation counts), when round r - 1 was an evaluation round; so the ring learns only the
sums, and every member reports the same global metrics.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ringfl.algorithms.base import Algorithm, RoundInput, SumResult
from ringfl.collective.events import Machine
from ringfl.engine.faults import FaultPlan
from ringfl.engine.membership import Membership, live_weights, split_flags, with_flags
from ringfl.engine.sums import (
    SETUP_ROUND,
    SecureSettings,
    neighbour_mix,
    ring_sum,
    setup_clip,
    star_sum,
)
from ringfl.engine.workload import LocalStats, Workload
from ringfl.errors import ConfigError
from ringfl.secure.aggregate import SecureRingAllReduce

#: Per-sample losses are divided by this in the evaluation slot (keeps them in the secure
#: fixed-point range; a mean loss above it is clipped).
LOSS_SCALE = 16.0
EVAL_SLOTS = 3


@dataclass(frozen=True)
class GlobalEval:
    """Metrics of the model after `round` (0-based) over every contributor's own
    validation data: only sums crossed the network."""

    round: int
    accuracy: float
    loss: float
    samples: float


@dataclass(frozen=True)
class RoundRecord:
    """What a round did, the same on every member that finished it."""

    round: int
    members: tuple[int, ...]  # who started the round
    contributors: tuple[int, ...]  # whose input the sum contains
    dropped: tuple[int, ...]  # members whose input is missing
    admitted: tuple[int, ...]  # members from the next round on
    train_loss: float
    weight: float | None = None  # sum of the contributors' weights
    clipped: int | None = None
    attempts: int | None = None
    evaluation: GlobalEval | None = None


@dataclass(frozen=True)
class SumOutcome:
    """A completed ring sum as a driver that computes it without a machine reports it
    (the simulator's bulk rounds): its contributors (ring order), this party's clipped
    inputs and the attempts it took."""

    members: tuple[int, ...]
    clipped: int | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class Handover:
    """The state a party joining round `round` starts from: the round's start model, its
    members (ring order) and the setup sum of counts."""

    round: int
    members: tuple[int, ...]
    model: np.ndarray
    total: float
    val_total: float = 0.0


@dataclass
class RoundEngine:
    """One party's round engine (see the module docstring). `order`: the peers in ring
    order (ring modes) or all peers; `row`: this party's gossip mixing row; `hub`: the
    server baseline's hub id (an auxiliary participant when `aux`); `index_session`:
    shared randomness from the config seed; `eval_every`: evaluation rounds."""

    peer: int
    algorithm: Algorithm
    workload: Workload
    n_peers: int
    order: tuple[int, ...]
    index_session: int
    secure: SecureSettings | None = None
    row: Mapping[int, float] | None = None
    hub: int | None = None
    aux: bool = False
    eval_every: int = 1
    num_classes: int = 0  # the model's classes; the setup sum checks that all parties agree
    plan: FaultPlan = field(default_factory=FaultPlan.empty)
    session: int = 0
    total: float | None = None
    val_total: float = 0.0
    stop_reason: str | None = None
    must_rejoin: bool = False
    membership: Membership = field(init=False)
    snapshot: Handover | None = field(default=None, init=False)
    _local: LocalStats | None = field(default=None, init=False)
    _payload: np.ndarray | None = field(default=None, init=False)
    _x: RoundInput | None = field(default=None, init=False)
    _neighbours: frozenset[int] = field(default=frozenset(), init=False)
    _slot: np.ndarray | None = field(default=None, init=False)
    _candidates: tuple[int, ...] = field(default=(), init=False)  # this round's flag slots

    def __post_init__(self) -> None:
        self.membership = Membership(
            self.peer,
            self.n_peers,
            self.order,
            not_before=self.plan.admissions,
        )
        if self.algorithm.collective == "neighbours" and self.row is None:
            raise ValueError("a gossip engine needs its mixing row")
        if self.algorithm.collective == "star" and self.hub is None:
            raise ValueError("a server-baseline engine needs the hub id")

    # -- facts ------------------------------------------------------------------------------

    @property
    def collective(self) -> str:
        return self.algorithm.collective

    @property
    def round(self) -> int:
        return self.membership.round

    @property
    def members(self) -> tuple[int, ...]:
        return self.membership.members

    def finished(self, rounds: int) -> bool:
        """Whether the run is over: `rounds` rounds done, or the workload is done (a
        statistics job ends when its sums say so, on every member alike)."""
        return self.round >= rounds or self.workload.done

    def weight(self) -> float:
        """This party's weight: n_i / T (ring modes), raw n_i (server), 0 (auxiliary)."""
        if self.aux:
            return 0.0
        if self.collective == "star":
            return float(self.workload.num_samples)
        if self.collective != "ring":
            return 1.0
        if self.total is None:
            raise RuntimeError(f"peer {self.peer}: run the setup sum before round 0")
        return self.workload.num_samples / self.total

    # -- set-up ------------------------------------------------------------------------------

    def setup_payload(self) -> np.ndarray | None:
        """Ring modes: what this party puts into the setup sum (float64; its secure sum
        clips at `setup_clip(N)`), for a driver that sums without a machine."""
        if self.collective != "ring":
            return None
        return np.array(
            [self.workload.num_samples, self.workload.num_val, self.num_classes],
            dtype=np.float64,
        )

    def setup_machine(self, session: int) -> Machine | None:
        """Ring modes: the sum of (training, validation) sample counts over every peer,
        and of the number of classes each party's model has (they must agree)."""
        data = self.setup_payload()
        if data is None:
            return None
        return ring_sum(
            self.peer,
            self.membership.order,
            data,
            secure=self.secure,
            session=session,
            round_index=SETUP_ROUND,
            clip=setup_clip(len(self.membership.order)),
        )

    def finish_setup(self, result: np.ndarray) -> None:
        total, val, classes = (float(v) for v in np.asarray(result)[:3])
        if not total > 0:
            raise RuntimeError(f"peer {self.peer}: total sample count over the ring is {total}")
        agree = self.num_classes * len(self.membership.order)
        if round(classes) != agree:
            raise ConfigError(
                f"peer {self.peer}: the parties' models have different numbers of classes "
                f"(this party's has {self.num_classes}; each party takes it from its own "
                "labels): set data.num_classes in the config"
            )
        self.total, self.val_total = total, max(val, 0.0)

    def begin(self, round_index: int, members: Sequence[int], session: int) -> None:
        """Start at `round_index` with `members` (ring order) in data session `session`."""
        self.session = int(session)
        self.membership.begin(round_index, members)
        self.stop_reason = None
        self.must_rejoin = False

    # -- membership events --------------------------------------------------------------------

    def join_request(self, p: int, incarnation: int) -> bool:
        """A new incarnation of `p` asks to join. True when `p` was a live member (it
        restarted), which the driver must now treat as lost."""
        if self.collective == "neighbours":
            self.membership.gone.discard(p)
            return False
        return self.membership.request_join(p, incarnation)

    def peers_lost(self, peers: Collection[int], round_index: int) -> set[int]:
        """`peers` are gone as of `round_index` (declared or learnt); returns the new ones.
        Queues `stop_reason` when this party is left with a minority (ring modes) or with
        no neighbour (gossip)."""
        if self.peer in peers:
            if round_index >= self.round - 1:
                self.must_rejoin = True
            peers = set(peers) - {self.peer}
        new = self.membership.lose(peers, round_index)
        if round_index == self.round:
            self._check()
        return new

    def notice(self, peers: Collection[int], round_index: int) -> set[int]:
        """A LOST notice from another party: the peers that count (see `peers_lost`)."""
        fresh = self.membership.fresh_notice(peers, round_index)
        if self.peer in peers and round_index >= self.round - 1:
            self.must_rejoin = True
        return (
            self.peers_lost(fresh - {self.peer}, max(round_index, self.round)) if fresh else set()
        )

    def _check(self) -> None:
        if self.collective == "ring":
            self.stop_reason = self.stop_reason or self.membership.majority_problem()
        elif self.collective == "neighbours":
            assert self.row is not None
            if not set(self.row) - {self.peer} - self.membership.gone:
                self.stop_reason = "every neighbour is gone"

    # -- rounds ---------------------------------------------------------------------------------

    def begin_round(self, round_index: int) -> list[int]:
        """Snapshot the round's start state; returns the joiners to hand it to."""
        if round_index != self.round:
            raise RuntimeError(f"peer {self.peer}: round {round_index}, engine at {self.round}")
        start = self.workload.get()
        self.snapshot = Handover(
            round_index, tuple(self.members), start, self.total or 0.0, self.val_total
        )
        # the start model is the model after round r - 1: evaluate it before training
        self._slot = self._eval_slot(round_index) if self.collective == "ring" else None
        self._check()
        return self.membership.to_serve(round_index) if self.collective == "ring" else []

    def handover(self, p: int, *, final: bool = False) -> Handover | None:
        """The state to send joiner `p` (None when `p` may not have it: it is not a member
        of the snapshot's round, or it was lost since; `final`: training is over)."""
        snap = self.snapshot
        if snap is None:
            return None
        if self.collective == "neighbours":
            return Handover(snap.round + 1, (self.peer, p), snap.model, 0.0)
        if final and p not in snap.members:
            return Handover(snap.round, (*snap.members, p), snap.model, snap.total, snap.val_total)
        if p in self.membership.gone or p not in snap.members:
            return None
        return snap

    def accept_handover(self, h: Handover, session: int) -> bool:
        """A joiner takes the handed-over state of data session `session` (False: it is
        not for this party)."""
        if self.collective == "ring" and self.peer not in h.members:
            return False
        self.session = int(session)
        self.workload.set(h.model)
        if self.collective == "ring":
            self.total, self.val_total = h.total, h.val_total
        self.membership.begin(h.round, h.members if self.collective == "ring" else ())
        self.must_rejoin = False
        return True

    def train(self, round_index: int) -> LocalStats:
        """This party's local work of the round."""
        self._local = LocalStats(float("nan")) if self.aux else self.workload.local(round_index)
        return self._local

    def lost_at_start(self, round_index: int) -> frozenset[int]:
        """Members known gone when the round's collective starts."""
        if self.collective == "neighbours":
            return frozenset()
        return frozenset(self.membership.lost_in(round_index))

    def round_input(self, round_index: int, local: np.ndarray | None = None) -> RoundInput:
        snap = self.snapshot
        assert snap is not None and snap.round == round_index, "begin_round first"
        return RoundInput(
            round=round_index,
            start=snap.model,
            local=self.workload.get() if local is None else local,
            weight=self.weight(),
            index_session=self.index_session,
        )

    def ring_payload(self, round_index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Ring modes: the vector this party puts into the round's sum (what
        `round_machine` sums), for a driver that sums without a machine; then
        `finish_round(r, total, SumOutcome(...))`. `out`: write it there and return `out`
        (a buffer the driver reuses for every party's payload: `payload` stays unset)."""
        if self.collective != "ring":
            raise ValueError(f"peer {self.peer}: a {self.collective} round has no ring payload")
        x = self.round_input(round_index)
        self._x = x
        contribution = self.algorithm.contribution(x)
        self._candidates = self.membership.candidates()
        payload = with_flags(contribution, self.membership.flags(round_index), self._candidates)
        slot = self._slot if self._slot is not None else np.zeros(EVAL_SLOTS, np.float32)
        payload = np.concatenate([payload, slot])
        if out is not None:
            out[:] = payload
            return out
        self._payload = payload
        return payload

    def round_machine(self, round_index: int) -> Machine:
        """The round's collective, with this party's contribution."""
        if self.collective == "ring":
            payload = self.ring_payload(round_index)
            return ring_sum(
                self.peer,
                self.members,
                payload,
                secure=self.secure,
                session=self.session,
                round_index=round_index,
            )
        x = self.round_input(round_index)
        self._x = x
        contribution = self.algorithm.contribution(x)
        if self.collective == "neighbours":
            assert self.row is not None
            row = live_weights(self.row, self.peer, self.membership.gone)
            self._neighbours = frozenset(row) - {self.peer}
            self._payload = contribution
            return neighbour_mix(
                self.peer, row, contribution, session=self.session, round_index=round_index
            )
        assert self.hub is not None
        clients = [p for p in range(self.n_peers)]
        length = x.start.shape[0] + 1
        self._payload = contribution
        return star_sum(
            self.peer,
            self.hub,
            clients,
            None if self.aux else contribution,
            length=length,
            session=self.session,
            round_index=round_index,
        )

    @property
    def payload(self) -> np.ndarray | None:
        """The vector this party put into the current round's collective."""
        return self._payload

    def _eval_slot(self, round_index: int) -> np.ndarray:
        out = np.zeros(EVAL_SLOTS, dtype=np.float32)
        if round_index == 0 or round_index % self.eval_every or not self.val_total > 0:
            return out
        if self.aux:
            return out
        ev = self.workload.evaluate()  # the start model = the model after round r - 1
        if ev is None:
            return out
        t = self.val_total
        out[:] = (ev.correct / t, ev.total / t, ev.loss_sum / (t * LOSS_SCALE))
        return out

    def _global_eval(self, round_index: int, slot: np.ndarray) -> GlobalEval | None:
        correct, total, loss = (float(v) for v in slot)
        if not total > 0:
            return None
        return GlobalEval(
            round_index, correct / total, loss * LOSS_SCALE / total, total * self.val_total
        )

    def finish_round(
        self, round_index: int, result: np.ndarray, machine: Machine | SumOutcome
    ) -> RoundRecord:
        """Apply the round's collective result; move membership on; report the round.
        `machine`: the collective that ran, or the `SumOutcome` of a ring sum computed
        without one."""
        x = self._x
        assert x is not None, "round_machine first"
        members = self.members
        # a SumOutcome's members are already a tuple of ints (shared by every party)
        c = machine.members
        contributors = c if isinstance(machine, SumOutcome) else tuple(map(int, c))
        total = np.asarray(result)
        evaluation = None
        admitted: frozenset[int] = frozenset()
        if self.collective == "ring":
            body, slot = total[:-EVAL_SLOTS], total[-EVAL_SLOTS:]
            total, admitted = split_flags(body, self._candidates)
            if round_index > 0 and round_index % self.eval_every == 0:
                evaluation = self._global_eval(round_index - 1, slot)
        if contributors is members or contributors == members:  # the usual round
            failures: tuple[int, ...] = ()
        else:
            summed = set(contributors)
            failures = tuple(p for p in members if p not in summed)
        if self.collective == "neighbours":
            failures = tuple(sorted(self._neighbours - set(contributors)))
        new = self.algorithm.aggregate(x, SumResult(total, contributors, failures))
        self.workload.set(new)
        if self.collective == "ring":
            dropped, adm = self.membership.commit(round_index, contributors, admitted)
        else:
            self.membership.gone |= set(failures)
            self.membership.round = round_index + 1
            dropped, adm = list(failures), []
        weight = float(total[-1]) if self.collective in ("ring", "star") else None
        local = self._local
        self._x = None
        self._payload = None
        return RoundRecord(
            round=round_index,
            members=members,
            contributors=contributors,
            dropped=tuple(dropped),
            admitted=tuple(adm),
            train_loss=float("nan") if local is None else local.loss,
            weight=weight,
            clipped=machine.clipped
            if isinstance(machine, (SecureRingAllReduce, SumOutcome))
            else None,
            attempts=machine.attempts
            if isinstance(machine, (SecureRingAllReduce, SumOutcome))
            else None,
            evaluation=evaluation,
        )

    # -- after the last round ---------------------------------------------------------------------

    def closing_machine(self, rounds: int) -> Machine | None:
        """Ring modes with validation data somewhere: one last sum of the final model's
        evaluation counts (round index `rounds`)."""
        if self.collective != "ring" or not self.val_total > 0:
            return None
        ev = None if self.aux else self.workload.evaluate()
        t = self.val_total
        slot = np.zeros(EVAL_SLOTS, dtype=np.float32)
        if ev is not None:
            slot[:] = (ev.correct / t, ev.total / t, ev.loss_sum / (t * LOSS_SCALE))
        return ring_sum(
            self.peer,
            self.members,
            slot,
            secure=self.secure,
            session=self.session,
            round_index=rounds,
        )

    def finish_closing(self, rounds: int, result: np.ndarray) -> GlobalEval | None:
        return self._global_eval(rounds - 1, np.asarray(result))


__all__ = [
    "EVAL_SLOTS",
    "GlobalEval",
    "Handover",
    "LOSS_SCALE",
    "RoundEngine",
    "RoundRecord",
    "SumOutcome",
]
