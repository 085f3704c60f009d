"""Typed experiment configuration, loaded from TOML or JSON, every field validated.

    seed = 0
    eval_every = 1                 # evaluate every k rounds (and after the last)
    output = "runs/sim"

    [data]
    dataset = "mnist"              # mnist | digits | files
    dir = "..."                    # mnist only: a directory of IDX files (default: bundled)
    files = ["p0.npz", "p1.npz"]   # files only: one per peer (.npz, <name>_x.npy, .csv, or [x.npy, y.npy])
    test = "test.npz"              # optional: a public test set every party evaluates on
    val_files = ["v0.csv", ...]    # files only, optional: each peer's own validation file
    num_classes = 10               # optional: the model's classes (default: from the data)
    label_column = -1              # csv: index (negative from the end) or header name
    train_subset = 6000            # optional: a seeded random subset of the training set
    test_subset = 2000             # optional: same for the test set

    [partition]                    # ignored for dataset = "files"
    name = "dirichlet"             # iid | dirichlet | shards | fraction
    alpha = 0.5                    # dirichlet
    min_size = 10                  # dirichlet: minimum samples per peer
    classes_per_peer = 2           # shards
    fraction = 0.333               # fraction: each peer keeps this share (overlapping)

    [model]
    name = "mlp"                   # mlp | cnn | logreg, or instead:
    [[model.layers]]               # a layer list, see ringfl.models
    type = "linear"
    out = 200

    [train]
    rounds = 10
    local_epochs = 1               # or local_steps = 50 (not both)
    batch_size = 64
    lr = 0.01
    momentum = 0.9
    weight_decay = 0.0
    prox_mu = 0.0                  # FedProx proximal term (0 = off)

    [algorithm]
    name = "ring"                  # ring | gossip | selective | server (hub FedAvg baseline)
    secure = true                  # ring/selective: masked secure aggregation; gossip has
                                   # no masking and needs an explicit `secure = false`
    share_fraction = 0.1           # selective: share this fraction of delta entries
    clip = 1.0                     # secure: fixed-point inputs (weight * delta) clipped to +-clip

    [clock]                        # the simulator's virtual clock (see ringfl.sim_clock)
    step_s = 0.001                 # virtual seconds per local step at node speed 1
    deadlines = "fixed"            # fixed (1 s virtual) | engine (adaptive, as real peers)
    availability = "trace.csv"     # optional: offline intervals per node (node,offline_s,online_s)
    churn_up_s = 120.0             # optional: random churn, mean online seconds ...
    churn_down_s = 30.0            # ... and mean offline seconds
    churn_fraction = 1.0           # share of the nodes that churn
    churn_seed = 0
    churn_horizon_s = 86400.0      # churn is drawn up to this simulated time

    [[faults]]                     # optional: a fault schedule (see ringfl.engine.faults)
    kind = "crash"
    node = "2"
    round = 2
    after_sends = 3

Relative paths in `data` are resolved against the config file's directory. Every problem
raises `ConfigError` naming the file and the field (e.g. `train.lr`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringfl.engine.faults import Fault, fault_from_dict
from ringfl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DATASETS = ("mnist", "digits", "files")
PARTITIONS = ("iid", "dirichlet", "shards", "fraction")
#: The names of `ringfl.algorithms.REGISTRY` (kept here so that validating a config does not
#: import torch; a test checks that both lists agree).
ALGORITHMS = ("ring", "gossip", "selective", "server")
MODEL_NAMES = ("mlp", "cnn", "logreg")

DataFile = str | tuple[str, str]

#: Why `algorithm.secure` must be false for gossip (also raised by `make_algorithm`).
GOSSIP_NOT_MASKED = (
    "masking is not available for gossip (each peer would send its whole model to its "
    "neighbours in the clear); set `[algorithm] secure = false` explicitly to run "
    "unmasked gossip"
)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    dir: str | None = None
    files: tuple[DataFile, ...] = ()
    test: str | None = None
    val_files: tuple[DataFile, ...] = ()
    num_classes: int | None = None
    label_column: int | str = -1
    train_subset: int | None = None
    test_subset: int | None = None


@dataclass(frozen=True)
class PartitionConfig:
    name: str = "iid"
    alpha: float = 0.5
    min_size: int = 10
    classes_per_peer: int = 2
    fraction: float = 1.0 / 3.0


@dataclass(frozen=True)
class ModelConfig:
    """Exactly one of `name` (a built-in) and `layers` (a layer list)."""

    name: str | None = "mlp"
    layers: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Local training per round: `local_epochs` passes over the peer's data, or
    `local_steps` mini-batches (exactly one is in effect; epochs = 1 when neither is set)."""

    rounds: int = 10
    local_epochs: int | None = None
    local_steps: int | None = None
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    prox_mu: float = 0.0

    @property
    def epochs(self) -> int | None:
        """Epochs per round, or None when `local_steps` is in effect."""
        if self.local_steps is not None:
            return None
        return 1 if self.local_epochs is None else self.local_epochs


