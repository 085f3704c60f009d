"""Config: TOML loading, defaults, and one clear error per bad field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ringfl.config import AlgorithmConfig, Config, TrainConfig, config_from_dict, load_config
from ringfl.errors import ConfigError

FULL = """
seed = 7
eval_every = 2
output = "out/x"

[data]
dataset = "files"
files = ["p0.npz", ["p1_x.npy", "p1_y.npy"]]
test = "test.npz"

[partition]
name = "dirichlet"
alpha = 0.3

[[model.layers]]
type = "flatten"
[[model.layers]]
type = "linear"
out = 32
[[model.layers]]
type = "relu"
[[model.layers]]
type = "linear"

[train]
rounds = 3
local_steps = 20
lr = 0.05

[algorithm]
name = "gossip"
secure = false
"""


def write_data(tmp_path):
    np.savez(tmp_path / "p0.npz", x=np.zeros((3, 2)), y=np.zeros(3))
    np.save(tmp_path / "p1_x.npy", np.zeros((3, 2)))
    np.save(tmp_path / "p1_y.npy", np.zeros(3))
    np.savez(tmp_path / "test.npz", x=np.zeros((3, 2)), y=np.zeros(3))


def test_defaults():
    cfg = Config()
    assert cfg.train.epochs == 1 and cfg.algorithm.secure and cfg.model.name == "mlp"
    assert TrainConfig(local_steps=5).epochs is None
    assert config_from_dict({}) == cfg


def test_full_toml_and_relative_paths(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    write_data(sub)
    (sub / "cfg.toml").write_text(FULL)
    cfg = load_config(sub / "cfg.toml")
    assert cfg.seed == 7 and cfg.eval_every == 2
    assert cfg.data.files[0] == str(sub / "p0.npz")
    assert cfg.data.files[1] == (str(sub / "p1_x.npy"), str(sub / "p1_y.npy"))
    assert cfg.model.name is None and cfg.model.layers[1] == {"type": "linear", "out": 32}
    assert cfg.train.local_steps == 20 and cfg.train.epochs is None and cfg.train.lr == 0.05
    assert cfg.algorithm.name == "gossip" and cfg.algorithm.secure is False
    assert json.loads(json.dumps(cfg.to_dict()))["partition"]["alpha"] == 0.3


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"train": {"lr": -0.1}}, r"train.lr: learning rate must be > 0, got -0.1"),
        ({"train": {"rounds": 0}}, r"train.rounds: must be an integer >= 1, got 0"),
        ({"train": {"rounds": 2.5}}, r"train.rounds: must be an integer >= 1"),
        ({"train": {"lrr": 0.1}}, r"train.lrr: unknown key"),
        ({"trian": {}}, r"trian: unknown key"),
        ({"train": {"local_epochs": 1, "local_steps": 3}}, r"train.local_steps: set either"),
        ({"train": {"momentum": 1.0}}, r"train.momentum: must be in \[0, 1\)"),
        ({"train": {"prox_mu": -1}}, r"train.prox_mu: must be >= 0"),
        ({"partition": {"name": "random"}}, r"partition.name: must be one of iid, dirichlet"),
        ({"partition": {"alpha": 0}}, r"partition.alpha: must be > 0, got 0"),
        ({"partition": {"fraction": 1.5}}, r"partition.fraction: must be in \(0, 1\]"),
        ({"data": {"dataset": "cifar"}}, r"data.dataset: must be one of mnist, digits, files"),
        (
            {"data": {"dataset": "digits", "val_files": ["v.csv"]}},
            r"data.val_files: only used with dataset = 'files'",
        ),
        ({"faults": [{"kind": "crash"}]}, r"faults\[0\]\.node: a 'crash' fault needs it"),
        ({"faults": [{"kind": "melt"}]}, r"faults\[0\]\.kind: must be one of crash"),
        (
            {"faults": [{"kind": "crash", "node": "1", "round": 1, "wait": 2}]},
            r"faults\[0\]\.wait: not a field of a 'crash' fault",
        ),
        ({"faults": [{"kind": "slow_peer", "node": "1", "factor": 0.5}]}, r"factor: must be"),
        (
            {"data": {"dataset": "files", "files": ["/nonexistent/p0.npz"], "test": "/x"}},
            r"data.files\[0\]: file not found: /nonexistent/p0.npz",
        ),
        ({"data": {"dir": "/nonexistent/mnist"}}, r"data.dir: directory not found"),
        ({"data": {"files": ["a.npz"]}}, r"data.files: only used with dataset = 'files'"),
        ({"model": {"name": "resnet"}}, r"model.name: must be one of mlp, cnn, logreg"),
        ({"model": {"layers": [{"type": "dense"}]}}, r"model.layers\[0\].type: must be one of"),
        ({"model": {"name": "mlp", "layers": [{"type": "flatten"}]}}, r"model: give either"),
        ({"model": {"layers": "linear"}}, r"model.layers: must be a list of tables"),
        ({"algorithm": {"name": "allreduce"}}, r"algorithm.name: must be one of ring, gossip"),
        ({"algorithm": {"secure": "yes"}}, r"algorithm.secure: must be true or false"),
        ({"algorithm": {"share_fraction": 0}}, r"algorithm.share_fraction: must be in \(0, 1\]"),
        ({"eval_every": 0}, r"eval_every: must be an integer >= 1"),
        ({"seed": -1}, r"seed: must be an integer >= 0"),
        ({"train": 3}, r"train: must be a table"),
    ],
)
def test_bad_fields_are_named(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw, source="cfg.toml")


def test_missing_test_file_and_bad_toml(tmp_path):
    write_data(tmp_path)
    (tmp_path / "c.toml").write_text(
        '[data]\ndataset = "files"\nfiles = ["p0.npz"]\ntest = "nope.npz"\n'
    )
    with pytest.raises(ConfigError, match=r"c.toml: data.test: file not found: .*nope.npz"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "bad.toml").write_text("[train\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match=r"absent.toml: config file not found"):
        load_config(tmp_path / "absent.toml")


def test_replace_revalidates():
    cfg = Config()
    assert cfg.replace(seed=3).seed == 3
    with pytest.raises(ConfigError, match="seed"):
        cfg.replace(seed=-2)


def test_example_config_builds_its_model():
    from pathlib import Path

    from ringfl.models import build_model, count_parameters

    path = Path(__file__).resolve().parents[1] / "examples" / "mnist_ring.toml"
    cfg = load_config(path)
    assert cfg.model.name is None and cfg.algorithm.secure
    model = build_model(list(cfg.model.layers), (1, 28, 28), 10, cfg.seed)
    assert count_parameters(model) == count_parameters(build_model("mlp", (1, 28, 28), 10, 0))


# -- gossip has no masking: it must be turned off explicitly ------------------------------

GOSSIP_TOML = """
[data]
dataset = "digits"
train_subset = 200
test_subset = 100
[model]
name = "logreg"
[train]
rounds = 1
[algorithm]
name = "gossip"
"""


@pytest.mark.parametrize("secure", [None, True])
def test_gossip_without_explicit_secure_false_is_refused(tmp_path, secure):
    raw = {"algorithm": {"name": "gossip"}}
    if secure is not None:
        raw["algorithm"]["secure"] = secure
    with pytest.raises(
        ConfigError,
        match=r"^cfg.toml: algorithm.secure: masking is not available for gossip .*"
        r"set `\[algorithm\] secure = false` explicitly to run unmasked gossip$",
    ):
        config_from_dict(raw, source="cfg.toml")
    ok = config_from_dict({"algorithm": {"name": "gossip", "secure": False}})
    assert ok.algorithm.secure is False
    with pytest.raises(ConfigError, match="algorithm.secure: masking is not available"):
        ok.replace(algorithm=AlgorithmConfig(name="gossip"))


def test_unvalidated_gossip_config_still_never_sends_plain_models():
    from ringfl.algorithms import make_algorithm

    with pytest.raises(ConfigError, match="algorithm.secure: masking is not available"):
        make_algorithm(AlgorithmConfig(name="gossip"))  # a dataclass, not validated
    assert make_algorithm(AlgorithmConfig(name="gossip", secure=False)) is not None


@pytest.mark.parametrize("command", ["simulate", "peer"])
def test_gossip_cli_exits_1_naming_the_field(tmp_path, command):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from ringfl.topology import make, save

    g = make("ring", 3)
    for i, node in enumerate(g.nodes):
        g.nodes[node]["address"] = f"ipc://{tmp_path}/p{i}.sock"
    save(g, tmp_path / "ring3.json")
    (tmp_path / "gossip.toml").write_text(GOSSIP_TOML)  # `secure` left unset
    args = ["--topology", "ring3.json", "--config", "gossip.toml"]
    if command == "peer":
        args += ["--node", "0", "--insecure"]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "ringfl", command, *args],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("ringfl: error: gossip.toml: algorithm.secure: masking is not")
    assert "secure = false" in lines[0]
    assert not list(tmp_path.glob("p*.sock"))  # refused before binding anything
