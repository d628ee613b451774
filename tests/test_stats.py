import numpy as np
import pytest
from scipy.special import logit

from rethink.stats import bootstrap_ci, log_odds, mean_std


def test_mean_std_matches_numpy_sample_std():
    v = [71.2, 70.4, 72.9]
    m = mean_std(v)
    assert m.mean == pytest.approx(np.mean(v))
    assert m.std == pytest.approx(np.std(v, ddof=1))
    assert m.fmt() == f"{np.mean(v):.2f} ± {np.std(v, ddof=1):.2f}"


def test_single_seed_has_no_error_bar():
    assert mean_std([0.5]).fmt() == "0.50"


def test_log_odds_matches_scipy_logit():
    p = np.array([0.1, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(log_odds(p), logit(p))


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1, 1, 20), rng.normal(1, 1, 2000)
    lo_s, hi_s = bootstrap_ci(small, n_resamples=2000)
    lo_l, hi_l = bootstrap_ci(large, n_resamples=2000)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < hi_s - lo_s


def test_pearson_r_matches_scipy():
    from scipy.stats import pearsonr
    from rethink.stats import pearson_r

    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    y = 0.7 * x + rng.normal(size=12)
    assert pearson_r(x, y) == pytest.approx(pearsonr(x, y).statistic)
    assert np.isnan(pearson_r([1, 1, 1], [1, 2, 3]))


def test_pearson_ci_brackets_r_and_matches_scipy_bootstrap():
    from scipy.stats import bootstrap, pearsonr
    from rethink.stats import pearson_ci

    rng = np.random.default_rng(2)
    x = rng.normal(size=30)
    y = 0.5 * x + rng.normal(size=30)
    r, lo, hi = pearson_ci(x, y, n_resamples=4000)
    assert lo < r < hi
    ref = bootstrap((x, y), lambda a, b: pearsonr(a, b).statistic, paired=True, vectorized=False,
                    n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.05) and hi == pytest.approx(ref.high, abs=0.05)


def test_pearson_ci_of_a_perfect_line_is_degenerate_at_one():
    from rethink.stats import pearson_ci

    r, lo, hi = pearson_ci([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], n_resamples=500)
    assert r == pytest.approx(1) and lo == pytest.approx(1) and hi == pytest.approx(1)


def test_pearson_ci_gives_no_interval_for_too_few_models():
    from rethink.stats import pearson_ci

    r, lo, hi = pearson_ci([1, 2, 3], [1, 3, 2])
    assert r == pytest.approx(0.5) and np.isnan(lo) and np.isnan(hi)
    assert not np.isnan(pearson_ci([1, 2, 3], [1, 3, 2], min_pairs=3)[1])
    with pytest.raises(ValueError, match="length"):
        pearson_ci([1, 2, 3], [1, 2])
