"""`PeerNode`: one real peer process — the ZeroMQ driver of a `RoundEngine`: start-up
handshake, control messages, waiting, checkpoints and outputs. Every learning, weighting,
membership and recovery decision is the engine's (`ringfl.engine`), the same code the
simulator drives.

    node = PeerNode(PeerOptions(topology="ring.json", node="a", config="run.toml",
                                keys="keys/"))
    status = node.run()          # 0: trained to the end

Life of a peer (design: docs/peers.md):

1. Start-up. Bind its own address, then send HELLO to every peer of the topology (again
   every second to those not heard) until it has heard from all of them (a bounded wait
   that reports who is missing). If everyone is starting, the run begins at round 0 (or at
   the round the peers' checkpoints agree on) with every peer as a member; the data session
   is derived from the seed and every peer's incarnation, so two runs never share one
   (secure masking keys are bound to (session, round)). If some peer is already running and
   this one is not a member, it is a restarted peer: it rejoins (5.).
2. A round r: the engine snapshots the model, trains locally (in a worker thread, so the
   peer keeps answering probes and requests), builds its collective (ring modes: payload
   [contribution, join flags, evaluation counts]), the driver runs it, and the engine
   applies the result — the same bits on every finisher — and moves membership on
   (`ringfl.engine.membership`).
3. Failures. The driver (`PeerLink`) waits with adaptive deadlines and probes; a peer that
   stops answering is declared gone, a LOST notice goes to every peer, and every receiver
   reports the loss to its running collective, which re-forms the ring without it
   (masking recovery in secure mode). A peer that learns it was itself declared gone
   rejoins. A peer that can reach only a minority of the topology stops (the engine queues
   the decision; the driver raises it in its own loop).
4. Checkpoint after every round (atomic, `ringfl.checkpoint`): model, next round, members.
5. Rejoin. A restarted peer (new incarnation) says HELLO; every running peer folds the
   request into its next payload's join flags, so all agree to admit it from the next
   round; the admitted peer's ring predecessor sends it a STATE (that round's start model,
   members and session), and it takes part from that round on.

Data: only this party's own — `--data`/`--val` (or the node's `data`/`val` attributes in
the topology, relative to the topology file), else its entry of the config's
`data.files`, else its part of a built-in dataset.

Control messages and the start-up handshake: `ringfl.peer.control_plane`; options:
`ringfl.peer.options`.

Outputs in its directory: events.jsonl (every event), metrics.jsonl (one line per round),
checkpoint.npz, model.npz (final), summary.json, and with `save_deltas` one
deltas/round-NNNNN.npz per round (payload and summed result).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ringfl import checkpoint
from ringfl.collective.events import Machine
from ringfl.config import Config, load_config
from ringfl.data.parties import PartyData
from ringfl.engine.failure import AdaptiveDeadline
from ringfl.engine.round import Handover, RoundEngine
from ringfl.errors import ConfigError, PeerTimeout, RingflError, TopologyError
from ringfl.peer import control
from ringfl.peer.control import Op, State
from ringfl.peer.control_plane import ControlPlane
from ringfl.peer.eventlog import EventLog
from ringfl.peer.identity import Identity, find_identity_dir, node_dir_name, topology_keys
from ringfl.peer.link import PeerLink
from ringfl.peer.options import (
    PeerOptions,
    PeerStopped,
    Rejoin,
    data_session,
    resolve_node,
)
from ringfl.peer.refusals import RefusalLimiter
from ringfl.testing.faults import parse_fault_hooks
from ringfl.transport.zmq import check_ipc_bind


class PeerNode(ControlPlane):
    """One peer process (see the module docstring)."""

    def __init__(self, opts: PeerOptions) -> None:
        from ringfl import topology
        from ringfl.algorithms import REGISTRY, masks
        from ringfl.engine.build import session_id
        from ringfl.engine.faults import resolve

        self.opts = opts
        self.config: Config = (
            opts.config if isinstance(opts.config, Config) else load_config(opts.config)
        )
        g = topology.load(opts.topology)
        self.graph = g
        self.nodes = topology.peers(g)
        self.n = len(self.nodes)
        self.node = resolve_node(g, opts.node)
        self.peer = topology.peer_index(g)[self.node]
        src = str(opts.topology)
        self.topology_dir = Path(src).resolve().parent
        missing = [repr(n) for n in self.nodes if topology.ADDRESS not in g.nodes[n]]
        if missing:
            raise TopologyError(f"{src}: no address for node(s) {', '.join(missing[:8])}")
        self.endpoints = {i: g.nodes[n][topology.ADDRESS] for i, n in enumerate(self.nodes)}
        # libzmq deletes whatever sits at an ipc:// path it binds: refuse before anything
        check_ipc_bind(opts.bind or self.endpoints[self.peer], f"node {self.node!r}")
        algo = self.config.algorithm
        entry = REGISTRY[algo.name]
        if not entry.real_peers:
            raise ConfigError(
                f"{opts.config}: algorithm.name = {algo.name!r} runs in the simulator only "
                f"({entry.summary}); real peers run "
                + ", ".join(repr(k) for k, e in REGISTRY.items() if e.real_peers)
            )
        self.collective = entry.build(algo).collective
        self.mode = "gossip" if self.collective == "neighbours" else "ring"
        self.masking = masks(algo)
        self.keys = topology_keys(g, src)
        if not opts.insecure and self.keys.curve is None:
            raise ConfigError(
                f"{src} has no public keys, so links cannot be authenticated: make keys with "
                f"`ringfl keys generate --topology {src} --out KEYS` (then pass --keys KEYS), "
                "or pass --insecure to run unauthenticated, unencrypted links"
            )
        if self.masking and self.keys.mask is None:
            raise ConfigError(
                f"{src} has no mask_key attributes, which secure masking needs: run "
                f"`ringfl keys generate --topology {src} --out KEYS`, or set "
                "algorithm.secure = false"
            )
        self.identity: Identity | None = None
        if not opts.insecure or self.masking:
            if opts.keys is None:
                raise ConfigError("--keys DIR is needed (this peer's key directory)")
            self.identity = Identity.load(find_identity_dir(opts.keys, self.node))
            if (
                self.masking
                and self.keys.mask is not None
                and self.keys.mask[self.peer] != self.identity.mask.public_bytes
            ):
                raise ConfigError(
                    f"the mask key in {opts.keys} is not the topology's mask_key of node "
                    f"{self.node!r}"
                )
        self.order = (
            [topology.peer_index(g)[x] for x in topology.ring_order(g, source=src)]
            if self.mode == "ring"
            else list(range(self.n))
        )
        self.row = topology.mixing_rows(g, src)[self.peer] if self.mode == "gossip" else None
        self.plan = resolve(
            self.config.faults,
            [str(v) for v in self.nodes],
            source=str(opts.config) if isinstance(opts.config, str) else "config",
        )
        out = opts.out or str(Path(self.config.output) / "peers" / node_dir_name(self.node))
        self.dir = Path(out)
        self.faults = parse_fault_hooks(opts.faults)
        crash = self.plan.crashes.get(self.peer)
        if crash is not None and "kill" not in self.faults:
            self.faults["kill"] = crash
        self.log = EventLog(
            self.dir, node=self.node, peer=self.peer, console=opts.console, verbose=opts.verbose
        )
        self.control_session = session_id(self.config.seed, "ringfl-control")
        self.deadline = AdaptiveDeadline(opts.deadline)
        self.incarnation = time.time_ns() // 1000
        # run state (the transport's; decisions live in the engine)
        self.state = State.STARTING
        self.round = 0
        self.session: int | None = None
        self.heard: dict[int, control.Hello] = {}
        self.known_inc: dict[int, int] = {}
        self.done_peers: set[int] = set()
        self._told: dict[int, int] = {}
        self._refusals = RefusalLimiter()  # bounded: fresh keys cannot grow it
        self.last_sum: tuple[int, control.SumResult] | None = None
        self.pending_state: control.StateTransfer | None = None
        self.metrics_path = self.dir / "metrics.jsonl"
        self.link: PeerLink | None = None
        self.security: Any = None
        self.context: Any = None
        self.started_at = time.time()
        self.engine: RoundEngine | None = None
        self.public_test: Any = None
        self.model_elements = 0

    # -- set-up -------------------------------------------------------------------------

    def _party(self) -> PartyData:
        """This party's own data (see the module docstring); nobody else's file is read."""
        from ringfl.data.parties import load_party, resolve_path

        if self.opts.party is not None:
            return self.opts.party
        attrs = self.graph.nodes[self.node]
        train, val = self.opts.data, self.opts.val
        if train is None and attrs.get("data") is not None:
            train = resolve_path(str(attrs["data"]), self.topology_dir)
        if val is None and attrs.get("val") is not None:
            val = resolve_path(str(attrs["val"]), self.topology_dir)
        if train is None and self.config.data.dataset == "files" and not self.config.data.files:
            raise ConfigError(
                f"node {self.node!r}: which data is this party's? pass --data FILE, give the "
                "node a `data` attribute in the topology, or list data.files in the config"
            )
        try:
            return load_party(self.config, self.n, self.peer, train=train, val=val)
        except ValueError as exc:
            raise ConfigError(f"node {self.node!r}: {exc}") from None

    def _prepare(self) -> RoundEngine:
        from ringfl.engine.build import make_engine, neural_workload

        workload: Any
        if self.opts.workload is not None:  # e.g. a statistics job (Python API)
            workload = self.opts.workload(self.peer)
        else:
            party = self._party()
            self.public_test = party.test
            workload = neural_workload(self.peer, self.config, party, self.opts.model)
        engine = make_engine(
            self.peer,
            self.n,
            self.config,
            workload,
            order=self.order,
            row=self.row,
            keys=self.identity.mask if self.masking and self.identity else None,
            public_keys=self.keys.mask if self.masking else None,
            plan=self.plan,
        )
        self.model_elements = workload.get().shape[0]
        return engine

    def _open_link(self) -> PeerLink:
        import zmq

        from ringfl.peer.curve import CurveSecurity

        self.context = zmq.Context()
        authenticate = None
        if not self.opts.insecure:
            assert self.identity is not None and self.keys.curve is not None
            self.security = CurveSecurity(
                self.identity,
                self.peer,
                self.keys.curve,
                self.context,
                on_refused=self._on_refused,
            )
            self.security.start()
            authenticate = self.security.authenticated_peer
        endpoints = dict(self.endpoints)
        if self.opts.bind:
            endpoints[self.peer] = self.opts.bind
        link = PeerLink(
            self.peer,
            endpoints,
            n_peers=self.n,
            deadline=self.deadline,
            authenticate=authenticate,
            context=self.context,
            security=self.security,
            max_elements=self._max_elements(),
        )
        link.set_endpoints(self.endpoints)
        link.control_session = self.control_session
        link.on_control = self._on_control
        link.on_lost = self._on_declared
        link.on_drop = self._on_drop
        link.on_stale = self._on_stale
        link.interrupt = self._interrupt
        return link

    def _max_elements(self) -> int:
        """The largest frame a valid message of this run can have, in elements (uint8
        blobs count bytes): a model transfer, a masking share blob, or a sum segment.
        Larger frames are cut by ZeroMQ (MAXMSGSIZE) before they are even read."""
        m, n = max(self.model_elements, self.opts.max_elements or 0), self.n
        return 4 * (m + 2 * n + 64) + 128 * n + 4096

    def _close(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.security is not None:
            self.security.stop()
        # the ZAP thread has stopped: report refusal lines the global limit dropped
        dropped = self._refusals.flush()
        if dropped:
            self.log("refused", why="key not in the topology", suppressed=dropped)
        if self.context is not None:
            self.context.term()
            self.context = None

    # -- rounds ---------------------------------------------------------------------------

    def _train(self, rnd: int) -> Any:
        link = self.link
        assert link is not None
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["stats"] = self.eng.train(rnd)
            except BaseException as exc:  # re-raised in the main thread
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"train-{rnd}", daemon=True)
        thread.start()
        try:
            link.service(1e9, until=lambda: not thread.is_alive())
        finally:
            thread.join()
        if "error" in box:
            raise box["error"]
        return box["stats"]

    def _round(self, rnd: int) -> None:
        link = self.link
        assert link is not None
        t0 = time.perf_counter()
        link.round_window = (max(rnd - 1, 0), rnd + 2)
        self.log("round_start", round=rnd, members=len(self.eng.members) or None)
        if self.opts.hold is not None and self.opts.hold[0] == rnd:  # test hook, bounded
            gate = Path(self.opts.hold[1])
            self.log("holding", round=rnd, until=str(gate))
            link.service(self.opts.join_timeout_s, until=gate.exists)
        for p in self.eng.begin_round(rnd):  # members admitted in the last round get their state
            self._serve_state(p, retry=False)
        for declarer, victim in self.plan.wrong_losses.get(rnd, ()):  # a false suspicion
            if declarer == self.peer and victim in self.eng.members:
                self._on_declared(frozenset({victim}), rnd)
        self._raise_queued()
        stats = self._train(rnd)
        t1 = time.perf_counter()
        if self.faults.get("nan", (-1,))[0] == rnd:  # test hook: a diverged local model
            bad = self.eng.workload.get()
            bad[::7] = np.nan
            self.eng.workload.set(bad)
            self.log("nonfinite_delta", round=rnd, action="weight 0 this round")
        awaited = self.eng.membership.awaited_joiners(rnd)
        if awaited:  # a fault schedule pins a restarted peer's admission to a round
            self.log("awaiting_joiners", round=rnd, peers=self.names(awaited))
            link.service(
                self.opts.join_timeout_s,
                until=lambda: not self.eng.membership.awaited_joiners(rnd),
            )
        machine: Machine = self.eng.round_machine(rnd)
        payload = self.eng.payload
        deltas = self.dir / "deltas" / f"round-{rnd:05d}.npz"
        assert self.eng.snapshot is not None
        start = self.eng.snapshot.model
        if self.opts.save_deltas and payload is not None:  # before: a killed peer leaves it too
            meta = {"round": rnd, "ring": list(self.eng.members)}
            checkpoint.save(deltas, {"payload": payload, "start": start}, meta)
        kill = self.faults.get("kill")
        result = link.run_machine(
            machine,
            round=rnd,
            lost=self.eng.lost_at_start(rnd),
            crash_after=kill[1] if kill is not None and kill[0] == rnd else None,
        )
        t2 = time.perf_counter()
        rec = self.eng.finish_round(rnd, np.asarray(result), machine)
        if self.mode == "ring" and not self.masking:
            self.last_sum = (rnd, control.SumResult(rec.contributors, np.array(result)))
        if self.opts.save_deltas and payload is not None:
            checkpoint.save(
                deltas,
                {"payload": payload, "result": np.asarray(result), "start": start},
                {"round": rnd, "members": list(rec.contributors), "ring": list(rec.members)},
            )
        row: dict[str, Any] = {
            "round": rnd,
            "members": self.names(rec.contributors),
            "dropped": self.names(rec.dropped),
            "admitted": self.names(rec.admitted),
            "train_loss": stats.loss if np.isfinite(stats.loss) else None,  # JSON: no NaN
            "compute_s": t1 - t0,
            "comm_s": t2 - t1,
            "weight": rec.weight,
            "attempts": rec.attempts,
            "clipped": rec.clipped,
        }
        if self.mode == "gossip":
            row["members"] = self.names(p for p in rec.contributors if p != self.peer)
        if rec.evaluation is not None:
            row["global_accuracy"] = rec.evaluation.accuracy
            row["global_loss"] = rec.evaluation.loss
        flat = self.eng.workload.get()
        digest = checkpoint.digest(flat)
        cfg = self.config
        last = self.eng.finished(cfg.train.rounds)
        if ((rnd + 1) % cfg.eval_every == 0 or last) and self.public_test is not None:
            from ringfl.local import evaluate

            ev = evaluate(self.eng.workload.model, self.public_test)  # type: ignore[attr-defined]
            row.update(accuracy=ev.accuracy, loss=ev.loss)
        row.update(
            hash=digest[:16],
            bytes_sent=link.bytes_sent,
            control_bytes=link.control_bytes,
            deadline_s=self.deadline.seconds(),
        )
        self.round = rnd + 1
        self._checkpoint(flat, digest)
        elapsed = time.perf_counter() - t0
        if self.opts.min_round_s > elapsed and not last:
            link.service(self.opts.min_round_s - elapsed)
        row["round_s"] = time.perf_counter() - t0
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        self.log("round", **row)

    def _raise_queued(self) -> None:
        exc = self._interrupt()
        if exc is not None:
            raise exc

    def _checkpoint(self, flat: np.ndarray, digest: str) -> None:
        checkpoint.save(
            self.dir / "checkpoint.npz",
            {"model": flat, "members": np.array(self.eng.members, dtype=np.int64)},
            {
                "round": self.round,
                "node": str(self.node),
                "incarnation": self.incarnation,
                "hash": digest,
                "session": f"{self.session or 0:016x}",
            },
        )

    def _load_checkpoint(self) -> int:
        """The round to resume at from checkpoint.npz (0 when there is none or --fresh)."""
        path = self.dir / "checkpoint.npz"
        if self.opts.fresh or not path.exists():
            return 0
        ck = checkpoint.load(path)
        model = ck.arrays.get("model")
        if model is None or model.shape != (self.model_elements,):
            raise checkpoint.CheckpointError(f"{path}: model does not fit the configured model")
        self.eng.workload.set(model)
        rnd = int(ck.meta.get("round", 0))
        self.log("checkpoint_loaded", round=rnd, hash=str(ck.meta.get("hash", ""))[:16])
        return rnd

    # -- the whole life ---------------------------------------------------------------------

    def run(self) -> int:
        """Run to the end of training; returns 0, or raises a `RingflError`."""
        self.log(
            "start",
            peers=self.n,
            mode=self.mode,
            algorithm=self.config.algorithm.name,
            masking=self.masking,
            links="insecure (no CURVE)" if self.opts.insecure else "CURVE",
            address=self.endpoints[self.peer],
            pid=os.getpid(),
            incarnation=self.incarnation,
        )
        if self.opts.insecure:
            self.log(
                "warning",
                message="INSECURE: links are neither encrypted nor authenticated "
                "(--insecure); anyone who can reach this address can talk to this peer",
            )
        try:
            self.engine = self._prepare()
            ckpt_round = self._load_checkpoint()
            self.link = self._open_link()
            self.log("listening", address=self.link.address)
            self._startup(ckpt_round)
            rounds = self.config.train.rounds
            while True:
                try:
                    if self.state == State.JOINING:
                        self._join()
                    while not self.eng.finished(rounds):
                        self._round(self.round)
                    break
                except Rejoin:
                    self.incarnation = time.time_ns() // 1000
                    self.state = State.JOINING
                except PeerTimeout as exc:
                    if self.mode == "ring":
                        raise
                    self.log("round_failed", round=self.round, error=str(exc))
                    self.round += 1
                    self.eng.membership.round = self.round
            self._finish()
            return 0
        except RingflError as exc:
            self.log("stopped", reason=str(exc), round=self.round)
            self._write_summary(status="stopped", reason=str(exc))
            raise
        finally:
            self._close()
            self.log.close()

    def _finish(self) -> None:
        link = self.link
        assert link is not None
        rounds = self.config.train.rounds
        closing = self.eng.closing_machine(rounds)
        final_eval = None
        if closing is not None:  # the ring's secure sum of evaluation counts
            link.round_window = (max(rounds - 1, 0), rounds + 1)
            final_eval = self.eng.finish_closing(
                rounds, np.asarray(link.run_machine(closing, round=rounds))
            )
        self.state = State.FINISHED
        flat = self.eng.workload.get()
        digest = checkpoint.digest(flat)
        self.eng.snapshot = Handover(
            self.round, tuple(self.eng.members), flat, self.eng.total or 0.0, self.eng.val_total
        )
        checkpoint.save(
            self.dir / "model.npz",
            {"model": flat},
            {"round": self.round, "node": str(self.node), "hash": digest},
        )
        fields: dict[str, Any] = {"hash": digest}
        if self.public_test is not None:
            from ringfl.local import evaluate

            ev = evaluate(self.eng.workload.model, self.public_test)  # type: ignore[attr-defined]
            fields.update(accuracy=ev.accuracy, loss=ev.loss)
        if final_eval is not None:
            fields.update(global_accuracy=final_eval.accuracy, global_loss=final_eval.loss)
        self._write_summary(status="finished", **fields)
        self.log("finished", round=self.round, hash=digest[:16], accuracy=fields.get("accuracy"))
        self._broadcast(self._ctl(Op.DONE, self.round, control.ints(self.incarnation)))
        others = set(self.eng.members) - {self.peer} - self.eng.membership.gone
        link.service(max(self.deadline.seconds(), 1.0), until=lambda: others <= self.done_peers)

    def _write_summary(self, **fields: Any) -> None:
        link = self.link
        summary = {
            "node": str(self.node),
            "peer": self.peer,
            "round": self.round,
            "rounds": self.config.train.rounds,
            "members": self.names(self.engine.members) if self.engine is not None else [],
            "bytes_sent": link.bytes_sent if link else None,
            "control_bytes": link.control_bytes if link else None,
            "dropped_messages": link.dropped if link else None,
            "incarnation": self.incarnation,
            **fields,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str) + "\n")
        os.replace(tmp, self.dir / "summary.json")


__all__ = ["PeerNode", "PeerOptions", "PeerStopped", "data_session", "resolve_node"]
