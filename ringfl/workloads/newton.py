"""Newton logistic regression (Delta's logit task) on the secure sum.

Every iteration each party sends one vector: the gradient of the log-likelihood
Σ x_i (y_i − p_i) (d + 1 entries with the intercept), the upper triangle of the Hessian
Σ p_i (1 − p_i) x_i x_iᵀ, the log-likelihood and the row count. Every party then takes
the same Newton step on the L2-penalised objective

    maximise  Σ_i [y_i log p_i + (1 − y_i) log(1 − p_i)] − (l2 / 2) ‖w‖²

(the intercept is not penalised; l2 = 1/C of scikit-learn's LogisticRegression), and
stops when the largest coordinate of the step is at most `tol` or after `max_iter` steps.

`standardize = true` first agrees on each feature's pooled mean and standard deviation
(two secure sums, ddof = 0 as scikit-learn's StandardScaler) and fits on standardized
features; the model keeps them and applies them when predicting.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.errors import ConfigError, RingflError
from ringfl.workloads.spec import check_keys, number

MODEL_FORMAT = "ringfl-logistic"


@dataclass(frozen=True)
class NewtonParams:
    """Fit settings (a training task's `[newton]` table)."""

    l2: float = 0.0
    fit_intercept: bool = True
    tol: float = 1e-10
    max_iter: int = 100
    standardize: bool = False

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "task", where: str = "newton."
    ) -> NewtonParams:
        check_keys(raw, {f.name for f in cls.__dataclass_fields__.values()}, where, source)
        p = cls(**raw)
        number(p.l2, f"{where}l2", source, lo=0)
        number(p.tol, f"{where}tol", source, lo=0)
        number(p.max_iter, f"{where}max_iter", source, lo=1, integer=True)
        for b in ("fit_intercept", "standardize"):
            if not isinstance(getattr(p, b), bool):
                raise ConfigError(f"{source}: {where}{b}: must be true or false")
        return p


@dataclass
class LogisticModel:
    """A fitted logistic regression: p = σ(intercept + coef · (x − mean) / scale)."""

    features: list[str]
    coef: list[float]
    intercept: float
    mean: list[float] | None = None
    scale: list[float] | None = None
    iterations: int = 0
    converged: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def decision(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.mean is not None and self.scale is not None:
            x = (x - np.array(self.mean)) / np.array(self.scale)
        return x @ np.array(self.coef) + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(y = 1) per row."""
        return _sigmoid(self.decision(x))

    def to_json(self) -> dict[str, Any]:
        return {"format": MODEL_FORMAT, "version": 1, **asdict(self)}

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str = "model") -> LogisticModel:
        if raw.get("format") != MODEL_FORMAT:
            raise ConfigError(f"{source}: not a {MODEL_FORMAT} model")
        body = {k: v for k, v in raw.items() if k not in ("format", "version")}
        check_keys(body, set(cls.__dataclass_fields__), "", source)
        m = cls(**body)
        if len(m.coef) != len(m.features):
            raise ConfigError(
                f"{source}: coef has {len(m.coef)} entries for {len(m.features)} features"
            )
        return m


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


class NewtonWorkload:
    """One party's Newton logistic regression over its rows `x` (n × d) and 0/1 labels `y`."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, params: NewtonParams, features: list[str] | None = None
    ) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ConfigError(f"newton: x must be (n, d) and y (n,), got {x.shape} and {y.shape}")
        if np.isnan(x).any() or not np.isin(y, (0.0, 1.0)).all():
            raise ConfigError("newton: features must be complete (no missing) and labels 0/1")
        self.params = params
        self.features = features or [f"x{i}" for i in range(x.shape[1])]
        self.raw_x = x
        self.y = y
        self.d = x.shape[1]
        self.k = self.d + (1 if params.fit_intercept else 0)
        self.beta = np.zeros(self.k)
        self.iterations = 0
        self.converged = False
        self.history: list[dict[str, float]] = []
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.stage = "mean" if params.standardize else "fit"
        self._design()
        self._tri = np.triu_indices(self.k)

    def _design(self) -> None:
        x = self.raw_x
        if self.mean is not None and self.scale is not None:
            x = (x - self.mean) / self.scale
        self.x = np.column_stack([x, np.ones(len(x))]) if self.params.fit_intercept else x

    @property
    def done(self) -> bool:
        return self.stage == "done"

    def statistics(self) -> np.ndarray:
        if self.stage == "mean":
            return np.concatenate([[len(self.raw_x)], self.raw_x.sum(axis=0)])
        if self.stage == "var":
            assert self.mean is not None
            d = self.raw_x - self.mean
            return (d * d).sum(axis=0)
        z = self.x @ self.beta
        p = _sigmoid(z)
        g = self.x.T @ (self.y - p)
        h = (self.x * (p * (1 - p))[:, None]).T @ self.x
        ll = float(np.sum(self.y * _log_sigmoid(z) + (1 - self.y) * _log_sigmoid(-z)))
        return np.concatenate([g, h[self._tri], [ll, len(self.y)]])

    def apply(self, total: np.ndarray) -> None:
        if self.stage == "mean":
            self.n = float(total[0])
            self.mean = total[1:] / self.n
            self.stage = "var"
            return
        if self.stage == "var":
            sd = np.sqrt(total / self.n)
            self.scale = np.where(sd > 0, sd, 1.0)
            self._design()
            self.stage = "fit"
            return
        k = self.k
        g = total[:k]
        h = np.zeros((k, k))
        h[self._tri] = total[k : k + len(self._tri[0])]
        h = h + np.triu(h, 1).T
        ll = float(total[-2])
        pen = np.full(k, self.params.l2)
        if self.params.fit_intercept:
            pen[-1] = 0.0
        g = g - pen * self.beta
        h = h + np.diag(pen)
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            raise RingflError(
                "newton: the Hessian is singular (perfectly separable or constant features?); "
                "set newton.l2 > 0"
            ) from None
        objective = ll - 0.5 * float(np.sum(pen * self.beta**2))
        self.beta = self.beta + step
        self.iterations += 1
        size = float(np.max(np.abs(step))) if k else 0.0
        self.history.append({"iteration": self.iterations, "objective": objective, "step": size})
        if size <= self.params.tol:
            self.converged = True
        if not math.isfinite(size):
            raise RingflError("newton: the step is not finite (diverged); set newton.l2 > 0")
        if self.converged or self.iterations >= self.params.max_iter:
            self.stage = "done"

    def result(self) -> LogisticModel:
        coef = self.beta[: self.d]
        return LogisticModel(
            features=list(self.features),
            coef=[float(c) for c in coef],
            intercept=float(self.beta[-1]) if self.params.fit_intercept else 0.0,
            mean=None if self.mean is None else [float(v) for v in self.mean],
            scale=None if self.scale is None else [float(v) for v in self.scale],
            iterations=self.iterations,
            converged=self.converged,
            history=self.history,
        )


__all__ = ["LogisticModel", "NewtonParams", "NewtonWorkload"]
