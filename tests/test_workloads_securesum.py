"""The secure sum of statistics: scale agreement, stated resolution, exact integers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ringfl.errors import ConfigError
from ringfl.workloads.base import plain_sum, run_parties
from ringfl.workloads.securesum import (
    SimulatedSecureSum,
    agreed_exponent,
    exponent_onehot,
    frac_bits,
    resolution,
)


@pytest.mark.parametrize("n", [3, 5])
def test_sum_within_the_stated_resolution(n: int) -> None:
    rng = np.random.default_rng(n)
    vs = [rng.standard_normal(500) * 10.0 ** rng.integers(-3, 9, 500) for _ in range(n)]
    s = SimulatedSecureSum(n)
    got = s(vs)
    # the correctly rounded exact sum; the result may add one rounding of its own
    exact = np.array([math.fsum(col) for col in zip(*vs, strict=True)])
    ulp = np.spacing(np.abs(exact))
    assert np.all(np.abs(got - exact) <= s.last_resolution + ulp)
    # the bound is what the module states: N·2^(E−f−1), E the largest party exponent
    e = max(int(np.frexp(np.max(np.abs(v)))[1]) for v in vs)
    assert s.last_resolution == n * 2.0 ** (e - frac_bits(n) - 1)
    assert s.stats.rounds == 2 and all(b > 0 for b in s.stats.bytes_sent.values())


def test_integers_are_summed_exactly_and_zeros_work() -> None:
    rng = np.random.default_rng(1)
    vs = [np.floor(rng.random(300) * 2.0**50) for _ in range(3)]
    s = SimulatedSecureSum(3)
    assert np.array_equal(s(vs), vs[0] + vs[1] + vs[2])
    zeros = [np.zeros(7) for _ in range(3)]
    assert np.array_equal(s(zeros), np.zeros(7))


def test_exponent_agreement() -> None:
    oh = exponent_onehot(np.array([0.3, -5.0]))  # 5 = 0.625·2^3
    assert agreed_exponent(oh + exponent_onehot(np.array([1e-3]))) == 3
    assert agreed_exponent(exponent_onehot(np.zeros(3))) is None
    assert resolution(3, None) == 0.0


def test_refuses_one_party_and_non_finite() -> None:
    with pytest.raises(ConfigError, match="at least 2 parties"):
        SimulatedSecureSum(1)

    class Bad:
        done = False

        def statistics(self):
            return np.array([1.0, np.nan])

        def apply(self, total):
            raise AssertionError

        def result(self):
            return None

    with pytest.raises(Exception, match="not finite"):
        run_parties([Bad(), Bad()], plain_sum)


def test_a_public_bound_skips_the_scale_round_and_is_enforced() -> None:
    from ringfl.errors import SecureAggregationError

    s = SimulatedSecureSum(3)
    vs = [np.array([3.0, -7.0]), np.array([1.0, 0.0]), np.array([0.0, 2.0])]
    assert np.array_equal(s(vs, exponent=4), np.array([4.0, -5.0]))
    assert s.stats.rounds == 1
    with pytest.raises(
        SecureAggregationError, match="party 0: .* exceeds the workload's public bound 2"
    ):
        s(vs, exponent=2)
