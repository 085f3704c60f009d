"""The `ray` compute backend on a local Ray instance started here: the same numbers as
`inline`, with Ray placing each party's training task."""

from __future__ import annotations

import pytest
import torch

from ringfl.compute import Ray
from ringfl.sim import simulate
from ringfl.topology import make
from tests.test_compute import CASES, outcome

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'ringfl[ray]')")

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


# secure ring: momentum, a crash and a fresh restart; gossip: every party's model scored
@pytest.mark.parametrize("name", ["secure-ring-restart", "gossip-torus"])
def test_ray_backend_gives_the_inline_numbers(local_ray, name):
    cfg, kind, n = CASES[name]
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray tasks train with one thread: so does inline here
    try:
        ref = simulate(make(kind, n), cfg, progress=False, baseline=False, backend="inline")
        got = simulate(make(kind, n), cfg, progress=False, baseline=False, backend=Ray(num_cpus=1))
    finally:
        torch.set_num_threads(before)
    assert got.backend == "ray" and got.workers == 2  # 2 CPUs / 1 CPU per task
    assert outcome(got) == outcome(ref)
    assert ray.is_initialized()  # the test's instance: ringfl leaves it running
