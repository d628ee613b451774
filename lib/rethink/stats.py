"""Statistics the verdicts rest on: mean ± std over seeds, bootstrap intervals, log-odds."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float   # sample standard deviation (ddof=1); 0 for a single seed
    n: int

    def fmt(self, digits: int = 2) -> str:
        if self.n <= 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def mean_std(values) -> MeanStd:
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return MeanStd(math.nan, math.nan, 0)
    return MeanStd(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size))


def bootstrap_ci(values, statistic=np.mean, n_resamples: int = 10_000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(values, dtype=float),), statistic, n_resamples=n_resamples,
                    confidence_level=confidence, method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def log_odds(p, eps: float = 1e-6):
    """logit(p) = log(p / (1 - p)), the scale on which Kornblith et al. compare accuracies."""
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    return np.log(p / (1 - p))


def pearson_r(x, y) -> float:
    """Pearson's r of two equal-length samples (NaN if either is constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return float((dx * dy).sum() / denom) if denom > 0 else math.nan


def pearson_ci(x, y, n_resamples: int = 10_000, confidence: float = 0.95,
               seed: int = 0, min_pairs: int = 5) -> tuple[float, float, float]:
    """r and its percentile bootstrap interval, resampling (x, y) pairs (models) with
    replacement; resamples where x or y is constant are skipped.

    With fewer than `min_pairs` pairs the interval is (nan, nan): most resamples of 3 or 4
    pairs hold only 2 distinct points, whose r is +-1, and the "interval" says nothing.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length ({len(x)} vs {len(y)})")
    r = pearson_r(x, y)
    if len(x) < max(3, min_pairs):
        return r, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    xs, ys = x[idx], y[idx]
    dx, dy = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    denom = np.sqrt((dx * dx).sum(1) * (dy * dy).sum(1))
    ok = denom > 1e-12
    rs = (dx * dy).sum(1)[ok] / denom[ok]
    alpha = (1 - confidence) / 2
    return r, float(np.quantile(rs, alpha)), float(np.quantile(rs, 1 - alpha))
