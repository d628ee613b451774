"""The statistics and the vocabulary every verdict rests on, against scipy and formulas."""
import math

import numpy as np
import pytest
from scipy import stats

from rethink.reports import rules


def test_paired_difference_interval_is_scipys_one_sample_t_interval():
    d = rules.diff([1.2, 0.4, 2.1])
    ci = stats.ttest_1samp([1.2, 0.4, 2.1], 0).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high))
    assert rules.t_critical(2) == pytest.approx(4.3027, abs=1e-4)   # not the 2 of "two standard errors"
    assert d.n == 3 and d.sign == 0   # the interval [-0.76, 3.56] contains 0


def test_sign_needs_three_seeds_and_an_interval_clear_of_zero():
    assert rules.diff([2.0, 2.1]).sign is None                     # two seeds never decide
    assert rules.diff([2.0, 2.1, 1.9]).sign == 1
    assert rules.diff([-2.0, -2.1, -1.9]).sign == -1
    assert rules.paired({0: 3.0, 1: 4.0, 2: 5.0, 7: 9.0}, {0: 1.0, 1: 2.0, 2: 3.5}).values == (2.0, 2.0, 1.5)


def test_resolves_compares_the_interval_with_an_effect():
    d = rules.diff([0.1, -0.1, 0.0])
    assert d.resolves(2.0) and not d.resolves(0.1)
    assert not rules.diff([0.0, 0.1]).resolves(10)                 # too few seeds


def test_fisher_interval_is_scipys():
    rng = np.random.default_rng(0)
    x = rng.normal(size=10)
    y = x + rng.normal(size=10)
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(0.95)
    assert rules.fisher_interval(res.statistic, 10) == pytest.approx((ci.low, ci.high))
    assert all(math.isnan(v) for v in rules.fisher_interval(0.5, 3))


def test_dependent_correlations_test_holds_its_size_under_the_null():
    """Meng, Rosenthal & Rubin (1992): with equal correlations, p < 0.05 about 5% of the time."""
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, 0.6, 0.6], [0.6, 1.0, 0.5], [0.6, 0.5, 1.0]])   # r(y,a) = r(y,b)
    n, rejections, trials = 40, 0, 1500
    for _ in range(trials):
        y, a, b = rng.multivariate_normal(np.zeros(3), cov, size=n).T
        z, p = rules.correlated_correlations(np.corrcoef(y, a)[0, 1], np.corrcoef(y, b)[0, 1],
                                             np.corrcoef(a, b)[0, 1], n)
        rejections += p < 0.05
    assert 0.03 < rejections / trials < 0.075
    z, p = rules.correlated_correlations(0.9, 0.3, 0.4, 20)
    assert z > 0 and p < 0.01
    z2, _ = rules.correlated_correlations(0.3, 0.9, 0.4, 20)
    assert z2 == pytest.approx(-z)


def test_slope_is_least_squares():
    assert rules.slope([0, 1, 2], [1, 3, 5]) == pytest.approx(2.0)
    x, y = [1, 2, 4, 7], [2.0, 2.5, 4.1, 5.0]
    assert rules.slope(x, y) == pytest.approx(stats.linregress(x, y).slope)


CLAIM = {"id": "c", "preconditions": [
    {"id": "top1", "text": "teacher top-1", "at_least": 75, "unit": "%", "why": "-"},
    {"id": "same", "text": "same norm", "equals": True, "why": "-"},
    {"id": "small", "text": "smallest size", "at_most": 3500, "why": "-"}]}


def test_preconditions_name_what_is_unmet_with_the_measured_value():
    checks = rules.check_preconditions(CLAIM, {"top1": 50.1, "same": {"value": False, "note": "bn/gn"},
                                               "small": 1000})
    assert [c["met"] for c in checks] == [False, False, True]
    assert checks[1]["note"] == "bn/gn"
    assert rules.floor_reason(checks) == ("below the scale floor: teacher top-1 50.1% (needs >= 75%); "
                                          "same norm no (needs yes)")
    missing = rules.check_preconditions(CLAIM, {"top1": 80.0, "same": True})
    assert rules.floor_reason(missing).endswith("smallest size not measured (needs <= 3500)")
    assert rules.floor_reason(rules.check_preconditions(CLAIM, {"top1": 80, "same": True, "small": 10})) == ""


def test_decide_applies_the_floor_before_the_rule():
    called = []

    def rule():
        called.append(1)
        return rules.REPRODUCED, ""

    v = rules.decide(CLAIM, {"top1": 10.0, "same": True, "small": 10}, rule, ours="x", rule="r")
    assert v["verdict"] == "inconclusive" and not called
    v = rules.decide(CLAIM, {"top1": 90.0, "same": True, "small": 10}, rule, ours="x", rule="r")
    assert v["verdict"] == "reproduced" and called


def test_verdict_refuses_unknown_outcomes_and_reasonless_inconclusives():
    with pytest.raises(ValueError, match="outcome must be one of"):
        rules.verdict("c", "maybe", ours="", rule="")
    with pytest.raises(ValueError, match="needs its reason"):
        rules.verdict("c", "inconclusive", ours="", rule="")
    v = rules.verdict("c", "reproduced", ours="", rule="", stats={"d": rules.diff([1, 2, 3]), "x": math.nan})
    assert v["stats"]["d"]["n"] == 3 and v["stats"]["x"] is None


def test_undecided_words_too_few_seeds_and_noise():
    assert rules.undecided(rules.diff([1.0]), "gap")[1].startswith("too few seeds: gap over 1 seed(s)")
    assert rules.undecided(rules.diff([1.0, -1.0, 0.5]), "gap")[1].startswith("difference within noise: gap")
