"""Fault schedules in the simulator: the same membership and recovery code as real peers,
on virtual time, replayed bit for bit; and `ringfl simulate` reporting membership."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ringfl.config import config_from_dict
from ringfl.engine.faults import Fault
from ringfl.errors import ConfigError
from ringfl.sim import simulate
from ringfl.topology import make, save


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(faults=(), algorithm="ring", secure=True, rounds=5):
    return config_from_dict(
        {
            "seed": 4,
            "data": {"dataset": "digits", "train_subset": 500, "test_subset": 200},
            "partition": {"name": "iid"},
            "model": {"name": "logreg"},
            "train": {"rounds": rounds, "local_steps": 3, "batch_size": 16, "lr": 0.1},
            "algorithm": {"name": algorithm, "secure": secure},
            "faults": list(faults),
        }
    )


def models(result):
    return {p: result.engines[p].workload.get() for p in result.alive}


def contributors(result):
    return [r["contributors"] for r in result.rounds]


CRASH = {"kind": "crash", "node": "2", "round": 1, "after_sends": 3}
RESTART = {"kind": "restart", "node": "2", "round": 3}


@pytest.mark.parametrize("secure", [True, False])
def test_crash_and_restart_replay_bit_for_bit(secure):
    a = simulate(
        make("ring", 5), cfg([CRASH, RESTART], secure=secure), progress=False, baseline=False
    )
    b = simulate(
        make("ring", 5), cfg([CRASH, RESTART], secure=secure), progress=False, baseline=False
    )
    everyone, without = ["0", "1", "2", "3", "4"], ["0", "1", "3", "4"]
    assert contributors(a) == [everyone, without, without, everyone, everyone]
    assert [r["dropped"] for r in a.rounds][1] == ["2"]
    assert [r["admitted"] for r in a.rounds][2] == ["2"]
    assert a.rounds == [dict(r, virtual_s=r["virtual_s"]) for r in b.rounds]
    ma, mb = models(a), models(b)
    assert sorted(ma) == [0, 1, 2, 3, 4]
    assert all(np.array_equal(ma[p], mb[p]) for p in ma)  # replayed bit for bit
    assert len({m.tobytes() for m in ma.values()}) == 1  # the restarted party caught up
    plain = simulate(make("ring", 5), cfg(secure=secure), progress=False, baseline=False)
    assert not np.array_equal(models(plain)[0], ma[0])  # the fault changed the run


def test_false_loss_declaration_drops_and_readmits_the_victim():
    f = {"kind": "wrong_loss", "node": "0", "lost": "3", "round": 1}
    r = simulate(make("ring", 5), cfg([f]), progress=False, baseline=False)
    assert r.rounds[1]["dropped"] == ["3"] and "3" not in r.rounds[1]["contributors"]
    # it asks to join at once; as a member of round 1 it is flagged from round 2 on
    assert r.rounds[2]["admitted"] == ["3"] and "3" not in r.rounds[2]["contributors"]
    assert r.rounds[3]["contributors"] == ["0", "1", "2", "3", "4"]
    assert len({m.tobytes() for m in models(r).values()}) == 1


def test_partition_stops_the_minority_and_the_majority_trains_on():
    f = {"kind": "partition", "nodes": ["3", "4"], "round": 2}
    r = simulate(make("ring", 5), cfg([f]), progress=False, baseline=False)
    assert r.rounds[2]["stopped"] == ["3", "4"]
    assert r.rounds[2]["contributors"] == ["0", "1", "2"] == r.rounds[4]["contributors"]
    assert r.alive == [0, 1, 2]
    assert len({m.tobytes() for m in models(r).values()}) == 1


def test_slow_peer_and_link_cost_virtual_time_but_change_no_bit():
    slow = [
        Fault("slow_peer", node="1", factor=8.0),
        Fault("slow_link", node="1", peer="2", factor=50.0),
    ]
    base = simulate(make("ring", 4), cfg(rounds=2), progress=False, baseline=False)
    r = simulate(make("ring", 4), cfg(rounds=2), faults=slow, progress=False, baseline=False)
    assert np.array_equal(models(base)[0], models(r)[0])
    assert all(
        s["virtual_s"] > 2 * b["virtual_s"] for s, b in zip(r.rounds, base.rounds, strict=True)
    )
    assert contributors(r) == contributors(base)


def test_gossip_drops_a_crashed_neighbour():
    f = {"kind": "crash", "node": "2", "round": 1, "after_sends": 2}
    r = simulate(
        make("torus", 6), cfg([f], algorithm="gossip", secure=False), progress=False, baseline=False
    )
    assert r.rounds[1]["dropped"] == ["2"] and r.alive == [0, 1, 3, 4, 5]
    assert "2" not in r.rounds[3]["contributors"]


def test_bad_schedules_are_named():
    with pytest.raises(ConfigError, match=r"faults\[0\]\.node: node '9' is not in the topology"):
        simulate(make("ring", 3), cfg([{"kind": "crash", "node": "9", "round": 1}]), progress=False)
    with pytest.raises(ConfigError, match=r"faults\[1\]: .* from round r \+ 2"):
        simulate(make("ring", 4), cfg([CRASH, {**RESTART, "round": 2}]), progress=False)
    with pytest.raises(ConfigError, match="minority"):
        simulate(make("ring", 4), cfg([{"kind": "partition", "nodes": ["0", "1"], "round": 1}]))


def test_cli_simulate_prints_and_writes_membership(tmp_path, capsys, monkeypatch):
    from ringfl.cli import main

    monkeypatch.chdir(tmp_path)
    save(make("ring", 5), tmp_path / "ring5.json")
    (tmp_path / "exp.toml").write_text(
        """
seed = 2
[data]
dataset = "digits"
train_subset = 400
test_subset = 100
[model]
name = "logreg"
[train]
rounds = 4
local_steps = 2
[algorithm]
name = "ring"
secure = true
[[faults]]
kind = "crash"
node = "2"
round = 1
after_sends = 2
[[faults]]
kind = "restart"
node = "2"
round = 3
"""
    )
    args = ["simulate", "--quiet", "--no-baseline", "--topology", "ring5.json"]
    assert main([*args, "--config", "exp.toml", "--out", "out"]) == 0
    out = capsys.readouterr().out
    assert "membership per round" in out
    lines = [x.split() for x in out.splitlines()]
    assert lines[[x[:1] for x in lines].index(["1"])][:8] == [
        "1",
        "0",
        "1",
        "3",
        "4",
        "2",
        "-",
        "-",
    ]
    rows = [json.loads(x) for x in (tmp_path / "out" / "rounds.jsonl").read_text().splitlines()]
    assert [r["dropped"] for r in rows] == [[], ["2"], [], []]
    assert [r["admitted"] for r in rows] == [[], [], ["2"], []]
