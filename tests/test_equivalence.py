"""The architecture's test: the same topology, config and fault schedule, run by the
simulator (`simulate`, one process, virtual time) and by real peer processes over ZeroMQ
on loopback (`ringfl launch`, CURVE on), end in bit-identical models and the same
contributors in every round."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ringfl import topology
from ringfl.config import load_config
from ringfl.sim import simulate
from tests.peer_util import Ring, start, wait

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CONFIG = """
seed = 5
eval_every = 1
[data]
dataset = "digits"
train_subset = 600
test_subset = 200
[partition]
name = "dirichlet"
alpha = 0.5
min_size = 20
[model]
name = "logreg"
[train]
rounds = {rounds}
local_steps = 4
batch_size = 16
lr = 0.1
momentum = 0.5
prox_mu = {prox_mu}
[algorithm]
name = "{algorithm}"
secure = {secure}
share_fraction = 0.3
{faults}
"""

KILL_AND_RESTART = """
[[faults]]
kind = "crash"
node = "2"
round = 2
after_sends = 3
[[faults]]
kind = "restart"
node = "2"
round = 4
"""


FALSE_LOSS = """
[[faults]]
kind = "wrong_loss"
node = "0"
lost = "3"
round = 1
"""


@dataclass(frozen=True)
class Case:
    kind: str
    n: int
    algorithm: str
    secure: bool
    rounds: int = 3
    faults: str = ""
    prox_mu: float = 0.0


CASES = {
    "secure-ring": Case("ring", 4, "ring", True),
    "plain-ring": Case("ring", 4, "ring", False),
    "gossip-torus": Case("torus", 6, "gossip", False),
    "selective": Case("ring", 4, "selective", True),
    "fedprox": Case("ring", 3, "ring", True, prox_mu=0.5),
    "secure-ring-kill-restart": Case("ring", 5, "ring", True, rounds=6, faults=KILL_AND_RESTART),
    "secure-ring-false-loss": Case("ring", 5, "ring", True, rounds=5, faults=FALSE_LOSS),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Bit-identity needs the same kernels: one torch thread here, as in every peer."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", list(CASES))
def test_simulator_and_real_peers_end_identical(name: str) -> None:
    case = CASES[name]
    ring = Ring(case.n, kind=case.kind, rounds=case.rounds)  # topology with CURVE and mask keys
    try:
        ring.config.write_text(
            CONFIG.format(
                rounds=case.rounds,
                algorithm=case.algorithm,
                secure="true" if case.secure else "false",
                faults=case.faults,
                prox_mu=case.prox_mu,
            )
        )
        cfg = load_config(ring.config)
        sim = simulate(ring.graph, cfg, progress=False, baseline=False)

        proc = start("launch", *ring.args("--out", str(ring.out)), log=ring.dir / "launch.log")
        code = wait(proc, 240)
        log = (ring.dir / "launch.log").read_text()
        killed = {"2"} if "crash" in case.faults else set()
        assert code == (137 if killed else 0), log[-4000:]
        names = [str(v) for v in topology.peers(ring.graph)]
        for p, node in enumerate(names):
            summary = ring.summary(node)
            assert summary["status"] == "finished", (node, summary)
            real = ring.final_model(node)
            simulated = sim.engines[p].workload.get()
            assert real.dtype == simulated.dtype == np.float32
            assert np.array_equal(real, simulated), (name, node)
        if case.algorithm == "gossip":
            assert len({ring.final_model(n).tobytes() for n in names}) > 1  # models differ
            return
        sim_rounds = {row["round"]: row["contributors"] for row in sim.rounds}
        for node in names:
            rows = ring.metrics(node)
            got = {row["round"]: row["members"] for row in rows}
            want = {r: c for r, c in sim_rounds.items() if node in c}
            assert got == want, (node, got, want)
        if killed:
            assert sim.rounds[2]["dropped"] == ["2"] and sim.rounds[3]["admitted"] == ["2"]
            assert all("2" not in sim.rounds[r]["contributors"] for r in (2, 3))
            assert all(sim.rounds[r]["contributors"] == names for r in (0, 1, 4, 5))
            events = [json.loads(x) for x in (ring.peer_dir("2") / "events.jsonl").open()]
            assert any(e["event"] == "rejoined" and e["round"] == 4 for e in events)
        if "wrong_loss" in case.faults:  # dropped in round 1, flagged in 2, back in 3
            assert sim.rounds[1]["dropped"] == ["3"] and sim.rounds[2]["admitted"] == ["3"]
            assert sim.rounds[3]["contributors"] == names
    finally:
        ring.cleanup()
