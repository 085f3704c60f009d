"""Task specs: what a party proposes. TOML or JSON, one table:

    name = "digits-logreg"            # optional label
    kind = "train"                    # train | analytics | newton | gbdt
    participants = ["a", "b", "c"]    # topology node ids; the proposer is one of them
    schedule = "every 60m"            # optional: re-run from the last model (s, m, h, d)
    max_runs = 3                      # optional, with schedule: stop after this many runs
    approval_timeout = 300            # optional: seconds the participants have to answer
    columns = ["pixel10", "pixel11"]  # optional: the feature columns the task may read
    pace = 0.0                        # optional: each round lasts at least this (demos)

    [datasets]                        # the catalog name each party trains on
    a = "digits"
    b = "digits"
    c = "digits"

    [config]                          # the shared engine config (ringfl.config, no [data])
    seed = 1
    [config.model]
    name = "logreg"
    [config.train]
    rounds = 5
    local_steps = 10
    lr = 0.1
    [config.algorithm]
    name = "ring"

    [parties.b]                       # optional per-party values of local fields
    "train.lr" = 0.05

Local fields (`LOCAL_FIELDS`: each party's own training knobs) may differ per party and
are subject to each party's per-field permissions (`ringfl.standing.policy`); every other
config field is shared by all parties. `parse_spec` returns a plain JSON-able dict in a
normal form; every problem raises `SpecError` naming the field.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("train", "analytics", "newton", "gbdt")
#: Kinds that run a statistics job (`ringfl.workloads`): their [config] is the query
#: (analytics) or the task (newton, gbdt; `workload` is the kind) of `ringfl analytics` /
#: `ringfl fit`. They always sum securely.
STATISTICS_KINDS = ("analytics", "newton", "gbdt")
#: A secure sum never finishes with fewer contributors (`ringfl.secure`).
MIN_SECURE_PARTIES = 3
#: Per-party training knobs: each party may set its own (subject to its permissions).
LOCAL_FIELDS = (
    "train.lr",
    "train.batch_size",
    "train.local_steps",
    "train.local_epochs",
    "train.momentum",
    "train.weight_decay",
    "train.prox_mu",
)
_CONFIG_SECTIONS = ("model", "train", "algorithm")
_CONFIG_TOP = ("seed", "eval_every")
_NAME = re.compile(r"^[A-Za-z0-9_.@+=-]{1,128}$")
_SCHEDULE = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_PARTICIPANTS = 64
MAX_SPEC_BYTES = 64 * 1024
MAX_APPROVAL_TIMEOUT_S = 86400.0


class SpecError(ConfigError):
    """A task spec is invalid. `field` names the offending field (dotted)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def schedule_seconds(text: str) -> float:
    """Seconds between runs of `schedule = "every N(s|m|h|d)"`."""
    m = _SCHEDULE.match(text.strip()) if isinstance(text, str) else None
    if not m or float(m.group(1)) <= 0:
        raise SpecError("schedule", f'expected "every N" with unit s, m, h or d, got {text!r}')
    return float(m.group(1)) * _UNITS[m.group(2)]


def _names(v: Any, field: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and _NAME.match(x) for x in v):
        raise SpecError(field, "must be a list of names (letters, digits, _.@+=-)")
    if len(set(v)) != len(v):
        raise SpecError(field, "names must not repeat")
    return list(v)


