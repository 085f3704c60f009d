"""Models: parameter counts, seeded identical init without global RNG leaks, shape checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ringfl.errors import ConfigError
from ringfl.models import build_model, count_parameters


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Other test processes share the 2 cores: one torch thread each (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_builtin_parameter_counts_mnist():
    assert count_parameters(build_model("mlp", (1, 28, 28), 10, 0)) == 199_210
    assert count_parameters(build_model("cnn", (1, 28, 28), 10, 0)) == 215_370
    assert count_parameters(build_model("logreg", (1, 28, 28), 10, 0)) == 7_850


@pytest.mark.parametrize("name", ["mlp", "cnn", "logreg"])
def test_builtins_on_digits_and_tabular(name):
    m = build_model(name, (1, 8, 8), 10, 0)
    assert m(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    if name != "cnn":
        assert build_model(name, (5,), 3, 0)(torch.zeros(4, 5)).shape == (4, 3)


def test_cnn_needs_images():
    with pytest.raises(ConfigError, match=r"model 'cnn'\[0\] \(conv2d\): needs \(channels"):
        build_model("cnn", (64,), 10, 0)


def test_same_seed_same_weights_and_no_global_rng_leak():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("cnn", (1, 28, 28), 10, seed=7)
    b = build_model("cnn", (1, 28, 28), 10, seed=7)
    after = torch.rand(3)
    assert torch.equal(before, after)  # the global generator was not advanced
    assert same_weights(a, b)
    assert not same_weights(a, build_model("cnn", (1, 28, 28), 10, seed=8))


def test_layers_model_from_config():
    layers = [
        {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel": 2},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.25},
        {"type": "linear", "out": 16},
        {"type": "tanh"},
        {"type": "linear", "out": 10},
    ]
    m = build_model(layers, (1, 8, 8), 10, 0)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert count_parameters(m) == (9 * 4 + 4) + (64 * 16 + 16) + (16 * 10 + 10)


@pytest.mark.parametrize(
    "layers,match",
    [
        ([{"type": "dense", "out": 3}], r"model.layers\[0\].type: unknown layer type 'dense'"),
        (
            [{"type": "linear", "out": 10}],
            r"model.layers\[0\] \(linear\): input has shape \(1, 8, 8\)",
        ),
        (
            [{"type": "flatten"}, {"type": "linear", "out": 20}],
            r"outputs shape \(20,\), but the data has 10 classes; the last layer \(model.layers\[1\]\)",
        ),
        (
            [{"type": "conv2d", "out": 2, "kernel": 9}, {"type": "flatten"}, {"type": "linear"}],
            r"model.layers\[0\].kernel: kernel 9 \(padding 0\) is larger than the input 8x8",
        ),
        ([{"type": "conv2d", "out": 2}], r"model.layers\[0\].kernel: required"),
        (
            [{"type": "flatten"}, {"type": "linear", "out": -5}],
            r"model.layers\[1\].out must be an integer >= 1, got -5",
        ),
        (
            [{"type": "flatten"}, {"type": "linear", "size": 10}],
            r"model.layers\[1\].size: unknown field for a linear layer",
        ),
        (
            [{"type": "flatten"}, {"type": "linear"}, {"type": "relu"}, {"type": "linear"}],
            r"model.layers\[1\].out: required",
        ),
        (
            [{"type": "flatten"}, {"type": "dropout", "p": 1.5}, {"type": "linear"}],
            r"model.layers\[1\].p: dropout probability",
        ),
        ([], r"model.layers: at least one layer"),
    ],
)
def test_layer_errors_name_index_and_field(layers, match):
    with pytest.raises(ConfigError, match=match):
        build_model(layers, (1, 8, 8), 10, 0)


def test_factory_models():
    def factory() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    a = build_model(factory, (1, 8, 8), 10, seed=3)
    b = build_model(factory, (1, 8, 8), 10, seed=3)
    assert same_weights(a, b)
    with pytest.raises(ConfigError, match=r"outputs shape \(10,\) per sample, expected \(3,\)"):
        build_model(factory, (1, 8, 8), 3, seed=3)
    with pytest.raises(ConfigError, match="forward pass on input shape"):
        build_model(factory, (1, 9, 9), 10, seed=3)
    with pytest.raises(ConfigError, match="returned int"):
        build_model(lambda: 3, (1, 8, 8), 10, seed=3)
    with pytest.raises(ConfigError, match="model.name: unknown model 'resnet'"):
        build_model("resnet", (1, 8, 8), 10, seed=3)
