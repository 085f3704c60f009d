"""The boosted-tree model: readable JSON, and prediction on raw features.

    {"format": "ringfl-gbdt", "version": 1, "loss": "logistic", "num_classes": 2,
     "features": ["x0", ...], "base_score": [-0.1], "learning_rate": 0.1,
     "trees": [{"class": 0, "nodes": [
         {"feature": 3, "threshold": 0.5, "default_left": true, "left": 1, "right": 2,
          "gain": 12.3, "hessian": 40.0},
         {"leaf": -0.02, "hessian": 20.0},
         {"leaf": 0.03, "hessian": 20.0}]}]}

A row goes left at a split when x[feature] < threshold, and to `default_left` when the
value is missing (NaN). The raw score of class k is base_score[k] plus the leaves of the
class-k trees; P(y = 1) = σ(raw) for `logistic`, softmax over classes for `softmax`, and
the prediction is the raw score for `squared_error`. Floats are written with Python's
repr, so a saved model predicts bit for bit as the one in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.errors import ConfigError

MODEL_FORMAT = "ringfl-gbdt"
LOSSES = ("logistic", "squared_error", "softmax")


@dataclass
class Tree:
    """One regression tree; `nodes[0]` is the root."""

    cls: int
    nodes: list[dict[str, Any]]

    def leaf_values(self, x: np.ndarray) -> np.ndarray:
        """The leaf value reached by every row of x (n × features)."""
        n = x.shape[0]
        at = np.zeros(n, dtype=np.int64)
        out = np.zeros(n)
        todo = np.arange(n)
        while todo.size:
            nodes = at[todo]
            still = []
            for node_id in np.unique(nodes):
                rows = todo[nodes == node_id]
                nd = self.nodes[int(node_id)]
                if "leaf" in nd:
                    out[rows] = nd["leaf"]
                    continue
                v = x[rows, nd["feature"]]
                left = v < nd["threshold"]
                miss = np.isnan(v)
                left[miss] = nd["default_left"]
                at[rows] = np.where(left, nd["left"], nd["right"])
                still.append(rows)
            todo = np.concatenate(still) if still else np.zeros(0, dtype=np.int64)
        return out


@dataclass
class GBDTModel:
    loss: str
    num_classes: int
    features: list[str]
    base_score: list[float]
    learning_rate: float
    trees: list[Tree] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> int:
        return self.num_classes if self.loss == "softmax" else 1

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        """n × outputs raw scores (before the link function)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ConfigError(
                f"gbdt model: expected {len(self.features)} feature columns, got shape {x.shape}"
            )
        out = np.tile(np.asarray(self.base_score, dtype=np.float64), (x.shape[0], 1))
        for t in self.trees:
            out[:, t.cls] += t.leaf_values(x)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(y = 1) (logistic), class probabilities n × K (softmax), or values (squared)."""
        raw = self.raw_score(x)
        if self.loss == "logistic":
            return 1.0 / (1.0 + np.exp(-raw[:, 0]))
        if self.loss == "softmax":
            z = raw - raw.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return raw[:, 0]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "version": 1,
            "loss": self.loss,
            "num_classes": self.num_classes,
            "features": self.features,
            "base_score": self.base_score,
            "learning_rate": self.learning_rate,
            "params": self.params,
            "trees": [{"class": t.cls, "nodes": t.nodes} for t in self.trees],
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str = "model") -> GBDTModel:
        if raw.get("format") != MODEL_FORMAT:
            raise ConfigError(f"{source}: not a {MODEL_FORMAT} model")
        try:
            loss = raw["loss"]
            if loss not in LOSSES:
                raise ConfigError(f"{source}: loss: must be one of {', '.join(LOSSES)}")
            model = cls(
                loss=loss,
                num_classes=int(raw["num_classes"]),
                features=[str(f) for f in raw["features"]],
                base_score=[float(b) for b in raw["base_score"]],
                learning_rate=float(raw["learning_rate"]),
                params=dict(raw.get("params", {})),
                trees=[Tree(int(t["class"]), list(t["nodes"])) for t in raw["trees"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed gbdt model ({exc!r})") from None
        for i, t in enumerate(model.trees):
            for j, nd in enumerate(t.nodes):
                ok = "leaf" in nd or {
                    "feature",
                    "threshold",
                    "default_left",
                    "left",
                    "right",
                } <= set(nd)
                if not ok:
                    raise ConfigError(
                        f"{source}: trees[{i}].nodes[{j}] is neither a leaf nor a split"
                    )
        return model


def load_model_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: model file not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a JSON model: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a JSON model")
    return raw


__all__ = ["LOSSES", "MODEL_FORMAT", "GBDTModel", "Tree", "load_model_json"]
