"""A peer's own data, read from a file: `.npz` (arrays `x`, `y`), a pair of `.npy` files,
or CSV (one sample per row, numeric, label column configurable, optional header row).

Conventions: `x` of shape (n, h, w) is read as one-channel images (n, 1, h, w); uint8 `x`
is scaled to [0, 1]; any other numeric `x` is used as is (ringfl does not normalize user
data). `y` must hold non-negative integer class labels. Pickled arrays are never loaded.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ringfl.data.dataset import Dataset
from ringfl.data.errors import DataError

PathLike = str | Path


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file: {exc}") from None


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(
                    f"{path}: .npz needs arrays 'x' and 'y'; missing {missing}, has {z.files}"
                )
            return z["x"], z["y"]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except DataError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled object arrays), ...
        raise DataError(f"{path}: not a readable .npz file: {exc}") from None


def _npy_partner(path: Path) -> Path:
    """`foo_x.npy` -> `foo_y.npy`, `x.npy` -> `y.npy`."""
    stem = path.stem
    if stem == "x":
        return path.with_name("y.npy")
    if stem.endswith("_x"):
        return path.with_name(stem[:-2] + "_y.npy")
    raise DataError(
        f"{path}: a .npy feature file must be named '<name>_x.npy' (or 'x.npy') with the "
        "labels beside it in '<name>_y.npy', or give the two paths as a pair"
    )


def _load_csv(path: Path, label_column: int | str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV: {exc}") from None
    if not rows:
        raise DataError(f"{path}: CSV file is empty")
    header: list[str] | None = None
    try:
        [float(c) for c in rows[0]]
    except ValueError:
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: CSV has a header but no data rows")
    width = len(header) if header is not None else len(rows[0])
    if width < 2:
        raise DataError(f"{path}: CSV needs at least one feature column and a label column")
    if isinstance(label_column, str):
        if header is None:
            raise DataError(f"{path}: label column {label_column!r} given by name but no header")
        if label_column not in header:
            raise DataError(f"{path}: no column named {label_column!r} in header {header}")
        col = header.index(label_column)
    else:
        col = label_column + width if label_column < 0 else label_column
        if not 0 <= col < width:
            raise DataError(f"{path}: label column {label_column} out of range for {width} columns")
    values = np.empty((len(rows), width), dtype=np.float64)
    first_data_line = 2 if header is not None else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{path}: row {i + first_data_line} has {len(row)} columns, expected {width}"
            )
        try:
            values[i] = [float(c) for c in row]
        except ValueError:
            raise DataError(f"{path}: row {i + first_data_line} has a non-numeric value") from None
    y = values[:, col]
    x = np.delete(values, col, axis=1)
    return x, y


def _check_arrays(x: np.ndarray, y: np.ndarray, source: str, num_classes: int | None) -> Dataset:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{source}: x must be numeric, got dtype {x.dtype}")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{source}: y must be numeric class labels, got dtype {y.dtype}")
    if x.ndim < 2:
        raise DataError(f"{source}: x must have shape (n, features...), got {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{source}: y must be 1-D, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{source}: x has {len(x)} samples but y has {len(y)}")
    if len(y) == 0:
        raise DataError(f"{source}: no samples")
    xf = x.astype(np.float32)
    if x.dtype == np.uint8:
        xf /= np.float32(255.0)
    if not np.isfinite(xf).all():
        raise DataError(f"{source}: x contains NaN or infinite values")
    if xf.ndim == 3:
        xf = xf[:, None, :, :]
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise DataError(f"{source}: labels must be integers")
    yi = y.astype(np.int64)
    if yi.min() < 0:
        raise DataError(f"{source}: labels must be >= 0, found {yi.min()}")
    k = int(yi.max()) + 1 if num_classes is None else num_classes
    if yi.max() >= k:
        raise DataError(f"{source}: label {yi.max()} is not below num_classes={k}")
    return Dataset(np.ascontiguousarray(xf), yi, k, source)


def load_data_file(
    path: PathLike | Sequence[PathLike],
    *,
    label_column: int | str = -1,
    num_classes: int | None = None,
) -> Dataset:
    """Read one peer's data. `path`: a `.npz` file, a `<name>_x.npy` file (labels in
    `<name>_y.npy`), a pair `(x.npy, y.npy)`, or a `.csv` file whose `label_column` (index,
    negative from the end, or header name) holds the labels. `num_classes`: defaults to
    max label + 1. Raises `DataError` naming the file."""
    if isinstance(path, (list, tuple)):
        if len(path) != 2:
            raise DataError(f"{list(path)}: a pair of .npy paths (x, y) is needed")
        px, py = Path(path[0]), Path(path[1])
        return _check_arrays(_load_npy(px), _load_npy(py), f"{px}+{py.name}", num_classes)
    assert isinstance(path, (str, Path))
    p = Path(path)
    suffix = p.suffix.lower()
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    if suffix == ".npz":
        x, y = _load_npz(p)
    elif suffix == ".npy":
        x, y = _load_npy(p), _load_npy(_npy_partner(p))
    elif suffix == ".csv":
        x, y = _load_csv(p, label_column)
    else:
        raise DataError(f"{p}: unknown data format {suffix!r} (use .npz, .npy or .csv)")
    return _check_arrays(x, y, str(p), num_classes)
