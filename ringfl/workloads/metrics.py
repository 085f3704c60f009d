"""Model-quality metrics across parties, from secure sums only: no party reveals its
labels or scores, only pooled counts and sums do.

Classification (`task = "classification"`, scores: n × K probabilities, or n values of
P(y = 1) for two classes): one secure sum of the K × K confusion matrix, the summed log
loss and the row count gives accuracy, precision / recall / F1 per class and macro
(zero where undefined, as scikit-learn's zero_division=0), the confusion matrix and the
log loss (probabilities clipped to [eps, 1 − eps], eps = float64 machine epsilon).

Binary (two classes): the same sum also carries per-class histograms of P(y = 1) over
`bins` equal bins of [0, 1]. From them:
- AUC: pairs in different bins are ordered exactly; pairs in one bin count 1/2, so
  |AUC − exact AUC| ≤ auc_error_bound = ½ Σ_b pos_b neg_b / (P N) (reported; 0 when no
  bin holds both classes).
- KS: the largest |TPR − FPR| over the bin edges; exact KS − ks_error_bound ≤ KS ≤ exact
  KS, with ks_error_bound = max_b max(pos_b / P, neg_b / N).
- top-k% recall and lift (k in `top`): the positives among the ⌈k n⌉ highest scores,
  interpolated within the boundary bin (error ≤ that bin's positives / P, reported).

Regression (`task = "regression"`, scores: predictions): two secure sums give MSE, RMSE,
MAE and R² (R² uses the securely agreed mean of y as centre).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ringfl.errors import ConfigError

TASKS = ("classification", "regression")


class MetricsWorkload:
    """One party's side of the metrics of `scores` against its labels `y`."""

    def __init__(
        self,
        y: np.ndarray,
        scores: np.ndarray,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        bins: int = 10_000,
        top: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2),
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"metrics: task must be one of {', '.join(TASKS)}, got {task!r}")
        self.task = task
        y = np.asarray(y)
        s = np.asarray(scores, dtype=np.float64)
        if len(s) != len(y):
            raise ConfigError(f"metrics: {len(y)} labels but {len(s)} predictions")
        if not np.isfinite(s).all():
            raise ConfigError("metrics: predictions must be finite")
        self.step = 0
        self.out: dict[str, Any] = {}
        if task == "regression":
            self.y: np.ndarray = y.astype(np.float64)
            self.pred = s.reshape(len(s))
            return
        if s.ndim == 1:
            s = np.column_stack([1.0 - s, s])
        k = s.shape[1] if num_classes is None else int(num_classes)
        if s.shape[1] != k or k < 2:
            raise ConfigError(f"metrics: scores have {s.shape[1]} columns for {k} classes")
        yi = y.astype(np.int64)
        if len(yi) and (yi.min() < 0 or yi.max() >= k or not np.array_equal(yi, y)):
            raise ConfigError(f"metrics: labels must be integers in [0, {k})")
        self.k, self.y, self.proba = k, yi, s
        self.bins = int(bins)
        self.top = tuple(float(t) for t in top)
        for t in self.top:
            if not 0 < t <= 1:
                raise ConfigError(f"metrics: top fractions must be in (0, 1], got {t}")

    @property
    def done(self) -> bool:
        return self.step >= (2 if self.task == "regression" else 1)

    # -- statistics ---------------------------------------------------------------------

    def statistics(self) -> np.ndarray:
        if self.task == "regression":
            if self.step == 0:
                r = self.y - self.pred
                return np.array([len(self.y), self.y.sum(), (r * r).sum(), np.abs(r).sum()])
            d = self.y - self.out["_mean_y"]
            return np.array([(d * d).sum()])
        k = self.k
        pred = (
            (self.proba[:, 1] > 0.5).astype(np.int64) if k == 2 else np.argmax(self.proba, axis=1)
        )
        conf = np.zeros((k, k))
        np.add.at(conf, (self.y, pred), 1.0)
        eps = np.finfo(np.float64).eps
        p_true = np.clip(self.proba[np.arange(len(self.y)), self.y], eps, 1 - eps)
        parts = [conf.ravel(), [-np.log(p_true).sum(), len(self.y)]]
        if k == 2:
            b = np.minimum(
                (np.clip(self.proba[:, 1], 0, 1) * self.bins).astype(np.int64), self.bins - 1
            )
            parts += [
                np.bincount(b[self.y == 1], minlength=self.bins),
                np.bincount(b[self.y == 0], minlength=self.bins),
            ]
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])

    def apply(self, total: np.ndarray) -> None:
        if self.task == "regression":
            if self.step == 0:
                n, sy, sse, sae = total
                self.out.update(
                    n=float(n), mse=sse / n, rmse=math.sqrt(sse / n), mae=sae / n, _sse=sse
                )
                self.out["_mean_y"] = sy / n
            else:
                sst = float(total[0])
                self.out["r2"] = 1.0 - self.out["_sse"] / sst if sst > 0 else math.nan
            self.step += 1
            return
        k = self.k
        conf = np.rint(total[: k * k]).reshape(k, k)
        loss, n = total[k * k], total[k * k + 1]
        tp = np.diag(conf)
        col, row = conf.sum(axis=0), conf.sum(axis=1)
        prec = np.divide(tp, col, out=np.zeros(k), where=col > 0)
        rec = np.divide(tp, row, out=np.zeros(k), where=row > 0)
        f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(k), where=(prec + rec) > 0)
        self.out.update(
            n=float(n),
            accuracy=float(tp.sum() / n),
            precision=prec.tolist(),
            recall=rec.tolist(),
            f1=f1.tolist(),
            precision_macro=float(prec.mean()),
            recall_macro=float(rec.mean()),
            f1_macro=float(f1.mean()),
            confusion_matrix=conf.astype(int).tolist(),
            log_loss=float(loss / n),
        )
        if k == 2:
            at = k * k + 2
            pos = np.rint(total[at : at + self.bins])
            neg = np.rint(total[at + self.bins : at + 2 * self.bins])
            self.out.update(_binary(pos, neg, self.top))
        self.step += 1

    def result(self) -> dict[str, Any]:
        return {k: v for k, v in self.out.items() if not k.startswith("_")}


