"""One party of the k-means equivalence test (tests/test_workloads_peers.py): the guide's
`KMeans` job on this party's own points, run as a real peer with
`ringfl.workloads.run.run_peer` — the same class the simulator ran, no extra code.

    python tests/job_peer_child.py TOPOLOGY NODE KEYS POINTS.npy
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ringfl.workloads.run import run_peer
from tests.test_workloads_kmeans_example import load_example


def main() -> None:
    topo, node, keys, points = sys.argv[1:5]
    job = load_example().KMeans(np.load(points), k=3, seed=2, max_iter=100)
    run = run_peer(job, topo, node=node, keys=keys, out="peer")
    np.save("centroids.npy", run.result)
    Path("contributors.json").write_text(json.dumps(run.contributors))


if __name__ == "__main__":
    main()
