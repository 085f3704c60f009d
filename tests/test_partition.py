"""Partitioners: seeded, cover every sample exactly once (except `fraction`), honour sizes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from ringfl.errors import ConfigError
from ringfl.partition import dirichlet, fraction, iid, partition, shards, summarize


def labels_of(n: int, k: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=n)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n
    np.testing.assert_array_equal(np.sort(allidx), np.arange(n))
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)


@pytest.mark.parametrize("n,peers", [(1, 1), (10, 2), (101, 3), (1000, 7)])
def test_iid_exact_cover_and_balanced(n, peers):
    parts = iid(n, peers, seed=5)
    assert_exact_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("peers,alpha", [(1, 0.5), (2, 0.1), (3, 1.0), (7, 0.5), (8, 100.0)])
def test_dirichlet_exact_cover_min_size(peers, alpha):
    y = labels_of(2003)
    parts = dirichlet(y, peers, alpha, seed=1, min_size=20)
    assert_exact_cover(parts, len(y))
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_skew_depends_on_alpha():
    y = labels_of(5000)

    def mean_classes(alpha: float) -> float:
        parts = dirichlet(y, 10, alpha, seed=2, min_size=1)
        s = summarize(parts, y, 10)
        return float(np.mean([np.sum(np.array(h) > 0.05 * sum(h)) for h in s.histograms]))

    assert mean_classes(0.05) < mean_classes(100.0)
    assert mean_classes(100.0) == 10.0


def test_dirichlet_impossible_min_size_errors():
    y = labels_of(100)
    with pytest.raises(ConfigError, match="partition.min_size=20 is impossible"):
        dirichlet(y, 8, 0.5, seed=0, min_size=20)
    with pytest.raises(ConfigError, match=r"partition.min_size=12: no Dirichlet\(alpha=0.01\)"):
        dirichlet(y, 8, 0.01, seed=0, min_size=12, max_tries=5)
    with pytest.raises(ConfigError, match="partition.alpha must be > 0"):
        dirichlet(y, 2, 0.0, seed=0)


@pytest.mark.parametrize("peers,k", [(1, 1), (2, 2), (7, 2), (10, 3)])
def test_shards_exact_cover_few_classes(peers, k):
    y = labels_of(997)
    parts = shards(y, peers, k, seed=3)
    assert_exact_cover(parts, len(y))
    if peers * k >= 10:
        # each shard spans at most 2 classes when shards are smaller than a class
        for p in parts:
            assert len(np.unique(y[p])) <= 2 * k


def test_fraction_overlaps_and_size():
    parts = fraction(300, 4, 1 / 3, seed=9)
    assert all(len(p) == 100 and len(np.unique(p)) == 100 for p in parts)
    assert len(np.intersect1d(parts[0], parts[1])) > 0  # overlaps are expected
    with pytest.raises(ConfigError, match="partition.fraction"):
        fraction(300, 4, 0.0, seed=9)


@pytest.mark.parametrize("name", ["iid", "dirichlet", "shards", "fraction"])
def test_deterministic_under_seed(name):
    y = labels_of(600)
    a = partition(name, y, 5, seed=11)
    b = partition(name, y, 5, seed=11)
    c = partition(name, y, 5, seed=12)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_bad_partition_name():
    with pytest.raises(ConfigError, match="partition.name must be one of"):
        partition("random", labels_of(10), 2, seed=0)
    with pytest.raises(ConfigError, match="cannot split 3 samples among 4 peers"):
        iid(3, 4, seed=0)


def test_summary_table_csv_json(tmp_path):
    y = np.array([0, 0, 1, 2, 2, 2])
    parts = [np.array([0, 3]), np.array([1, 2, 4, 5])]
    s = summarize(parts, y, 3)
    assert s.sizes == [2, 4]
    assert s.histograms == [[1, 0, 1], [1, 1, 2]]
    lines = s.table().splitlines()
    assert lines[0].split() == ["peer", "size", "0", "1", "2"]
    assert lines[2].split() == ["1", "4", "1", "1", "2"]
    s.save_csv(tmp_path / "p.csv")
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert rows[1] == {"peer": "1", "size": "4", "class_0": "1", "class_1": "1", "class_2": "2"}
    s.save_json(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["histograms"] == s.histograms
