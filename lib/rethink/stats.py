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