def _plain(v: Any, field: str, depth: int = 0) -> Any:
    """Check a config value is plain JSON (no NaN, bounded depth)."""
    if depth > 6:
        raise SpecError(field, "nested too deeply")
    if isinstance(v, float) and not math.isfinite(v):
        raise SpecError(field, "must be finite")
    if isinstance(v, Mapping):
        return {str(k): _plain(x, f"{field}.{k}", depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{field}[{i}]", depth + 1) for i, x in enumerate(v)]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    raise SpecError(field, f"unsupported value type {type(v).__name__}")


def flat_get(config: Mapping[str, Any], dotted: str) -> Any:
    """`config["train"]["lr"]` for "train.lr"; None when missing."""
    cur: Any = config
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def secure_task(kind: str, config: Mapping[str, Any]) -> bool:
    """Whether a task's sums are masked: every statistics task; a train task unless its
    algorithm has no masking (gossip, the server baseline) or `algorithm.secure` is
    false (as `ringfl.algorithms.masks` decides)."""
    if kind != "train":
        return True
    algo = config.get("algorithm", {})
    if not isinstance(algo, Mapping):
        return True
    return algo.get("secure", True) is not False and algo.get("name", "ring") not in (
        "gossip",
        "server",
    )


def _check_statistics_config(kind: str, cfg: Mapping[str, Any]) -> None:
    """The query (analytics) or task (newton, gbdt) of a statistics task, checked by the
    workload's own parser (the same errors as `ringfl analytics` / `ringfl fit`)."""
    if kind != "analytics" and cfg.get("workload", kind) != kind:
        raise SpecError("config.workload", f"must be {kind!r} (the task's kind) or unset")
    try:
        if kind == "analytics":
            from ringfl.workloads.analytics import parse_query

            parse_query(dict(cfg), "config")
        else:
            from ringfl.workloads.tasks import parse_task

            parse_task({**cfg, "workload": kind}, "config")
    except ConfigError as exc:
        raise SpecError("config", str(exc)) from None


def parse_spec(raw: Any) -> dict[str, Any]:
    """Validate a spec (a mapping, e.g. parsed JSON/TOML) and return its normal form."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec", "must be a table (JSON object)")
    known = {
        "name", "kind", "participants", "datasets", "config", "parties", "schedule",
        "max_runs", "approval_timeout", "columns", "pace",
    }  # fmt: skip
    for k in raw:
        if k not in known:
            raise SpecError(str(k), f"unknown field (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    name = raw.get("name", raw.get("kind", "task"))
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise SpecError("name", "must be a string of 1 to 200 characters")
    out["name"] = name
    kind = raw.get("kind")
    if kind not in KINDS:
        raise SpecError("kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    out["kind"] = kind
    if "participants" not in raw:
        raise SpecError("participants", "missing (the parties that take part)")
    parts = _names(raw["participants"], "participants")
    if not 1 <= len(parts) <= MAX_PARTICIPANTS:
        raise SpecError("participants", f"1 to {MAX_PARTICIPANTS} parties")
    out["participants"] = parts
    ds = raw.get("datasets")
    if not isinstance(ds, Mapping):
        raise SpecError("datasets", "missing or not a table of party = dataset name")
    for p, d in ds.items():
        if p not in parts:
            raise SpecError(f"datasets.{p}", f"{p!r} is not a participant")
        if not isinstance(d, str) or not _NAME.match(d):
            raise SpecError(f"datasets.{p}", "must be a dataset name")
    missing = [p for p in parts if p not in ds]
    if missing:
        raise SpecError("datasets", f"no dataset named for {', '.join(missing)}")
    out["datasets"] = {p: ds[p] for p in parts}
    cfg = raw.get("config", {})
    if not isinstance(cfg, Mapping):
        raise SpecError("config", "must be a table")
    if secure_task(kind, cfg) and len(parts) < MIN_SECURE_PARTIES:
        raise SpecError(
            "participants",
            f"a secure task needs at least {MIN_SECURE_PARTIES} participants, this one has "
            f"{len(parts)}: a secure sum is never revealed with fewer than "
            f"{MIN_SECURE_PARTIES} contributors (with 2, each would learn the other's input "
            "from the sum)"
            + (
                "; add a participant, or set config.algorithm.secure = false"
                if kind == "train"
                else "; add a participant"
            ),
        )
    if kind in STATISTICS_KINDS:
        _check_statistics_config(kind, cfg)
    for k, v in cfg.items():
        if kind in STATISTICS_KINDS:
            break  # the query or task table, checked above
        if k in _CONFIG_SECTIONS:
            if not isinstance(v, Mapping):
                raise SpecError(f"config.{k}", "must be a table")
        elif k not in _CONFIG_TOP:
            raise SpecError(
                f"config.{k}",
                "not a task config field (data comes from the catalog; allowed: "
                + ", ".join(_CONFIG_TOP + _CONFIG_SECTIONS)
                + ")",
            )
    out["config"] = _plain(cfg, "config")
    parties = raw.get("parties", {})
    if not isinstance(parties, Mapping):
        raise SpecError("parties", "must be a table of party = {field = value}")
    out["parties"] = {}
    for p, fields in parties.items():
        if p not in parts:
            raise SpecError(f"parties.{p}", f"{p!r} is not a participant")
        if not isinstance(fields, Mapping):
            raise SpecError(f"parties.{p}", "must be a table of field = value")
        if fields and kind != "train":
            raise SpecError(f"parties.{p}", "per-party fields are for train tasks only")
        for f in fields:
            if f not in LOCAL_FIELDS:
                raise SpecError(
                    f"parties.{p}.{f}",
                    f"not a per-party field (per-party: {', '.join(LOCAL_FIELDS)})",
                )
        out["parties"][p] = _plain(fields, f"parties.{p}")
    if "schedule" in raw:
        schedule_seconds(raw["schedule"])
        out["schedule"] = raw["schedule"].strip()
    if "max_runs" in raw:
        v = raw["max_runs"]
        if "schedule" not in raw:
            raise SpecError("max_runs", "only used with schedule")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpecError("max_runs", f"must be an integer >= 1, got {v!r}")
        out["max_runs"] = v
    t = raw.get("approval_timeout", 300)
    if (
        not isinstance(t, (int, float))
        or isinstance(t, bool)
        or not 0 < t <= MAX_APPROVAL_TIMEOUT_S
    ):
        raise SpecError("approval_timeout", f"seconds in (0, {MAX_APPROVAL_TIMEOUT_S:g}]")
    out["approval_timeout"] = float(t)
    if "columns" in raw:
        cols = raw["columns"]
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise SpecError("columns", "must be a non-empty list of column names")
        if len(set(cols)) != len(cols):
            raise SpecError("columns", "names must not repeat")
        out["columns"] = list(cols)
    pace = raw.get("pace", 0.0)
    if not isinstance(pace, (int, float)) or isinstance(pace, bool) or not 0 <= pace <= 60:
        raise SpecError("pace", "seconds per round in [0, 60]")
    out["pace"] = float(pace)
    if len(json.dumps(out)) > MAX_SPEC_BYTES:
        raise SpecError("spec", f"larger than {MAX_SPEC_BYTES} bytes")
    return out


def load_spec_text(text: str, source: str = "spec") -> dict[str, Any]:
    """Parse TOML or JSON text (JSON when it starts with '{')."""
    try:
        raw = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError("spec", f"{source}: not valid TOML/JSON: {exc}") from None
    return parse_spec(raw)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON task spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read task spec: {exc}") from None
    return load_spec_text(text, str(path))


__all__ = [
    "KINDS",
    "LOCAL_FIELDS",
    "MIN_SECURE_PARTIES",
    "STATISTICS_KINDS",
    "SpecError",
    "flat_get",
    "load_spec_file",
    "load_spec_text",
    "parse_spec",
    "schedule_seconds",
    "secure_task",
]
