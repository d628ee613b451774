"""Corruption metrics of ImageNet-C (Hendrycks & Dietterich 2019), normalised by a baseline.

Errors are rates in [0, 1], one per severity 1..5, per corruption:

    CE_c          = sum_s E(f, s, c) / sum_s E(base, s, c)
    relative CE_c = sum_s (E(f, s, c) - E_clean(f)) / sum_s (E(base, s, c) - E_clean(base))
    mCE           = mean of CE_c over the 15 benchmark corruptions (likewise relative mCE)

The paper's baseline is AlexNet; this book has none, so the chapter names the fixed
baseline model it uses instead.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .corruptions import BENCHMARK

Errors = Mapping[str, Sequence[float]]   # corruption -> error at severities 1..5


def _check(errors: Errors, names: Sequence[str], who: str) -> None:
    missing = [n for n in names if n not in errors]
    if missing:
        raise KeyError(f"{who} has no errors for {missing}")
    bad = [n for n in names if len(errors[n]) != 5]
    if bad:
        raise ValueError(f"{who}: expected 5 severities for {bad}")


def corruption_errors(errors: Errors, baseline: Errors, names: Sequence[str] = BENCHMARK) -> dict[str, float]:
    """CE_c for each corruption in ``names``."""
    _check(errors, names, "model")
    _check(baseline, names, "baseline")
    out = {}
    for n in names:
        denom = float(np.sum(baseline[n]))
        if denom <= 0:
            raise ValueError(f"baseline error on {n} is 0 at every severity: CE is undefined")
        out[n] = float(np.sum(errors[n])) / denom
    return out


def relative_corruption_errors(errors: Errors, clean_error: float, baseline: Errors,
                               baseline_clean_error: float,
                               names: Sequence[str] = BENCHMARK) -> dict[str, float]:
    """Relative CE_c: the drop from clean error, normalised by the baseline's drop."""
    _check(errors, names, "model")
    _check(baseline, names, "baseline")
    out = {}
    for n in names:
        denom = float(np.sum(np.asarray(baseline[n]) - baseline_clean_error))
        if denom <= 0:
            raise ValueError(f"the baseline's error on {n} never rises above its clean error: "
                             "relative CE is undefined")
        out[n] = float(np.sum(np.asarray(errors[n]) - clean_error)) / denom
    return out


def mce(errors: Errors, baseline: Errors, names: Sequence[str] = BENCHMARK) -> float:
    """Mean corruption error over ``names`` (the 15 benchmark corruptions by default)."""
    return float(np.mean(list(corruption_errors(errors, baseline, names).values())))


def relative_mce(errors: Errors, clean_error: float, baseline: Errors, baseline_clean_error: float,
                 names: Sequence[str] = BENCHMARK) -> float:
    return float(np.mean(list(relative_corruption_errors(
        errors, clean_error, baseline, baseline_clean_error, names).values())))


def mean_corruption_accuracy(errors: Errors, names: Sequence[str] = BENCHMARK) -> float:
    """Plain accuracy under corruption: 1 - the mean error over corruptions and severities."""
    _check(errors, names, "model")
    return 1.0 - float(np.mean([np.mean(errors[n]) for n in names]))
