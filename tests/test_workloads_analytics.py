"""Secure federated analytics equals pandas on the pooled table; small cells are refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from ringfl.errors import ConfigError
from ringfl.workloads.analytics import AnalyticsWorkload, analyze, load_query, parse_query
from ringfl.workloads.run import simulate_jobs
from ringfl.workloads.table import Table, read_csv, write_csv


def tables_of(frame: pd.DataFrame, n: int) -> list[Table]:
    return [
        Table.from_arrays({c: frame.iloc[i::n][c].to_numpy() for c in frame.columns})
        for i in range(n)
    ]


def close(a: float, b: float, rel: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    d = load_diabetes(as_frame=True, scaled=False).frame
    d["sex"] = d["sex"].map({1.0: "F", 2.0: "M"})
    d.loc[d.index[::17], "bmi"] = np.nan  # missing values are skipped, as pandas does
    return d


QUERY = {
    "min_count": 10,
    "ops": [
        {"op": "count"},
        {"op": "count", "column": "bmi"},
        {"op": "sum", "column": "target"},
        {"op": "mean", "column": "bmi"},
        {"op": "var", "column": "bmi"},
        {"op": "std", "column": "bp"},
        {"op": "sem", "column": "s5"},
        {"op": "cov", "columns": ["age", "bmi", "bp"]},
        {"op": "corr", "columns": ["age", "bmi", "bp", "target"]},
        {"op": "histogram", "column": "age", "bins": 5, "range": [19, 79]},
        {"op": "quantile", "column": "bmi", "q": [0.0, 0.1, 0.25, 0.5, 0.9, 1.0], "tol": 1e-7},
        {"op": "median", "column": "target"},
        {"op": "groupby", "by": "sex", "groups": ["F", "M"], "column": "target"},
    ],
}


def test_analytics_equals_pandas_on_diabetes(diabetes: pd.DataFrame) -> None:
    d = diabetes
    parties = [AnalyticsWorkload(parse_query(QUERY), t) for t in tables_of(d, 3)]
    run = simulate_jobs(parties, seed=1)
    results = run.results
    r = results[0]
    assert all(x.values == r.values for x in results)  # every party ends with the same answer
    v = r.values
    assert not r.refusals
    assert v["count()"] == len(d) and v["count(bmi)"] == d.bmi.count()
    assert close(v["sum(target)"], d.target.sum())
    assert close(v["mean(bmi)"], d.bmi.mean())
    assert close(v["var(bmi)"], d.bmi.var())
    assert close(v["std(bp)"], d.bp.std())
    assert close(v["sem(s5)"], d.s5.sem())
    np.testing.assert_allclose(v["cov(age,bmi,bp)"], d[["age", "bmi", "bp"]].cov(), rtol=1e-12)
    cols = ["age", "bmi", "bp", "target"]
    np.testing.assert_allclose(v["corr(age,bmi,bp,target)"], d[cols].corr(), rtol=1e-12)
    counts, _ = np.histogram(d.age, bins=np.linspace(19, 79, 6))
    assert v["histogram(age)"]["counts"] == counts.tolist()
    for q, got in v["quantile(bmi)"].items():
        assert abs(got - d.bmi.quantile(float(q))) <= 0.5e-7 + 1e-12
    assert abs(v["median(target)"] - d.target.median()) <= 0.5e-6
    g = d.groupby("sex").target
    for sex in ("F", "M"):
        assert v["groupby(sex)"][sex]["count"] == g.count()[sex]
        assert close(v["groupby(sex)"][sex]["sum"], g.sum()[sex])
        assert close(v["groupby(sex)"][sex]["mean"], g.mean()[sex])
    assert 0 < run.counts.worst_resolution < 1e-6


def test_stable_variance_with_a_large_offset() -> None:
    # x² sums would lose every digit of the variance at offset 1e9; the agreed centre keeps them
    rng = np.random.default_rng(0)
    x = 1e9 + rng.standard_normal(300)
    frame = pd.DataFrame({"x": x})
    r = analyze(parse_query({"ops": [{"op": "var", "column": "x"}]}), tables_of(frame, 3))
    assert close(r.values["var(x)"], frame.x.var(), rel=1e-6)


def test_mnist_pixels_and_labels_equal_pandas() -> None:
    from ringfl.data.builtin import load_mnist

    train, _ = load_mnist()
    x = train.x[:1500].reshape(1500, -1)
    frame = pd.DataFrame({"p350": x[:, 350], "p400": x[:, 400], "label": train.y[:1500]})
    frame["label"] = frame.label.astype(float)
    q = {
        "ops": [
            {"op": "mean", "column": "p350"},
            {"op": "std", "column": "p400"},
            {"op": "corr", "columns": ["p350", "p400"]},
            {"op": "groupby", "by": "label", "groups": list(range(10)), "column": "p350"},
        ]
    }
    v = analyze(parse_query(q), tables_of(frame, 3)).values
    assert close(v["mean(p350)"], frame.p350.astype(np.float64).mean())
    assert close(v["std(p400)"], frame.p400.astype(np.float64).std())
    assert close(v["corr(p350,p400)"][0][1], frame.astype(np.float64).p350.corr(frame.p400))
    means = frame.astype(np.float64).groupby("label").p350.mean()
    for lab in range(10):
        assert close(v["groupby(label)"][str(lab)]["mean"], means[float(lab)], rel=1e-9)


def test_small_cells_are_refused_and_named(diabetes: pd.DataFrame) -> None:
    d = diabetes.copy()
    tables = tables_of(d, 3)
    # only party 0 has any row with sex = "X"; 12 rows of it
    tables[0].columns["sex"][:12] = "X"
    q = {
        "min_count": 10,
        "ops": [
            {"op": "groupby", "by": "sex", "groups": ["F", "M", "X"], "column": "bmi"},
            {"op": "histogram", "column": "age", "edges": [0, 22, 24, 40, 200]},
            {"op": "mean", "column": "bmi", "name": "few"},
        ],
    }
    r = analyze(parse_query(q), tables)
    assert r.values["groupby(sex)"]["X"] is None
    assert r.values["groupby(sex)"]["F"] is not None
    assert (
        "groupby(sex): cell sex=X: refused, only 1 parties contribute (fewer than 3)" in r.refusals
    )
    # ages below 22: two parties only; ages 22-23: all three, but fewer than min_count rows
    parties_young = sum(bool((t.columns["age"] < 22).any()) for t in tables)
    n_young = int(((d.age >= 22) & (d.age < 24)).sum())
    assert parties_young == 2 and 0 < n_young < 10
    counts = r.values["histogram(age)"]["counts"]
    assert (
        counts[0] is None
        and counts[1] is None
        and counts[2] == ((d.age >= 24) & (d.age < 40)).sum()
    )
    assert (
        "histogram(age): cell [0, 22): refused, only 2 parties contribute (fewer than 3)"
        in r.refusals
    )
    assert (
        f"histogram(age): cell [22, 24): refused, {n_young} rows (fewer than min_count 10)"
        in r.refusals
    )
    # min_count applies to whole columns too
    r2 = analyze(parse_query({"min_count": 1000, "ops": q["ops"][2:]}), tables)
    assert r2.values["few"] is None
    assert r2.refusals == [
        f"few: cell column bmi: refused, {d.bmi.count()} rows (fewer than min_count 1000)"
    ]
    # two parties with rows can never pass the default rule of 3 (the third has none)
    empty = Table.from_arrays({k: v[:0] for k, v in tables[2].columns.items()})
    r3 = analyze(parse_query({"ops": q["ops"][2:]}), [tables[0], tables[1], empty])
    assert r3.values["few"] is None and "only 2 parties" in r3.refusals[0]


def test_query_files_toml_and_json_and_errors(tmp_path, diabetes: pd.DataFrame) -> None:
    (tmp_path / "q.json").write_text(json.dumps(QUERY))
    toml = 'min_count = 5\n[[ops]]\nop = "mean"\ncolumn = "bmi"\nname = "m"\n'
    (tmp_path / "q.toml").write_text(toml)
    assert load_query(tmp_path / "q.json") == parse_query(QUERY)
    assert load_query(tmp_path / "q.toml").min_count == 5
    (tmp_path / "bad.toml").write_text('[[ops]]\nop = "mean"\ncolum = "bmi"\n')
    with pytest.raises(ConfigError, match=r"bad.toml: ops\[0\].colum: unknown key"):
        load_query(tmp_path / "bad.toml")
    (tmp_path / "bad.json").write_text('{"ops": [{"op": "mode", "column": "x"}]}')
    with pytest.raises(ConfigError, match=r"bad.json: ops\[0\].op: must be one of"):
        load_query(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="groups: the public list"):
        parse_query({"ops": [{"op": "groupby", "by": "sex"}]})
    t = tables_of(diabetes, 3)[0]
    with pytest.raises(ConfigError, match="no column 'nope'"):
        AnalyticsWorkload(parse_query({"ops": [{"op": "mean", "column": "nope"}]}), t)


def test_csv_round_trip(tmp_path, diabetes: pd.DataFrame) -> None:
    t = tables_of(diabetes, 3)[1]
    write_csv(t, tmp_path / "p.csv")
    back = read_csv(tmp_path / "p.csv")
    assert back.names == t.names
    for name in t.names:
        a, b = t.columns[name], back.columns[name]
        if a.dtype == np.float64:
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
        else:
            assert list(a) == list(b)
