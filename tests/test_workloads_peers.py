"""Tabular workloads on real peers: 3 processes on loopback (CURVE links, masked sums),
each in its own directory holding only its own CSV file. Every party ends with exactly
the result of the simulated run (same fixed-point sums, so bit for bit)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from ringfl import topology
from ringfl.peer.identity import generate_for_topology
from tests.peer_util import cli, env, free_ports, kill_group, short_dir

pytestmark = pytest.mark.timeout(200)

N = 3


@pytest.fixture(scope="module")
def site():
    """A topology with keys and TCP addresses on loopback, and one directory per party
    with its own rows of the breast-cancer table."""
    root = short_dir()
    g = topology.make("ring", N)
    for node, port in zip(topology.peers(g), free_ports(N), strict=True):
        g.nodes[node]["address"] = f"tcp://127.0.0.1:{port}"
    generate_for_topology(g, root / "keys")
    topology.save(g, root / "topo.json")
    d = load_breast_cancer(as_frame=True).frame
    d.columns = [c.replace(" ", "_") for c in d.columns]
    d.insert(0, "id", np.arange(len(d)) + 5000)
    d = d.iloc[:300]
    for i in range(N):
        (root / f"party{i}").mkdir()
        d.iloc[i::N].to_csv(root / f"party{i}" / "data.csv", index=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_parties(site: Path, command: str, spec: Path, out: str) -> list[Path]:
    """`ringfl analytics|fit` as one real peer per party."""

    def argv(i: int) -> list[str]:
        args = [command, "--query" if command == "analytics" else "--task", str(spec)]
        args += ["--topology", str(site / "topo.json"), "--node", str(i)]
        args += ["--keys", str(site / "keys"), "--data", "data.csv", "-o", out]
        if command == "fit":
            args += ["--report", "report.json"]
        return cli(*args)

    start_parties(site, argv, command)
    return [site / f"party{i}" / out for i in range(N)]


def start_parties(site: Path, argv, name: str) -> None:
    """Start one process per party (cwd = its directory), wait for all (bounded)."""
    procs = []
    for i in range(N):
        wd = site / f"party{i}"
        log = open(wd / f"{name}.log", "w")  # noqa: SIM115 - closed below
        procs.append(
            (
                subprocess.Popen(
                    argv(i),
                    cwd=wd,
                    env=env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                ),
                log,
            )
        )
    try:
        for p, _ in procs:
            p.wait(timeout=150)
    finally:
        for p, log in procs:
            if p.poll() is None:
                kill_group(p)
            log.close()
    for i, (p, _) in enumerate(procs):
        text = (site / f"party{i}" / f"{name}.log").read_text()
        assert p.returncode == 0, text[-3000:]


def simulate(site: Path, command: str, spec: Path, out: Path) -> None:
    files = [str(site / f"party{i}" / "data.csv") for i in range(N)]
    flag = "--query" if command == "analytics" else "--task"
    proc = subprocess.run(
        cli(command, flag, str(spec), "--simulate", *files, "-o", str(out)),
        env=env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_analytics_on_real_peers_equals_the_simulated_run(site: Path) -> None:
    q = site / "query.toml"
    q.write_text(
        "\n".join(
            [
                "[[ops]]",
                'op = "mean"',
                'column = "mean_radius"',
                "[[ops]]",
                'op = "std"',
                'column = "mean_texture"',
                "[[ops]]",
                'op = "corr"',
                'columns = ["mean_radius", "mean_area"]',
                "[[ops]]",
                'op = "median"',
                'column = "worst_area"',
                "[[ops]]",
                'op = "groupby"',
                'by = "target"',
                "groups = [0, 1, 2]",
                'column = "mean_area"',
            ]
        )
        + "\n"
    )
    outs = run_parties(site, "analytics", q, "result.json")
    simulate(site, "analytics", q, site / "sim.json")
    sim = json.loads((site / "sim.json").read_text())
    for o in outs:
        got = json.loads(o.read_text())
        assert got["values"] == sim["values"]
        assert (
            got["refusals"]
            == sim["refusals"]
            == ["groupby(target): cell target=2: refused, only 0 parties contribute (fewer than 3)"]
        )
        assert got["run"]["bytes_sent"] and got["run"]["parties"] == N
    pooled = pd.concat([pd.read_csv(site / f"party{i}" / "data.csv") for i in range(N)])
    assert sim["values"]["mean(mean_radius)"] == pytest.approx(pooled.mean_radius.mean(), rel=1e-12)
    # no party's directory holds another party's rows
    ids = [set(pd.read_csv(site / f"party{i}" / "data.csv").id) for i in range(N)]
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])


def test_newton_on_real_peers_equals_the_simulated_run(site: Path) -> None:
    task = site / "newton.json"
    task.write_text(
        json.dumps(
            {
                "workload": "newton",
                "label": "target",
                "features": ["mean_radius", "mean_texture", "mean_smoothness", "worst_area"],
                "newton": {"l2": 1.0, "standardize": True},
            }
        )
    )
    outs = run_parties(site, "fit", task, "model.json")
    simulate(site, "fit", task, site / "newton_sim.json")
    sim = json.loads((site / "newton_sim.json").read_text())
    assert sim["converged"] and len(sim["coef"]) == 4
    for o in outs:
        assert json.loads(o.read_text()) == sim
        report = json.loads((o.parent / "report.json").read_text())
        assert report["train_metrics"]["accuracy"] > 0.8


def test_gbdt_on_real_peers_equals_the_simulated_run(site: Path) -> None:
    task = site / "gbdt.toml"
    task.write_text(
        'workload = "gbdt"\nlabel = "target"\nid_column = "id"\n'
        "[gbdt]\nmax_iters = 4\nmax_depth = 3\nmax_bins = 16\nlearning_rate = 0.3\n"
    )
    outs = run_parties(site, "fit", task, "model.json")
    simulate(site, "fit", task, site / "gbdt_sim.json")
    sim = (site / "gbdt_sim.json").read_text()
    assert json.loads(sim)["format"] == "ringfl-gbdt"
    for o in outs:
        assert o.read_text() == sim
    # predictions of a party's own rows from the saved model
    pred = site / "party1" / "pred.csv"
    proc = subprocess.run(
        cli(
            "predict",
            "--model",
            str(outs[1]),
            "--data",
            str(site / "party1" / "data.csv"),
            "-o",
            str(pred),
            "--id-column",
            "id",
        ),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = pred.read_text().splitlines()
    assert rows[0] == "example_id,prediction" and rows[1].startswith("5001,")


def test_a_users_job_runs_identically_on_the_simulator_and_on_real_peers(site: Path) -> None:
    """The guide's k-means class, unchanged, on both engine drivers: the simulator
    (`simulate_jobs`) and three real peers (`run_peer`, CURVE, masked sums), each party
    holding only its own points. Same centroids bit for bit, same contributors in every
    round."""
    import sys

    from ringfl.workloads.run import simulate_jobs
    from tests.test_workloads_kmeans_example import load_example

    cols = ["mean_radius", "mean_texture", "mean_smoothness", "worst_area"]
    points = []
    for i in range(N):
        x = pd.read_csv(site / f"party{i}" / "data.csv")[cols].to_numpy(dtype=np.float64)
        np.save(site / f"party{i}" / "points.npy", x)
        points.append(x)
    child = str(Path(__file__).with_name("job_peer_child.py"))
    topo, keys = str(site / "topo.json"), str(site / "keys")
    start_parties(site, lambda i: [sys.executable, child, topo, str(i), keys, "points.npy"], "km")
    km = load_example()
    sim = simulate_jobs([km.KMeans(x, k=3, seed=2, max_iter=100) for x in points])
    assert sim.counts.sums > 2 and sim.contributors
    for i in range(N):
        real = np.load(site / f"party{i}" / "centroids.npy")
        assert real.tobytes() == sim.result.tobytes()
        contributors = json.loads((site / f"party{i}" / "contributors.json").read_text())
        assert (
            contributors == sim.contributors == [[str(p) for p in range(N)]] * len(sim.contributors)
        )
