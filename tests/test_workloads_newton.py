"""Newton logistic regression on secure sums equals scikit-learn and statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ringfl.workloads.newton import LogisticModel, NewtonParams, NewtonWorkload
from ringfl.workloads.run import simulate_jobs


@pytest.fixture(scope="module")
def cancer():
    x, y = load_breast_cancer(return_X_y=True)
    return x, y.astype(float)


def fit(x, y, params, n=3):
    ws = [NewtonWorkload(x[i::n], y[i::n], params) for i in range(n)]
    models = simulate_jobs(ws).results
    assert all(m.coef == models[0].coef for m in models)
    return models[0]


def test_l2_newton_matches_sklearn_on_standardized_breast_cancer(cancer) -> None:
    x, y = cancer
    m = fit(x, y, NewtonParams(l2=0.5, standardize=True, tol=1e-10))
    assert m.converged
    xs = StandardScaler().fit_transform(x)
    sk = LogisticRegression(C=2.0, solver="newton-cholesky", tol=1e-12, max_iter=500).fit(xs, y)
    want = np.concatenate([sk.coef_[0], sk.intercept_])
    got = np.array([*m.coef, m.intercept])
    assert np.max(np.abs(got - want) / np.abs(want)) < 1e-4
    np.testing.assert_allclose(m.predict_proba(x), sk.predict_proba(xs)[:, 1], atol=1e-6)


def test_unpenalised_newton_matches_statsmodels(cancer) -> None:
    x, y = cancer
    x = x[:, :6]  # the full set is (nearly) separable without a penalty
    m = fit(x, y, NewtonParams(standardize=True))
    xs = StandardScaler().fit_transform(x)
    res = sm.Logit(y, sm.add_constant(xs, prepend=False)).fit(disp=0, method="newton", tol=1e-12)
    got = np.array([*m.coef, m.intercept])
    assert np.max(np.abs(got - res.params) / np.abs(res.params)) < 1e-4
    assert m.history[-1]["objective"] == pytest.approx(res.llf, rel=1e-9)


def test_no_intercept_and_max_iter_and_model_json(cancer, tmp_path) -> None:
    x, y = cancer
    xs = StandardScaler().fit_transform(x)[:, :4]
    m = fit(xs, y, NewtonParams(fit_intercept=False, max_iter=2))
    assert m.iterations == 2 and not m.converged and m.intercept == 0.0
    m.save(tmp_path / "m.json")
    import json

    back = LogisticModel.from_json(json.loads((tmp_path / "m.json").read_text()))
    assert back == m
