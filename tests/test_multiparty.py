"""Three organisations, one topology: each party's directory holds only its own CSV files
(training and validation), its own keys and the shared topology and config. Each peer runs
in its own mount namespace in which the other parties' directories are empty, so no
process could open another party's file. Their final models are identical, equal to the
simulator's run on the same three files, and the global validation metrics — learnt only
as a secure sum of counts — are the same everywhere."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from ringfl import checkpoint, topology
from ringfl.config import config_from_dict
from ringfl.data import load_digits
from ringfl.peer.identity import generate_for_topology
from ringfl.sim import simulate
from tests.peer_util import cli, env, free_ports, kill_group, short_dir

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

PARTIES = ("acme", "bank", "clinic")
SIZES = (180, 260, 140)

CONFIG = """
seed = 11
[data]
dataset = "files"
num_classes = 10
[model]
name = "logreg"
[train]
rounds = 3
local_steps = 6
batch_size = 16
lr = 0.2
momentum = 0.0
[algorithm]
name = "ring"
secure = true
"""


def write_csv(path, x, y) -> None:
    rows = np.concatenate([x.reshape(len(x), -1), y[:, None]], axis=1)
    np.savetxt(path, rows, delimiter=",", fmt="%.6g")


def can_hide_directories() -> bool:
    """Whether this machine lets a process get a private mount namespace."""
    probe = (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10, check=False)
        if shutil.which("unshare")
        else None
    )
    return probe is not None and probe.returncode == 0


def test_three_parties_each_with_only_their_own_file() -> None:
    root = short_dir()
    procs = []
    try:
        train, _ = load_digits(seed=0)
        g = topology.make("ring", 3)
        nx_map = {old: name for old, name in zip(topology.peers(g), PARTIES, strict=True)}
        import networkx as nx

        g = nx.relabel_nodes(g, nx_map)
        g.graph.pop("ring", None)  # the ring order follows the (renamed) cycle again
        for name, port in zip(PARTIES, free_ports(3), strict=True):
            g.nodes[name]["address"] = f"tcp://127.0.0.1:{port}"
            g.nodes[name]["data"] = "train.csv"  # relative to each party's own copy
            g.nodes[name]["val"] = "val.csv"
        keys = root / "keygen"
        generate_for_topology(g, keys)
        start = 0
        for name, size in zip(PARTIES, SIZES, strict=True):
            d = root / name
            d.mkdir()
            sl = slice(start, start + size)
            vl = slice(1000 + start // 2, 1000 + start // 2 + 60)
            start += size
            write_csv(d / "train.csv", train.x[sl], train.y[sl])
            write_csv(d / "val.csv", train.x[vl], train.y[vl])
            topology.save(g, d / "topology.json")
            (d / "run.toml").write_text(CONFIG)
            shutil.copytree(keys / name, d / "keys")
        shutil.rmtree(keys)
        hide = can_hide_directories()
        for name in PARTIES:
            d = root / name
            args = cli(
                "peer", "--topology", "topology.json", "--config", "run.toml", "--node", name,
                "--keys", "keys", "--out", "out", "--deadline-min", "4",
            )  # fmt: skip
            if hide:
                others = " ".join(f"mount -t tmpfs none {root / o};" for o in PARTIES if o != name)
                args = ["unshare", "-rm", "sh", "-c", f'{others} exec "$@"', "sh", *args]
            log = open(d / "peer.log", "w")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    args, cwd=d, env=env(), stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
        for p, name in zip(procs, PARTIES, strict=True):
            code = p.wait(timeout=200)
            assert code == 0, (root / name / "peer.log").read_text()[-3000:]
        models = [checkpoint.load(root / n / "out" / "model.npz").arrays["model"] for n in PARTIES]
        assert all(np.array_equal(models[0], m) for m in models[1:])
        import json

        summaries = [json.loads((root / n / "out" / "summary.json").read_text()) for n in PARTIES]
        assert len({s["global_accuracy"] for s in summaries}) == 1
        assert 0.3 < summaries[0]["global_accuracy"] <= 1.0

        # the simulator on the same three files: the same model, the same global metrics
        raw_cfg = {
            "seed": 11,
            "data": {
                "dataset": "files",
                "num_classes": 10,
                "files": [str(root / n / "train.csv") for n in PARTIES],
                "val_files": [str(root / n / "val.csv") for n in PARTIES],
            },
            "model": {"name": "logreg"},
            "train": {"rounds": 3, "local_steps": 6, "batch_size": 16, "lr": 0.2, "momentum": 0.0},
            "algorithm": {"name": "ring", "secure": True},
        }
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sim = simulate(g, config_from_dict(raw_cfg), progress=False, baseline=False)
        finally:
            torch.set_num_threads(threads)
        assert np.array_equal(sim.engines[0].workload.get(), models[0])
        assert sim.final_accuracy == summaries[0]["global_accuracy"]
        assert sim.data.summary.sizes == list(SIZES)
    finally:
        for p in procs:
            kill_group(p)
        shutil.rmtree(root, ignore_errors=True)
