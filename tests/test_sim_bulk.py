"""Bulk ring sums (`ringfl.transport.bulk`) against the real machines on `MemoryNetwork`:
the same bits, virtual times, bytes and messages; and the simulator's default bulk rounds
giving the same run as message by message (falling back to messages when a round has a
fault)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ringfl.collective.resilient import RetryingRingSum
from ringfl.config import config_from_dict
from ringfl.engine.sums import SecureSettings, ring_sum
from ringfl.secure.aggregate import Masking
from ringfl.sim import simulate, simulation_keys
from ringfl.topology import make
from ringfl.transport.bulk import (
    AllReduce,
    RingSum,
    SecureParty,
    SecurePrep,
    plain_ring_sum,
    ring_schedule,
    secure_ring_sum,
    secure_stages,
)
from ringfl.transport.memory import Link, MemoryNetwork


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def setting(n: int, m: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    ring = [int(p) for p in rng.permutation(n)]
    data = {p: (rng.standard_normal(m) * 1e-2).astype(np.float32) for p in range(n)}
    links = {
        (a, b): Link(float(rng.uniform(0, 1e-3)), float(rng.uniform(1e6, 1e8)))
        for a in range(n)
        for b in range(a + 1, n)
        if rng.random() < 0.5
    }
    start = {p: float(rng.uniform(0, 0.01)) for p in range(n)}
    return ring, data, MemoryNetwork(links=links), start


def same_schedule(run, sched, ring):
    for i, p in enumerate(ring):
        assert run.finished_at[p] == pytest.approx(sched.finished_at[i], rel=1e-12, abs=1e-15)
        assert run.bytes_sent[p] == sched.bytes_sent[i]
        assert run.messages_sent[p] == sched.messages[i]


def test_plain_bulk_sum_is_the_ring_all_reduce_bit_for_bit():
    n, m = 11, 5000
    ring, data, net, start = setting(n, m)
    machines = {
        p: RetryingRingSum(p, ring, data[p], session=1, round=0, segment_bytes=4000)
        for p in range(n)
    }
    run = net.run(machines, start_at=start)
    total = plain_ring_sum(np.stack([data[p] for p in ring]))
    for p in range(n):
        assert np.array_equal(run.results[p], total)
    # not merely close to the sum: a different order gives different bits
    assert not np.array_equal(total, np.sum([data[p] for p in range(n)], axis=0, dtype=np.float32))
    same_schedule(run, ring_schedule(net, ring, [AllReduce(m, 4, 4000)], start), ring)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_ring_sum_one_input_at_a_time_is_the_ring_all_reduce(n):
    """`RingSum` holds at most the tails of the inputs, and gives the ring's bits for
    lengths not divisible by n, shorter than n, and empty; misuse is a clear error."""
    from ringfl.collective.allreduce import RingAllReduce

    for m in (0, 1, n - 1, n + 1, 1001):
        ring, data, net, _ = setting(n, m, seed=n + m)
        run = net.run({p: RingAllReduce(p, ring, data[p], segment_bytes=64) for p in range(n)})
        summed = RingSum(n, m, np.float32)
        for p in ring:
            summed.add(data[p])
        total = summed.result()
        for p in range(n):
            assert np.array_equal(run.results[p], total), (n, m)
    summed = RingSum(2, 3, np.float32)
    with pytest.raises(ValueError, match="input 0 is float64"):
        summed.add(np.zeros(3))
    with pytest.raises(ValueError, match="0 of 2 inputs are in"):
        summed.result()


def test_secure_bulk_sum_is_the_secure_ring_bit_for_bit():
    n, m = 12, 3000
    ring, data, net, start = setting(n, m, seed=2)
    keys = simulation_keys(0, n)
    pub = {p: k.public_bytes for p, k in enumerate(keys)}
    settings = {p: SecureSettings(keys[p], pub) for p in range(n)}
    machines = {
        p: ring_sum(p, ring, data[p], secure=settings[p], session=1, round_index=0)
        for p in range(n)
    }
    run = net.run(machines, start_at=start)
    masking = Masking()
    out = secure_ring_sum(
        ring,
        {p: SecureParty(keys[p], data[p]) for p in range(n)},
        pub,
        session=1,
        round=0,
        masking=masking,
    )
    for p in range(n):
        assert np.array_equal(run.results[p], out.result)
        assert machines[p].clipped == out.clipped[p]
        assert machines[p].mask_neighbours == out.degree
    assert out.degree < n - 1  # the collusion-sized graph, not the complete one
    same_schedule(
        run, ring_schedule(net, ring, secure_stages(ring, m, masking, out.committee), start), ring
    )


def test_secure_prep_run_ahead_in_steps_gives_the_same_sum():
    """The key work a driver runs in steps while it waits (the simulator: for its
    workers) is the same work `sum` would do: any number of steps ahead, the same bits,
    and the time is booked as ahead of the sum, not in it."""
    n, m = 9, 301
    ring, data, _, _ = setting(n, m, seed=4)
    keys = simulation_keys(0, n)
    pub = {p: k.public_bytes for p, k in enumerate(keys)}
    want = secure_ring_sum(
        ring,
        {p: SecureParty(keys[p], data[p]) for p in range(n)},
        pub,
        session=1,
        round=0,
        masking=Masking(),
    )
    total = None
    for ahead in (0, 1, 5, None):  # None: every step
        prep = SecurePrep(ring, dict(enumerate(keys)), pub, session=1, round=0, masking=Masking())
        steps = prep.steps()
        taken = sum(1 for _ in itertools.islice(steps, ahead))
        out = prep.sum(data.__getitem__)
        assert np.array_equal(out.result, want.result) and out.committee == want.committee
        assert (out.seconds["keys_ahead_s"] > 0) == (taken > 0)
        total = taken if ahead is None else total
    assert total == len(want.committee) + 2 * n  # seal per committee member; open, check per party


def test_secure_bulk_sum_refuses_keys_that_do_not_cancel(monkeypatch):
    # one party holds a wrong public key for peer 3: its pair key with 3 differs from
    # the one 3 derives, so their masks would not cancel; the bulk sum must say so
    n, m = 6, 50
    ring, data, _, _ = setting(n, m, seed=3)
    keys = simulation_keys(0, n)
    pub = {p: k.public_bytes for p, k in enumerate(keys)}
    parties = {p: SecureParty(keys[p], data[p]) for p in range(n)}
    out = secure_ring_sum(ring, parties, pub, session=1, round=0, masking=Masking())
    assert np.array_equal(
        out.result,
        secure_ring_sum(ring, parties, pub, session=1, round=0, masking=Masking()).result,
    )
    import ringfl.secure.shares as shares

    real = shares.AttemptSecrets.pair_key

    def skewed(self, other):
        key = real(self, other)
        return bytes([key[0] ^ 1]) + key[1:] if (self.peer, other) == (0, 1) else key

    monkeypatch.setattr(shares.AttemptSecrets, "pair_key", skewed)
    with pytest.raises(RuntimeError, match="peers 0 and 1 derived different mask keys"):
        secure_ring_sum(ring, parties, pub, session=1, round=0, masking=Masking())


def cfg(secure: bool, faults=()):
    return config_from_dict(
        {
            "seed": 5,
            "data": {"dataset": "digits", "train_subset": 600, "test_subset": 100},
            "partition": {"name": "iid"},
            "model": {"name": "logreg"},
            "train": {"rounds": 3, "local_steps": 2, "batch_size": 16, "lr": 0.1},
            "algorithm": {"name": "ring", "secure": secure},
            "faults": list(faults),
        }
    )


@pytest.mark.parametrize("secure", [False, True])
def test_simulator_bulk_rounds_equal_message_rounds(secure):
    g = make("ring", 10)
    g.graph["latency_ms"] = 2.0
    g.edges[0, 1]["bandwidth_mbps"] = 5.0
    g.nodes[3]["speed"] = 0.5
    faults = [{"kind": "crash", "node": "4", "round": 1, "after_sends": 0}]
    a = simulate(g, cfg(secure, faults), progress=False, baseline=False, messages=True)
    b = simulate(g, cfg(secure, faults), progress=False, baseline=False)
    assert a.rounds == b.rounds
    assert a.setup_bytes_per_peer == b.setup_bytes_per_peer
    assert [e.total for e in a.engines] == [e.total for e in b.engines]
    assert a.rounds[1]["dropped"] == ["4"]  # round 1 ran message by message
    assert "masking_s" in b.phases[0] and "masking_s" not in b.phases[1]
    strip = ("compute_s", "comm_s", "wall_s")
    assert [{k: v for k, v in m.items() if k not in strip} for m in a.metrics] == [
        {k: v for k, v in m.items() if k not in strip} for m in b.metrics
    ]
    assert {e.state_hash() for e in a.learners} == {e.state_hash() for e in b.learners}
