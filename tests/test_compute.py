"""Compute backends (`ringfl.compute`): the simulator's local training on the driver, on
worker processes, gives the same bits; worker failures are reported, never waited on."""

from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from ringfl.compute import Inline, Processes, choose, free_cores, open_backend, usable_cores
from ringfl.compute.job import TrainJob
from ringfl.config import config_from_dict
from ringfl.data import load_digits
from ringfl.errors import ConfigError
from ringfl.local import evaluate
from ringfl.sim import simulate
from ringfl.topology import make

pytestmark = pytest.mark.timeout(240)

CRASH_AND_RESTART = [
    {"kind": "crash", "node": "2", "round": 1, "after_sends": 2},
    {"kind": "restart", "node": "2", "round": 3},
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Workers train with one torch thread: so does `inline` here, for the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(**over):
    raw = {
        "seed": 4,
        "data": {"dataset": "digits", "train_subset": 500, "test_subset": 200},
        "partition": {"name": "dirichlet", "alpha": 0.5, "min_size": 20},
        "model": {"name": "mlp"},
        "train": {"rounds": 4, "local_steps": 3, "batch_size": 16, "lr": 0.05, "momentum": 0.9},
        "algorithm": {"name": "ring", "secure": True},
    }
    raw.update(over)
    return config_from_dict(raw)


def outcome(result):
    """Everything a run decides: every party's final state, metrics and membership."""
    states = {p: e.workload.get().tobytes() for p, e in enumerate(result.engines)}
    metrics = [{k: v for k, v in m.items() if not k.endswith("_s")} for m in result.metrics]
    return states, metrics, result.rounds


CASES = {
    # secure ring with momentum; party 2 crashes in round 1 and restarts afresh in round 3
    "secure-ring-restart": (config(faults=CRASH_AND_RESTART), "ring", 5),
    # gossip: every party holds its own model; FedProx term on
    "gossip-torus": (
        config(
            algorithm={"name": "gossip", "secure": False},
            train={"rounds": 3, "local_steps": 2, "batch_size": 16, "lr": 0.05, "prox_mu": 0.1},
        ),
        "torus",
        6,
    ),
    # 70 small parties: a worker gets several tasks per message (the batches)
    "ring-70-batched": (
        config(
            data={"dataset": "digits", "train_subset": 700, "test_subset": 100},
            partition={"name": "iid"},
            model={"name": "logreg"},
            algorithm={"name": "ring", "secure": False},
            train={"rounds": 2, "local_steps": 2, "batch_size": 4, "lr": 0.1},
        ),
        "ring",
        70,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_backends_and_worker_counts_give_identical_results(name):
    cfg, kind, n = CASES[name]
    g = make(kind, n)
    ref = simulate(g, cfg, progress=False, baseline=False, backend=Inline())
    assert ref.backend == "inline"
    want = outcome(ref)
    if name == "secure-ring-restart":
        assert ref.rounds[1]["dropped"] == ["2"] and ref.rounds[3]["admitted"] == []
        assert "2" in ref.rounds[3]["members"]
    for workers, start in ((1, "spawn"), (3, "fork")):
        backend = Processes(workers, start=start)
        got = simulate(g, cfg, progress=False, baseline=False, backend=backend)
        assert (got.backend, got.workers) == ("processes", workers)
        assert outcome(got) == want, (name, workers, start)


class TrainsThenCatchesUp(Inline):
    """Inline training that does the driver's background work only after the round's
    training: the parties' states have moved on by then, as with workers that finish
    before the driver does."""

    def _execute(self, tasks, starts, background=None):
        yield from super()._execute(tasks, starts)
        for _ in background or ():
            pass


def test_a_deferred_evaluation_scores_the_round_it_belongs_to():
    cfg = config(algorithm={"name": "ring", "secure": False})
    g = make("ring", 4)
    # each round's score as the last round of a run that stops there, where no later
    # training can run before the evaluation
    want = []
    for k in range(1, cfg.train.rounds + 1):
        short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, rounds=k))
        r = simulate(g, short, progress=False, baseline=False, backend=Inline())
        want.append((r.final_accuracy, r.final_loss))
    assert len(set(want)) == len(want)  # the rounds' scores differ
    for backend in (Inline(), TrainsThenCatchesUp()):
        got = simulate(g, cfg, progress=False, baseline=False, backend=backend)
        assert [(m["accuracy"], m["loss"]) for m in got.metrics] == want


def test_ring_parties_share_one_model_between_rounds():
    r = simulate(make("ring", 5), config(), progress=False, baseline=False, backend="inline")
    store = r.engines[0].workload.store
    assert len({id(store.states[p]) for p in range(5)}) == 1
    assert not store.states[0].flags.writeable  # shared: nobody may write it
    # the engine reads the stored array itself (no per-party copy), still read-only
    e = r.engines[3]
    assert e.workload.get() is store.states[3]
    with pytest.raises(ValueError, match="read-only"):
        e.workload.get()[0] = 1.0
    assert e.members is r.engines[0].members  # one tuple of members for every party


class CountedNet(nn.Module):
    """A model with an integer buffer (as BatchNorm's counter): it must follow each party
    through the workers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen += x.shape[0]
        return self.head(self.body(x)) + 0.0 * self.seen


def test_integer_buffers_travel_with_their_party():
    cfg = config(train={"rounds": 2, "local_steps": 3, "batch_size": 16, "lr": 0.05})
    g = make("ring", 3)
    a = simulate(g, cfg, model=CountedNet, progress=False, baseline=False, backend="inline")
    b = simulate(g, cfg, model=CountedNet, progress=False, baseline=False, backend=Processes(2))
    assert outcome(a) == outcome(b)
    for r in (a, b):
        counts = [int(w.model.seen) for w in r.learners]
        assert counts == [2 * 3 * 16] * 3  # 2 rounds x 3 steps x 16 samples, per party
        assert all(int(w.model.body[2].num_batches_tracked) == 6 for w in r.learners)


def test_a_factory_defined_in_a_function_reaches_the_workers():
    hidden = 24  # captured: cloudpickle ships the closure by value

    def factory():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    cfg = config(train={"rounds": 2, "local_steps": 2, "batch_size": 16, "lr": 0.05})
    g = make("ring", 3)
    a = simulate(g, cfg, model=factory, progress=False, baseline=False, backend="inline")
    spawned = Processes(2, start="spawn")  # the closure travels by cloudpickle
    b = simulate(g, cfg, model=factory, progress=False, baseline=False, backend=spawned)
    assert outcome(a) == outcome(b)
    assert a.learners[0].model[1].out_features == hidden


def failing_factory(driver: int, how: str):
    def factory():
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = nn.Linear(64, 10)

            def forward(self, x):
                if os.getpid() != driver:  # only in a worker
                    if how == "raise":
                        raise ValueError("broken model in the worker")
                    os.kill(os.getpid(), signal.SIGKILL)
                return self.fc(x.flatten(1))

        return Net()

    return factory


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_failing_or_dying_worker_is_reported(how, start):
    cfg = config(train={"rounds": 2, "local_steps": 2, "batch_size": 16, "lr": 0.05})
    factory = failing_factory(os.getpid(), how)
    want = "broken model in the worker" if how == "raise" else "worker .* exited"
    with pytest.raises(RuntimeError, match=want):
        backend = Processes(2, start=start)
        simulate(make("ring", 3), cfg, model=factory, progress=False, backend=backend)


def test_workers_start_and_stop_with_the_backend():
    train, _ = load_digits(seed=0)
    parts = [train.subset(np.arange(p * 50, (p + 1) * 50)) for p in range(2)]
    job = TrainJob.of(config(), "logreg", parts)
    for start in ("fork", "spawn"):
        backend = open_backend(Processes(2, start=start), parties=2)
        with backend:
            backend.load(job, parts, [None, None])
            workers = backend._pool  # type: ignore[attr-defined]
            assert [w.poll() for w in workers] == [None, None]
            assert backend.start == start  # type: ignore[attr-defined]
        assert all(w.poll() == 0 for w in workers)  # stopped cleanly
    with open_backend(Processes(8), parties=2) as capped:
        assert capped.workers == 2  # never more workers than parties


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_workers_score_the_parties_models_as_the_driver_does(start):
    train, test = load_digits(seed=0)
    parts = [train.subset(np.arange(p * 40, (p + 1) * 40)) for p in range(5)]
    job = TrainJob.of(config(), "mlp", parts)
    rng = np.random.default_rng(0)
    with open_backend(Processes(2, start=start), parties=5) as backend:
        backend.load(job, parts, [None] * 5, test)
        for p in range(5):  # five different models
            backend.workload(p).set(rng.standard_normal(backend.store.states[p].shape[0]) * 0.1)
        order = [4, 0, 2, 1, 3]  # shares of 3 and 2
        got = backend.evaluate(order)
        want = [evaluate(backend.store.module(p, scratch=False), test) for p in order]
        assert len({g.loss for g in got}) == 5
    # the same parties in the driver alone
    with open_backend(Inline(), parties=5) as inline:
        inline.load(job, parts, [None] * 5, test.subset(np.arange(0)))
        assert inline.evaluate([1])[0].samples == 0
    assert got == want


def test_backend_names():
    assert isinstance(choose("inline", 4), Inline)
    assert isinstance(choose("processes", 4), Processes)
    assert isinstance(choose("auto", 1), Inline)  # one party: nothing to spread
    assert isinstance(choose("auto", 4), Inline | Processes)
    assert 0 <= free_cores() <= usable_cores()
    with pytest.raises(ConfigError, match="unknown compute backend 'gpu'"):
        choose("gpu", 4)


CLI_CONFIG = """
seed = 2
[data]
dataset = "digits"
train_subset = 400
test_subset = 200
[model]
name = "mlp"
[train]
rounds = 2
local_steps = 3
lr = 0.05
momentum = 0.9
batch_size = 16
[algorithm]
name = "ring"
secure = true
"""


def test_cli_processes_backend_matches_inline_in_process(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from ringfl.config import load_config
    from ringfl.topology import save

    save(make("ring", 3), tmp_path / "ring3.json")
    (tmp_path / "exp.toml").write_text(CLI_CONFIG)
    root = Path(__file__).resolve().parents[1]
    args = ["--topology", "ring3.json", "--config", "exp.toml", "--no-baseline", "--quiet"]
    p = subprocess.run(
        [sys.executable, "-m", "ringfl", "simulate", *args, "--out", "out"]
        + ["--backend", "processes", "--workers", "2"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    assert "local training ran on the processes backend, 2 at a time" in p.stdout
    rows = [json.loads(x) for x in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    ref = simulate(
        make("ring", 3),
        load_config(tmp_path / "exp.toml"),
        progress=False,
        baseline=False,
        backend="inline",
    )
    assert [(r["accuracy"], r["loss"]) for r in rows] == [
        (m["accuracy"], m["loss"]) for m in ref.metrics
    ]
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert (summary["backend"], summary["workers"]) == ("processes", 2)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--backend", "inline", "--workers", "2"], "--workers is for --backend processes"),
        (["--ray-address", "auto"], "need --backend ray"),
    ],
)
def test_cli_backend_options_are_checked(tmp_path, capsys, monkeypatch, extra, error):
    from ringfl.cli import main
    from ringfl.topology import save

    monkeypatch.chdir(tmp_path)
    save(make("ring", 2), tmp_path / "ring2.json")
    (tmp_path / "exp.toml").write_text(CLI_CONFIG)
    assert main(["simulate", "--topology", "ring2.json", "--config", "exp.toml", *extra]) == 1
    assert error in capsys.readouterr().err


def test_a_workers_model_loads_and_saves_a_state_as_set_flat_and_get_flat_do():
    from ringfl.algorithms.base import get_flat, set_flat
    from ringfl.compute.job import _Model

    class Odd(nn.Module):
        """Float parameters and buffers, an integer buffer, a transposed (non-contiguous)
        parameter and a float64 one."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
            self.t = nn.Parameter(torch.arange(6.0).reshape(2, 3).t())
            self.register_buffer("scale", torch.ones(3))

    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        module, twin = Odd().to(dtype), Odd().to(dtype)
        assert not module.t.is_contiguous()
        m = _Model.of(module)
        state = np.random.default_rng(1).standard_normal(m.size).astype(np.float32)
        assert m.size == get_flat(twin).shape[0]
        m.load(state)
        set_flat(twin, state)
        theirs = twin.state_dict()
        for k, a in module.state_dict().items():
            assert torch.equal(a, theirs[k]), k
        out = np.full(m.size + 2, np.nan, dtype=np.float32)
        with torch.no_grad():
            module.t.mul_(3)  # the views follow the module's tensors, updated in place
            twin.t.mul_(3)
        m.save(out)
        np.testing.assert_array_equal(out[: m.size], get_flat(twin))
        assert np.isnan(out[m.size :]).all()
