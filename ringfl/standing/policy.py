"""A party's policy: which tasks its node accepts, and how partners may set its fields.

    # policy.toml
    proposers = ["a", "b"]            # who may propose tasks that include us ("*": anyone)
    kinds = ["train"]                 # task kinds we take part in
    datasets = ["digits"]             # catalog datasets tasks may use
    [columns.digits]
    deny = ["pixel0"]                 # columns no task may read (or allow = [...])
    [limits]
    max_rounds = 50
    max_model_params = 1000000        # parameters of the model, on our dataset's schema
    min_parties = 2                   # fewer participants could expose our data
    [require]                         # shared config values we insist on
    "algorithm.secure" = true
    [fields]                          # per-party fields: private | readable | writable
    "train.lr" = "writable"           # partners may set it (the default for unlisted fields)
    "train.batch_size" = "readable"   # partners see our value, may not set it
    "train.momentum" = "private"      # partners neither see nor set it
    [defaults]                        # our values of per-party fields
    "train.batch_size" = 32

`Policy.check` returns the reasons a spec breaks the policy (empty: accept); each reason
names the field. `Policy.local_values` resolves this party's per-party field values and
the subset partners may read. Model sizes are computed from layer shapes without torch.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringfl.errors import ConfigError
from ringfl.standing.catalog import Catalog
from ringfl.standing.spec import KINDS, LOCAL_FIELDS, flat_get

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PERMISSIONS = ("private", "readable", "writable")
_LIMITS = ("max_rounds", "max_model_params", "min_parties")


@dataclass(frozen=True)
class Policy:
    proposers: tuple[str, ...] | None = None  # None: anyone in the topology
    kinds: tuple[str, ...] = ("train",)
    datasets: tuple[str, ...] | None = None  # None: every catalog dataset
    allow_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    deny_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    require: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: policy file not found") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read policy: {exc}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "policy") -> Policy:
        known = {
            "proposers",
            "kinds",
            "datasets",
            "columns",
            "limits",
            "require",
            "fields",
            "defaults",
        }
        for k in raw:
            if k not in known:
                raise ConfigError(f"{source}: {k}: unknown key (known: {', '.join(sorted(known))})")

        def names(key: str, star_ok: bool) -> tuple[str, ...] | None:
            v = raw.get(key)
            if v is None or (star_ok and v == "*"):
                return None
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(
                    f"{source}: {key}: a list of names" + (' or "*"' if star_ok else "")
                )
            return tuple(v)

        kinds = names("kinds", False) or ("train",)
        for k in kinds:
            if k not in KINDS:
                raise ConfigError(f"{source}: kinds: {k!r} is not one of {', '.join(KINDS)}")
        allow, deny = {}, {}
        for ds, rule in raw.get("columns", {}).items():
            if not isinstance(rule, dict) or set(rule) - {"allow", "deny"}:
                raise ConfigError(
                    f"{source}: columns.{ds}: a table with allow = [...] or deny = [...]"
                )
            if "allow" in rule:
                allow[ds] = tuple(rule["allow"])
            if "deny" in rule:
                deny[ds] = tuple(rule["deny"])
        limits = raw.get("limits", {})
        for k, v in limits.items():
            if k not in _LIMITS:
                raise ConfigError(f"{source}: limits.{k}: unknown (known: {', '.join(_LIMITS)})")
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{source}: limits.{k}: an integer >= 1")
        fields = raw.get("fields", {})
        for f, perm in fields.items():
            if f not in LOCAL_FIELDS:
                raise ConfigError(
                    f"{source}: fields.{f}: permissions apply to per-party fields "
                    f"({', '.join(LOCAL_FIELDS)})"
                )
            if perm not in PERMISSIONS:
                raise ConfigError(f"{source}: fields.{f}: one of {', '.join(PERMISSIONS)}")
        defaults = raw.get("defaults", {})
        for f in defaults:
            if f not in LOCAL_FIELDS:
                raise ConfigError(f"{source}: defaults.{f}: not a per-party field")
        return cls(
            proposers=names("proposers", True),
            kinds=kinds,
            datasets=names("datasets", True),
            allow_columns=allow,
            deny_columns=deny,
            limits=dict(limits),
            require=dict(raw.get("require", {})),
            fields=dict(fields),
            defaults=dict(defaults),
        )

    def permission(self, f: str) -> str:
        return self.fields.get(f, "writable")

    def check(self, spec: dict[str, Any], *, me: str, proposer: str, catalog: Catalog) -> list[str]:
        """Why `spec` (proposed by `proposer`) breaks this party's policy; [] to accept."""
        why: list[str] = []
        if self.proposers is not None and proposer not in self.proposers:
            why.append(f"proposer: {proposer} may not propose tasks to {me}")
        if spec["kind"] not in self.kinds:
            why.append(f"kind: {spec['kind']!r} is not allowed (allowed: {', '.join(self.kinds)})")
        parts = spec["participants"]
        lo = self.limits.get("min_parties")
        if lo is not None and len(parts) < lo:
            why.append(f"participants: {len(parts)} parties, fewer than min_parties = {lo}")
        ds = spec["datasets"][me]
        entry = catalog.entries.get(ds)
        if entry is None:
            why.append(
                f"datasets.{me}: unknown dataset {ds!r} (catalog: {', '.join(catalog.entries) or 'empty'})"
            )
        elif self.datasets is not None and ds not in self.datasets:
            why.append(f"datasets.{me}: dataset {ds!r} is not open to tasks")
        if entry is not None:
            why += self._check_columns(spec, ds, entry.schema["columns"])
        train = spec["kind"] == "train"  # the others are statistics jobs: no model, no rounds
        rounds = flat_get(spec["config"], "train.rounds")
        hi = self.limits.get("max_rounds")
        if train and hi is not None and (rounds if isinstance(rounds, int) else 10) > hi:
            why.append(f"config.train.rounds: {rounds} is over the limit max_rounds = {hi}")
        hi = self.limits.get("max_model_params")
        if train and hi is not None and entry is not None:
            try:
                n = model_params(spec, entry.schema)
            except ConfigError as exc:
                why.append(str(exc))
            else:
                if n > hi:
                    why.append(f"config.model: {n} parameters, over max_model_params = {hi}")
        for f, want in self.require.items():
            if not train and f.split(".", 1)[0] in ("model", "train", "algorithm"):
                continue  # a training setting: statistics jobs have none (and always mask)
            got = flat_get(spec["config"], f)
            if got != want:
                why.append(f"config.{f}: must be {want!r} here, the task has {got!r}")
        for f in LOCAL_FIELDS:
            mine = spec.get("parties", {}).get(me, {})
            if (f in mine or flat_get(spec["config"], f) is not None) and self.permission(
                f
            ) != "writable":
                why.append(f"config.{f}: {self.permission(f)} at {me}, partners may not set it")
        return why

    def _check_columns(self, spec: dict[str, Any], ds: str, have: list[str]) -> list[str]:
        cols = spec.get("columns")
        used = have if cols is None else cols
        why = []
        unknown = [c for c in used if c not in have]
        if unknown:
            why.append(f"columns: {', '.join(unknown[:5])} not in dataset {ds!r}")
        denied = [c for c in used if c in self.deny_columns.get(ds, ())]
        allowed = self.allow_columns.get(ds)
        if allowed is not None:
            denied += [c for c in used if c not in allowed and c not in denied and c in have]
        if denied:
            how = (
                ""
                if cols is not None
                else " (the task reads every column; name the columns it may use)"
            )
            why.append(f"columns: {', '.join(denied[:5])} of {ds!r} are forbidden{how}")
        return why

    def local_values(self, spec: dict[str, Any], me: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(values of the per-party fields this party trains with, the ones partners may
        read). A field is set by the spec only when writable (checked by `check`)."""
        mine = spec.get("parties", {}).get(me, {})
        values: dict[str, Any] = {}
        for f in LOCAL_FIELDS:
            if self.permission(f) == "writable" and f in mine:
                values[f] = mine[f]
            elif self.permission(f) == "writable" and flat_get(spec["config"], f) is not None:
                values[f] = flat_get(spec["config"], f)
            elif f in self.defaults:
                values[f] = self.defaults[f]
        readable = {f: v for f, v in values.items() if self.permission(f) != "private"}
        return values, readable


@functools.cache
def builtin_layers() -> dict[str, list[dict[str, Any]]]:
    """`ringfl.models.BUILTIN_LAYERS`, read from its source: importing the module would
    import torch, which a node needs for nothing else (seconds, hundreds of MB)."""
    spec = importlib.util.find_spec("ringfl.models")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == "BUILTIN_LAYERS" and value is not None:
            return ast.literal_eval(value)
    raise ConfigError("ringfl.models has no BUILTIN_LAYERS")


def model_params(spec: dict[str, Any], schema: dict[str, Any]) -> int:
    """Trainable parameters of the spec's model on a dataset with this schema (no torch)."""
    model = spec["config"].get("model", {})
    layers = model.get("layers")
    if layers is None:
        name = model.get("name", "mlp")
        builtin = builtin_layers()
        if name not in builtin:
            raise ConfigError(f"config.model.name: unknown model {name!r}")
        layers = builtin[name]
    cols = spec.get("columns")
    shape = [len(cols)] if cols else list(schema["shape"])
    k = int(schema["classes"])
    total = 0
    for i, layer in enumerate(layers):
        t = layer.get("type") if isinstance(layer, dict) else None
        try:
            if t == "flatten":
                shape = [math.prod(shape)]
            elif t == "linear":
                out = layer.get("out") or k
                total += math.prod(shape) * out + out
                shape = [out]
            elif t == "conv2d":
                c, h, w = shape
                kk, s, p = layer["kernel"], layer.get("stride", 1), layer.get("padding", 0)
                total += layer["out"] * c * kk * kk + layer["out"]
                shape = [layer["out"], (h + 2 * p - kk) // s + 1, (w + 2 * p - kk) // s + 1]
            elif t == "maxpool2d":
                c, h, w = shape
                kk, s = layer["kernel"], layer.get("stride") or layer["kernel"]
                shape = [c, (h - kk) // s + 1, (w - kk) // s + 1]
            elif t not in ("relu", "tanh", "dropout"):
                raise ConfigError(f"config.model.layers[{i}].type: unknown layer {t!r}")
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"config.model.layers[{i}]: does not fit input shape {shape}"
            ) from None
    return int(total)


__all__ = ["PERMISSIONS", "Policy", "model_params"]
