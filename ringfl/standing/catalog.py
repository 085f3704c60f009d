"""A party's data catalog: dataset names mapped to local files, with their schemas.

    # catalog.toml (paths relative to this file)
    [datasets.digits]
    file = "digits-a.csv"       # .csv (header row names the columns), .npz (x, y) or .npy
    test = "digits-test.csv"    # optional: evaluation set (default: the file itself)
    label = "label"             # csv: label column name or index (default: the last)
    description = "8x8 digits"  # optional

Partners see `public()`: names, descriptions and schemas (feature column names, label
name, number of classes, sample shape). Paths and rows never leave the node.
Feature columns of array files are named f0, f1, ... over the flattened sample.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ringfl.data.errors import DataError
from ringfl.data.files import load_data_file
from ringfl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_NAME = re.compile(r"^[A-Za-z0-9_.@+=-]{1,128}$")


@dataclass(frozen=True)
class Entry:
    """One catalog dataset. `schema` is what partners may see."""

    name: str
    file: Path
    test: Path | None
    label: int | str
    description: str
    schema: dict[str, Any]


def _csv_header(path: Path) -> list[str] | None:
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            try:
                [float(c) for c in row]
                return None
            except ValueError:
                return [c.strip() for c in row]
    return None


def _schema(file: Path, label: int | str, where: str) -> dict[str, Any]:
    try:
        data = load_data_file(file, label_column=label)
    except DataError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    shape = list(data.x.shape[1:])
    width = int(np.prod(shape))
    label_name = label if isinstance(label, str) else "label"
    if file.suffix.lower() == ".csv":
        header = _csv_header(file)
        if header is not None:
            col = header.index(label) if isinstance(label, str) else label % len(header)
            label_name = header[col]
            columns = [c for i, c in enumerate(header) if i != col]
        else:
            columns = [f"f{i}" for i in range(width)]
    else:
        columns = [f"f{i}" for i in range(width)]
    return {
        "columns": columns,
        "label": label_name,
        "classes": int(data.num_classes),
        "shape": shape,
        "format": file.suffix.lower().lstrip("."),
    }


class Catalog:
    """The datasets this party offers, by name."""

    def __init__(self, entries: dict[str, Entry], source: str = "catalog") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a catalog TOML file; every dataset file is opened once to find its schema."""
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: catalog file not found") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read catalog: {exc}") from None
        ds = raw.get("datasets", {})
        if set(raw) - {"datasets"} or not isinstance(ds, dict):
            raise ConfigError(f"{path}: a catalog has one table, [datasets.NAME]")
        base = path.resolve().parent
        entries = {}
        for name, e in ds.items():
            where = f"{path}: datasets.{name}"
            if not _NAME.match(name):
                raise ConfigError(f"{where}: name must use letters, digits, _.@+=-")
            if not isinstance(e, dict) or "file" not in e:
                raise ConfigError(f"{where}: needs file = PATH")
            unknown = set(e) - {"file", "test", "label", "description"}
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            file = base / str(e["file"])
            test = base / str(e["test"]) if "test" in e else None
            for p, key in ((file, "file"), (test, "test")):
                if p is not None and not p.is_file():
                    raise ConfigError(f"{where}.{key}: file not found: {p}")
            label = e.get("label", -1)
            if not isinstance(label, (int, str)) or isinstance(label, bool):
                raise ConfigError(f"{where}.label: a column name or index")
            schema = _schema(file, label, where)
            if test is not None:
                tschema = _schema(test, label, f"{where}.test")
                if tschema["columns"] != schema["columns"]:
                    raise ConfigError(f"{where}.test: columns differ from the data file's")
                schema["classes"] = max(schema["classes"], tschema["classes"])
            entries[name] = Entry(name, file, test, label, str(e.get("description", "")), schema)
        return cls(entries, str(path))

    def public(self) -> dict[str, dict[str, Any]]:
        """What partners see: name -> {description, schema}. No paths, no rows, no counts."""
        return {
            n: {"description": e.description, "schema": e.schema} for n, e in self.entries.items()
        }

    def write_view(
        self, name: str, columns: list[str] | None, folder: Path
    ) -> tuple[Path, Path, int]:
        """Write the dataset (and its test set), restricted to `columns` when given, as
        `.npz` files into `folder` (local to this party). Returns (train, test, classes)."""
        e = self.entries[name]
        k = int(e.schema["classes"])
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for src, tag in ((e.file, "train"), (e.test or e.file, "test")):
            d = load_data_file(src, label_column=e.label, num_classes=k)
            x = d.x
            if columns is not None:
                idx = [e.schema["columns"].index(c) for c in columns]
                x = x.reshape(len(x), -1)[:, idx]
            dest = folder / f"{tag}.npz"
            np.savez(dest, x=x.astype(np.float32), y=d.y)
            out.append(dest)
        return out[0], out[1], k

    def write_table(self, name: str, columns: list[str] | None, folder: Path) -> Path:
        """Write the dataset as one CSV table for a statistics task (analytics, Newton,
        GBDT), restricted to `columns` (every feature column when None) plus the label
        column, into `folder` (local to this party). Returns its path. A CSV source keeps
        its values as they are; an .npz/.npy source has columns f0, f1, ..."""
        from ringfl.workloads.table import Table, read_csv, write_csv

        e = self.entries[name]
        have = list(e.schema["columns"])
        keep = have if columns is None else list(columns)
        label = str(e.schema["label"])
        if e.file.suffix.lower() == ".csv":
            src = read_csv(e.file)
            cols = {c: src.columns[c] for c in [*keep, label]}
        else:
            d = load_data_file(e.file, label_column=e.label)
            x = d.x.reshape(len(d.x), -1).astype(np.float64)
            cols = {c: x[:, have.index(c)] for c in keep}
            cols[label] = np.asarray(d.y, dtype=np.float64)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / "table.csv"
        write_csv(Table.from_arrays(cols, source=f"dataset {name}"), dest)
        return dest


__all__ = ["Catalog", "Entry"]
