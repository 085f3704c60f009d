"""Build a `RoundEngine` for one party of a topology from a config: its model, trainer and
workload (from its own data only), the algorithm from the registry, ring order or mixing
row, and secure-sum settings."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx

from ringfl.algorithms import Algorithm, make_algorithm, masks
from ringfl.algorithms.statistics import StatisticsSum
from ringfl.config import Config
from ringfl.data.parties import PartyData
from ringfl.engine.faults import FaultPlan
from ringfl.engine.round import RoundEngine
from ringfl.engine.scale import STAT_BITS, STAT_CLIP
from ringfl.engine.sums import SecureSettings
from ringfl.engine.workload import (
    AuxWorkload,
    ClassifierWorkload,
    NeuralWorkload,
    StatisticsWorkload,
)
from ringfl.local import LocalTrainer
from ringfl.models import ModelSpec, build_model
from ringfl.secure.keys import PeerKeys


def session_id(seed: int, tag: str = "ringfl") -> int:
    """A u64 id derived from the shared seed (the same on every party)."""
    digest = hashlib.sha256(f"{tag}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ring_of(graph: nx.Graph) -> tuple[int, ...]:
    """The ring order of `graph` as peer ids (indices in `topology.peers(graph)`)."""
    from ringfl.topology import peer_index, ring_order

    index = peer_index(graph)
    return tuple(int(index[node]) for node in ring_order(graph))


def _as_order(order: Sequence[int]) -> tuple[int, ...]:
    # a tuple of ints is shared as is: the simulator hands every party the same one
    return order if isinstance(order, tuple) else tuple(int(p) for p in order)


def model_spec(config: Config, model: ModelSpec | None) -> ModelSpec:
    """`model` (e.g. a factory from Python), else the config's model."""
    if model is not None:
        return model
    if config.model.layers is not None:
        return list(config.model.layers)
    assert config.model.name is not None
    return config.model.name


def neural_workload(
    peer: int, config: Config, data: PartyData, model: ModelSpec | None = None
) -> NeuralWorkload:
    """This party's model (built from `config.seed`, so every party starts identical),
    trainer and evaluation data."""
    net = build_model(
        model_spec(config, model), data.train.input_shape, data.num_classes, config.seed
    )
    t = config.train
    trainer = LocalTrainer(
        net,
        data.train,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        prox_mu=t.prox_mu,
        seed=config.seed,
        peer=peer,
    )
    return NeuralWorkload(net, trainer, epochs=t.epochs, steps=t.local_steps, val=data.val)


def make_engine(
    peer: int,
    n_peers: int,
    config: Config,
    workload: ClassifierWorkload | AuxWorkload | StatisticsWorkload,
    *,
    order: Sequence[int] | None = None,
    row: Mapping[int, float] | None = None,
    keys: PeerKeys | None = None,
    public_keys: Mapping[int, bytes | str] | None = None,
    plan: FaultPlan | None = None,
    aux: bool = False,
    entropy: Any = None,
    num_classes: int | None = None,
) -> RoundEngine:
    """The engine of party `peer` of `n_peers`. Ring modes need `order` (ring order) and,
    when masking, `keys` and every party's `public_keys`; gossip needs `row`.

    A `StatisticsWorkload` always runs `StatisticsSum` on the ring (whatever
    `algorithm.name` says), masked in 64-bit words of values within ±1 (its agreed
    scale) when `algorithm.secure`."""
    algorithm: Algorithm
    clip, bits = config.algorithm.clip, 32
    if isinstance(workload, StatisticsWorkload):
        algorithm = StatisticsSum()
        clip, bits = STAT_CLIP, STAT_BITS
        secure_sums = config.algorithm.secure
    else:
        algorithm = make_algorithm(config.algorithm)
        secure_sums = masks(config.algorithm)
    if num_classes is None:
        num_classes = workload.num_classes
    secure = None
    if secure_sums and algorithm.collective == "ring":
        if keys is None or public_keys is None:
            raise ValueError(f"peer {peer}: secure sums need its key pair and the public keys")
        secure = SecureSettings(keys, dict(public_keys), clip=clip, entropy=entropy, bits=bits)
    return RoundEngine(
        peer=peer,
        algorithm=algorithm,
        workload=workload,
        n_peers=n_peers,
        order=tuple(range(n_peers)) if order is None else _as_order(order),
        index_session=session_id(config.seed),
        secure=secure,
        row=row,
        hub=n_peers if algorithm.collective == "star" else None,
        aux=aux,
        eval_every=config.eval_every,
        num_classes=num_classes,
        plan=plan or FaultPlan.empty(),
    )


__all__ = ["make_engine", "model_spec", "neural_workload", "ring_of", "session_id"]
