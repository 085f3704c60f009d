"""Training tasks for tabular models (Newton logistic regression, GBDT), run by
`ringfl fit` in the simulator or as one real party, and the model files they write.

Task file (TOML or JSON):

    workload = "gbdt"              # newton | gbdt
    label = "target"               # the label column
    features = ["age", "bmi"]      # optional: default every column but label and id_column
    id_column = "id"               # optional: a column that is neither feature nor label

    [gbdt]                         # GBDTParams (ringfl.workloads.gbdt)
    max_iters = 50
    max_depth = 4

    [newton]                       # NewtonParams (ringfl.workloads.newton)
    l2 = 1.0

After fitting, the parties evaluate the model on their own training rows with the secure
metrics workload (`ringfl.workloads.metrics`), so the report holds pooled training metrics
that no party could compute alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.errors import ConfigError
from ringfl.workloads.gbdt import GBDTParams, GBDTWorkload
from ringfl.workloads.gbdt_model import GBDTModel, load_model_json
from ringfl.workloads.metrics import MetricsWorkload
from ringfl.workloads.newton import LogisticModel, NewtonParams, NewtonWorkload
from ringfl.workloads.spec import check_keys, load_spec
from ringfl.workloads.table import Table

WORKLOADS = ("newton", "gbdt")


@dataclass(frozen=True)
class Task:
    workload: str
    label: str
    features: tuple[str, ...] | None = None
    id_column: str | None = None
    newton: NewtonParams = field(default_factory=NewtonParams)
    gbdt: GBDTParams = field(default_factory=GBDTParams)
    source: str = "task"

    def feature_names(self, table: Table) -> list[str]:
        if self.features is not None:
            return list(self.features)
        skip = {self.label, self.id_column}
        return [c for c in table.names if c not in skip]

    def data(self, table: Table) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(x, y, feature names) of a party's table."""
        names = self.feature_names(table)
        where = f" (task {self.source})"
        return table.matrix(names, where), table.numeric(self.label, where), names

    def workload_for(self, table: Table) -> NewtonWorkload | GBDTWorkload:
        x, y, names = self.data(table)
        if self.workload == "newton":
            return NewtonWorkload(x, y, self.newton, names)
        return GBDTWorkload(x, y, self.gbdt, names)


def parse_task(raw: dict[str, Any], source: str = "task") -> Task:
    check_keys(raw, {"workload", "label", "features", "id_column", "newton", "gbdt"}, "", source)
    w = raw.get("workload")
    if w not in WORKLOADS:
        raise ConfigError(f"{source}: workload: must be one of {', '.join(WORKLOADS)}; got {w!r}")
    label = raw.get("label")
    if not isinstance(label, str) or not label:
        raise ConfigError(f"{source}: label: the label column's name is needed")
    feats = raw.get("features")
    if feats is not None and (
        not isinstance(feats, list) or not all(isinstance(f, str) for f in feats)
    ):
        raise ConfigError(f"{source}: features: must be a list of column names")
    idc = raw.get("id_column")
    if idc is not None and not isinstance(idc, str):
        raise ConfigError(f"{source}: id_column: must be a column name")
    for sec in ("newton", "gbdt"):
        if sec in raw and not isinstance(raw[sec], dict):
            raise ConfigError(f"{source}: {sec}: must be a table")
    return Task(
        workload=w,
        label=label,
        features=None if feats is None else tuple(feats),
        id_column=idc,
        newton=NewtonParams.from_dict(raw.get("newton", {}), source),
        gbdt=GBDTParams.from_dict(raw.get("gbdt", {}), source),
        source=source,
    )


def load_task(path: str | os.PathLike[str]) -> Task:
    return parse_task(load_spec(path), str(path))


Model = LogisticModel | GBDTModel


class FitThenMetrics:
    """One party's `ringfl fit` as one statistics job: fit the model (Newton or GBDT),
    then the secure metrics of the fitted model on the party's own rows, in one run of
    the engine (one start-up, one session). `result()`: (model, metrics)."""

    def __init__(self, task: Task, table: Table) -> None:
        self.fit: NewtonWorkload | GBDTWorkload = task.workload_for(table)
        self.x, self.y, _ = task.data(table)
        self.metrics: MetricsWorkload | None = None

    def _current(self) -> NewtonWorkload | GBDTWorkload | MetricsWorkload:
        if self.metrics is None and self.fit.done:
            self.metrics = metrics_workload(self.fit.result(), self.x, self.y)
        return self.fit if self.metrics is None else self.metrics

    @property
    def done(self) -> bool:
        w = self._current()
        return w is self.metrics and w.done

    def statistics(self) -> np.ndarray:
        return self._current().statistics()

    def scale_exponent(self) -> int | None:
        w = self._current()
        return w.scale_exponent() if isinstance(w, GBDTWorkload) else None

    def apply(self, total: np.ndarray) -> None:
        self._current().apply(total)

    def result(self) -> tuple[Model, dict[str, Any]]:
        assert self.metrics is not None
        return self.fit.result(), self.metrics.result()

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per iteration: the Newton objective and step, or the GBDT training loss."""
        return list(self.fit.history)


def metrics_workload(model: Model, x: np.ndarray, y: np.ndarray) -> MetricsWorkload:
    """The secure metrics of `model` on a party's rows."""
    if isinstance(model, LogisticModel):
        return MetricsWorkload(y, model.predict_proba(x))
    if model.loss == "squared_error":
        return MetricsWorkload(y, model.predict(x), task="regression")
    return MetricsWorkload(y, model.predict(x), num_classes=model.num_classes)


def load_model(path: str | os.PathLike[str]) -> Model:
    """A tabular model file (JSON): a GBDT or a logistic regression."""
    raw = load_model_json(path)
    fmt = raw.get("format")
    if fmt == "ringfl-gbdt":
        return GBDTModel.from_json(raw, str(path))
    if fmt == "ringfl-logistic":
        return LogisticModel.from_json(raw, str(path))
    raise ConfigError(f"{path}: unknown model format {fmt!r} (ringfl-gbdt, ringfl-logistic)")


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


__all__ = [
    "FitThenMetrics",
    "Task",
    "load_model",
    "load_task",
    "metrics_workload",
    "parse_task",
    "write_json",
]
