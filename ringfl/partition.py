"""Split one dataset among N peers. Every partitioner is seeded and returns one sorted int64
index array per peer.

- `iid`: a random permutation cut into N near-equal parts (every sample exactly once).
- `dirichlet`: label skew; for each class, the share of each peer is drawn from
  Dirichlet(alpha) (small alpha: few classes per peer). Every sample exactly once; drawn
  again (at most `max_tries` times) until each peer has at least `min_size` samples.
- `shards`: the pathological split of McMahan et al. (2017): sort by label, cut into
  N * classes_per_peer equal shards, give each peer `classes_per_peer` random shards, so a
  peer sees about that many classes. Every sample exactly once.
- `fraction`: each peer independently keeps a random fraction f of the whole dataset
  (without replacement within a peer). Peers OVERLAP: a sample can be on several peers and
  some samples on none — the classic "each node holds a random third" demo.

Errors are `ConfigError`s that name the `partition.*` field at fault.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringfl.errors import ConfigError

PARTITIONERS = ("iid", "dirichlet", "shards", "fraction")


def _check_peers(num_peers: int, n: int) -> None:
    if num_peers < 1:
        raise ConfigError(f"number of peers must be >= 1, got {num_peers}")
    if n < num_peers:
        raise ConfigError(f"cannot split {n} samples among {num_peers} peers")


def iid(n: int, num_peers: int, seed: int) -> list[np.ndarray]:
    """A seeded random permutation of range(n) cut into `num_peers` near-equal parts."""
    _check_peers(num_peers, n)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_peers)]


def dirichlet(
    labels: np.ndarray,
    num_peers: int,
    alpha: float,
    seed: int,
    *,
    min_size: int = 10,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split: class c's samples go to peers in proportions ~ Dirichlet(alpha)."""
    labels = np.asarray(labels)
    n = len(labels)
    _check_peers(num_peers, n)
    if not alpha > 0:
        raise ConfigError(f"partition.alpha must be > 0, got {alpha}")
    if min_size < 0:
        raise ConfigError(f"partition.min_size must be >= 0, got {min_size}")
    if min_size * num_peers > n:
        raise ConfigError(
            f"partition.min_size={min_size} is impossible: {num_peers} peers x {min_size} "
            f"> {n} samples"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_peers)]
        for idx in by_class:
            props = rng.dirichlet(np.full(num_peers, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(np.int64)
            for peer, chunk in enumerate(np.split(idx, cuts)):
                parts[peer].append(chunk)
        merged = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(m) for m in merged) >= min_size:
            return merged
    raise ConfigError(
        f"partition.min_size={min_size}: no Dirichlet(alpha={alpha}) split of {n} samples among "
        f"{num_peers} peers gave every peer that many samples in {max_tries} tries; "
        "raise partition.alpha or lower partition.min_size"
    )


def shards(
    labels: np.ndarray, num_peers: int, classes_per_peer: int, seed: int
) -> list[np.ndarray]:
    """Pathological non-IID: each peer gets `classes_per_peer` label-sorted shards."""
    labels = np.asarray(labels)
    n = len(labels)
    _check_peers(num_peers, n)
    if classes_per_peer < 1:
        raise ConfigError(f"partition.classes_per_peer must be >= 1, got {classes_per_peer}")
    num_shards = num_peers * classes_per_peer
    if num_shards > n:
        raise ConfigError(
            f"partition.classes_per_peer={classes_per_peer}: {num_shards} shards > {n} samples"
        )
    rng = np.random.default_rng(seed)
    # Shuffle first so that ties within a class are broken at random, then sort stably.
    perm = rng.permutation(n)
    order = perm[np.argsort(labels[perm], kind="stable")]
    pieces = np.array_split(order, num_shards)
    assignment = rng.permutation(num_shards).reshape(num_peers, classes_per_peer)
    return [
        np.sort(np.concatenate([pieces[s] for s in row])).astype(np.int64) for row in assignment
    ]


def fraction(n: int, num_peers: int, frac: float, seed: int) -> list[np.ndarray]:
    """Each peer keeps round(frac * n) random samples; peers overlap (see module doc)."""
    if num_peers < 1:
        raise ConfigError(f"number of peers must be >= 1, got {num_peers}")
    if not 0.0 < frac <= 1.0:
        raise ConfigError(f"partition.fraction must be in (0, 1], got {frac}")
    k = max(1, int(round(frac * n)))
    if k > n:
        raise ConfigError(f"partition.fraction={frac}: dataset has only {n} samples")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(num_peers)]
    return [np.sort(r.choice(n, size=k, replace=False)).astype(np.int64) for r in rngs]


def partition(
    name: str,
    labels: np.ndarray,
    num_peers: int,
    seed: int,
    *,
    alpha: float = 0.5,
    classes_per_peer: int = 2,
    fraction_per_peer: float = 1.0 / 3.0,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Dispatch on `name` (one of `PARTITIONERS`)."""
    labels = np.asarray(labels)
    if name == "iid":
        return iid(len(labels), num_peers, seed)
    if name == "dirichlet":
        return dirichlet(labels, num_peers, alpha, seed, min_size=min_size)
    if name == "shards":
        return shards(labels, num_peers, classes_per_peer, seed)
    if name == "fraction":
        return fraction(len(labels), num_peers, fraction_per_peer, seed)
    raise ConfigError(f"partition.name must be one of {', '.join(PARTITIONERS)}; got {name!r}")


@dataclass(frozen=True)
class PartitionSummary:
    """Per-peer sample counts and label histograms (`histograms[p][c]` = samples of class c)."""

    sizes: list[int]
    histograms: list[list[int]]

    def table(self) -> str:
        """A fixed-width text table: one row per peer, one column per class."""
        k = len(self.histograms[0]) if self.histograms else 0
        head = ["peer", "size"] + [str(c) for c in range(k)]
        rows = [
            [str(p), str(s)] + [str(v) for v in h]
            for p, (s, h) in enumerate(zip(self.sizes, self.histograms, strict=True))
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:>{w}}}" for w in widths)
        return "\n".join(fmt.format(*r) for r in [head, *rows])

    def to_rows(self) -> list[dict[str, int]]:
        return [
            {"peer": p, "size": s, **{f"class_{c}": v for c, v in enumerate(h)}}
            for p, (s, h) in enumerate(zip(self.sizes, self.histograms, strict=True))
        ]

    def save_csv(self, path: str | Path) -> None:
        rows = self.to_rows()
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["peer", "size"])
            w.writeheader()
            w.writerows(rows)

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps({"sizes": self.sizes, "histograms": self.histograms}, indent=1) + "\n"
        )


def summarize(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> PartitionSummary:
    """Sizes and label histograms of `parts` (index arrays into `labels`)."""
    labels = np.asarray(labels)
    return PartitionSummary(
        sizes=[int(len(p)) for p in parts],
        histograms=[np.bincount(labels[p], minlength=num_classes).tolist() for p in parts],
    )
