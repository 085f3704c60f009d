"""Algorithms through the real collectives on the in-memory network, checked against
numpy references: weighted means of deltas, W @ X, masked index sets, bit-identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ringfl.algorithms import shared_indices
from ringfl.collective.star import StarSum
from ringfl.config import AlgorithmConfig, Config, DataConfig, ModelConfig, TrainConfig
from ringfl.data import load_digits
from ringfl.data.parties import PartyData
from ringfl.engine.build import make_engine, neural_workload, ring_of, session_id
from ringfl.engine.round import RoundEngine
from ringfl.engine.workload import AuxWorkload
from ringfl.errors import ConfigError
from ringfl.partition import dirichlet
from ringfl.sim import simulation_keys
from ringfl.topology import make, mixing_matrix, mixing_rows
from ringfl.transport.memory import MemoryNetwork


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Other test processes share the 2 cores: one torch thread each (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def learners_for(digits, n, algorithm, *, kind="ring", share=0.3, prox=0.0, steps=3, secure=False):
    """One round engine per party (and the server baseline's hub as an auxiliary one)."""
    train, _ = digits
    cfg = Config(
        data=DataConfig(dataset="digits"),
        model=ModelConfig(name="mlp"),
        train=TrainConfig(rounds=2, local_steps=steps, batch_size=16, lr=0.05, prox_mu=prox),
        algorithm=AlgorithmConfig(name=algorithm, secure=secure, share_fraction=share),
    )
    g = make(kind, n)
    parts = dirichlet(train.y, n, 0.5, seed=1, min_size=20)
    keys = simulation_keys(0, n)
    public = {p: k.public_bytes for p, k in enumerate(keys)}
    rows = mixing_rows(g) if algorithm == "gossip" else None
    order = ring_of(g) if algorithm in ("ring", "selective") else None
    ls = [
        make_engine(
            p,
            n,
            cfg,
            neural_workload(p, cfg, PartyData(train.subset(parts[p]), None, None, 10)),
            order=order,
            row=None if rows is None else rows[p],
            keys=keys[p],
            public_keys=public,
        )
        for p in range(n)
    ]
    if algorithm == "server":
        ls.append(make_engine(n, n, cfg, AuxWorkload(ls[0].workload.get()), aux=True))
    session = session_id(0)
    setup = {e.peer: m for e in ls if (m := e.setup_machine(session)) is not None}
    if setup:
        run = MemoryNetwork().run(setup)
        for e in ls:
            e.finish_setup(run.results[e.peer])
    for e in ls:
        e.begin(0, order or range(n), session)
    return g, ls


def run_round(learners: list[RoundEngine], r: int, hub: bool = False):
    """Train, run the collectives, apply; returns (start flats, local flats, run)."""
    starts = [e.workload.get() for e in learners if not e.aux]
    for e in learners:
        e.begin_round(r)
        e.train(r)
    local = [e.workload.get() for e in learners if not e.aux]
    machines = {e.peer: e.round_machine(r) for e in learners}
    run = MemoryNetwork().run(machines)
    for e in learners:
        e.finish_round(r, run.results[e.peer], machines[e.peer])
    return starts, local, run


def parties(ls):
    return [e.workload for e in ls if not e.aux]


def weighted_reference(start, local, weights):
    w = np.array(weights, dtype=np.float64)
    deltas = np.stack([loc.astype(np.float64) - start for loc in local])
    return start + (w[:, None] * deltas).sum(0) / w.sum()


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_ring_is_weighted_fedavg_and_bit_identical(digits, n):
    _, ls = learners_for(digits, n, "ring")
    for r in range(2):
        starts, local, run = run_round(ls, r)
        assert len({s.tobytes() for s in starts}) == 1  # everyone started from the same model
        expected = weighted_reference(
            starts[0].astype(np.float64), local, [lr.workload.num_samples for lr in ls]
        )
        np.testing.assert_allclose(ls[0].workload.flat(), expected, rtol=1e-4, atol=1e-6)
        assert len({lr.workload.state_hash() for lr in ls}) == 1
        m = local[0].shape[0] + 1 + 3  # + evaluation slots (no join flags: all are members)
        if n > 1:  # ring all-reduce bound: 2(N-1)/N * M elements of 4 bytes per peer
            for p in range(n):
                assert abs(run.bytes_sent[p] - 2 * (n - 1) / n * m * 4) <= 2 * (n - 1) * 4
    assert [lr.workload.num_samples for lr in ls] == [len(lr.workload.trainer.data) for lr in ls]


@pytest.mark.parametrize("n", [1, 2])
def test_secure_ring_needs_three_peers(digits, n):
    """With two contributors each would learn the other's input: refused, not run."""
    with pytest.raises(ConfigError, match="min_contributors"):
        _, ls = learners_for(digits, n, "ring", secure=True)
        run_round(ls, 0)


@pytest.mark.parametrize("n", [3, 7])
def test_secure_ring_matches_weighted_mean_and_is_bit_identical(digits, n):
    _, plain = learners_for(digits, n, "ring")
    _, ls = learners_for(digits, n, "ring", secure=True)
    for r in range(2):
        starts, local, run = run_round(ls, r)
        run_round(plain, r)
        weights = [lr.workload.num_samples for lr in ls]
        expected = weighted_reference(starts[0].astype(np.float64), local, weights)
        # fixed point: ~2^-27 per value; float32 otherwise
        np.testing.assert_allclose(ls[0].workload.flat(), expected, rtol=1e-4, atol=1e-6)
        assert len({lr.workload.state_hash() for lr in ls}) == 1
    np.testing.assert_allclose(
        ls[0].workload.flat(), plain[0].workload.flat(), rtol=1e-4, atol=1e-5
    )


def test_secure_selective_matches_plain(digits):
    _, plain = learners_for(digits, 3, "selective", share=0.25)
    _, sec = learners_for(digits, 3, "selective", share=0.25, secure=True)
    for r in range(2):
        run_round(plain, r)
        run_round(sec, r)
    np.testing.assert_allclose(
        sec[0].workload.flat(), plain[0].workload.flat(), rtol=1e-4, atol=1e-6
    )
    assert len({lr.workload.state_hash() for lr in sec}) == 1


def test_weights_are_sample_counts_not_uniform(digits):
    _, ls = learners_for(digits, 3, "ring")
    starts, local, _ = run_round(ls, 0)
    uniform = weighted_reference(starts[0].astype(np.float64), local, [1, 1, 1])
    weighted = weighted_reference(
        starts[0].astype(np.float64), local, [lr.workload.num_samples for lr in ls]
    )
    assert np.abs(uniform - weighted).max() > 1e-4  # the partition is skewed enough to tell
    np.testing.assert_allclose(ls[0].workload.flat(), weighted, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind,n", [("ring", 3), ("torus", 9), ("complete", 4), ("ring", 2)])
def test_gossip_is_w_times_x(digits, kind, n):
    g, ls = learners_for(digits, n, "gossip", kind=kind)
    w = mixing_matrix(g)
    for r in range(2):
        _, local, _ = run_round(ls, r)
        x = np.stack(local).astype(np.float64)
        got = np.stack([lr.workload.flat() for lr in ls])
        np.testing.assert_allclose(got, w @ x, rtol=1e-5, atol=1e-6)
    if not (w > 0).all():  # a sparse W leaves the peers' models different
        assert len({lr.workload.state_hash() for lr in ls}) == n


def test_selective_shares_only_the_index_set(digits):
    _, ls = learners_for(digits, 3, "selective", share=0.2)
    starts, local, run = run_round(ls, 0)
    m = starts[0].shape[0]
    idx = shared_indices(ls[0].index_session, 0, m, 0.2)
    assert len(idx) == round(0.2 * m) and len(np.unique(idx)) == len(idx)
    out = ls[0].workload.flat()
    outside = np.setdiff1d(np.arange(m), idx)
    np.testing.assert_array_equal(out[outside], starts[0][outside])
    expected = weighted_reference(
        starts[0].astype(np.float64), local, [lr.workload.num_samples for lr in ls]
    )
    np.testing.assert_allclose(out[idx], expected[idx], rtol=1e-4, atol=1e-6)
    assert len({lr.workload.state_hash() for lr in ls}) == 1
    # only |S| + 1 elements go around the ring
    assert run.bytes_sent[0] <= 2 * (len(idx) + 1 + 3) * 4
    # a new index set every round, same on all peers
    assert not np.array_equal(idx, shared_indices(ls[0].index_session, 1, m, 0.2))


def test_server_star_equals_ring(digits):
    _, ring = learners_for(digits, 3, "ring")
    _, star = learners_for(digits, 3, "server")
    for r in range(2):
        run_round(ring, r)
        _, local, run = run_round(star, r, hub=True)
        np.testing.assert_allclose(
            star[0].workload.flat(), ring[0].workload.flat(), rtol=1e-5, atol=1e-6
        )
        assert len({lr.workload.state_hash() for lr in star if not lr.aux}) == 1
        assert np.array_equal(star[-1].workload.get(), star[0].workload.flat())  # the hub too
        m = (local[0].shape[0] + 1) * 4
        assert run.bytes_sent[0] == m and run.bytes_sent[3] == 3 * m


def test_star_sum_machine_odd_sizes():
    for n, length in [(1, 0), (2, 5), (3, 300_001)]:
        data = {c: np.arange(length, dtype=np.float32) * (c + 1) for c in range(n)}
        machines = {c: StarSum(c, n, range(n), data[c], segment_bytes=1 << 18) for c in range(n)}
        machines[n] = StarSum(n, n, range(n), length=length, segment_bytes=1 << 18)
        run = MemoryNetwork().run(machines)
        expected = sum(data.values())
        for p in range(n + 1):
            np.testing.assert_array_equal(run.results[p], expected)


def test_fedprox_round_runs_and_stays_identical(digits):
    _, ls = learners_for(digits, 3, "ring", prox=0.5)
    run_round(ls, 0)
    assert len({lr.workload.state_hash() for lr in ls}) == 1


def test_session_id_is_shared_and_seeded():
    assert session_id(3) == session_id(3) != session_id(4)
    assert 0 <= session_id(3) < 2**64
