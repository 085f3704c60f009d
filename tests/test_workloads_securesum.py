"""The secure sum of statistics on the round engine: scale agreement, stated resolution,
exact integers, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ringfl.engine.scale import agreed_exponent, exponent_onehot, frac_bits, resolution
from ringfl.errors import ConfigError, RingflError, SecureAggregationError
from ringfl.workloads.run import run_centralized, simulate_jobs


class Once:
    """A job that sums one vector (optionally under a public bound 2^bound) and is done."""

    def __init__(self, v: np.ndarray, bound: int | None = None) -> None:
        self.v, self.bound, self.total = v, bound, None

    @property
    def done(self) -> bool:
        return self.total is not None

    def statistics(self) -> np.ndarray:
        return self.v

    def scale_exponent(self) -> int | None:
        return self.bound

    def apply(self, total: np.ndarray) -> None:
        self.total = total

    def result(self) -> np.ndarray:
        return self.total


@pytest.mark.parametrize("n", [3, 5])
def test_sum_within_the_stated_resolution(n: int) -> None:
    rng = np.random.default_rng(n)
    vs = [rng.standard_normal(500) * 10.0 ** rng.integers(-3, 9, 500) for _ in range(n)]
    run = simulate_jobs([Once(v) for v in vs])
    got = run.result
    assert all(np.array_equal(r, got) for r in run.results)
    # the correctly rounded exact sum; the result may add one rounding of its own
    exact = np.array([math.fsum(col) for col in zip(*vs, strict=True)])
    ulp = np.spacing(np.abs(exact))
    bound = run.counts.worst_resolution
    assert np.all(np.abs(got - exact) <= bound + ulp)
    # the bound is what the module states: N·2^(E−f−1), E the largest party exponent
    e = max(int(np.frexp(np.max(np.abs(v)))[1]) for v in vs)
    assert bound == n * 2.0 ** (e - frac_bits(n) - 1)
    # one statistics vector = a SCALE and a SUM round; every party contributed to both
    assert run.counts.sums == 1 and run.counts.rounds == 2
    assert run.contributors == [[str(p) for p in range(n)]] * 2
    assert all(b > 0 for b in run.bytes_sent.values())


def test_integers_are_summed_exactly_and_zeros_work() -> None:
    rng = np.random.default_rng(1)
    vs = [np.floor(rng.random(300) * 2.0**50) for _ in range(3)]
    assert np.array_equal(simulate_jobs([Once(v) for v in vs]).result, vs[0] + vs[1] + vs[2])
    zeros = simulate_jobs([Once(np.zeros(7)) for _ in range(3)])
    assert np.array_equal(zeros.result, np.zeros(7))
    assert zeros.counts.rounds == 1  # every party sent zeros: no SUM round is needed


def test_exponent_agreement() -> None:
    oh = exponent_onehot(np.array([0.3, -5.0]))  # 5 = 0.625·2^3
    assert agreed_exponent(oh + exponent_onehot(np.array([1e-3]))) == 3
    assert agreed_exponent(exponent_onehot(np.zeros(3))) is None
    assert resolution(3, None) == 0.0


def test_refuses_too_few_parties_and_non_finite() -> None:
    with pytest.raises(ConfigError, match="at least 2 parties"):
        simulate_jobs([Once(np.ones(2))])
    with pytest.raises(ConfigError, match="secure sum needs at least 3 parties"):
        simulate_jobs([Once(np.ones(2)), Once(np.ones(2))])
    assert np.array_equal(
        simulate_jobs([Once(np.ones(2)), Once(np.ones(2))], secure=False).result, [2.0, 2.0]
    )
    with pytest.raises(RingflError, match="not finite"):
        run_centralized([Once(np.array([1.0, np.nan])), Once(np.ones(2))])
    with pytest.raises(RingflError, match="not finite"):
        simulate_jobs([Once(np.array([1.0, np.inf])), Once(np.ones(2)), Once(np.ones(2))])


def test_a_public_bound_skips_the_scale_round_and_is_enforced() -> None:
    vs = [np.array([3.0, -7.0]), np.array([1.0, 0.0]), np.array([0.0, 2.0])]
    run = simulate_jobs([Once(v, bound=4) for v in vs])
    assert np.array_equal(run.result, np.array([4.0, -5.0]))
    assert run.counts.rounds == 1
    with pytest.raises(SecureAggregationError, match="exceeds the workload's public bound 2"):
        simulate_jobs([Once(v, bound=2) for v in vs])
