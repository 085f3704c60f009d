"""The simulator and `ringfl simulate` end to end, on sklearn digits."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ringfl.config import config_from_dict
from ringfl.data import Dataset, load_digits
from ringfl.errors import ConfigError
from ringfl.sim import consensus_distance, simulate
from ringfl.topology import make, save

ROOT = Path(__file__).resolve().parents[1]
TIMES = {"compute_s", "comm_s", "wall_s"}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Other test processes share the 2 cores: one torch thread each (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**over) -> dict:
    raw = {
        "seed": 3,
        "data": {"dataset": "digits", "train_subset": 600, "test_subset": 300},
        "partition": {"name": "dirichlet", "alpha": 0.5, "min_size": 20},
        "model": {"name": "logreg"},
        "train": {"rounds": 3, "batch_size": 32, "lr": 0.1},
        "algorithm": {"name": "ring", "secure": False},
    }
    for k, v in over.items():
        raw[k] = raw.get(k, {}) | v if isinstance(v, dict) else v
    return raw


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def test_simulate_is_deterministic():
    cfg = config_from_dict(tiny())
    g = make("ring", 4)
    a = simulate(g, cfg, progress=False, baseline=True)
    b = simulate(g, cfg, progress=False, baseline=True)
    assert strip_times(a.metrics) == strip_times(b.metrics)
    assert [lr.state_hash() for lr in a.learners] == [lr.state_hash() for lr in b.learners]
    assert len({lr.state_hash() for lr in a.learners}) == 1
    assert a.baseline.accuracy == b.baseline.accuracy
    assert [m["round"] for m in a.metrics] == [1, 2, 3]
    c = simulate(g, config_from_dict(tiny(seed=4)), progress=False, baseline=False)
    assert strip_times(c.metrics) != strip_times(a.metrics)


def test_simulate_secure_ring_is_deterministic_and_close_to_plain():
    g = make("ring", 3)
    sec = config_from_dict(tiny(algorithm={"secure": True}))
    a = simulate(g, sec, progress=False, baseline=False)
    b = simulate(g, sec, progress=False, baseline=False)
    plain = simulate(g, config_from_dict(tiny()), progress=False, baseline=False)
    assert a.secure and not plain.secure
    assert strip_times(a.metrics) == strip_times(b.metrics)
    assert len({lr.state_hash() for lr in a.learners}) == 1
    assert a.metrics[-1]["clipped"] == 0 and plain.metrics[-1]["clipped"] is None
    np.testing.assert_allclose(a.learners[0].flat(), plain.learners[0].flat(), atol=1e-5)


def test_simulate_gossip_reports_consensus_and_eval_every():
    cfg = config_from_dict(tiny(algorithm={"name": "gossip", "secure": False}, eval_every=2))
    r = simulate(make("torus", 9), cfg, progress=False, baseline=False)
    assert [m["round"] for m in r.metrics] == [2, 3]  # every 2 rounds and the last
    flats = [lr.flat() for lr in r.learners]
    assert r.metrics[-1]["consensus_distance"] == pytest.approx(consensus_distance(flats))
    assert r.metrics[-1]["consensus_distance"] > 0
    assert r.metrics[-1]["mean_model_accuracy"] is not None


def test_consensus_distance_reference():
    x = [np.array([0.0, 0.0], np.float32), np.array([3.0, 4.0], np.float32)]
    assert consensus_distance(x) == pytest.approx(2.5)


def test_simulate_server_hub_bytes():
    cfg = config_from_dict(tiny(algorithm={"name": "server"}))
    r = simulate(make("ring", 3), cfg, progress=False, baseline=False)
    m = r.metrics[-1]
    assert m["hub_bytes_sent"] == 3 * m["bytes_sent_per_peer"]


def test_simulate_files_dataset(tmp_path):
    train, test = load_digits(seed=0)
    for p in range(3):
        sl = slice(p * 200, (p + 1) * 200)
        np.savez(tmp_path / f"p{p}.npz", x=train.x[sl, 0], y=train.y[sl])
    np.savez(tmp_path / "test.npz", x=test.x[:, 0], y=test.y)
    raw = tiny(data={"dataset": "files", "train_subset": None, "test_subset": None})
    raw["data"] = {"dataset": "files", "files": [f"p{p}.npz" for p in range(3)], "test": "test.npz"}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    r = simulate(make("ring", 3), cfg, progress=False, baseline=False)
    assert r.data.summary.sizes == [200, 200, 200] and r.final_accuracy > 0.5
    with pytest.raises(ConfigError, match="data.files: 3 file"):
        simulate(make("ring", 4), cfg, progress=False, baseline=False)


def run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "ringfl", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_simulate_end_to_end(tmp_path):
    save(make("ring", 4), tmp_path / "ring4.json")
    (tmp_path / "exp.toml").write_text(
        """
