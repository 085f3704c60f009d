"""The simulator's virtual clock: link latency and bandwidth from the topology, compute
speed, availability traces (offline peers dropped and readmitted by the membership
rules), stragglers against the deadlines, and determinism."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch

from ringfl.collective.allreduce import RingAllReduce
from ringfl.config import config_from_dict
from ringfl.errors import ConfigError, TopologyError
from ringfl.sim import simulate
from ringfl.sim_clock import (
    Availability,
    load_availability,
    network_for,
    random_churn,
    speeds,
    write_availability,
)
from ringfl.topology import make, validate
from ringfl.wire import HEADER_SIZE


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(algorithm="ring", secure=False, rounds=4, steps=2, clock=None):
    return config_from_dict(
        {
            "seed": 3,
            "data": {"dataset": "digits", "train_subset": 400, "test_subset": 100},
            "partition": {"name": "iid"},
            "model": {"name": "logreg"},
            "train": {"rounds": rounds, "local_steps": steps, "batch_size": 16, "lr": 0.1},
            "algorithm": {"name": algorithm, "secure": secure},
            "clock": {"step_s": 1.0, **(clock or {})},
        }
    )


def pair_finish(net, a: int, b: int) -> dict[int, float]:
    """Plain all-reduce of two float32 elements between peers a and b: one one-element
    message each way per step, two steps."""
    ring = [a, b]
    x = np.ones(2, dtype=np.float32)
    run = net.run({p: RingAllReduce(p, ring, x) for p in ring})
    return run.finished_at


def test_link_latency_and_bandwidth_give_the_arrival_times():
    g = nx.path_graph(3)
    g.graph.update(latency_ms=1.0, bandwidth_mbps=100.0)
    g.edges[0, 1].update(latency_ms=10.0, bandwidth_mbps=1.0)
    net = network_for(g)
    size = HEADER_SIZE + 4  # one float32 element per message
    # an edge's own values: each step is size / bandwidth + latency
    edge = size * 8 / 1e6 + 0.010
    assert pair_finish(net, 0, 1) == {0: pytest.approx(2 * edge), 1: pytest.approx(2 * edge)}
    # a pair that is not an edge takes the graph's defaults
    default = size * 8 / 100e6 + 0.001
    assert pair_finish(net, 0, 2)[2] == pytest.approx(2 * default)
    # the edge attribute overrides only what it gives
    g.edges[1, 2]["latency_ms"] = 5.0
    assert pair_finish(network_for(g), 1, 2)[1] == pytest.approx(2 * (size * 8 / 100e6 + 0.005))


def test_bad_clock_attributes_name_the_node_or_edge():
    g = make("ring", 4)
    g.edges[0, 1]["bandwidth_mbps"] = 0
    with pytest.raises(TopologyError, match=r"bandwidth_mbps of edge .*0.*1.*> 0"):
        validate(g, "t.json")
    g = make("ring", 4)
    g.nodes[2]["speed"] = -1.0
    with pytest.raises(TopologyError, match=r"speed of node .*2"):
        validate(g, "t.json")
    g = make("ring", 4)
    g.graph["latency_ms"] = float("nan")
    with pytest.raises(TopologyError, match="latency_ms"):
        validate(g, "t.json")
    g = make("ring", 4)
    g.nodes[1]["speed"] = 2.5
    assert speeds(g) == [1.0, 2.5, 1.0, 1.0]


def test_speed_scales_training_time():
    base = simulate(make("ring", 4), cfg(rounds=1, steps=3), progress=False, baseline=False)
    g = make("ring", 4)
    g.nodes[1]["speed"] = 0.25
    slow = simulate(g, cfg(rounds=1, steps=3), progress=False, baseline=False)
    # 3 steps x 1 s: 3 s at speed 1, 12 s at speed 1/4; the collective after it is the same
    assert slow.rounds[0]["virtual_s"] - base.rounds[0]["virtual_s"] == pytest.approx(9.0)
    assert base.rounds[0]["virtual_s"] == pytest.approx(3.0, abs=0.01)
    # the clock never changes what is learnt
    assert slow.learners[0].state_hash() == base.learners[0].state_hash()


def test_offline_peer_is_dropped_and_readmitted(tmp_path):
    # rounds take 2 s of training (2 steps x 1 s) plus the collective: round 1 runs from
    # about 2 s; node 3 goes offline at 3 s, during its training, and is back at 5 s
    trace = tmp_path / "trace.csv"
    trace.write_text("node,offline_s,online_s\n3,3.0,5.0\n")
    c = cfg(rounds=5, clock={"availability": str(trace)})
    a = simulate(make("ring", 5), c, progress=False, baseline=False)
    rows = a.rounds
    assert "3" in rows[0]["contributors"]
    assert rows[1]["dropped"] == ["3"] and "3" not in rows[1]["contributors"]
    # the round waited for the deadline (1 s after the others were ready) before the loss
    assert rows[1]["virtual_s"] == pytest.approx(3.0, abs=0.02)
    # online again when round 2 starts (after 5 s): asks to join, admitted for round 3
    assert rows[2]["time_s"] - rows[2]["virtual_s"] >= 5.0
    assert rows[2]["admitted"] == ["3"]
    assert "3" in rows[3]["contributors"] and "3" in rows[4]["contributors"]
    assert sorted(a.alive) == [0, 1, 2, 3, 4]
    assert len({e.state_hash() for e in a.learners}) == 1
    # determinism: the same numbers again
    b = simulate(make("ring", 5), c, progress=False, baseline=False)
    assert b.rounds == a.rounds
    strip = ("compute_s", "comm_s", "wall_s")
    assert [{k: v for k, v in m.items() if k not in strip} for m in a.metrics] == [
        {k: v for k, v in m.items() if k not in strip} for m in b.metrics
    ]
    assert a.learners[0].state_hash() == b.learners[0].state_hash()


def test_going_offline_during_the_collective_is_a_crash_at_that_moment():
    # node 2 drops out 0.1 ms into round 0's collective (training ends at 2 s): the sum is
    # re-run without it, and it stays away (never back)
    av = Availability({2: [(2.0001, math.inf)]})
    r = simulate(make("ring", 5), cfg(rounds=2), availability=av, progress=False, baseline=False)
    assert r.rounds[0]["dropped"] == ["2"]
    assert r.rounds[1]["members"] == ["0", "1", "3", "4"]
    assert r.rounds[1]["offline"] == ["2"]


def test_gossip_peer_offline_and_back():
    av = Availability({1: [(1.0, 3.5)]})
    r = simulate(
        make("ring", 6), cfg("gossip", rounds=4), availability=av, progress=False, baseline=False
    )
    contributed = [set(row["contributors"]) for row in r.rounds]
    assert "1" not in contributed[0] and "1" not in contributed[1]
    assert "1" in contributed[3]
    assert sorted(r.alive) == list(range(6))


def test_straggler_beyond_the_hard_limit_is_declared_and_rejoins():
    # node 2 needs 2 / 0.01 = 200 s of training; the engine's deadlines wait for a peer
    # that answers probes for 2 x 30 + 5 = 65 s, then declare it (as real peers do)
    g = make("ring", 5)
    g.nodes[2]["speed"] = 0.01
    c = cfg(rounds=3, clock={"deadlines": "engine"})
    r = simulate(g, c, progress=False, baseline=False)
    assert r.rounds[0]["dropped"] == ["2"]
    assert r.rounds[0]["virtual_s"] == pytest.approx(2.0 + 65.0, abs=0.1)
    assert r.rounds[1]["admitted"] == ["2"]  # online all along: it asks to join again
    # a moderately slow peer is waited for
    g.nodes[2]["speed"] = 0.1  # 20 s
    r = simulate(g, c, progress=False, baseline=False)
    assert r.rounds[0]["dropped"] == [] and r.rounds[0]["virtual_s"] == pytest.approx(20, abs=0.1)


def test_availability_csv_round_trip_and_errors(tmp_path):
    names = ["a", "b", "c"]
    av = random_churn(3, 1000.0, mean_up_s=50.0, mean_down_s=10.0, seed=7)
    assert av == random_churn(3, 1000.0, mean_up_s=50.0, mean_down_s=10.0, seed=7)
    assert av != random_churn(3, 1000.0, mean_up_s=50.0, mean_down_s=10.0, seed=8)
    assert not av.empty
    longer = random_churn(3, 2000.0, mean_up_s=50.0, mean_down_s=10.0, seed=7)
    for p, spans in av.offline.items():  # a longer horizon extends the same trace
        assert longer.offline[p][: len(spans) - 1] == spans[:-1]
    path = write_availability(av, tmp_path / "t.csv", names)
    back = load_availability(path, names)
    assert back.offline == av.offline
    p, (a, b) = next((p, s[0]) for p, s in av.offline.items())
    assert not back.online(p, (a + b) / 2) and back.online(p, a - 1e-9)
    bad = tmp_path / "bad.csv"
    bad.write_text("node,offline_s,online_s\na,5,2\n")
    with pytest.raises(ConfigError, match=r"bad.csv:2: need 0 <= offline_s < online_s"):
        load_availability(bad, names)
    bad.write_text("node,offline_s,online_s\nz,1,2\n")
    with pytest.raises(ConfigError, match=r"bad.csv:2: node 'z' is not in the topology"):
        load_availability(bad, names)
    bad.write_text("peer,from,to\n")
    with pytest.raises(ConfigError, match=r"bad.csv:1: expected the header"):
        load_availability(bad, names)
    with pytest.raises(ConfigError, match="clock.deadlines"):
        cfg(clock={"deadlines": "sometimes"})
