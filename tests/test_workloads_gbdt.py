"""Histogram GBDT on secure sums: bit-identical to the centralized run of the same code,
close to LightGBM, readable JSON models, learned directions for missing values."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

from ringfl.errors import ConfigError
from ringfl.workloads.gbdt import GBDTParams, fit_gbdt
from ringfl.workloads.gbdt_model import GBDTModel


def dump(model: GBDTModel) -> str:
    return json.dumps(model.to_json())


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    x = x.copy()
    x[::7, 2] = np.nan  # some missing values
    return x, y.astype(float)


def test_one_party_with_all_rows_equals_the_centralized_run_bit_for_bit(cancer) -> None:
    x, y = cancer
    p = GBDTParams(max_iters=6, max_depth=3, max_bins=16, learning_rate=0.3)
    central = fit_gbdt([(x, y)], p, secure=False)
    empty = (x[:0], y[:0])
    federated = fit_gbdt([(x, y), empty, empty], p, secure=True)
    assert dump(federated) == dump(central)
    # and any split of the rows among parties gives the same trees
    iid = fit_gbdt([(x[i::3], y[i::3]) for i in range(3)], p, secure=True)
    assert dump(iid) == dump(central)
    assert np.array_equal(iid.predict(x), central.predict(x))
    assert len(central.trees) == 6 and any("feature" in n for n in central.trees[0].nodes)


def test_close_to_lightgbm_binary_and_softmax_and_squared() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    test = np.arange(len(y)) % 4 == 0
    common = {"max_depth": 3, "learning_rate": 0.1, "reg_lambda": 1.0, "min_child_weight": 1e-3}
    lgbm = {"num_leaves": 8, "min_child_samples": 1, "verbose": -1, **common}
    p = GBDTParams(max_iters=40, max_depth=3, max_bins=32, learning_rate=0.1)
    parts = [(x[~test][i::3], y[~test][i::3]) for i in range(3)]
    ours = fit_gbdt(parts, p)
    ref = lgb.LGBMClassifier(n_estimators=40, max_bin=32, **lgbm).fit(x[~test], y[~test])
    acc = ((ours.predict(x[test]) > 0.5) == y[test]).mean()
    assert acc >= (ref.predict(x[test]) == y[test]).mean() - 0.03

    xd, yd = load_digits(return_X_y=True)
    xd, yd = xd[:600], yd[:600]
    test = np.arange(len(yd)) % 4 == 0
    p = GBDTParams(
        loss="softmax", num_classes=10, max_iters=8, max_depth=3, max_bins=16, learning_rate=0.3
    )
    ours = fit_gbdt([(xd[~test][i::3], yd[~test][i::3]) for i in range(3)], p)
    lg = {**lgbm, "learning_rate": 0.3}
    ref = lgb.LGBMClassifier(n_estimators=8, max_bin=16, **lg).fit(xd[~test], yd[~test])
    acc = (ours.predict(xd[test]).argmax(axis=1) == yd[test]).mean()
    assert acc >= (ref.predict(xd[test]) == yd[test]).mean() - 0.04
    assert np.allclose(ours.predict(xd[test]).sum(axis=1), 1.0)

    xr, yr = load_diabetes(return_X_y=True)
    test = np.arange(len(yr)) % 4 == 0
    p = GBDTParams(loss="squared_error", max_iters=30, max_depth=3, max_bins=32)
    ours = fit_gbdt([(xr[~test][i::3], yr[~test][i::3]) for i in range(3)], p)
    central = fit_gbdt([(xr[~test], yr[~test])], p, secure=False)
    assert dump(ours) == dump(central)
    ref = lgb.LGBMRegressor(n_estimators=30, max_bin=32, **lgbm).fit(xr[~test], yr[~test])
    mse = ((ours.predict(xr[test]) - yr[test]) ** 2).mean()
    assert mse <= 1.1 * ((ref.predict(xr[test]) - yr[test]) ** 2).mean()


def test_missing_values_learn_a_default_direction() -> None:
    rng = np.random.default_rng(0)
    n = 600
    x = rng.standard_normal((n, 2))
    y = (x[:, 0] > 0.3).astype(float)
    x[y == 1, 1] = np.nan  # feature 1 is missing exactly for the positives...
    x[y == 1, 0] = np.nan  # ...and so is feature 0: only missingness tells them apart
    p = GBDTParams(max_iters=3, max_depth=1, max_bins=8, learning_rate=1.0)
    m = fit_gbdt([(x[i::3], y[i::3]) for i in range(3)], p)
    root = m.trees[0].nodes[0]
    assert "feature" in root
    # positives (missing) must land in the leaf with the larger value
    leaf = {side: m.trees[0].nodes[root[side]]["leaf"] for side in ("left", "right")}
    default = "left" if root["default_left"] else "right"
    other = "right" if default == "left" else "left"
    assert leaf[default] > leaf[other]
    assert ((m.predict(x) > 0.5) == y).mean() == 1.0


def test_model_json_round_trip_and_errors(cancer, tmp_path) -> None:
    x, y = cancer
    m = fit_gbdt([(x[i::3], y[i::3]) for i in range(3)], GBDTParams(max_iters=3, max_depth=2))
    m.save(tmp_path / "m.json")
    raw = json.loads((tmp_path / "m.json").read_text())
    assert raw["format"] == "ringfl-gbdt" and raw["loss"] == "logistic"
    back = GBDTModel.from_json(raw)
    assert np.array_equal(back.predict(x), m.predict(x))
    raw["trees"][0]["nodes"][0] = {"feature": 1}
    with pytest.raises(ConfigError, match=r"trees\[0\].nodes\[0\]"):
        GBDTModel.from_json(raw)
    with pytest.raises(ConfigError, match="gbdt.max_depht: unknown key"):
        GBDTParams.from_dict({"max_depht": 3})
    with pytest.raises(ConfigError, match="loss: must be one of"):
        GBDTParams.from_dict({"loss": "hinge"})


def test_greedy_cuts_keep_bins_for_the_rest_of_a_heavy_value() -> None:
    from ringfl.workloads.gbdt import greedy_cuts

    uppers = np.arange(1.0, 101.0)  # sketch bins [0,1), [1,2), ..., [99,100)
    counts = np.full(100, 10.0)
    counts[0] = 10_000.0  # most rows are zero (like an image's background)
    cuts = greedy_cuts(uppers, counts, 16)
    assert cuts[0] == 1.0  # the heavy value is a bin of its own
    assert len(cuts) == 15  # and the other 15 bins share the remaining 99 values
    sizes = np.diff(np.concatenate([cuts, [100.0]]))  # values per bin above the zeros
    assert sizes.max() - sizes.min() <= 1
