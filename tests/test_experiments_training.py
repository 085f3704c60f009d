"""Smoke tests of experiments/compare_training.py and experiments/accuracy_targets.py on a
tiny MNIST subset: every method runs, budgets match, the sweep resumes, files appear."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

EXP = Path(__file__).resolve().parents[1] / "experiments"
if str(EXP) not in sys.path:
    sys.path.insert(0, str(EXP))

import accuracy_targets as at  # noqa: E402
import compare_training as ct  # noqa: E402

TINY = [
    "--quick",
    "--ns",
    "4",
    "--partitions",
    "iid",
    "dir0.5",
    "--rounds",
    "1",
    "--train-subset",
    "300",
    "--test-subset",
    "200",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_parse_partition():
    assert ct.parse_partition("iid") == ("iid", None)
    assert ct.parse_partition("dir0.5") == ("dirichlet", 0.5)
    assert ct.parse_partition("Dirichlet0.1") == ("dirichlet", 0.1)
    for bad in ("dir", "dir-1", "dir0", "shards", ""):
        with pytest.raises(Exception, match="partition"):
            ct.parse_partition(bad)
    with pytest.raises(SystemExit) as e:
        ct.main(["--partitions", "nonsense"])
    assert e.value.code == 2


def test_plan_leaves_out_torus_only_where_none_exists():
    runs = ct.plan(["iid"], [7, 8], [0, 1], list(ct.METHODS))
    assert len(runs) == 2 * (2 * len(ct.METHODS) - 1)
    assert not [r for r in runs if r.n == 7 and r.method == "gossip-torus"]
    assert runs[0].seed == 0 and runs[-1].seed == 1  # seed-major


@pytest.mark.slow
def test_sweep_runs_every_method_with_one_budget_and_resumes(tmp_path, capsys):
    assert ct.main([*TINY, "--out", str(tmp_path)]) == 0
    jsonl = tmp_path / "compare_training.jsonl"
    recs = ct.load_records(jsonl)
    assert len(recs) == 2 * len(ct.METHODS)
    assert len({r["key"] for r in recs}) == len(recs)
    for part in ("iid", "dir0.5"):
        cell = [r for r in recs if r["partition"] == part]
        assert {r["method"] for r in cell} == set(ct.METHODS)
        # the same sample budget for every method of the cell, and it was really used
        assert {r["budget_samples"] for r in cell} == {300}
        assert {r["samples"] for r in cell} == {300}
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in cell)
        gossip = [r for r in cell if r["algorithm"] == "gossip"]
        assert all(r["consensus_distance"] >= 0 and 0 < r["spectral_gap"] <= 1 for r in gossip)
        assert next(r for r in cell if r["method"] == "ring-secure")["secure"] is True

    # The Dirichlet cell reused the IID cell's centralized run: check it is the same number.
    from ringfl.sim import prepare_data

    sweep = ct.Sweep(rounds=1, train_subset=300, test_subset=200)
    reused = next(r for r in recs if r["method"] == "centralized" and r["partition"] == "dir0.5")
    assert (
        reused["reused_from"].startswith("batch_size") and "partition=iid" in reused["reused_from"]
    )
    run = ct.Run("dir0.5", 4, 0, "centralized")
    data = prepare_data(ct.make_config(sweep, "dir0.5", 0), 4)
    assert run.key(sweep) == reused["key"]
    assert ct.run_one(run, sweep, data, None)["accuracy"] == reused["accuracy"]

    curves = sorted((tmp_path / "compare_training_curves").glob("*.csv"))
    assert len(curves) == 2 * len(ct.SIM_METHODS)
    assert all(len(ct.read_curve(c)) == 1 for c in curves)  # 1 round, evaluated once
    with open(tmp_path / "compare_training_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(ct.METHODS)
    central = [r for r in rows if r["method"] == "centralized"]
    assert all(abs(float(r["gap_to_centralized_pp"])) < 1e-9 for r in central)
    for name in ("accuracy_vs_round", "accuracy_vs_bytes"):
        png = tmp_path / f"compare_training_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "| ring (secure) |" in out and "IID, N=4" in out

    # An interrupted sweep: the last record lost and a torn line in its place.
    lines = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    assert ct.main([*TINY, "--out", str(tmp_path)]) == 0
    assert "ran 1 of 14 runs" in capsys.readouterr().err
    again = ct.load_records(jsonl)
    assert sorted(r["key"] for r in again) == sorted(r["key"] for r in recs)
    redone = next(r for r in again if r["key"] == json.loads(lines[-1])["key"])
    assert redone["accuracy"] == json.loads(lines[-1])["accuracy"]  # same seed, same number


def test_accuracy_verdicts_and_table():
    def rec(acc, **kw):
        return {"accuracy": acc, "mean_model_accuracy": acc, "seed": 0, "epochs": 4.0, **kw}

    runs = {
        "central": rec(0.990),
        "ring8_iid": rec(0.9875),  # 0.25 pp behind: within 0.3
        "ring8_dir": rec(0.978),  # 1.2 pp behind: misses 1
        "ring16": rec(0.985, rounds=3),
        "torus16": rec(0.990),  # ahead of the ring: met
        "exp16": rec(0.9745),  # 1.05 pp behind: misses
    }
    v = {x["id"]: x for x in at.accuracy_verdicts(runs)}
    assert [v[k]["met"] for k in ("A1", "A2", "A3", "A4")] == [True, False, True, False]
    assert v["A1"]["gap_pp"] == pytest.approx(0.25)
    assert v["A3"]["gap_pp"] == pytest.approx(-0.5)
    md = at.markdown(list(v.values()), ct.Sweep(model="cnn", rounds=4), runs, [], [])
    assert md.count("**no**") == 2 and "| A1 |" in md
