"""Secure federated analytics: a query over every party's table, answered from secure sums.

Query file (TOML or JSON):

    min_count = 10            # a cell with fewer rows is refused (default 10)
    min_parties = 3           # a cell with fewer contributing parties is refused (default 3)

    [[ops]]
    op = "mean"               # count | sum | mean | var | std | sem | cov | corr
    column = "age"            #   | histogram | quantile | median | groupby
    name = "mean age"         # optional label (default "mean(age)")

    [[ops]]
    op = "corr"
    columns = ["age", "bmi", "bp"]

    [[ops]]
    op = "histogram"
    column = "age"
    edges = [0, 20, 40, 60, 80]        # or: bins = 8, range = [0, 80]

    [[ops]]
    op = "quantile"
    column = "bmi"
    q = [0.25, 0.5, 0.75]
    tol = 1e-6                 # absolute: the answer is within tol/2 (default 1e-6)

    [[ops]]
    op = "groupby"
    by = "sex"
    groups = ["F", "M"]        # public list of group values
    column = "bmi"             # optional (count only without it)
    aggs = ["count", "sum", "mean"]

Semantics follow pandas on the pooled table: missing values are skipped; var/std/sem use
ddof = 1; cov/corr use pairwise-complete rows; histogram bins are numpy's (half-open, the
last one closed); quantiles are pandas' linear interpolation between order statistics.

Protocol, per op and cell (a column, a pair of columns, a bin, a group):
1. GATE: every party secure-sums a 0/1 indicator per cell (does it have any row there?).
   A cell with fewer than `min_parties` contributing parties is refused; nothing else
   about it is ever summed.
2. COUNT: row counts (and sums) of the cells that passed; a cell with fewer than
   `min_count` rows is refused (its count is known to the parties' software, not shown).
3. Further sums where needed: moments around a securely agreed centre (the cell's mean
   from step 2), for numerically stable variances and covariances; histogram refinement
   for quantiles (`ringfl.workloads.sketch`; the refinement bins' pooled counts are
   revealed to the parties, no row values).
All ops are batched: one secure sum per step for the whole query.

Exactness: counts are exact; sums, means, variances and covariances equal pandas within
the secure sum's resolution (`ringfl.engine.scale`: ≤ N·2^−f relative to the
largest statistic, N·2^−f = 1.3e−18 at N = 3) plus float64 rounding; quantiles are within
tol/2 of pandas.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ringfl.errors import ConfigError
from ringfl.workloads.sketch import RankSearch, check_range
from ringfl.workloads.spec import check_keys, load_spec, number
from ringfl.workloads.table import Table

DEFAULT_MIN_COUNT = 10
DEFAULT_MIN_PARTIES = 3
MOMENTS = ("count", "sum", "mean", "var", "std", "sem")
OPS = (*MOMENTS, "cov", "corr", "histogram", "quantile", "median", "groupby")
GROUP_AGGS = ("count", "sum", "mean")
_OP_KEYS = {
    **{m: {"column"} for m in MOMENTS},
    "cov": {"columns"},
    "corr": {"columns"},
    "histogram": {"column", "edges", "bins", "range"},
    "quantile": {"column", "q", "tol"},
    "median": {"column", "tol"},
    "groupby": {"by", "groups", "column", "aggs"},
}


@dataclass(frozen=True)
class OpSpec:
    """One operation of a query (fields as in the query file)."""

    op: str
    name: str
    column: str | None = None
    columns: tuple[str, ...] = ()
    edges: tuple[float, ...] = ()
    q: tuple[float, ...] = ()
    tol: float = 1e-6
    by: str | None = None
    groups: tuple[Any, ...] = ()
    aggs: tuple[str, ...] = GROUP_AGGS


@dataclass(frozen=True)
class Query:
    ops: tuple[OpSpec, ...]
    min_count: int = DEFAULT_MIN_COUNT
    min_parties: int = DEFAULT_MIN_PARTIES


def _str(v: Any, name: str, source: str) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{source}: {name}: must be a non-empty string, got {v!r}")
    return v


def parse_query(raw: dict[str, Any], source: str = "query") -> Query:
    """Build and check a `Query` from a parsed query file."""
    check_keys(raw, {"min_count", "min_parties", "ops"}, "", source)
    min_count = number(
        raw.get("min_count", DEFAULT_MIN_COUNT), "min_count", source, lo=1, integer=True
    )
    min_parties = number(
        raw.get("min_parties", DEFAULT_MIN_PARTIES), "min_parties", source, lo=1, integer=True
    )
    ops_raw = raw.get("ops")
    if not isinstance(ops_raw, list) or not ops_raw:
        raise ConfigError(f"{source}: ops: a list of operations is needed ([[ops]] tables)")
    ops = []
    names = set()
    for i, o in enumerate(ops_raw):
        w = f"ops[{i}]"
        if not isinstance(o, dict):
            raise ConfigError(f"{source}: {w}: must be a table")
        op = o.get("op")
        if op not in OPS:
            raise ConfigError(f"{source}: {w}.op: must be one of {', '.join(OPS)}; got {op!r}")
        check_keys(o, _OP_KEYS[op] | {"op", "name"}, f"{w}.", source)
        kw: dict[str, Any] = {"op": op}
        if "column" in o:
            kw["column"] = _str(o["column"], f"{w}.column", source)
        elif op in ("sum", "mean", "var", "std", "sem", "histogram", "quantile", "median"):
            raise ConfigError(f"{source}: {w}.column: op {op!r} needs a column")
        if op in ("cov", "corr"):
            cols = o.get("columns")
            if not isinstance(cols, list) or len(cols) < 2:
                raise ConfigError(f"{source}: {w}.columns: a list of at least 2 columns")
            kw["columns"] = tuple(_str(c, f"{w}.columns", source) for c in cols)
        if op == "histogram":
            if "edges" in o:
                e = o["edges"]
                if not isinstance(e, list) or len(e) < 2:
                    raise ConfigError(f"{source}: {w}.edges: a list of at least 2 bin edges")
                edges = [float(number(x, f"{w}.edges", source)) for x in e]
            elif "bins" in o and "range" in o:
                nb = number(o["bins"], f"{w}.bins", source, lo=1, integer=True)
                r = o["range"]
                if not isinstance(r, list) or len(r) != 2:
                    raise ConfigError(f"{source}: {w}.range: [low, high] is needed")
                lo, hi = (float(number(x, f"{w}.range", source)) for x in r)
                edges = list(np.linspace(lo, hi, nb + 1))
            else:
                raise ConfigError(f"{source}: {w}: histogram needs edges, or bins and range")
            if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ConfigError(f"{source}: {w}.edges: must increase strictly")
            kw["edges"] = tuple(edges)
        if op in ("quantile", "median"):
            qs = [0.5] if op == "median" else o.get("q")
            if isinstance(qs, (int, float)) and not isinstance(qs, bool):
                qs = [qs]
            if not isinstance(qs, list) or not qs:
                raise ConfigError(f"{source}: {w}.q: a number or list of numbers in [0, 1]")
            for x in qs:
                if not (isinstance(x, (int, float)) and 0 <= x <= 1):
                    raise ConfigError(f"{source}: {w}.q: {x!r} is not in [0, 1]")
            kw["q"] = tuple(float(x) for x in qs)
            kw["tol"] = float(number(o.get("tol", 1e-6), f"{w}.tol", source))
            if not kw["tol"] > 0:
                raise ConfigError(f"{source}: {w}.tol: must be > 0")
        if op == "groupby":
            kw["by"] = _str(o.get("by"), f"{w}.by", source)
            groups = o.get("groups")
            if not isinstance(groups, list) or not groups:
                raise ConfigError(
                    f"{source}: {w}.groups: the public list of group values is needed "
                    "(parties never reveal which values they hold)"
                )
            kw["groups"] = tuple(groups)
            aggs = o.get("aggs", list(GROUP_AGGS) if "column" in o else ["count"])
            if not isinstance(aggs, list) or any(a not in GROUP_AGGS for a in aggs):
                raise ConfigError(f"{source}: {w}.aggs: a list of {', '.join(GROUP_AGGS)}")
            if "column" not in o and set(aggs) - {"count"}:
                raise ConfigError(f"{source}: {w}.aggs: sum and mean need a column")
            kw["aggs"] = tuple(aggs)
        target = kw.get("by") or kw.get("column") or ",".join(kw.get("columns", ())) or ""
        name = o.get("name", f"{op}({target})")
        kw["name"] = _str(name, f"{w}.name", source)
        if kw["name"] in names:
            raise ConfigError(f"{source}: {w}.name: {kw['name']!r} is used twice")
        names.add(kw["name"])
        ops.append(OpSpec(**kw))
    return Query(tuple(ops), min_count, min_parties)


def load_query(path: str | os.PathLike[str]) -> Query:
    """Read a query file (TOML, or JSON when it ends in .json)."""
    return parse_query(load_spec(path), str(path))


# -- operations as small state machines ---------------------------------------------------


class _Op:
    """One op: a GATE over its cells, then `stats`/`take` steps while `pending`."""

    def __init__(self, spec: OpSpec, query: Query, table: Table) -> None:
        self.spec = spec
        self.query = query
        self.table = table
        self.where = f" (query op {spec.name!r})"
        self.refusals: list[str] = []
        self.cells: list[str] = []
        self.passed: np.ndarray = np.zeros(0, dtype=bool)
        self.pending = True

    # masks of this party's rows per cell (length len(self.cells))
    def cell_rows(self) -> list[np.ndarray]:
        raise NotImplementedError

    def gate_stats(self) -> np.ndarray:
        return np.array([1.0 if m.any() else 0.0 for m in self.cell_rows()])

    def gate(self, parties: np.ndarray) -> None:
        k = np.rint(parties).astype(int)
        self.passed = k >= self.query.min_parties
        for label, n, ok in zip(self.cells, k, self.passed, strict=True):
            if not ok:
                self.refuse(
                    label, f"only {n} parties contribute (fewer than {self.query.min_parties})"
                )
        self.pending = bool(self.passed.any())

    def refuse(self, label: str, why: str) -> None:
        self.refusals.append(f"{self.spec.name}: cell {label}: refused, {why}")

    def check_counts(self, counts: np.ndarray) -> np.ndarray:
        """Refuse passed cells with too few rows; returns the new passed mask."""
        for i in np.flatnonzero(self.passed):
            if counts[i] < self.query.min_count:
                self.refuse(
                    self.cells[i],
                    f"{int(counts[i])} rows (fewer than min_count {self.query.min_count})",
                )
                self.passed[i] = False
        return self.passed

    def stats(self) -> np.ndarray:
        raise NotImplementedError

    def take(self, total: np.ndarray) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError


class _Moments(_Op):
    """count, sum, mean, var, std, sem of one column."""

    def __init__(self, spec: OpSpec, query: Query, table: Table) -> None:
        super().__init__(spec, query, table)
        if spec.column is None:  # count of rows
            self.x = np.zeros(len(table))
            self.cells = ["all rows"]
        else:
            self.x = table.numeric(spec.column, self.where)
            self.cells = [f"column {spec.column}"]
        self.valid = ~np.isnan(self.x)
        self.step = 0
        self.n = self.s = self.centre = self.d1 = self.d2 = math.nan

    def cell_rows(self) -> list[np.ndarray]:
        return [self.valid]

    def stats(self) -> np.ndarray:
        x = self.x[self.valid]
        if self.step == 0:
            return np.array([x.size, x.sum()], dtype=np.float64)
        d = x - self.centre
        return np.array([d.sum(), (d * d).sum()])

    def take(self, total: np.ndarray) -> None:
        if self.step == 0:
            self.n, self.s = float(np.rint(total[0])), float(total[1])
            ok = self.check_counts(np.array([self.n]))[0]
            self.centre = self.s / self.n if ok else math.nan
            self.pending = bool(ok) and self.spec.op not in ("count", "sum")
            if ok and self.spec.op in ("var", "std", "sem") and self.n < 2:
                self.refuse(self.cells[0], "fewer than 2 rows")
                self.pending = False
                self.passed[0] = False
        else:
            self.d1, self.d2 = float(total[0]), float(total[1])
            self.pending = False
        self.step += 1

    def result(self) -> float | None:
        if not self.passed[0]:
            return None
        op, n = self.spec.op, self.n
        if op == "count":
            return n
        if op == "sum":
            return self.s
        if op == "mean":
            return self.centre + self.d1 / n
        var = max(self.d2 - self.d1 * self.d1 / n, 0.0) / (n - 1)
        if op == "var":
            return var
        if op == "std":
            return math.sqrt(var)
        return math.sqrt(var) / math.sqrt(n)  # sem


class _CovCorr(_Op):
    """Pairwise-complete covariance or correlation matrix of several columns."""

    def __init__(self, spec: OpSpec, query: Query, table: Table) -> None:
        super().__init__(spec, query, table)
        self.cols = list(spec.columns)
        self.x = table.matrix(self.cols, self.where)
        k = len(self.cols)
        self.pairs = [(i, j) for i in range(k) for j in range(i, k)]
        self.cells = [f"({self.cols[i]}, {self.cols[j]})" for i, j in self.pairs]
        ok = ~np.isnan(self.x)
        self.masks = [ok[:, i] & ok[:, j] for i, j in self.pairs]
        self.step = 0
        self.first: np.ndarray | None = None  # per pair: n, Σx_i, Σx_j
        self.second: np.ndarray | None = None  # per pair: Σdx, Σdy, Σdx², Σdy², Σdxdy

    def cell_rows(self) -> list[np.ndarray]:
        return self.masks

    def _active(self) -> list[int]:
        return [int(c) for c in np.flatnonzero(self.passed)]

    def stats(self) -> np.ndarray:
        out = []
        for c in self._active():
            i, j = self.pairs[c]
            m = self.masks[c]
            a, b = self.x[m, i], self.x[m, j]
            if self.step == 0:
                out += [a.size, a.sum(), b.sum()]
            else:
                assert self.first is not None
                n, sa, sb = self.first[c]
                da, db = a - sa / n, b - sb / n
                out += [da.sum(), db.sum(), (da * da).sum(), (db * db).sum(), (da * db).sum()]
        return np.array(out, dtype=np.float64)

    def take(self, total: np.ndarray) -> None:
        active = self._active()
        if self.step == 0:
            self.first = np.full((len(self.pairs), 3), np.nan)
            self.first[active] = total.reshape(len(active), 3)
            self.first[:, 0] = np.rint(self.first[:, 0])
            self.check_counts(self.first[:, 0])
            for c in np.flatnonzero(self.passed):
                if self.first[c, 0] < 2:
                    self.refuse(self.cells[c], "fewer than 2 rows")
                    self.passed[c] = False
            self.pending = bool(self.passed.any())
        else:
            self.second = np.full((len(self.pairs), 5), np.nan)
            self.second[active] = total.reshape(len(active), 5)
            self.pending = False
        self.step += 1

    def result(self) -> list[list[float | None]]:
        k = len(self.cols)
        out: list[list[float | None]] = [[None] * k for _ in range(k)]
        for c, (i, j) in enumerate(self.pairs):
            if not self.passed[c] or self.second is None or self.first is None:
                continue
            n = self.first[c, 0]
            sa, sb, saa, sbb, sab = self.second[c]
            cov = (sab - sa * sb / n) / (n - 1)
            if self.spec.op == "cov":
                v = cov
            else:
                va = max(saa - sa * sa / n, 0.0) / (n - 1)
                vb = max(sbb - sb * sb / n, 0.0) / (n - 1)
                v = cov / math.sqrt(va * vb) if va > 0 and vb > 0 else math.nan
            out[i][j] = out[j][i] = float(v)
        return out


class _Histogram(_Op):
    """Counts in fixed bins (numpy's semantics: half-open, the last bin closed)."""

    def __init__(self, spec: OpSpec, query: Query, table: Table) -> None:
        super().__init__(spec, query, table)
        assert spec.column is not None
        x = table.numeric(spec.column, self.where)
        self.edges = np.array(spec.edges)
        x = x[~np.isnan(x)]
        nb = len(self.edges) - 1
        idx = np.searchsorted(self.edges, x, side="right") - 1
        idx[x == self.edges[-1]] = nb - 1
        self.idx = idx[(idx >= 0) & (idx < nb)]
        e = self.edges
        self.cells = [f"[{e[i]:g}, {e[i + 1]:g}{']' if i == nb - 1 else ')'}" for i in range(nb)]
        self.counts = np.full(nb, np.nan)

    def cell_rows(self) -> list[np.ndarray]:
        return [self.idx == i for i in range(len(self.cells))]

    def stats(self) -> np.ndarray:
        c = np.bincount(self.idx, minlength=len(self.cells)).astype(np.float64)
        return c[self.passed]

    def take(self, total: np.ndarray) -> None:
        self.counts[self.passed] = np.rint(total)
        self.check_counts(np.nan_to_num(self.counts))
        self.pending = False

    def result(self) -> dict[str, Any]:
        counts = [float(c) if ok else None for c, ok in zip(self.counts, self.passed, strict=True)]
        return {"edges": [float(e) for e in self.edges], "counts": counts}


class _Quantile(_Op):
    """Quantiles by secure histogram refinement (within tol/2 of pandas)."""

    def __init__(self, spec: OpSpec, query: Query, table: Table) -> None:
        super().__init__(spec, query, table)
        assert spec.column is not None
        x = table.numeric(spec.column, self.where)
        check_range(x, f"{table.source}: column {spec.column!r}")
        self.x = x[~np.isnan(x)]
        self.cells = [f"column {spec.column}"]
        self.n = 0
        self.searches: dict[int, RankSearch] = {}
        self.step = 0

    def cell_rows(self) -> list[np.ndarray]:
        return [np.ones(self.x.size, dtype=bool)]

    def _open(self) -> list[RankSearch]:
        return [s for _, s in sorted(self.searches.items()) if not s.done]

    def stats(self) -> np.ndarray:
        if self.step == 0:
            return np.array([float(self.x.size)])
        return np.concatenate([s.counts(self.x) for s in self._open()])

    def take(self, total: np.ndarray) -> None:
        if self.step == 0:
            self.n = int(np.rint(total[0]))
            if not self.check_counts(np.array([self.n]))[0]:
                self.pending = False
                return
            for q in self.spec.q:
                k = q * (self.n - 1)
                for r in {math.floor(k), math.ceil(k)}:
                    self.searches.setdefault(r, RankSearch(r, self.spec.tol))
        else:
            at = 0
            for s in self._open():
                size = len(s.edges) - 1
                s.take(total[at : at + size])
                at += size
        self.step += 1
        self.pending = bool(self._open())

    def result(self) -> Any:
        if not self.passed[0]:
            return None
        out = {}
        for q in self.spec.q:
            k = q * (self.n - 1)
            lo, hi = self.searches[math.floor(k)], self.searches[math.ceil(k)]
            f = k - math.floor(k)
            out[q] = lo.value + (hi.value - lo.value) * f
        if self.spec.op == "median":
            return out[0.5]
        return {str(q): v for q, v in out.items()}


class _GroupBy(_Op):
    """count / sum / mean of a column per group of a categorical column."""

    def __init__(self, spec: OpSpec, query: Query, table: Table) -> None:
        super().__init__(spec, query, table)
        assert spec.by is not None
        key = table.column(spec.by, self.where)
        if key.dtype == np.float64:
            try:
                values = [float(g) for g in spec.groups]
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{table.source}: column {spec.by!r} is numeric but groups are not{self.where}"
                ) from None
            self.masks = [key == g for g in values]
        else:
            self.masks = [key == str(g) for g in spec.groups]
        if spec.column is not None:
            self.x = table.numeric(spec.column, self.where)
            ok = ~np.isnan(self.x)
            self.masks = [m & ok for m in self.masks]
        else:
            self.x = np.zeros(len(table))
        self.cells = [f"{spec.by}={g}" for g in spec.groups]
        self.sums = np.full((len(self.cells), 2), np.nan)

    def cell_rows(self) -> list[np.ndarray]:
        return self.masks

    def stats(self) -> np.ndarray:
        out = []
        for c in np.flatnonzero(self.passed):
            v = self.x[self.masks[c]]
            out += [v.size, v.sum()]
        return np.array(out, dtype=np.float64)

    def take(self, total: np.ndarray) -> None:
        self.sums[self.passed] = total.reshape(-1, 2)
        self.sums[:, 0] = np.rint(self.sums[:, 0])
        self.check_counts(np.nan_to_num(self.sums[:, 0]))
        self.pending = False

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c, g in enumerate(self.spec.groups):
            if not self.passed[c]:
                out[str(g)] = None
                continue
            n, s = self.sums[c]
            vals = {"count": float(n), "sum": float(s), "mean": float(s / n)}
            out[str(g)] = {a: vals[a] for a in self.spec.aggs}
        return out


