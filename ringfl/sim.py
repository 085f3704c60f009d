"""One-process simulator: N peers, the same `Learner` code real peers run, collectives
driven by the deterministic `MemoryNetwork` (the real protocol machines and wire format).

    result = simulate(topology.make("ring", 8), config)

Each round: every peer trains locally (sequentially, in this process), then all peers'
collective machines run together on the in-memory network, then every peer applies the
result. Every `eval_every` rounds (and after the last) the test set is evaluated: in ring,
selective and server modes the model of peer 0 (all peers hold the same model); in gossip
mode the accuracy averaged over peers, the accuracy of the mean model and the consensus
distance mean_i ||x_i - mean(x)||.

Determinism: the same config (seed) gives the same numbers, bit for bit, apart from wall
times. torch threads are left as they are (peers run one after another, so all threads of
the process help each peer).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from ringfl.algorithms import secure_available, set_flat
from ringfl.baselines import BaselineResult, centralized, sample_budget
from ringfl.config import Config
from ringfl.data import Dataset, load_data_file, load_digits, load_mnist
from ringfl.errors import ConfigError
from ringfl.learner import Learner, make_learner, session_id
from ringfl.local import evaluate
from ringfl.models import ModelSpec
from ringfl.partition import PartitionSummary, partition, summarize
from ringfl.transport.memory import MemoryNetwork

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
    "wall_s",
)


@dataclass
class PeerData:
    """The training data of every peer, the test set, and how it was split."""

    parts: list[Dataset]
    test: Dataset
    num_classes: int
    summary: PartitionSummary
    pooled: Dataset  # every training sample held by some peer, once (centralized baseline)


@dataclass
class SimResult:
    """What a simulation produced. `metrics`: one dict per evaluated round (METRIC_FIELDS;
    None where not applicable). Byte counts are payload bytes sent per learner (mean)."""

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
    learners: list[Learner]
    data: PeerData
    baseline: BaselineResult | None = None
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

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
            "wall_s": self.wall_s,
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


def _subset(d: Dataset, n: int | None, seed: int, tag: int) -> Dataset:
    if n is None or n >= len(d):
        return d
    idx = np.sort(np.random.default_rng([seed, tag]).choice(len(d), size=n, replace=False))
    return d.subset(idx)


def prepare_data(config: Config, num_peers: int) -> PeerData:
    """Load the configured dataset and give each of `num_peers` peers its part."""
    dc = config.data
    if dc.dataset == "files":
        if len(dc.files) != num_peers:
            raise ConfigError(
                f"data.files: {len(dc.files)} file(s) for {num_peers} peers (one per peer)"
            )
        raw = [load_data_file(f, label_column=dc.label_column) for f in dc.files]
        assert dc.test is not None
        test = load_data_file(dc.test, label_column=dc.label_column)
        k = max([test.num_classes, *(p.num_classes for p in raw)])
        parts = [Dataset(p.x, p.y, k, p.name) for p in raw]
        test = _subset(Dataset(test.x, test.y, k, test.name), dc.test_subset, config.seed, 2)
        shapes = {p.input_shape for p in [*parts, test]}
        if len(shapes) != 1:
            raise ConfigError(f"data.files: peers' samples have different shapes {sorted(shapes)}")
        pooled = Dataset.concat(parts)
        summary = PartitionSummary(
            [len(p) for p in parts], [np.bincount(p.y, minlength=k).tolist() for p in parts]
        )
        return PeerData(parts, test, k, summary, pooled)
    if dc.dataset == "mnist":
        train, test = load_mnist(dc.dir)
    else:
        train, test = load_digits(seed=0)
    train = _subset(train, dc.train_subset, config.seed, 1)
    test = _subset(test, dc.test_subset, config.seed, 2)
    p = config.partition
    idx = partition(
        p.name,
        train.y,
        num_peers,
        config.seed,
        alpha=p.alpha,
        classes_per_peer=p.classes_per_peer,
        fraction_per_peer=p.fraction,
        min_size=p.min_size,
    )
    parts = [train.subset(i, f"peer{k}") for k, i in enumerate(idx)]
    held = np.unique(np.concatenate(idx))
    pooled = train if len(held) == len(train) else train.subset(held, "pooled")
    return PeerData(
        parts, test, train.num_classes, summarize(idx, train.y, train.num_classes), pooled
    )


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
) -> SimResult:
    """Simulate `config` on `graph` (peer i = i-th node). `model` overrides config.model
    (e.g. a factory); `out`: write metrics/plots there (None: write nothing);
    `baseline`: also train the centralized baseline at the same sample budget;
    `network`: the in-memory network (default: 50 us latency, 1 GB/s per link);
    `data`: pre-loaded `PeerData` (default: `prepare_data(config, N)`)."""
    from tqdm.auto import tqdm

    from ringfl.topology import peers

    t_start = time.perf_counter()
    n = len(peers(graph))
    if n < 1:
        raise ConfigError("topology has no peers")
    algo_cfg = config.algorithm
    secure = algo_cfg.secure and algo_cfg.name in ("ring", "selective")
    if secure and not secure_available():
        warnings.warn(
            "secure aggregation (ringfl.secure) is not available: running the plain ring",
            RuntimeWarning,
            stacklevel=2,
        )
        secure = False
        config = config.replace(algorithm=dataclasses.replace(algo_cfg, secure=False))
    data = prepare_data(config, n) if data is None else data
    session = session_id(config.seed)
    keys = simulation_keys(config.seed, n) if secure else [None] * n
    public = {p: k.public_bytes for p, k in enumerate(keys)} if secure else None
    learners = [
        make_learner(
            p,
            graph,
            config,
            data.parts[p],
            num_classes=data.num_classes,
            model=model,
            session=session,
            keys=keys[p],
            public_keys=public,
        )
        for p in range(n)
    ]
    net = network or MemoryNetwork()
    setup = {lr.peer: lr.setup_machine() for lr in learners}
    if any(m is not None for m in setup.values()):
        run = net.run({p: m for p, m in setup.items() if m is not None})
        for lr in learners:
            lr.finish_setup(run.results[lr.peer])
    rounds = config.train.rounds
    metrics: list[dict[str, Any]] = []
    cum_bytes = 0.0
    compute_total = comm_total = 0.0
    scratch = copy.deepcopy(learners[0].model) if algo_cfg.name == "gossip" else None
    bar = tqdm(range(rounds), desc=f"{algo_cfg.name} x{n}", unit="round", disable=not progress)
    last_eval: dict[str, Any] = {}
    for r in bar:
        t0 = time.perf_counter()
        train_losses = [lr.local_round(r).loss for lr in learners]
        t1 = time.perf_counter()
        machines = {lr.peer: lr.machine_for_round(r) for lr in learners}
        if algo_cfg.name == "server":
            hub = learners[0].algorithm  # ServerAverage
            machines[n] = hub.hub_machine(learners[0].flat().shape[0] + 1, session, r)  # type: ignore[attr-defined]
        run = net.run(machines)
        clipped = sum(int(getattr(m, "clipped", 0)) for m in machines.values())
        for lr in learners:
            lr.finish_round(r, run.results[lr.peer])
        t2 = time.perf_counter()
        compute_total += t1 - t0
        comm_total += t2 - t1
        sent = float(np.mean([run.bytes_sent.get(p, 0) for p in range(n)]))
        cum_bytes += sent
        if (r + 1) % config.eval_every and r + 1 != rounds:
            continue
        row: dict[str, Any] = dict.fromkeys(METRIC_FIELDS)
        row.update(
            round=r + 1,
            train_loss=float(np.mean(train_losses)),
            bytes_sent_per_peer=sent,
            cum_bytes_per_peer=cum_bytes,
            hub_bytes_sent=run.bytes_sent.get(n) if algo_cfg.name == "server" else None,
            compute_s=t1 - t0,
            comm_s=t2 - t1,
            virtual_comm_s=run.virtual_time_s,
            clipped=clipped if secure else None,
        )
        if algo_cfg.name == "gossip":
            assert scratch is not None
            flats = [lr.flat() for lr in learners]
            evs = [lr.evaluate(data.test) for lr in learners]
            set_flat(scratch, np.mean(np.stack(flats), axis=0, dtype=np.float64).astype(np.float32))
            row.update(
                accuracy=float(np.mean([e.accuracy for e in evs])),
                loss=float(np.mean([e.loss for e in evs])),
                min_peer_accuracy=float(min(e.accuracy for e in evs)),
                mean_model_accuracy=evaluate(scratch, data.test).accuracy,
                consensus_distance=consensus_distance(flats),
            )
        else:
            ev = learners[0].evaluate(data.test)
            row.update(accuracy=ev.accuracy, loss=ev.loss)
        row["wall_s"] = time.perf_counter() - t_start
        metrics.append(row)
        last_eval = row
        bar.set_postfix(acc=f"{row['accuracy']:.4f}")
    bar.close()
    base = None
    if baseline:
        budget = sample_budget([len(p) for p in data.parts], config.train)
        spec = (
            model
            if model is not None
            else (config.model.name if config.model.layers is None else list(config.model.layers))
        )
        base = centralized(
            data.pooled, data.test, spec, config.train, budget=budget, seed=config.seed
        )
    result = SimResult(
        config=config,
        algorithm=algo_cfg.name,
        secure=secure,
        num_peers=n,
        metrics=metrics,
        final_accuracy=float(last_eval["accuracy"]),
        final_loss=float(last_eval["loss"]),
        bytes_per_peer=cum_bytes,
        compute_s=compute_total,
        comm_s=comm_total,
        wall_s=time.perf_counter() - t_start,
        learners=learners,
        data=data,
        baseline=base,
    )
    if out is not None:
        write_outputs(result, Path(out))
    return result


def write_outputs(result: SimResult, out: Path) -> list[Path]:
    """metrics.jsonl, metrics.csv, summary.json, config.json, partition.csv/json and plots."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / n for n in ("metrics.jsonl", "metrics.csv", "summary.json", "config.json")]
    with open(files[0], "w") as f:
        for row in result.metrics:
            f.write(json.dumps(row) + "\n")
    with open(files[1], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(METRIC_FIELDS))
        w.writeheader()
        for row in result.metrics:
            w.writerow({k: "" if v is None else v for k, v in row.items()})
    files[2].write_text(json.dumps(result.summary(), indent=1) + "\n")
    files[3].write_text(json.dumps(result.config.to_dict(), indent=1) + "\n")
    result.data.summary.save_csv(out / "partition.csv")
    result.data.summary.save_json(out / "partition.json")
    files += [out / "partition.csv", out / "partition.json"]
    files += plot_metrics(result, out)
    result.out_dir = out
    result.files = files
    return files


def plot_metrics(result: SimResult, out: Path) -> list[Path]:
    """accuracy_vs_round.png and accuracy_vs_bytes.png, with the centralized baseline as a
    horizontal reference line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    label = (
        result.algorithm + (" (secure)" if result.secure else "") + f", {result.num_peers} peers"
    )
    rounds = [m["round"] for m in result.metrics]
    acc = [100 * m["accuracy"] for m in result.metrics]
    mb = [m["cum_bytes_per_peer"] / 1e6 for m in result.metrics]
    paths = []
    for name, xs, xlabel in (
        ("accuracy_vs_round.png", rounds, "round"),
        ("accuracy_vs_bytes.png", mb, "MB sent per peer"),
    ):
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.plot(xs, acc, marker="o", ms=3, label=label)
        if result.algorithm == "gossip":
            ax.plot(
                xs,
                [100 * m["mean_model_accuracy"] for m in result.metrics],
                ls="--",
                label="gossip: mean model",
            )
        if result.baseline is not None:
            ax.axhline(
                100 * result.baseline.accuracy,
                color="k",
                ls=":",
                label=f"centralized, same sample budget ({100 * result.baseline.accuracy:.2f}%)",
            )
        if xlabel == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / name)
        paths.append(out / name)
    return paths