seed = 1
output = "unused"
[data]
dataset = "digits"
train_subset = 500
test_subset = 200
[model]
name = "logreg"
[train]
rounds = 2
lr = 0.1
batch_size = 32
[algorithm]
name = "ring"
secure = false
"""
    )
    out = tmp_path / "out"
    p = run_cli(
        "simulate",
        "--topology",
        "ring4.json",
        "--config",
        "exp.toml",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "centralized" in p.stdout and "ring, 4 peers" in p.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    with open(out / "metrics.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert float(csv_rows[-1]["accuracy"]) == pytest.approx(rows[-1]["accuracy"])
    for png in ("accuracy_vs_round.png", "accuracy_vs_bytes.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_accuracy"] == rows[-1]["accuracy"]
    assert summary["baseline"]["method"] == "centralized"


def test_cli_simulate_bad_config_names_field(tmp_path, capsys, monkeypatch):
    from ringfl.cli import main

    monkeypatch.chdir(tmp_path)
    save(make("ring", 2), tmp_path / "ring2.json")
    (tmp_path / "bad.toml").write_text("[train]\nlr = -0.5\n")
    assert main(["simulate", "--topology", "ring2.json", "--config", "bad.toml"]) == 1
    err = capsys.readouterr().err
    assert err.strip().startswith("ringfl: error: ") and "bad.toml: train.lr: learning rate" in err
    (tmp_path / "badlayer.toml").write_text(
        '[data]\ndataset = "digits"\n[[model.layers]]\ntype = "flatten"\n'
        '[[model.layers]]\ntype = "linear"\nout = 7\n'
    )
    args = ["simulate", "--quiet", "--topology", "ring2.json", "--config", "badlayer.toml"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "model.layers" in err and "10 classes" in err
    assert not (tmp_path / "runs").exists()


def test_simulate_global_validation_is_the_sum_over_parties(tmp_path):
    """Per-party validation files and no public test set: the reported accuracy and loss
    are those of the whole validation data (learnt only as a secure sum of counts), for
    the final model and for each evaluated round's model."""
    from ringfl.local import evaluate

    train, test = load_digits(seed=0)
    for p in range(3):
        sl, vl = slice(p * 200, (p + 1) * 200), slice(p * 100, p * 100 + 40 + 30 * p)
        np.savez(tmp_path / f"p{p}.npz", x=train.x[sl, 0], y=train.y[sl])
        np.savez(tmp_path / f"v{p}.npz", x=test.x[vl, 0], y=test.y[vl])
    raw = tiny()
    raw["algorithm"] = {"name": "ring", "secure": True}
    raw["data"] = {
        "dataset": "files",
        "num_classes": 10,
        "files": [f"p{p}.npz" for p in range(3)],
        "val_files": [f"v{p}.npz" for p in range(3)],
    }
    cfg = config_from_dict(raw, base_dir=tmp_path)
    r = simulate(make("ring", 3), cfg, progress=False, baseline=False)
    assert [m["round"] for m in r.metrics] == [1, 2, 3]
    assert all(m["accuracy"] is not None for m in r.metrics)
    model = r.learners[0].model
    vals = [r.data.parties[p].val for p in range(3)]
    pooled = evaluate(model, Dataset.concat(vals))
    assert r.final_accuracy == pytest.approx(pooled.accuracy, abs=1e-6)
    assert r.final_loss == pytest.approx(pooled.loss, rel=1e-4)


def test_parties_that_disagree_on_the_classes_are_told_at_setup(tmp_path):
    train, test = load_digits(seed=0)
    for p in range(3):
        x, y = train.x[p * 200 : (p + 1) * 200, 0], train.y[p * 200 : (p + 1) * 200]
        if p == 2:  # this party has no sample of class 9: its own labels say 9 classes
            x, y = x[y < 9], y[y < 9]
        np.savez(tmp_path / f"p{p}.npz", x=x, y=y)
    raw = tiny()
    raw["data"] = {"dataset": "files", "files": [f"p{p}.npz" for p in range(3)]}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="different numbers of classes.*data.num_classes"):
        simulate(make("ring", 3), cfg, progress=False, baseline=False)
    raw["data"]["num_classes"] = 10
    r = simulate(make("ring", 3), config_from_dict(raw, base_dir=tmp_path), progress=False)
    assert r.data.num_classes == 10 and len({w.state_hash() for w in r.learners}) == 1


def test_a_round_runs_in_bulk_only_when_every_party_has_the_same_members():
    from types import SimpleNamespace

    from ringfl.engine.faults import FaultPlan
    from ringfl.sim import _Sim

    class Engine:
        def __init__(self, members, lost=frozenset()):
            self.members, self.lost = members, lost

        def lost_at_start(self, r):
            return self.lost

    sim = SimpleNamespace(collective="ring", plan=FaultPlan.empty())
    shared = (0, 1, 2)
    same = {p: Engine(shared) for p in range(3)}  # one tuple for all, as bulk rounds give
    assert _Sim._bulk_ring(sim, 1, same) == [0, 1, 2]
    equal = {0: Engine((0, 1, 2)), 1: Engine(tuple([0, 1, 2])), 2: Engine((0, 1, 2))}
    assert _Sim._bulk_ring(sim, 1, equal) == [0, 1, 2]
    for odd in (Engine((0, 1)), Engine((0, 2, 1)), Engine(shared, frozenset({2}))):
        assert _Sim._bulk_ring(sim, 1, {0: Engine(shared), 1: odd, 2: Engine(shared)}) is None


def test_ring_records_must_agree_on_the_membership():
    from ringfl.engine.round import RoundRecord
    from ringfl.sim import _agreed

    shared = (0, 1, 2)

    def rec(contributors, admitted=()):
        return RoundRecord(3, (0, 1, 2), contributors, (), admitted, 0.5)

    same = {p: rec(shared) for p in range(3)}  # one tuple for all, as bulk rounds give
    assert _agreed(same, "ring", 3) is same[0]
    equal = {0: rec((0, 1, 2)), 1: rec(tuple([0, 1, 2])), 2: rec((0, 1, 2))}
    assert _agreed(equal, "ring", 3) is equal[0]
    for odd in (rec((0, 1)), rec(shared, admitted=(3,))):
        with pytest.raises(RuntimeError, match="round 3: parties disagree"):
            _agreed({0: rec(shared), 1: odd, 2: rec(shared)}, "ring", 3)
