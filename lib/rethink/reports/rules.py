"""What every verdict rests on: paired differences with t intervals, correlation intervals,
preconditions (the scale floor) and the verdict vocabulary.

Statistics are formulas, never random draws, so no RNG seed and no row order decides a
verdict:

* a paired difference over seeds gets a Student t interval with df = n - 1 (at n = 3 the
  95% factor is t = 4.30, not the 2 of "two standard errors"); fewer than ``MIN_SEEDS``
  seeds never decide anything;
* a correlation over models gets a Fisher-z interval; two correlations that share a
  variable are compared with Meng, Rosenthal & Rubin (1992);
* "equal" is never asserted as a constant: an interval that contains 0 says "no
  difference detected", and it counts as "caught up" only when it is narrower than the
  effect it is compared against, measured in the same runs (else the difference is
  *within noise* and the verdict inconclusive).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

MIN_SEEDS = 3
CONFIDENCE = 0.95

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly", "not reproduced"
INCONCLUSIVE, NOT_TESTED = "inconclusive", "not tested"
OUTCOMES = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED)
# the reasons an outcome is inconclusive, as the page words them
BELOW_FLOOR, WITHIN_NOISE, TOO_FEW_SEEDS = "below the scale floor", "difference within noise", "too few seeds"


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


@dataclass(frozen=True)
class Diff:
    """A difference measured once per seed (paired: both arms share the seed), with its
    t interval. ``sign``: +1 if the interval lies above 0, -1 below, 0 if it contains 0,
    None with fewer than ``MIN_SEEDS`` seeds (no decision possible)."""
    values: tuple[float, ...]
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def halfwidth(self) -> float:
        if self.n < 2:
            return math.nan
        return t_critical(self.n - 1, self.confidence) * self.sd / math.sqrt(self.n)

    @property
    def low(self) -> float:
        return self.mean - self.halfwidth

    @property
    def high(self) -> float:
        return self.mean + self.halfwidth

    @property
    def decided(self) -> bool:
        return self.n >= MIN_SEEDS

    @property
    def sign(self) -> int | None:
        if not self.decided:
            return None
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0

    def resolves(self, effect: float) -> bool:
        """The interval is narrower than |effect|: a "no difference" here means something."""
        return self.decided and self.halfwidth < abs(effect)

    def fmt(self, digits: int = 2, unit: str = "") -> str:
        if not self.values:
            return "—"
        if self.n < 2:
            return f"{self.mean:+.{digits}f}{unit} (one seed)"
        return (f"{self.mean:+.{digits}f}{unit} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"(n={self.n})")

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low if self.n > 1 else None,
                "high": self.high if self.n > 1 else None, "n": self.n, "df": self.n - 1,
                "values": list(self.values), "confidence": self.confidence}


def diff(values: Iterable[float]) -> Diff:
    return Diff(tuple(float(v) for v in values))


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Diff:
    """a[seed] - b[seed] over the seeds both have."""
    return diff(a[s] - b[s] for s in sorted(set(a) & set(b)))


# ------------------------------------------------------------------ correlations


def fisher_interval(r: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Fisher-z interval of Pearson's r over n pairs ((nan, nan) for n < 4 or no r)."""
    from scipy.stats import norm

    if n < 4 or math.isnan(r):
        return math.nan, math.nan
    if abs(r) >= 1:
        return float(r), float(r)
    z, se = math.atanh(r), 1 / math.sqrt(n - 3)
    q = float(norm.ppf(0.5 + confidence / 2))
    return math.tanh(z - q * se), math.tanh(z + q * se)


def correlated_correlations(r_ya: float, r_yb: float, r_ab: float, n: int) -> tuple[float, float]:
    """Meng, Rosenthal & Rubin (1992): z and two-sided p for H0 r(y, a) = r(y, b), where
    a and b are measured on the same n units (so the two r's are dependent through r_ab)."""
    from scipy.stats import norm

    if n < 4 or any(math.isnan(v) for v in (r_ya, r_yb, r_ab)):
        return math.nan, math.nan
    r_ya, r_yb = (max(-0.999999, min(0.999999, v)) for v in (r_ya, r_yb))
    rbar2 = (r_ya ** 2 + r_yb ** 2) / 2
    f = min(1.0, (1 - r_ab) / (2 * (1 - rbar2)))
    h = (1 - f * rbar2) / (1 - rbar2)
    denom = 2 * (1 - r_ab) * h
    if denom <= 0:
        return math.nan, math.nan
    z = (math.atanh(r_ya) - math.atanh(r_yb)) * math.sqrt((n - 3) / denom)
    return z, float(2 * norm.sf(abs(z)))


