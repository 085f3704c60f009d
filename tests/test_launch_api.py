"""`ringfl.launch` from Python: the caller's model factory and data loader (closures, not
importable by name) reach the peer processes ringfl spawns, each process loads only its
own party's data, and the peers end with the model the simulator computes from the same
factory and data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import ringfl
from ringfl.config import load_config
from ringfl.data import Dataset, load_digits
from ringfl.peer.spawn import party_from_loader
from ringfl.sim import PeerData, simulate, summarize_parts
from tests.peer_util import Ring

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CONFIG = """
seed = 8
[data]
dataset = "files"
num_classes = 10
[model]
name = "logreg"
[train]
rounds = 2
local_steps = 3
batch_size = 16
lr = 0.1
[algorithm]
name = "ring"
secure = true
"""


def test_launch_ships_factory_and_loader_to_local_peers(tmp_path) -> None:
    ring = Ring(3)
    try:
        ring.config.write_text(CONFIG)
        train, _ = load_digits(seed=0)
        files = {}
        for i, name in enumerate(ring.names):  # one file per party; a loader reads its own
            sl = slice(100 * i, 100 * i + 90 + 20 * i)
            files[name] = tmp_path / f"{name}.npz"
            np.savez(files[name], x=train.x[sl].reshape(-1, 64), y=train.y[sl])
        hidden = 7 + len(files)  # a closure variable: the factory is not importable by name

        def factory() -> nn.Module:
            return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

        def loader(node: str) -> Dataset:
            with np.load(files[node]) as z:
                return Dataset(z["x"].astype(np.float32), z["y"].astype(np.int64), 10, node)

        res = ringfl.launch(
            ring.topology, ring.config, model=factory, data=loader, keys=ring.keys,
            out=ring.out, extra_args=["--deadline-min", "4"], timeout_s=200,
        )  # fmt: skip
        assert res.ok, {n: (p / "console.log").read_text()[-2000:] for n, p in res.out.items()}
        models = [ring.final_model(n) for n in ring.names]
        assert all(np.array_equal(models[0], m) for m in models[1:])
        assert models[0].shape == (64 * hidden + hidden + hidden * 10 + 10,)

        parties = [party_from_loader(loader, n, 10) for n in ring.names]
        parts = [p.train for p in parties]
        data = PeerData(parties, None, 10, summarize_parts(parts, 10), Dataset.concat(parts))
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sim = simulate(
                ring.graph, load_config(ring.config), model=factory, data=data,
                progress=False, baseline=False,
            )  # fmt: skip
        finally:
            torch.set_num_threads(before)
        assert np.array_equal(sim.engines[0].workload.get(), models[0])
    finally:
        ring.cleanup()


def test_launch_rejects_what_is_not_code() -> None:
    with pytest.raises(TypeError, match="data must be a callable"):
        ringfl.launch("t.json", "c.toml", data="train.csv")
    with pytest.raises(TypeError, match="model must be"):
        ringfl.launch("t.json", "c.toml", model=3)
