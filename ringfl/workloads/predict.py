"""`ringfl predict`: a saved model's predictions for the rows of a CSV file.

Output: a CSV file with the header `example_id,prediction` and one row per input row.
`example_id` is the value of `id_column` when given, else the row index (0-based).
`prediction` is P(y = 1) for binary models (logistic regression, logistic GBDT), the
predicted class for multi-class models (softmax GBDT, neural networks), and the value for
regression (squared-error GBDT).

Models: JSON tabular models (`ringfl-gbdt`, `ringfl-logistic`; features are taken from the
data by name) and the `model.npz` a peer writes (a neural network: its architecture comes
from the run's config file, `config`; the data's numeric columns other than the id are the
inputs, in order, reshaped to the dataset's input shape and taken as the model saw them,
e.g. standardized pixels).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.errors import ConfigError
from ringfl.workloads.table import Table, read_csv

_INPUT_SHAPES = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}


def _ids(table: Table, id_column: str | None) -> list[str]:
    if id_column is None:
        return [str(i) for i in range(len(table))]
    col = table.column(id_column, " (--id-column)")
    if col.dtype == np.float64:
        return [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in col]
    return [str(v) for v in col]


def predictions(
    model_path: str | os.PathLike[str],
    table: Table,
    *,
    id_column: str | None = None,
    config: str | os.PathLike[str] | None = None,
    num_classes: int = 10,
) -> tuple[list[str], np.ndarray]:
    """(example ids, predictions) of the model at `model_path` for `table`'s rows."""
    model_path = Path(model_path)
    if model_path.suffix == ".npz":
        return _ids(table, id_column), _neural(model_path, table, id_column, config, num_classes)
    from ringfl.workloads.gbdt_model import GBDTModel
    from ringfl.workloads.tasks import load_model

    model = load_model(model_path)
    x = table.matrix(list(model.features), f" (a feature of {model_path})")
    if isinstance(model, GBDTModel):
        p = model.predict(x)
        pred = p.argmax(axis=1).astype(np.float64) if model.loss == "softmax" else p
    else:
        pred = model.predict_proba(x)
    return _ids(table, id_column), pred


def _neural(
    path: Path, table: Table, id_column: str | None, config: str | os.PathLike[str] | None, k: int
) -> np.ndarray:
    import torch

    from ringfl import checkpoint
    from ringfl.algorithms.base import set_flat
    from ringfl.config import load_config
    from ringfl.models import build_model

    if config is None:
        raise ConfigError(f"{path}: a neural model needs the run's config (--config FILE)")
    cfg = load_config(Path(config))
    names = [c for c in table.names if c != id_column]
    x = table.matrix(names, " (an input column)").astype(np.float32)
    shape = _INPUT_SHAPES.get(cfg.data.dataset, (x.shape[1],))
    if int(np.prod(shape)) != x.shape[1]:
        raise ConfigError(
            f"{table.source}: {x.shape[1]} input columns, but the model takes {shape} inputs"
        )
    if cfg.model.layers is not None:
        spec: str | list[dict[str, Any]] = list(cfg.model.layers)
    elif cfg.model.name is not None:
        spec = cfg.model.name
    else:
        raise ConfigError(f"{config}: model.name or model.layers is needed")
    model = build_model(spec, shape, k, seed=0)
    flat = checkpoint.load(path).arrays.get("model")
    if flat is None:
        raise ConfigError(f"{path}: no 'model' array (not a peer's model.npz)")
    try:
        set_flat(model, flat)
    except Exception as exc:  # a size mismatch: wrong config or wrong --num-classes
        raise ConfigError(f"{path}: does not fit the config's model ({exc})") from None
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x.reshape(-1, *shape)))
    return out.argmax(dim=1).numpy().astype(np.float64)


def write_predictions(path: str | os.PathLike[str], ids: list[str], pred: np.ndarray) -> None:
    """Write `example_id,prediction` rows (integers without a decimal point)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["example_id", "prediction"])
        for i, v in zip(ids, pred, strict=True):
            v = float(v)
            w.writerow([i, str(int(v)) if v.is_integer() else repr(v)])
    os.replace(tmp, path)


def predict_file(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    id_column: str | None = None,
    config: str | os.PathLike[str] | None = None,
    num_classes: int = 10,
) -> int:
    """Predict the rows of CSV `data` with `model` into `out`; returns the row count."""
    ids, pred = predictions(
        model, read_csv(data), id_column=id_column, config=config, num_classes=num_classes
    )
    write_predictions(out, ids, pred)
    return len(ids)


__all__ = ["predict_file", "predictions", "write_predictions"]
