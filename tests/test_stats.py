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
