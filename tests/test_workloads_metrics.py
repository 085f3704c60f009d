"""Metrics from secure sums equal scikit-learn's on the pooled predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn import metrics as skm
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from ringfl.workloads.metrics import evaluate


def split(y, s, n=3):
    return [(y[i::n], s[i::n]) for i in range(n)]


def test_multiclass_metrics_equal_sklearn() -> None:
    x, y = load_iris(return_X_y=True)
    proba = LogisticRegression(max_iter=5000, C=0.05).fit(x, y).predict_proba(x)
    pred = proba.argmax(axis=1)
    got = evaluate(split(y, proba))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-15)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, zero_division=0)
    np.testing.assert_allclose(got["precision"], p, atol=1e-15)
    np.testing.assert_allclose(got["recall"], r, atol=1e-15)
    np.testing.assert_allclose(got["f1"], f, atol=1e-15)
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score)):
        assert got[f"{name}_macro"] == pytest.approx(fn(y, pred, average="macro"), abs=1e-15)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-15)
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba), rel=1e-12)


def test_binary_metrics_auc_ks_lift_within_stated_bounds() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    p = LogisticRegression(max_iter=5000, C=0.001).fit(x[:, :5], y).predict_proba(x[:, :5])[:, 1]
    got = evaluate(split(y, p), bins=1000, top=(0.1, 0.3))
    pred = (p > 0.5).astype(int)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-15)
    assert got["f1"][1] == pytest.approx(skm.f1_score(y, pred), abs=1e-15)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    auc = skm.roc_auc_score(y, p)
    assert abs(got["auc"] - auc) <= got["auc_error_bound"] + 1e-12
    assert got["auc_error_bound"] < 0.01
    ks = ks_2samp(p[y == 1], p[y == 0]).statistic
    assert ks - got["ks_error_bound"] - 1e-12 <= got["ks"] <= ks + 1e-12
    order = np.argsort(-p, kind="stable")
    for t in (0.1, 0.3):
        m = int(np.ceil(t * len(y)))
        exact = y[order[:m]].sum() / y.sum()
        bound = got["top_recall_error_bound"][str(t)]
        assert abs(got["top_recall"][str(t)] - exact) <= bound + 1e-12
        assert got["lift"][str(t)] == pytest.approx(got["top_recall"][str(t)] * len(y) / m)
    # finer bins: AUC converges to the exact value
    fine = evaluate(split(y, p), bins=200_000, top=())
    assert abs(fine["auc"] - auc) <= fine["auc_error_bound"] + 1e-12 < 1e-3


def test_regression_metrics_equal_sklearn() -> None:
    x, y = load_diabetes(return_X_y=True)
    pred = LinearRegression().fit(x[:, :3], y).predict(x[:, :3])
    got = evaluate(split(y, pred), task="regression")
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-12)
