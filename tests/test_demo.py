"""`ringfl demo` end to end on its embedded default, cut to one round."""

from __future__ import annotations

import json

import pytest
import torch

from ringfl.cli import main
from ringfl.commands.demo import demo_config
from ringfl.config import validate


def test_demo_config_is_valid():
    cfg = demo_config()
    validate(cfg)
    assert cfg.algorithm.name == "ring" and cfg.algorithm.secure
    assert cfg.partition.name == "dirichlet" and cfg.partition.alpha == 0.5


@pytest.mark.slow
def test_demo_one_round(tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        code = main(["demo", "--rounds", "1", "--quiet", "--out", str(tmp_path / "demo")])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    out = capsys.readouterr().out
    assert "secure ring, 8 peers" in out and "centralized, same samples" in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["secure"] and summary["num_peers"] == 8
    assert summary["final_accuracy"] > 0.5 and summary["baseline"]["accuracy"] > 0.9
    assert (tmp_path / "demo" / "accuracy_vs_bytes.png").stat().st_size > 1000