def slope(x, y) -> float:
    """Least-squares slope of y on x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


# ------------------------------------------------------------------ preconditions


def _required(p: dict) -> str:
    unit = p.get("unit", "")
    if "at_least" in p:
        return f">= {p['at_least']:g}{unit}"
    if "at_most" in p:
        return f"<= {p['at_most']:g}{unit}"
    return "yes" if p.get("equals", True) is True else f"= {p['equals']}"


def _met(p: dict, measured: Any) -> bool:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return False
    if "at_least" in p:
        return float(measured) >= p["at_least"]
    if "at_most" in p:
        return float(measured) <= p["at_most"]
    return measured == p.get("equals", True)


def _shown(measured: Any, unit: str = "") -> str:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return "not measured"
    if isinstance(measured, bool):
        return "yes" if measured else "no"
    if isinstance(measured, float):
        return f"{measured:.1f}{unit}" if abs(measured) >= 10 or unit == "%" else f"{measured:.3g}{unit}"
    return f"{measured}{unit}"


def check_preconditions(claim: dict, measured: Mapping[str, Any]) -> list[dict]:
    """Each precondition of a claim (claims.yaml ``preconditions``) with what this run
    measured and whether it is met. A precondition the chapter did not measure is unmet."""
    out = []
    for p in claim.get("preconditions", []):
        value = measured.get(p["id"])
        if isinstance(value, dict) and "value" in value:   # {"value": ..., "note": ...}
            note, value = value.get("note", ""), value["value"]
        else:
            note = ""
        out.append({"id": p["id"], "text": p["text"], "required": _required(p),
                    "measured": value if not isinstance(value, np.generic) else value.item(),
                    "shown": _shown(value, p.get("unit", "")), "met": _met(p, value), "note": note})
    return out


def floor_reason(checks: list[dict]) -> str:
    """'below the scale floor: teacher top-1 50.1% (needs >= 75%); ...' or '' when all are met."""
    unmet = [c for c in checks if not c["met"]]
    if not unmet:
        return ""
    return f"{BELOW_FLOOR}: " + "; ".join(f"{c['text']} {c['shown']} (needs {c['required']})" for c in unmet)


# ------------------------------------------------------------------ verdicts


def verdict(claim_id: str, outcome: str, *, ours: str, rule: str, checks: list[dict] | None = None,
            reason: str = "", detail: str = "", stats: dict | None = None, seeds=()) -> dict:
    """One verdict as the chapters return it and ``rethink.verdicts.record_verdict`` stores it.

    ours: the short number shown in the verdict table; detail: the longer account; rule:
    the rule in words; checks: ``check_preconditions``; reason: why it is inconclusive
    (or not tested); stats: the intervals it rests on (JSON-able)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if outcome in (INCONCLUSIVE, NOT_TESTED) and not reason:
        raise ValueError(f"{claim_id}: an {outcome} verdict needs its reason")
    return {"claim_id": claim_id, "verdict": outcome, "our_value": ours, "rule": rule,
            "preconditions": list(checks or []), "reason": reason, "note": detail,
            "stats": _jsonable(stats or {}), "seeds": sorted({int(s) for s in seeds})}


def decide(claim: dict, measured: Mapping[str, Any], rule_fn, *, ours: str, rule: str,
           detail: str = "", stats: dict | None = None, seeds=()) -> dict:
    """The floor first: below it the verdict is inconclusive whatever the numbers; else
    ``rule_fn()`` -> (outcome, reason)."""
    checks = check_preconditions(claim, measured)
    why = floor_reason(checks)
    if why:
        outcome, reason = INCONCLUSIVE, why
    else:
        outcome, reason = rule_fn()
    return verdict(claim["id"], outcome, ours=ours, rule=rule, checks=checks, reason=reason,
                   detail=detail, stats=stats, seeds=seeds)


def not_tested(claim_id: str, reason: str, *, rule: str = "") -> dict:
    return verdict(claim_id, NOT_TESTED, ours="", rule=rule, reason=reason)


def undecided(d: Diff, what: str) -> tuple[str, str]:
    """(inconclusive, why) for a difference that decides nothing."""
    if not d.decided:
        return INCONCLUSIVE, f"{TOO_FEW_SEEDS}: {what} over {d.n} seed(s) (needs >= {MIN_SEEDS})"
    return INCONCLUSIVE, f"{WITHIN_NOISE}: {what} {d.fmt()}"


def _jsonable(obj):
    if isinstance(obj, Diff):
        return obj.as_dict()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def fmt(values, digits: int = 2) -> str:
    """'mean ± std' over seeds (the mean alone for one seed, '—' for none)."""
    from ..stats import mean_std

    ms = mean_std(list(values))
    return "—" if ms.n == 0 else ms.fmt(digits)