def _binary(pos: np.ndarray, neg: np.ndarray, top: tuple[float, ...]) -> dict[str, Any]:
    """AUC, KS and top-k% recall / lift from per-class score histograms (ascending bins)."""
    P, N = pos.sum(), neg.sum()
    out: dict[str, Any] = {}
    if P == 0 or N == 0:
        return {"auc": None, "ks": None}
    pos_above = np.cumsum(pos[::-1])[::-1] - pos  # positives in higher bins
    auc = (np.sum(neg * pos_above) + 0.5 * np.sum(pos * neg)) / (P * N)
    out["auc"] = float(auc)
    out["auc_error_bound"] = float(0.5 * np.sum(pos * neg) / (P * N))
    tpr = np.cumsum(pos[::-1])[::-1] / P  # share with score in this bin or above
    fpr = np.cumsum(neg[::-1])[::-1] / N
    out["ks"] = float(np.max(np.abs(tpr - fpr)))
    out["ks_error_bound"] = float(max(np.max(pos / P), np.max(neg / N)))
    n = P + N
    both = (pos + neg)[::-1]  # descending score
    cum = np.cumsum(both)
    pos_desc = pos[::-1]
    recalls, lifts, bounds = {}, {}, {}
    for t in top:
        m = math.ceil(t * n)
        b = int(np.searchsorted(cum, m))  # the bin where the top m ends
        before = cum[b] - both[b]
        hit = pos_desc[:b].sum() + pos_desc[b] * (m - before) / both[b]
        recalls[str(t)] = float(hit / P)
        lifts[str(t)] = float((hit / m) / (P / n))
        bounds[str(t)] = float(pos_desc[b] / P)
    out["top_recall"] = recalls
    out["lift"] = lifts
    out["top_recall_error_bound"] = bounds
    return out


def evaluate(
    parties: list[tuple[np.ndarray, np.ndarray]], *, secure: bool = True, seed: int = 0, **kw: Any
) -> dict[str, Any]:
    """Metrics of every party's (labels, scores) in this process, with the simulated
    secure ring (or the plain sum when `secure` is False)."""
    from ringfl.workloads.run import run_jobs

    ws = [MetricsWorkload(y, s, **kw) for y, s in parties]
    out: dict[str, Any] = run_jobs(ws, secure=secure, seed=seed)[0]
    return out


__all__ = ["TASKS", "MetricsWorkload", "evaluate"]