_CLASSES = {
    **dict.fromkeys(MOMENTS, _Moments),
    "cov": _CovCorr,
    "corr": _CovCorr,
    "histogram": _Histogram,
    "quantile": _Quantile,
    "median": _Quantile,
    "groupby": _GroupBy,
}


@dataclass
class AnalyticsResult:
    """`values[name]`: the op's answer (None where refused); `refusals`: one message per
    refused cell, naming the op and the cell; `sums`: secure sums used."""

    values: dict[str, Any]
    refusals: list[str] = field(default_factory=list)
    sums: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "refusals": self.refusals, "secure_sums": self.sums}


class AnalyticsWorkload:
    """One party's side of a query over its `table` (a `ringfl.engine.workload.Statistics` job)."""

    def __init__(self, query: Query, table: Table) -> None:
        self.query = query
        self.ops = [_CLASSES[s.op](s, query, table) for s in query.ops]
        self.gated = False
        self.sums = 0
        self._sizes: list[int] = []

    @property
    def done(self) -> bool:
        return self.gated and not any(op.pending for op in self.ops)

    def _active(self) -> list[_Op]:
        return [op for op in self.ops if op.pending]

    def statistics(self) -> np.ndarray:
        if not self.gated:
            return np.concatenate([op.gate_stats() for op in self.ops])
        parts = [op.stats() for op in self._active()]
        self._sizes = [p.shape[0] for p in parts]
        return np.concatenate(parts)

    def apply(self, total: np.ndarray) -> None:
        self.sums += 1
        if not self.gated:
            at = 0
            for op in self.ops:
                op.gate(total[at : at + len(op.cells)])
                at += len(op.cells)
            self.gated = True
            return
        at = 0
        for op, size in zip(self._active(), self._sizes, strict=True):
            op.take(total[at : at + size])
            at += size

    def result(self) -> AnalyticsResult:
        values = {op.spec.name: op.result() for op in self.ops}
        refusals = [r for op in self.ops for r in op.refusals]
        return AnalyticsResult(values, refusals, self.sums)


def analyze(
    query: Query, tables: list[Table], *, secure: bool = True, seed: int = 0
) -> AnalyticsResult:
    """Answer `query` over the parties' `tables` in this process: with the simulated
    secure ring (`secure`, at least 3 parties), or with the plain sum (the centralized
    reference). The result is the same on every party; party 0's is returned."""
    from ringfl.workloads.run import run_jobs

    parties = [AnalyticsWorkload(query, t) for t in tables]
    result: AnalyticsResult = run_jobs(parties, secure=secure, seed=seed)[0]
    return result


__all__ = [
    "AnalyticsResult",
    "analyze",
    "AnalyticsWorkload",
    "OpSpec",
    "Query",
    "load_query",
    "parse_query",
]
