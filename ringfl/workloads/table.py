"""A party's table: named columns read from a CSV file (with a header row).

A column whose every non-empty cell parses as a number is float64 (missing cells: NaN);
any other column keeps its text (missing cells: ""). Empty cells and NA, NaN, null
(any case) count as missing. Errors name the file, the row and the column.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfl.errors import ConfigError

MISSING = {"", "na", "nan", "null", "none", "n/a"}


@dataclass(frozen=True)
class Table:
    """Columns by name, all of one length; `source` names the file in messages."""

    columns: dict[str, np.ndarray]
    source: str = "table"

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def numeric(self, name: str, where: str = "") -> np.ndarray:
        """The float64 column `name`; a clear error if it is missing or not numeric."""
        col = self.column(name, where)
        if col.dtype != np.float64:
            raise ConfigError(f"{self.source}: column {name!r}{where} is not numeric")
        return col

    def column(self, name: str, where: str = "") -> np.ndarray:
        if name not in self.columns:
            shown = ", ".join(self.names[:20])
            raise ConfigError(f"{self.source}: no column {name!r}{where} (columns: {shown})")
        return self.columns[name]

    def matrix(self, names: list[str], where: str = "") -> np.ndarray:
        """The float64 matrix (rows × len(names)) of numeric columns."""
        if not names:
            return np.zeros((len(self), 0))
        return np.column_stack([self.numeric(n, where) for n in names])

    @classmethod
    def from_arrays(cls, columns: dict[str, np.ndarray], source: str = "table") -> Table:
        out = {}
        n = None
        for k, v in columns.items():
            a = np.asarray(v)
            a = a.astype(np.float64) if a.dtype.kind in "biuf" else a.astype(str)
            if n is not None and len(a) != n:
                raise ConfigError(f"{source}: column {k!r} has {len(a)} rows, expected {n}")
            n = len(a)
            out[str(k)] = a
        return cls(out, source)


def _parse(cell: str) -> float | None:
    s = cell.strip()
    if s.lower() in MISSING:
        return float("nan")
    try:
        return float(s)
    except ValueError:
        return None


def read_csv(path: str | os.PathLike[str]) -> Table:
    """Read a CSV file with a header row into a `Table`."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
    except FileNotFoundError:
        raise ConfigError(f"{path}: data file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read CSV: {exc}") from None
    if not rows:
        raise ConfigError(f"{path}: CSV file is empty (a header row is needed)")
    header = [c.strip() for c in rows[0]]
    if len(set(header)) != len(header) or any(h == "" for h in header):
        raise ConfigError(f"{path}: header names must be unique and non-empty: {header}")
    body = rows[1:]
    for i, r in enumerate(body):
        if len(r) != len(header):
            raise ConfigError(f"{path}: row {i + 2} has {len(r)} columns, expected {len(header)}")
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        cells = [r[j] for r in body]
        nums = [_parse(c) for c in cells]
        if all(x is not None for x in nums):
            columns[name] = np.array(nums, dtype=np.float64)
        else:
            columns[name] = np.array(
                ["" if c.strip().lower() in MISSING else c.strip() for c in cells], dtype=str
            )
    return Table(columns, str(path))


def write_csv(table: Table, path: str | os.PathLike[str]) -> None:
    """Write a `Table` as CSV (numbers with repr precision, NaN as empty)."""
    path = Path(path)
    names = table.names
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        cols = [table.columns[n] for n in names]
        for i in range(len(table)):
            row = []
            for c in cols:
                v = c[i]
                if c.dtype == np.float64:
                    row.append("" if np.isnan(v) else repr(float(v)))
                else:
                    row.append(str(v))
            w.writerow(row)


__all__ = ["Table", "read_csv", "write_csv"]
