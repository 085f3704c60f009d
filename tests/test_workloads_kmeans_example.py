"""The guide's worked example (examples/federated_kmeans.py): a new workload in under 100
lines whose federated result equals scikit-learn's k-means on the pooled points."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

from ringfl.workloads.run import simulate_jobs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "federated_kmeans.py"


def load_example():
    spec = importlib.util.spec_from_file_location("federated_kmeans", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kmeans_example_is_short_and_equals_sklearn() -> None:
    assert len(EXAMPLE.read_text().splitlines()) < 100
    km = load_example()
    x = StandardScaler().fit_transform(load_wine(return_X_y=True)[0])
    parties = [km.KMeans(x[i::3], k=3, seed=2, max_iter=100) for i in range(3)]
    got = simulate_jobs(parties).result
    # the same start, then scikit-learn's Lloyd iterations on the pooled points
    start = km.KMeans(x, k=3, seed=2)
    start.apply(start.statistics())  # round 0 of one party holding every point
    ref = SkKMeans(3, init=start.centroids, n_init=1, algorithm="lloyd", tol=0, max_iter=100)
    ref.fit(x)
    order = np.lexsort(got.T)
    np.testing.assert_allclose(
        got[order], ref.cluster_centers_[np.lexsort(ref.cluster_centers_.T)], atol=1e-9
    )
    assert all(np.array_equal(p.result(), got) for p in parties)
