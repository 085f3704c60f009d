"""`ringfl predict` files (example_id,prediction) for logistic, tree and neural models, and
JSON configs that load like TOML ones."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_iris

from ringfl.config import load_config, save_config_json
from ringfl.errors import ConfigError
from ringfl.workloads.gbdt import GBDTParams, fit_gbdt
from ringfl.workloads.newton import NewtonParams, NewtonWorkload
from ringfl.workloads.predict import predict_file
from ringfl.workloads.table import Table, write_csv
from tests.peer_util import cli, env

ROOT_EXAMPLE = "examples/mnist_ring.toml"


def read(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.fixture
def cancer_csv(tmp_path):
    x, y = load_breast_cancer(return_X_y=True)
    x, y = x[:120], y[:120]
    cols = {f"f{j}": x[:, j] for j in range(x.shape[1])}
    ids = np.array([f"row-{i:03d}" for i in range(len(y))])
    write_csv(Table.from_arrays({"id": ids, **cols, "label": y}), tmp_path / "data.csv")
    return tmp_path / "data.csv", x, y.astype(float)


def test_predictions_file_for_gbdt_and_logistic(cancer_csv, tmp_path) -> None:
    path, x, y = cancer_csv
    names = [f"f{j}" for j in range(x.shape[1])]
    gbdt = fit_gbdt([(x, y)], GBDTParams(max_iters=3, max_depth=2), secure=False, features=names)
    gbdt.save(tmp_path / "gbdt.json")
    n = predict_file(tmp_path / "gbdt.json", path, tmp_path / "p.csv", id_column="id")
    rows = read(tmp_path / "p.csv")
    assert n == len(y) and rows[0] == ["example_id", "prediction"] and len(rows) == len(y) + 1
    assert [r[0] for r in rows[1:4]] == ["row-000", "row-001", "row-002"]
    np.testing.assert_array_equal([float(r[1]) for r in rows[1:]], gbdt.predict(x))

    w = NewtonWorkload(x[:, :3], y, NewtonParams(l2=1.0, standardize=True), names[:3])
    from ringfl.workloads.run import run_centralized

    logit = run_centralized([w])[0]
    logit.save(tmp_path / "logit.json")
    proc = subprocess.run(
        cli(
            "predict",
            "--model",
            str(tmp_path / "logit.json"),
            "--data",
            str(path),
            "-o",
            str(tmp_path / "q.csv"),
        ),
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = read(tmp_path / "q.csv")
    assert [r[0] for r in rows[1:4]] == ["0", "1", "2"]  # the row index without --id-column
    np.testing.assert_array_equal([float(r[1]) for r in rows[1:]], logit.predict_proba(x[:, :3]))


def test_multiclass_predictions_are_classes_and_errors_name_the_problem(tmp_path) -> None:
    x, y = load_iris(return_X_y=True)
    names = ["a", "b", "c", "d"]
    m = fit_gbdt(
        [(x, y.astype(float))],
        GBDTParams(loss="softmax", num_classes=3, max_iters=3, max_depth=2),
        secure=False,
        features=names,
    )
    m.save(tmp_path / "m.json")
    write_csv(Table.from_arrays(dict(zip(names, x.T, strict=True))), tmp_path / "d.csv")
    predict_file(tmp_path / "m.json", tmp_path / "d.csv", tmp_path / "p.csv")
    got = [int(r[1]) for r in read(tmp_path / "p.csv")[1:]]
    assert got == m.predict(x).argmax(axis=1).tolist()
    write_csv(Table.from_arrays({"a": x[:, 0]}), tmp_path / "short.csv")
    with pytest.raises(ConfigError, match="no column 'b'"):
        predict_file(tmp_path / "m.json", tmp_path / "short.csv", tmp_path / "p.csv")
    (tmp_path / "bad.json").write_text('{"format": "something"}')
    with pytest.raises(ConfigError, match="unknown model format"):
        predict_file(tmp_path / "bad.json", tmp_path / "d.csv", tmp_path / "p.csv")


def test_neural_model_npz_predictions(tmp_path) -> None:
    import torch

    from ringfl import checkpoint
    from ringfl.algorithms.base import get_flat
    from ringfl.models import build_model

    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"data": {"dataset": "digits"}, "model": {"name": "logreg"}}))
    model = build_model("logreg", (1, 8, 8), 10, seed=3)
    checkpoint.save(tmp_path / "model.npz", {"model": get_flat(model)}, {"round": 0})
    x, _ = load_digits(return_X_y=True)
    x = (x[:50] / 16.0).astype(np.float32)
    write_csv(Table.from_arrays({f"p{j}": x[:, j] for j in range(64)}), tmp_path / "d.csv")
    predict_file(tmp_path / "model.npz", tmp_path / "d.csv", tmp_path / "p.csv", config=cfg)
    with torch.no_grad():
        want = model(torch.from_numpy(x.reshape(-1, 1, 8, 8))).argmax(dim=1).tolist()
    assert [int(r[1]) for r in read(tmp_path / "p.csv")[1:]] == want
    with pytest.raises(ConfigError, match="needs the run's config"):
        predict_file(tmp_path / "model.npz", tmp_path / "d.csv", tmp_path / "p.csv")


def test_json_config_round_trip_and_same_field_errors(tmp_path) -> None:
    cfg = load_config(ROOT_EXAMPLE)
    save_config_json(cfg, tmp_path / "run.json")
    assert load_config(tmp_path / "run.json") == cfg
    raw = json.loads((tmp_path / "run.json").read_text())
    raw["train"]["lrr"] = 0.1
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    (tmp_path / "bad.toml").write_text("[train]\nlrr = 0.1\n")
    errors = []
    for name in ("bad.json", "bad.toml"):
        with pytest.raises(ConfigError) as exc:
            load_config(tmp_path / name)
        errors.append(str(exc.value).split(": ", 1)[1])
    assert errors[0] == errors[1] and errors[0].startswith("train.lrr: unknown key")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="broken.json: invalid JSON"):
        load_config(tmp_path / "broken.json")
