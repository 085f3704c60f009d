"""One party's data: its own training file, its own validation file (optional), and a
public test set where the configuration names one. A party never opens another party's
file: the simulator builds each simulated party the same way, one file each, or splits a
built-in dataset with a partitioner (parties simulated from one public dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfl.config import Config, DataFile
from ringfl.data.builtin import load_digits, load_mnist, standardize_mnist
from ringfl.data.dataset import Dataset
from ringfl.data.files import load_data_file
from ringfl.errors import ConfigError
from ringfl.partition import PartitionSummary


@dataclass(frozen=True)
class PartyData:
    """`train`: this party's training data; `val`: its own validation data (or None);
    `test`: a public test set everyone may evaluate on locally (or None);
    `num_classes`: the model's output size."""

    train: Dataset
    val: Dataset | None
    test: Dataset | None
    num_classes: int


def subset(d: Dataset, n: int | None, seed: int, tag: int) -> Dataset:
    """A seeded random subset of `n` samples (all when `n` is None or too large)."""
    if n is None or n >= len(d):
        return d
    idx = np.sort(np.random.default_rng([seed, tag]).choice(len(d), size=n, replace=False))
    return d.subset(idx)


def _with_classes(d: Dataset | None, k: int) -> Dataset | None:
    return None if d is None else Dataset(d.x, d.y, k, d.name)


def party_files(
    config: Config,
    train: DataFile,
    val: DataFile | None = None,
) -> PartyData:
    """A party's data from its own files (`train`, optional `val`) and the config's public
    test set (`data.test`, optional). The number of classes is `data.num_classes`, else
    the largest label seen in these files + 1."""
    dc = config.data
    own = load_data_file(train, label_column=dc.label_column)
    v = None if val is None else load_data_file(val, label_column=dc.label_column)
    test = None if dc.test is None else load_data_file(dc.test, label_column=dc.label_column)
    if test is not None:
        test = subset(test, dc.test_subset, config.seed, 2)
    k = dc.num_classes
    if k is None:
        k = max(d.num_classes for d in (own, v, test) if d is not None)
    for d in (own, v, test):
        if d is not None and d.num_classes > k:
            raise ValueError(
                f"{d.name}: labels go up to {d.num_classes - 1}, data.num_classes is {k}"
            )
    shapes = {d.input_shape for d in (own, v, test) if d is not None}
    if len(shapes) != 1:
        raise ValueError(f"{own.name}: train/validation/test samples have shapes {sorted(shapes)}")
    train_set = _with_classes(own, k)
    assert train_set is not None
    return PartyData(train_set, _with_classes(v, k), _with_classes(test, k), k)


def builtin_split(config: Config, num_peers: int) -> tuple[list[Dataset], Dataset, Dataset]:
    """A built-in dataset split among `num_peers` simulated parties by the configured
    partitioner: (parts, test set, pooled training data held by some party)."""
    parts, test, pooled = _split(config, num_peers)
    return parts, test, pooled()


def _split(config: Config, num_peers: int) -> tuple[list[Dataset], Dataset, Callable[[], Dataset]]:
    """`builtin_split`, with the pooled data as a function that rebuilds it from the
    parts (so that only the parts stay in memory until it is needed)."""
    from ringfl.partition import partition

    dc = config.data
    # MNIST stays uint8 until split, so that memory peaks at one float copy of the parts
    mnist = dc.dataset == "mnist"
    train, test = load_mnist(dc.dir, raw=True) if mnist else load_digits(seed=0)
    train = subset(train, dc.train_subset, config.seed, 1)
    test = subset(test, dc.test_subset, config.seed, 2)
    as_float = standardize_mnist if mnist else (lambda d: d)
    test = as_float(test)
    p = config.partition
    idx = partition(
        p.name,
        train.y,
        num_peers,
        config.seed,
        alpha=p.alpha,
        classes_per_peer=p.classes_per_peer,
        fraction_per_peer=p.fraction,
        min_size=p.min_size,
    )
    parts = [as_float(train.subset(i, f"peer{k}")) for k, i in enumerate(idx)]
    held = np.unique(np.concatenate(idx))
    name = train.name if len(held) == len(train) else "pooled"
    where = [np.searchsorted(held, i) for i in idx]
    del train

    def pooled() -> Dataset:
        # the same array as train[held]: every held sample comes from some part
        x = np.empty((len(held), *parts[0].input_shape), dtype=parts[0].x.dtype)
        y = np.empty(len(held), dtype=parts[0].y.dtype)
        for d, pos in zip(parts, where, strict=True):
            x[pos], y[pos] = d.x, d.y
        return Dataset(x, y, parts[0].num_classes, name)

    return parts, test, pooled


