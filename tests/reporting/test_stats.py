"""The statistics module on cases computed by hand (or published), not by the code under test."""

import math

import pytest

from upft_ray.reporting.stats import (
    compare_paired,
    mcnemar_exact,
    newcombe_paired_interval,
    seed_summary,
    verdict,
    wilson_interval,
)


def test_wilson_interval_on_hand_computed_cases():
    # 30/100, z = 1.959964: centre (0.3 + z^2/200) / (1 + z^2/100) = 0.307399,
    # half z/(1 + z^2/100) * sqrt(0.3*0.7/100 + z^2/40000) = 0.088450.
    lo, hi = wilson_interval(30, 100)
    assert lo == pytest.approx(0.218949, abs=1e-5) and hi == pytest.approx(0.395849, abs=1e-5)
    # 0/10: the interval is [0, z^2/(n + z^2)] = [0, 3.841459/13.841459].
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(3.841459 / 13.841459, abs=1e-6)
    # n/n mirrors 0/n.
    assert wilson_interval(10, 10)[0] == pytest.approx(1 - 3.841459 / 13.841459, abs=1e-6)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)


@pytest.mark.parametrize("b,c,expected", [
    (1, 6, 2 * (1 + 7) / 2 ** 7),           # 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
    (6, 1, 0.125),                          # symmetric
    (0, 5, 2 / 2 ** 5),                     # 0.0625: five discordant pairs all one way is not enough
    (0, 6, 2 / 2 ** 6),                     # 0.03125
    (3, 3, 1.0), (0, 0, 1.0),               # no evidence either way
    (2, 10, 2 * (1 + 12 + 66) / 2 ** 12),   # 0.0385742
])
def test_exact_mcnemar(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_newcombe_paired_interval_matches_the_published_example():
    # Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. 2012: table [[59, 6], [16, 80]];
    # difference -10/161 = -0.0621, 95% CI -0.1186 to -0.0046 (the book's Newcombe square-and-add).
    lo, hi = newcombe_paired_interval(59, 6, 16, 80)
    assert lo == pytest.approx(-0.1186, abs=5e-5) and hi == pytest.approx(-0.0046, abs=5e-5)
    # No discordant pair: the difference is 0 and the interval still has width (it is not [0, 0]).
    lo, hi = newcombe_paired_interval(30, 0, 0, 70)
    assert lo < 0 < hi


def test_t_intervals_against_closed_forms():
    # df = 1 (Cauchy): t_q = tan(pi (q - 1/2)); df = 2: t_q = (2q - 1) / sqrt(2 q (1 - q)); df = 4: tables.
    # Two seeds 0, 2: mean 1, s = sqrt 2, half width t_{0.975,1} * s / sqrt 2 = tan(0.475 pi) = 12.7062.
    two = seed_summary([0.0, 2.0])
    assert two.upper - 1 == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)
    # Three seeds 0, 1, 2: s = 1, half width t_{0.975,2} / sqrt 3.
    three = seed_summary([0.0, 1.0, 2.0])
    assert three.upper - 1 == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3), rel=1e-9)
    five = seed_summary([0.0, 1.0, 2.0, 3.0, 4.0])  # s = sqrt(2.5), t_{0.975,4} = 2.776445
    assert five.upper - 2 == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)


def test_seed_summary_is_mean_std_and_t_interval():
    # 18, 21, 20: mean 59/3, sample std sqrt(((-5/3)^2 + (4/3)^2 + (1/3)^2) / 2) = sqrt(7/3) = 1.5275;
    # half width t_{0.975,2} * s / sqrt(3) = 4.302653 * 1.527525 / 1.732051 = 3.794583.
    s = seed_summary([18.0, 21.0, 20.0])
    assert s.mean == pytest.approx(59 / 3) and s.std == pytest.approx(math.sqrt(7 / 3))
    assert s.lower == pytest.approx(59 / 3 - 3.794583, abs=1e-5) and s.upper == pytest.approx(59 / 3 + 3.794583, abs=1e-5)
    # p of mean = 0 for differences -6, -5, -7: t = 6 / (1 / sqrt 3) = 10.392; two-sided p with df 2
    # is 1 - t / sqrt(2 + t^2) (closed form for df = 2) = 0.009133.
    d = seed_summary([-6.0, -5.0, -7.0])
    t = 6 * math.sqrt(3)
    assert d.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)
    one = seed_summary([25.0])
    assert (one.mean, one.std, one.lower, one.p_value) == (25.0, None, None, None)


def test_verdicts_and_paired_comparison_count_unpaired_rows():
    assert verdict(0.01, -3.0) == "worse" and verdict(0.01, 2.0) == "better" and verdict(0.2, 9.0) == "within noise"
    assert verdict(None, 5.0) == "within noise"
    # 10 shared questions: tuned right where base wrong on 1, base right where tuned wrong on 6.
    base = {("b", f"q{i}", 0): i < 7 for i in range(10)} | {("b", "extra", 0): True}
    tuned = {("b", f"q{i}", 0): i in (0, 7) for i in range(10)} | {("b", "new1", 0): False, ("b", "new2", 0): True}
    cmp = compare_paired(tuned, base)
    assert (cmp.paired, cmp.only_a, cmp.only_b, cmp.only_in_a, cmp.only_in_b) == (10, 1, 6, 2, 1)
    assert cmp.a_correct == 2 and cmp.b_correct == 7 and cmp.difference == pytest.approx(-0.5)
    assert cmp.p_value == pytest.approx(0.125) and cmp.verdict == "within noise"
    assert cmp.lower < -0.5 < cmp.upper
    assert compare_paired({("b", "x", 0): True}, {("b", "y", 0): True}) is None
