"""Tabular workloads vs their centralized counterparts, measured in one run.

    python experiments/tabular.py            # about a few minutes on a 2-core box
    python experiments/tabular.py --quick    # smaller: a smoke run

1. GBDT on MNIST as a table (14×14 average-pooled pixels, 196 features), binary
   (digit < 5) and 10-class, 3 parties split IID and by Dirichlet(0.5) over the digit:
   secure federated (simulated secure ring: real masking, in-memory network) vs
   centralized LightGBM with the same parameters vs each party alone (this GBDT on its
   own rows; mean over parties), all on the MNIST test set. Also: our centralized run
   (must equal the federated model bit for bit), wall time, the share of it spent in the
   secure sum, bytes sent per party; and one real-peer run (3 processes, ZeroMQ + CURVE
   on 127.0.0.1) of the binary IID case.
2. Newton logistic regression on standardized breast cancer vs statsmodels (no penalty,
   6 features) and scikit-learn (L2, all 30 features): the largest relative coefficient
   difference.
3. Analytics on the diabetes table vs pandas: the largest relative difference over
   every number of one query with every op.

Writes results/tabular.json and prints the tables (markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ringfl.partition import dirichlet, iid  # noqa: E402
from ringfl.workloads.gbdt import GBDTParams, GBDTWorkload  # noqa: E402
from ringfl.workloads.run import run_centralized, simulate_jobs  # noqa: E402

N = 3


def mnist_table(train_rows: int, test_rows: int, seed: int = 0):
    from ringfl.data.builtin import load_mnist

    train, test = load_mnist()

    def pooled(ds, rows):
        idx = np.random.default_rng(seed).permutation(len(ds))[:rows]
        raw = ds.x[idx, 0] * 0.3081 + 0.1307  # back to [0, 1] pixels
        x = raw.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(len(idx), -1)
        return np.rint(x.astype(np.float64) * 255.0), ds.y[idx]

    return pooled(train, train_rows), pooled(test, test_rows)


def lgbm_params(p: GBDTParams) -> dict:
    return {
        "n_estimators": p.max_iters,
        "learning_rate": p.learning_rate,
        "max_depth": p.max_depth,
        "num_leaves": 2**p.max_depth,
        "max_bin": p.max_bins,
        "reg_lambda": p.l2_regularization,
        "min_child_weight": p.min_child_weight,
        "min_child_samples": 1,
        "verbose": -1,
        "n_jobs": 1,
    }


def quality(pred: np.ndarray, y: np.ndarray, binary: bool) -> dict:
    from sklearn.metrics import roc_auc_score

    if binary:
        return {"accuracy": float(((pred > 0.5) == y).mean()), "auc": float(roc_auc_score(y, pred))}
    return {"accuracy": float((pred.argmax(axis=1) == y).mean()), "auc": None}


def gbdt_cell(split: str, task: str, data, p: GBDTParams, seed: int) -> dict:
    import lightgbm as lgb

    (xtr, dtr), (xte, dte) = data
    binary = task == "binary"
    ytr = (dtr < 5).astype(float) if binary else dtr.astype(float)
    yte = (dte < 5).astype(float) if binary else dte.astype(float)
    parts = iid(len(ytr), N, seed) if split == "iid" else dirichlet(dtr, N, 0.5, seed)
    row = {"split": split, "task": task, "rows": [len(q) for q in parts]}
    # secure federated
    ws = [GBDTWorkload(xtr[q], ytr[q], p) for q in parts]
    run = simulate_jobs(ws, seed=seed)
    fed = run.result
    row["federated"] = quality(fed.predict(xte), yte, binary)
    row["wall_s"] = run.seconds
    row["secure_sum_s"] = run.sum_seconds
    row["secure_sum_share"] = run.sum_seconds / run.seconds
    row["secure_sums"] = run.counts.sums
    row["level_sums_per_tree_level"] = 1
    row["bytes_per_party"] = float(np.mean(list(run.bytes_sent.values())))
    # ours, centralized on the pooled rows: must be the same model, bit for bit
    central = run_centralized([GBDTWorkload(xtr, ytr, p)])[0]
    row["bit_identical_to_centralized"] = json.dumps(central.to_json()) == json.dumps(fed.to_json())
    # LightGBM on the pooled rows, same parameters
    t0 = time.perf_counter()
    if binary:
        lg = lgb.LGBMClassifier(**lgbm_params(p)).fit(xtr, ytr)
        pl = lg.predict_proba(xte)[:, 1]
    else:
        lg = lgb.LGBMClassifier(objective="multiclass", **lgbm_params(p)).fit(xtr, ytr)
        pl = lg.predict_proba(xte)
    row["lightgbm"] = quality(pl, yte, binary)
    row["lightgbm_s"] = time.perf_counter() - t0
    # each party alone (this GBDT on its own rows), mean over parties
    alone = []
    for q in parts:
        m = run_centralized([GBDTWorkload(xtr[q], ytr[q], p)])[0]
        alone.append(quality(m.predict(xte), yte, binary))
    row["alone"] = {
        "accuracy": float(np.mean([a["accuracy"] for a in alone])),
        "auc": float(np.mean([a["auc"] for a in alone])) if binary else None,
        "per_party_accuracy": [a["accuracy"] for a in alone],
    }
    return row


def real_peer_gbdt(data, p: GBDTParams, seed: int) -> dict:
    """The binary IID case as 3 real processes (ringfl fit), each with its own CSV."""
    from ringfl import topology
    from ringfl.peer.identity import generate_for_topology
    from ringfl.workloads.table import Table, write_csv

    (xtr, dtr), _ = data
    ytr = (dtr < 5).astype(float)
    parts = iid(len(ytr), N, seed)
    root = Path(tempfile.mkdtemp(prefix="rfltab", dir="/tmp"))
    try:
        g = topology.make("ring", N)
        for i, node in enumerate(topology.peers(g)):
            g.nodes[node]["address"] = f"tcp://127.0.0.1:{24100 + i}"
        generate_for_topology(g, root / "keys")
        topology.save(g, root / "topo.json")
        names = [f"px{j}" for j in range(xtr.shape[1])]
        task = {"workload": "gbdt", "label": "y", "features": names, "gbdt": p.__dict__}
        (root / "task.json").write_text(json.dumps(task))
        for i, q in enumerate(parts):
            (root / f"party{i}").mkdir()
            cols = {n: xtr[q, j] for j, n in enumerate(names)}
            write_csv(Table.from_arrays({**cols, "y": ytr[q]}), root / f"party{i}" / "data.csv")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        procs = []
        t0 = time.perf_counter()
        for i in range(N):
            cmd = [sys.executable, "-m", "ringfl", "fit", "--task", str(root / "task.json")]
            cmd += ["--topology", str(root / "topo.json"), "--node", str(i), "--keys"]
            cmd += [str(root / "keys"), "--data", "data.csv", "-o", "model.json"]
            cmd += ["--report", "report.json"]
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=root / f"party{i}",
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
        outs = [pr.communicate(timeout=900)[0].decode() for pr in procs]
        wall = time.perf_counter() - t0
        if any(pr.returncode for pr in procs):
            raise RuntimeError("real-peer run failed:\n" + "\n".join(o[-2000:] for o in outs))
        reports = [json.loads((root / f"party{i}" / "report.json").read_text()) for i in range(N)]
        models = {(root / f"party{i}" / "model.json").read_text() for i in range(N)}
        fit = [r["fit"] for r in reports]
        return {
            "process_wall_s": wall,
            "fit_s": max(f["seconds"] for f in fit),
            "secure_sum_s": max(f["seconds_in_secure_sum"] for f in fit),
            "secure_sum_share": float(
                np.mean([f["seconds_in_secure_sum"] / f["seconds"] for f in fit])
            ),
            "bytes_per_party": float(np.mean([next(iter(f["bytes_sent"].values())) for f in fit])),
            "same_model_everywhere": len(models) == 1,
            "train_accuracy": reports[0]["train_metrics"]["accuracy"],
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def newton_rows(seed: int) -> list[dict]:
    import statsmodels.api as sm
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ringfl.workloads.newton import NewtonParams, NewtonWorkload

    x, y = load_breast_cancer(return_X_y=True)
    y = y.astype(float)
    parts = iid(len(y), N, seed)
    out = []
    for name, cols, l2 in (
        ("statsmodels Logit, 6 features, no penalty", 6, 0.0),
        ("scikit-learn, 30 features, L2 = 1", 30, 1.0),
    ):
        xs = StandardScaler().fit_transform(x[:, :cols])
        ws = [
            NewtonWorkload(x[q, :cols], y[q], NewtonParams(l2=l2, standardize=True)) for q in parts
        ]
        run = simulate_jobs(ws, seed=seed)
        m, wall = run.result, run.seconds
        t0 = time.perf_counter()
        if l2 == 0:
            ref = sm.Logit(y, sm.add_constant(xs, prepend=False)).fit(
                disp=0, method="newton", tol=1e-12
            )
            want = np.asarray(ref.params)
        else:
            sk = LogisticRegression(C=1 / l2, solver="newton-cholesky", tol=1e-12, max_iter=500)
            sk.fit(xs, y)
            want = np.concatenate([sk.coef_[0], sk.intercept_])
        ref_s = time.perf_counter() - t0
        got = np.array([*m.coef, m.intercept])
        out.append(
            {
                "case": name,
                "iterations": m.iterations,
                "max_rel_coef_diff": float(np.max(np.abs(got - want) / np.abs(want))),
                "wall_s": wall,
                "reference_s": ref_s,
                "secure_sum_share": run.sum_seconds / wall,
                "bytes_per_party": float(np.mean(list(run.bytes_sent.values()))),
            }
        )
    return out


def analytics_row(seed: int) -> dict:
    from sklearn.datasets import load_diabetes

    from ringfl.workloads.analytics import AnalyticsWorkload, parse_query
    from ringfl.workloads.table import Table

    d = load_diabetes(as_frame=True, scaled=False).frame
    d["sex"] = d["sex"].map({1.0: "F", 2.0: "M"})
    cols = ["age", "bmi", "bp", "s1", "s5", "target"]
    ops = [
        {"op": op, "column": c}
        for c in cols
        for op in ("count", "sum", "mean", "var", "std", "sem")
    ]
    ops += [{"op": "cov", "columns": cols}, {"op": "corr", "columns": cols}]
    ops += [{"op": "quantile", "column": c, "q": [0.1, 0.5, 0.9], "tol": 1e-6} for c in cols]
    ops += [
        {"op": "groupby", "by": "sex", "groups": ["F", "M"], "column": c, "name": f"by sex: {c}"}
        for c in cols
    ]
    q = parse_query({"ops": ops})
    parts = iid(len(d), N, seed)
    tables = [Table.from_arrays({c: d.iloc[p][c].to_numpy() for c in d.columns}) for p in parts]
    run = simulate_jobs([AnalyticsWorkload(q, t) for t in tables], seed=seed)
    r, wall = run.result, run.seconds
    t0 = time.perf_counter()
    ref = {}
    for c in cols:
        s = d[c]
        ref.update(
            {
                f"count({c})": s.count(),
                f"sum({c})": s.sum(),
                f"mean({c})": s.mean(),
                f"var({c})": s.var(),
                f"std({c})": s.std(),
                f"sem({c})": s.sem(),
            }
        )
        for qq in (0.1, 0.5, 0.9):
            ref[f"quantile({c})/{qq}"] = s.quantile(qq)
        g = d.groupby("sex")[c]
        for sex in ("F", "M"):
            for a, v in (("count", g.count()), ("sum", g.sum()), ("mean", g.mean())):
                ref[f"by sex: {c}/{sex}/{a}"] = v[sex]
    cov, corr = d[cols].cov().to_numpy(), d[cols].corr().to_numpy()
    ref_s = time.perf_counter() - t0
    rel, qerr = 0.0, 0.0
    for k, want in ref.items():
        if k.startswith("quantile"):
            name, qq = k.split("/")
            qerr = max(qerr, abs(r.values[name][qq] - want))
            continue
        if k.startswith("by sex"):
            name, sex, a = k.split("/")
            got = r.values[name][sex][a]
        else:
            got = r.values[k]
        rel = max(rel, abs(got - want) / max(abs(want), 1e-300))
    rel = max(
        rel, float(np.max(np.abs(np.array(r.values[f"cov({','.join(cols)})"]) - cov) / np.abs(cov)))
    )
    rel = max(
        rel,
        float(np.max(np.abs(np.array(r.values[f"corr({','.join(cols)})"]) - corr) / np.abs(corr))),
    )
    return {
        "ops": len(ops),
        "numbers_checked": len(ref) + 2 * len(cols) ** 2,
        "max_rel_diff_moments": rel,
        "max_abs_quantile_err": qerr,
        "quantile_bound": 0.5e-6,
        "secure_sums": run.counts.sums,
        "wall_s": wall,
        "pandas_s": ref_s,
        "bytes_per_party": float(np.mean(list(run.bytes_sent.values()))),
        "refusals": r.refusals,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true", help="skip the real-peer run")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "tabular.json"))
    args = ap.parse_args()
    train_rows, test_rows = (1500, 1000) if args.quick else (6000, 2000)
    p = GBDTParams(
        max_iters=10 if args.quick else 30,
        max_depth=4,
        max_bins=32,
        learning_rate=0.3,
        l2_regularization=1.0,
        min_child_weight=1e-3,
    )
    data = mnist_table(train_rows, test_rows, args.seed)
    results: dict = {"params": p.__dict__, "train_rows": train_rows, "test_rows": test_rows}
    rows = []
    for task in ("binary", "multiclass"):
        for split in ("iid", "dirichlet"):
            pp = (
                p
                if task == "binary"
                else GBDTParams(**{**p.__dict__, "loss": "softmax", "num_classes": 10})
            )
            t0 = time.perf_counter()
            rows.append(gbdt_cell(split, task, data, pp, args.seed))
            print(f"gbdt {task} {split}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results["gbdt"] = rows
    if not args.no_peers:
        results["gbdt_real_peers"] = real_peer_gbdt(data, p, args.seed)
    results["newton"] = newton_rows(args.seed)
    results["analytics"] = analytics_row(args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print_tables(results)


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def print_tables(r: dict) -> None:
    print(
        "| task | split | federated acc / AUC | LightGBM acc / AUC | alone (mean) acc / AUC | "
        "fed − LGBM (pp) | = centralized | wall s | secure sum share | MB sent / party |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x in r["gbdt"]:
        f, lg, a = x["federated"], x["lightgbm"], x["alone"]
        d = 100 * (f["accuracy"] - lg["accuracy"])
        print(
            f"| {x['task']} | {x['split']} | {pct(f['accuracy'])} / {pct(f['auc'])} | "
            f"{pct(lg['accuracy'])} / {pct(lg['auc'])} | {pct(a['accuracy'])} / {pct(a['auc'])} | "
            f"{d:+.2f} | {'yes' if x['bit_identical_to_centralized'] else 'NO'} | "
            f"{x['wall_s']:.1f} | {100 * x['secure_sum_share']:.0f}% | {x['bytes_per_party'] / 1e6:.1f} |"
        )
    if "gbdt_real_peers" in r:
        rp = r["gbdt_real_peers"]
        print(
            f"\nreal peers (binary, IID, 3 processes): fit {rp['fit_s']:.1f} s, secure sum "
            f"{100 * rp['secure_sum_share']:.0f}%, {rp['bytes_per_party'] / 1e6:.1f} MB/party, "
            f"same model everywhere: {rp['same_model_everywhere']}"
        )
    print("\n| Newton case | iterations | max rel. coef. diff | wall s | ref s | MB sent / party |")
    print("|---|---|---|---|---|---|")
    for x in r["newton"]:
        print(
            f"| {x['case']} | {x['iterations']} | {x['max_rel_coef_diff']:.1e} | "
            f"{x['wall_s']:.2f} | {x['reference_s']:.3f} | {x['bytes_per_party'] / 1e6:.2f} |"
        )
    a = r["analytics"]
    print(
        "\n| analytics | numbers | max rel. diff (moments, cov, corr, groups) | max quantile err (bound) | "
        "secure sums | wall s | pandas s | MB sent / party |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| diabetes, {a['ops']} ops | {a['numbers_checked']} | {a['max_rel_diff_moments']:.1e} | "
        f"{a['max_abs_quantile_err']:.1e} ({a['quantile_bound']:.0e}) | {a['secure_sums']} | "
        f"{a['wall_s']:.2f} | {a['pandas_s']:.3f} | {a['bytes_per_party'] / 1e6:.2f} |"
    )


if __name__ == "__main__":
    main()