def load_party(
    config: Config,
    num_peers: int,
    peer: int,
    *,
    train: DataFile | None = None,
    val: DataFile | None = None,
) -> PartyData:
    """Party `peer`'s data. `train`/`val` (e.g. `ringfl peer --data/--val`, or a node's
    `data`/`val` in the topology) win; else `data.files[peer]` (and `data.val_files[peer]`)
    of the config; else its part of the built-in dataset."""
    dc = config.data
    if train is not None:
        return party_files(config, train, val)
    if dc.dataset == "files":
        if len(dc.files) != num_peers:
            raise ValueError(
                f"data.files: {len(dc.files)} file(s) for {num_peers} peers (one per peer)"
            )
        vf = dc.val_files[peer] if dc.val_files else val
        return party_files(config, dc.files[peer], vf)
    parts, test, _ = builtin_split(config, num_peers)
    return PartyData(parts[peer], None, test, test.num_classes)


@dataclass
class PeerData:
    """Every simulated party's own data, the public test set (if any), and the split.
    `pooled` (every training sample held by some party, once: the centralized
    baseline's data) may be given as a function that builds it when first used."""

    parties: list[PartyData]
    test: Dataset | None
    num_classes: int
    summary: PartitionSummary
    _pooled: Dataset | Callable[[], Dataset]

    @property
    def pooled(self) -> Dataset:
        if not isinstance(self._pooled, Dataset):
            self._pooled = self._pooled()
        return self._pooled

    @property
    def parts(self) -> list[Dataset]:
        return [p.train for p in self.parties]


def prepare_data(config: Config, num_peers: int) -> PeerData:
    """Each of `num_peers` parties' data: its own file (`data.files`), or its part of the
    built-in dataset."""
    if config.data.dataset == "files":
        try:
            parties = [load_party(config, num_peers, p) for p in range(num_peers)]
        except ValueError as exc:  # a mismatch between config and files: the user's to fix
            raise ConfigError(str(exc)) from None
        k = max(p.num_classes for p in parties)
        summary = PartitionSummary(
            [len(p.train) for p in parties],
            [np.bincount(p.train.y, minlength=k).tolist() for p in parties],
        )

        def concat() -> Dataset:  # built when first used: the parties' files, once more
            return Dataset.concat([Dataset(p.train.x, p.train.y, k, "") for p in parties])

        return PeerData(parties, parties[0].test, k, summary, concat)
    parts, test, pooled = _split(config, num_peers)
    k = test.num_classes
    idx_summary = summarize_parts(parts, k)
    return PeerData([PartyData(p, None, test, k) for p in parts], test, k, idx_summary, pooled)


def summarize_parts(parts: Sequence[Dataset], k: int) -> PartitionSummary:
    return PartitionSummary(
        [len(p) for p in parts], [np.bincount(p.y, minlength=k).tolist() for p in parts]
    )


def resolve_path(path: str, base: Path) -> str:
    """`path` relative to `base` unless absolute."""
    return path if Path(path).is_absolute() else str(base / path)


__all__ = [
    "PartyData",
    "PeerData",
    "builtin_split",
    "load_party",
    "party_files",
    "prepare_data",
    "resolve_path",
    "subset",
    "summarize_parts",
]
