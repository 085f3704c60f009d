"""Local SGD, evaluation and the centralized / standalone baselines, on sklearn digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ringfl.baselines import centralized, sample_budget, samples_per_round, standalone
from ringfl.config import TrainConfig
from ringfl.data import Dataset, load_digits
from ringfl.local import LocalTrainer, evaluate, evaluation_steps
from ringfl.models import build_model
from ringfl.partition import iid


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Other test processes share the 2 cores: one torch thread each (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def make(train, spec="logreg", seed=0, peer=0, **kw):
    model = build_model(spec, train.input_shape, 10, seed)
    opts = {"batch_size": 32, "lr": 0.1, "momentum": 0.5} | kw
    return model, LocalTrainer(model, train, seed=seed, peer=peer, **opts)


def test_training_learns_digits(digits):
    train, test = digits
    model, tr = make(train)
    before = evaluate(model, test).accuracy
    for r in range(3):
        stats = tr.train(r, epochs=1)
        assert stats.samples == len(train)
        assert stats.steps == -(-len(train) // 32)
    after = evaluate(model, test)
    assert before < 0.3 and after.accuracy > 0.9


def test_evaluate_matches_manual(digits):
    _, test = digits
    model = build_model("mlp", test.input_shape, 10, 1)
    ev = evaluate(model, test, batch_size=97)
    with torch.no_grad():
        out = model(torch.from_numpy(test.x))
    y = torch.from_numpy(test.y)
    assert ev.accuracy == pytest.approx(float((out.argmax(1) == y).float().mean()))
    assert ev.loss == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-5)


def test_evaluation_steps_give_evaluate_bits_and_leave_the_caller_its_modes(digits):
    _, test = digits
    model = build_model("mlp", test.input_shape, 10, 1)
    want = evaluate(model, test, batch_size=97)
    steps = evaluation_steps(model, test, batch_size=97)
    yielded = 0
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            got = finished.value
            break
        yielded += 1
        # between steps the caller's own work runs with its grad mode and training mode
        assert torch.is_grad_enabled() and model.training
    assert yielded == -(-len(test) // 97)
    assert (got.accuracy, got.loss, got.samples) == (want.accuracy, want.loss, want.samples)


def test_deterministic_per_peer_and_no_global_rng_use(digits):
    train, _ = digits
    dropout_net = [
        {"type": "flatten"},
        {"type": "linear", "out": 16},
        {"type": "dropout", "p": 0.5},
        {"type": "linear"},
    ]
    a, ta = make(train, dropout_net)
    b, tb = make(train, dropout_net)
    c, tc = make(train, dropout_net, peer=1)
    torch.manual_seed(0)
    ta.train(0, steps=5)
    torch.manual_seed(999)  # a different global RNG state must not matter
    g = torch.rand(1)
    tb.train(0, steps=5)
    tc.train(0, steps=5)
    assert torch.equal(flat(a), flat(b))
    assert not torch.equal(flat(a), flat(c))
    torch.manual_seed(999)
    assert torch.equal(torch.rand(1), g)


def test_steps_mode_wraps_epochs_and_counts():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    data = Dataset(x, np.arange(10) % 2, 2)
    model, tr = make(data, batch_size=4)
    stats = tr.train(0, steps=5)  # epoch of 4+4+2, then 4+4
    assert stats.steps == 5 and stats.samples == 18
    cfg = TrainConfig(local_steps=5, batch_size=4)
    assert samples_per_round([10], cfg) == [18]
    assert samples_per_round([10, 3], TrainConfig(local_epochs=2)) == [20, 6]
    assert sample_budget([10, 3], TrainConfig(local_epochs=2, rounds=3)) == 78


def test_fedprox_keeps_weights_near_start(digits):
    train, _ = digits
    a, ta = make(train, lr=0.2)
    b, tb = make(train, lr=0.2, prox_mu=10.0)
    start = flat(a).clone()
    ta.train(0, steps=30)
    tb.train(0, steps=30)
    assert torch.norm(flat(b) - start) < 0.5 * torch.norm(flat(a) - start)


def test_baselines_on_digits(digits):
    train, test = digits
    cfg = TrainConfig(rounds=2, local_epochs=1, batch_size=32, lr=0.1, momentum=0.5)
    parts = [train.subset(p) for p in iid(len(train), 3, seed=0)]
    budget = sample_budget([len(p) for p in parts], cfg)
    assert budget == 2 * len(train)
    c = centralized(train, test, "logreg", cfg, budget=budget, seed=0)
    s = standalone(parts, test, "logreg", cfg, seed=0)
    assert c.samples == budget and s.samples == budget
    assert c.accuracy > 0.85 and 0.5 < s.accuracy <= 1.0
    assert len(s.detail["per_peer_accuracy"]) == 3
    again = centralized(train, test, "logreg", cfg, budget=budget, seed=0)
    assert again.accuracy == c.accuracy and again.loss == c.loss


@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_sgd_matches_torch_optim(digits, momentum, wd):
    from ringfl.local import SGD

    train, _ = digits
    a = build_model("mlp", train.input_shape, 10, 0)
    b = build_model("mlp", train.input_shape, 10, 0)
    ours = SGD(list(a.parameters()), lr=0.05, momentum=momentum, weight_decay=wd)
    ref = torch.optim.SGD(b.parameters(), lr=0.05, momentum=momentum, weight_decay=wd)
    x, y = torch.from_numpy(train.x[:64]), torch.from_numpy(train.y[:64])
    for step in range(5):
        xb, yb = x[step * 12 : step * 12 + 12], y[step * 12 : step * 12 + 12]
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