@dataclass(frozen=True)
class AlgorithmConfig:
    name: str = "ring"
    secure: bool = True
    share_fraction: float = 0.1
    clip: float = 1.0


@dataclass(frozen=True)
class ClockConfig:
    """The simulator's model of time (docs/training.md, *Time*)."""

    step_s: float = 1e-3
    deadlines: str = "fixed"
    availability: str | None = None
    churn_up_s: float | None = None
    churn_down_s: float = 30.0
    churn_fraction: float = 1.0
    churn_seed: int = 0
    churn_horizon_s: float = 86400.0


@dataclass(frozen=True)
class Config:
    seed: int = 0
    eval_every: int = 1
    output: str = "runs/sim"
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    faults: tuple[Fault, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serialisable dict (for saving next to results)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> Config:
        """A copy with whole fields or sections replaced; validated again."""
        new = dataclasses.replace(self, **sections)
        validate(new)
        return new


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


_SECTIONS = {
    "data": DataConfig,
    "partition": PartitionConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "algorithm": AlgorithmConfig,
    "clock": ClockConfig,
}


def _err(source: str, name: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {name}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fields(cls: type, values: Mapping[str, Any], prefix: str, source: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise _err(source, f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(names))})")
    return dict(values)


def config_from_dict(
    raw: Mapping[str, Any], *, source: str = "config", base_dir: Path | None = None
) -> Config:
    """Build and validate a `Config` from a nested mapping (e.g. parsed TOML).
    `base_dir`: directory that relative data paths are resolved against."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: the configuration must be a table")
    top = _fields(Config, raw, "", source)
    kwargs: dict[str, Any] = {}
    for key, value in top.items():
        if key == "faults":
            if not isinstance(value, list):
                raise _err(source, "faults", "must be a list of tables ([[faults]])")
            kwargs[key] = tuple(
                fault_from_dict(f, f"{source}: faults[{i}]") for i, f in enumerate(value)
            )
        elif key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise _err(source, key, f"must be a table, got {type(value).__name__}")
            sec = _fields(_SECTIONS[key], value, f"{key}.", source)
            if key == "model" and "layers" in sec:
                layers = sec["layers"]
                if not isinstance(layers, list) or not all(isinstance(x, Mapping) for x in layers):
                    raise _err(
                        source, "model.layers", "must be a list of tables ([[model.layers]])"
                    )
                sec["layers"] = tuple(dict(x) for x in layers)
                sec.setdefault("name", None)
            for name in ("files", "val_files"):
                if key == "data" and name in sec:
                    files = sec[name]
                    if not isinstance(files, list):
                        raise _err(source, f"data.{name}", "must be a list of paths, one per peer")
                    sec[name] = tuple(tuple(f) if isinstance(f, list) else f for f in files)
            kwargs[key] = _SECTIONS[key](**sec)
        else:
            kwargs[key] = value
    cfg = Config(**kwargs)
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    validate(cfg, source)
    return cfg


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def res(p: Any) -> Any:
        if isinstance(p, str):
            return str(base / p) if not Path(p).is_absolute() else p
        if isinstance(p, tuple):
            return tuple(res(x) for x in p)
        return p

    c = cfg.clock
    if c.availability is not None:
        cfg = dataclasses.replace(
            cfg, clock=dataclasses.replace(c, availability=res(c.availability))
        )
    d = cfg.data
    data = dataclasses.replace(
        d,
        dir=res(d.dir) if d.dir is not None else None,
        test=res(d.test) if d.test is not None else None,
        files=tuple(res(f) for f in d.files),
        val_files=tuple(res(f) for f in d.val_files),
    )
    return dataclasses.replace(cfg, data=data)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file: JSON when it ends in `.json`, else TOML (the same
    schema and the same field errors). Relative data paths are taken from its directory."""
    path = Path(path)
    is_json = path.suffix.lower() == ".json"
    try:
        text = path.read_text()
        raw = json.loads(text) if is_json else tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    return config_from_dict(raw, source=str(path), base_dir=path.resolve().parent)


def save_config_json(cfg: Config, path: str | Path) -> None:
    """Write `cfg` as a JSON config file that `load_config` reads back to an equal
    `Config` (data paths are written as they are held: absolute after loading)."""
    Path(path).write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")


def validate(cfg: Config, source: str = "config") -> None:
    """Raise `ConfigError` naming the first invalid field of `cfg`."""

    def need(ok: bool, name: str, msg: str) -> None:
        if not ok:
            raise _err(source, name, msg)

    def int_at_least(v: Any, name: str, lo: int, optional: bool = False) -> None:
        if optional and v is None:
            return
        need(_is_int(v) and v >= lo, name, f"must be an integer >= {lo}, got {v!r}")

    def one_of(v: Any, name: str, choices: tuple[str, ...]) -> None:
        need(v in choices, name, f"must be one of {', '.join(choices)}; got {v!r}")

    int_at_least(cfg.seed, "seed", 0)
    int_at_least(cfg.eval_every, "eval_every", 1)
    need(isinstance(cfg.output, str) and cfg.output != "", "output", "must be a non-empty path")

    d = cfg.data
    one_of(d.dataset, "data.dataset", DATASETS)
    need(d.dir is None or isinstance(d.dir, str), "data.dir", "must be a path")
    need(d.test is None or isinstance(d.test, str), "data.test", "must be a path")
    need(
        (_is_int(d.label_column)) or isinstance(d.label_column, str),
        "data.label_column",
        f"must be a column index or name, got {d.label_column!r}",
    )
    int_at_least(d.train_subset, "data.train_subset", 1, optional=True)
    int_at_least(d.test_subset, "data.test_subset", 1, optional=True)
    int_at_least(d.num_classes, "data.num_classes", 2, optional=True)
    if d.dataset == "files":
        # data.files may be empty: then every party names its own file (`ringfl peer
        # --data`, a node's `data` attribute, or the Python API), and only that is read
        for name, files in (("files", d.files), ("val_files", d.val_files)):
            for i, f in enumerate(files):
                paths = f if isinstance(f, tuple) else (f,)
                need(
                    all(isinstance(p, str) for p in paths) and len(paths) in (1, 2),
                    f"data.{name}[{i}]",
                    f"must be a path or a pair of paths [x.npy, y.npy], got {f!r}",
                )
                for path in paths:
                    need(Path(path).is_file(), f"data.{name}[{i}]", f"file not found: {path}")
        need(
            not d.val_files or len(d.val_files) == len(d.files),
            "data.val_files",
            f"one validation file per peer: {len(d.val_files)} for {len(d.files)} data files",
        )
        need(d.test is None or Path(d.test).is_file(), "data.test", f"file not found: {d.test}")
    else:
        need(
            not d.val_files,
            "data.val_files",
            f"only used with dataset = 'files' (dataset is {d.dataset!r})",
        )
        need(
            not d.files,
            "data.files",
            f"only used with dataset = 'files' (dataset is {d.dataset!r})",
        )
        need(
            d.test is None,
            "data.test",
            f"only used with dataset = 'files' (dataset is {d.dataset!r})",
        )
    if d.dir is not None:
        need(d.dataset == "mnist", "data.dir", "only used with dataset = 'mnist'")
        need(Path(d.dir).is_dir(), "data.dir", f"directory not found: {d.dir}")

    p = cfg.partition
    one_of(p.name, "partition.name", PARTITIONS)
    need(_is_num(p.alpha) and p.alpha > 0, "partition.alpha", f"must be > 0, got {p.alpha!r}")
    int_at_least(p.min_size, "partition.min_size", 0)
    int_at_least(p.classes_per_peer, "partition.classes_per_peer", 1)
    need(
        _is_num(p.fraction) and 0 < p.fraction <= 1,
        "partition.fraction",
        f"must be in (0, 1], got {p.fraction!r}",
    )

    m = cfg.model
    if m.layers is not None:
        need(m.name is None, "model", "give either model.name or model.layers, not both")
        need(len(m.layers) > 0, "model.layers", "at least one layer is needed")
        from ringfl.models import LAYER_TYPES  # shapes are checked when the model is built

        for i, layer in enumerate(m.layers):
            one_of(layer.get("type"), f"model.layers[{i}].type", LAYER_TYPES)
    else:
        one_of(m.name, "model.name", MODEL_NAMES)

    t = cfg.train
    int_at_least(t.rounds, "train.rounds", 1)
    int_at_least(t.local_epochs, "train.local_epochs", 1, optional=True)
    int_at_least(t.local_steps, "train.local_steps", 1, optional=True)
    need(
        t.local_epochs is None or t.local_steps is None,
        "train.local_steps",
        "set either train.local_epochs or train.local_steps, not both",
    )
    int_at_least(t.batch_size, "train.batch_size", 1)
    need(_is_num(t.lr) and t.lr > 0, "train.lr", f"learning rate must be > 0, got {t.lr!r}")
    need(
        _is_num(t.momentum) and 0 <= t.momentum < 1,
        "train.momentum",
        f"must be in [0, 1), got {t.momentum!r}",
    )
    need(
        _is_num(t.weight_decay) and t.weight_decay >= 0,
        "train.weight_decay",
        f"must be >= 0, got {t.weight_decay!r}",
    )
    need(_is_num(t.prox_mu) and t.prox_mu >= 0, "train.prox_mu", f"must be >= 0, got {t.prox_mu!r}")

    a = cfg.algorithm
    one_of(a.name, "algorithm.name", ALGORITHMS)
    need(isinstance(a.secure, bool), "algorithm.secure", f"must be true or false, got {a.secure!r}")
    # secure defaults to true, so an unset `secure` with gossip is refused too: plain
    # models are never sent unless the config says so
    need(not (a.name == "gossip" and a.secure), "algorithm.secure", GOSSIP_NOT_MASKED)
    need(
        _is_num(a.share_fraction) and 0 < a.share_fraction <= 1,
        "algorithm.share_fraction",
        f"must be in (0, 1], got {a.share_fraction!r}",
    )
    need(
        _is_num(a.clip) and 0 < a.clip < float("inf"),
        "algorithm.clip",
        f"must be a positive number, got {a.clip!r}",
    )

    c = cfg.clock
    need(_is_num(c.step_s) and c.step_s >= 0, "clock.step_s", f"must be >= 0, got {c.step_s!r}")
    one_of(c.deadlines, "clock.deadlines", ("fixed", "engine"))
    need(
        c.availability is None or isinstance(c.availability, str),
        "clock.availability",
        f"must be a path to a CSV file, got {c.availability!r}",
    )
    need(
        c.churn_up_s is None or (_is_num(c.churn_up_s) and c.churn_up_s > 0),
        "clock.churn_up_s",
        f"must be > 0, got {c.churn_up_s!r}",
    )
    need(
        _is_num(c.churn_down_s) and c.churn_down_s > 0,
        "clock.churn_down_s",
        f"must be > 0, got {c.churn_down_s!r}",
    )
    need(
        _is_num(c.churn_fraction) and 0 <= c.churn_fraction <= 1,
        "clock.churn_fraction",
        f"must be in [0, 1], got {c.churn_fraction!r}",
    )
    need(_is_int(c.churn_seed), "clock.churn_seed", f"must be an int, got {c.churn_seed!r}")
    need(
        _is_num(c.churn_horizon_s) and 0 <= c.churn_horizon_s <= 1e9,
        "clock.churn_horizon_s",
        f"must be in [0, 1e9], got {c.churn_horizon_s!r}",
    )
    need(
        not (c.availability is not None and c.churn_up_s is not None),
        "clock.availability",
        "give a trace file or random churn (clock.churn_up_s), not both",
    )
