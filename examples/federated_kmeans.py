"""A new workload in a few lines: federated k-means (Lloyd's algorithm) on secure sums.

Every party holds its own points. Each round, every party sends, per centroid, the count
and the coordinate sums of its points nearest to it; the secure sum adds them; every party
moves the centroids to the pooled means. Only pooled counts and sums are ever revealed.

    python examples/federated_kmeans.py

The same class runs on real peers, one process per party, with no change:
`ringfl.workloads.run.run_peer(KMeans(my_points, k=3), "topo.json", node="a", keys="keys/")`.
"""

from __future__ import annotations

import numpy as np

from ringfl.workloads.run import simulate_jobs


class KMeans:
    """One party's side of federated k-means (a `ringfl.engine.workload.Statistics` job)."""

    def __init__(self, x: np.ndarray, k: int, *, seed: int = 0, max_iter: int = 50, tol=1e-9):
        self.x = np.asarray(x, dtype=np.float64)
        self.k, self.seed, self.max_iter, self.tol = k, seed, max_iter, tol
        self.centroids: np.ndarray | None = None  # agreed in the first round
        self.iterations = 0
        self.done = False

    def statistics(self) -> np.ndarray:
        d = self.x.shape[1]
        if self.centroids is None:  # round 0: pooled mean and spread, to place the start
            return np.concatenate([[len(self.x)], self.x.sum(0), (self.x**2).sum(0)])
        dist = ((self.x[:, None, :] - self.centroids[None]) ** 2).sum(axis=2)
        nearest = dist.argmin(axis=1)
        counts = np.bincount(nearest, minlength=self.k)
        sums = np.zeros((self.k, d))
        np.add.at(sums, nearest, self.x)
        return np.concatenate([counts, sums.ravel()])

    def apply(self, total: np.ndarray) -> None:
        d = self.x.shape[1]
        if self.centroids is None:
            n, mean = total[0], total[1 : 1 + d] / total[0]
            std = np.sqrt(np.maximum(total[1 + d :] / n - mean**2, 0.0))
            # the same public seed on every party: the same starting centroids
            rng = np.random.default_rng(self.seed)
            self.centroids = mean + std * rng.standard_normal((self.k, d))
            return
        counts, sums = total[: self.k], total[self.k :].reshape(self.k, d)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], self.centroids)
        shift = float(np.abs(new - self.centroids).max())
        self.centroids = new
        self.iterations += 1
        self.done = shift <= self.tol or self.iterations >= self.max_iter

    def result(self) -> np.ndarray:
        assert self.centroids is not None
        return self.centroids


def main() -> None:
    from sklearn.datasets import load_iris

    x, _ = load_iris(return_X_y=True)
    parties = [KMeans(x[i::3], k=3, seed=1) for i in range(3)]  # 3 parties, own rows each
    centroids = simulate_jobs(parties).result  # or, one party per process: run_peer(...)
    print(f"{parties[0].iterations} iterations; centroids:\n{np.round(centroids, 3)}")


if __name__ == "__main__":
    main()
