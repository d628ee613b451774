"""Tables, learning curves and verdicts of the detection chapter (He et al. 2019), from records.

AP values are COCO box AP in percent. "Gap" is pre-trained minus scratch AP at the same
training-set size, schedule and seed (positive: pre-training ahead).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import rules
from .rules import Diff, fmt

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def runs_table(records) -> pd.DataFrame:
    """One row per trained detector: size, init, norm, schedule, seed, final AP metrics."""
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        rows.append({"size": c["train"]["size"], "init": c["init"], "norm": c["norm"], "schedule": c["schedule"],
                     "steps": c["steps"], "epochs": res.get("epochs"), "seed": c["seed"],
                     **{m: res["final"][m] for m in METRICS if m in res["final"]},
                     "wall time (min)": r["provenance"]["wall_time_s"] / 60})
    return pd.DataFrame(rows)


def main_runs(df: pd.DataFrame, runs) -> pd.DataFrame:
    """The rows of the main grid: the (init, norm) pairs of ``runs``."""
    keep = {(i, n) for i, n in runs}
    return df[[(i, n) in keep for i, n in zip(df["init"], df["norm"])]]


def summary(df: pd.DataFrame, metric: str = "AP") -> pd.DataFrame:
    """Mean ± std over seeds of ``metric``: rows (size, init, norm), columns schedules."""
    out = (df.groupby(["size", "init", "norm", "schedule"])[metric].apply(lambda v: fmt(list(v)))
           .unstack("schedule"))
    out.columns = [f"{s}x" for s in out.columns]
    return out


def curves(records) -> pd.DataFrame:
    """Validation AP along each run (long format): size, init, norm, schedule, seed, step, AP..."""
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        for h in res.get("history", []):
            if h.get("val"):
                rows.append({"size": c["train"]["size"], "init": c["init"], "norm": c["norm"],
                             "schedule": c["schedule"], "seed": c["seed"], "step": h["step"],
                             **{m: h["val"][m] for m in METRICS if m in h["val"]}})
    return pd.DataFrame(rows)


def _mean(df: pd.DataFrame, metric: str = "AP", **where) -> float:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel[metric].mean()) if len(sel) else float("nan")


def gap_table(df: pd.DataFrame, metric: str = "AP") -> pd.DataFrame:
    """Pre-trained minus scratch ``metric`` per (size, schedule), means over seeds."""
    rows = []
    for (size, schedule), g in df.groupby(["size", "schedule"]):
        pre, scr = _mean(g, metric, init="pretrained"), _mean(g, metric, init="scratch")
        rows.append({"size": size, "schedule": f"{schedule}x", "pretrained": pre, "scratch": scr, "gap": pre - scr})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ verdicts

CHAPTER = "02_detection"
HE_CLAIMS = ("he2019-scratch-catches-up", "he2019-pretraining-speeds-convergence", "he2019-scratch-10k-images",
             "he2019-scratch-overfits-below-10k", "he2019-localisation-favours-scratch",
             "he2019-few-instances-hurt-scratch")


def per_seed(df: pd.DataFrame, size, schedule, init, metric: str = "AP") -> dict[int, float]:
    g = df[(df["size"] == size) & (df["schedule"] == schedule) & (df["init"] == init)]
    return {int(s): float(v) for s, v in zip(g["seed"], g[metric])}


def gap(df, size, schedule, metric: str = "AP") -> Diff:
    """Pre-trained minus scratch, paired by seed."""
    return rules.paired(per_seed(df, size, schedule, "pretrained", metric),
                        per_seed(df, size, schedule, "scratch", metric))


def _relative_gap(df, size, schedule, metric) -> dict[int, float]:
    pre, scr = per_seed(df, size, schedule, "pretrained", metric), per_seed(df, size, schedule, "scratch", metric)
    return {s: (pre[s] - scr[s]) / pre[s] for s in set(pre) & set(scr) if pre[s] > 0}


def _gains(df, size, a, b, init) -> dict[int, float]:
    """AP at schedule b minus AP at schedule a, per seed, of one arm."""
    hi, lo = per_seed(df, size, b, init), per_seed(df, size, a, init)
    return {s: hi[s] - lo[s] for s in set(hi) & set(lo)}


def arm_schedules(df, size, init) -> list:
    """The schedules one arm ran at a size (a profile may run an arm at fewer: schedules_per_init)."""
    return sorted(sch for sch in df["schedule"].unique() if per_seed(df, size, sch, init))


def _seeds(df, size, schedules) -> int:
    """The fewest seeds any compared (schedule, init) point has."""
    counts = [len(per_seed(df, size, sch, init)) for sch in schedules for init in ("pretrained", "scratch")]
    return min(counts) if counts else 0


def measured_floor(df: pd.DataFrame, *, backbone_top1: float | None, size, schedules) -> dict:
    """What the preconditions of the He et al. claims measure at one training size."""
    all_schedules = sorted(df["schedule"].unique())
    plateau = None
    if len(all_schedules) >= 2:
        rise = rules.diff(_gains(df, size, all_schedules[-2], all_schedules[-1], "pretrained").values())
        if rise.decided:
            plateau = {"value": rise.sign != 1,
                       "note": f"pre-trained AP {all_schedules[-2]}x -> {all_schedules[-1]}x: {rise.fmt()}"}
    norms = {init: sorted(set(df[df["init"] == init]["norm"])) for init in ("pretrained", "scratch")}
    return {"backbone_top1": backbone_top1, "train_scenes": int(size), "seeds": _seeds(df, size, schedules),
            "pretrained_plateau": plateau,
            "same_norm": {"value": norms["pretrained"] == norms["scratch"],
                          "note": f"pre-trained {'/'.join(norms['pretrained'])}, scratch {'/'.join(norms['scratch'])}"},
            "has_10k": 10_000 in set(df["size"]), "smallest_scenes": int(min(df["size"])),
            # overfitting is a fall of the scratch curve: its own schedules count
            "schedules": len(arm_schedules(df, size, "scratch"))}


CATCH_UP_RULE = ("reproduced if pre-training leads at the shortest schedule (95% t interval of the gap above 0) "
                 "and at the longest schedule the gap's interval contains 0 (or lies below it) while being "
                 "narrower than the shortest-schedule gap; partly if the gap narrows (interval of the shrink "
                 "above 0) but scratch is still behind at the longest schedule; not reproduced if scratch is "
                 "still behind and the gap did not narrow; inconclusive otherwise (no gap to close, or "
                 "intervals too wide).")


def _catch_up(df, size, shortest, longest) -> tuple[str, str]:
    g_s, g_l = gap(df, size, shortest), gap(df, size, longest)
    shrink = rules.paired(_pairs(df, size, shortest), _pairs(df, size, longest))
    if g_s.sign is None:
        return rules.undecided(g_s, f"gap at {shortest}x")
    if g_s.sign != 1:
        return rules.INCONCLUSIVE, (f"no gap to close: pre-training does not lead at the shortest schedule "
                                    f"({shortest}x: {g_s.fmt()} AP); shorter schedules would test the claim")
    if g_l.sign == 1:
        if shrink.sign == 1:
            return rules.PARTLY, (f"the gap narrows ({shrink.fmt()} AP) but scratch is still behind at "
                                  f"{longest}x ({g_l.fmt()} AP)")
        return rules.NOT_REPRODUCED, f"scratch is still behind at {longest}x ({g_l.fmt()} AP) and the gap did not narrow"
    if g_l.sign == -1 or g_l.resolves(g_s.mean):
        return rules.REPRODUCED, ""
    return rules.INCONCLUSIVE, (f"{rules.WITHIN_NOISE}: the {longest}x gap's interval {g_l.fmt()} is as wide as "
                                f"the {shortest}x gap ({g_s.mean:+.2f}) it is compared with")


def _pairs(df, size, schedule) -> dict[int, float]:
    pre, scr = per_seed(df, size, schedule, "pretrained"), per_seed(df, size, schedule, "scratch")
    return {s: pre[s] - scr[s] for s in set(pre) & set(scr)}


def _ap(df, size, schedule, init) -> str:
    return fmt(per_seed(df, size, schedule, init).values(), 1)


def verdicts(df: pd.DataFrame, *, backbone_top1: float | None, claims: dict | None = None) -> list[dict]:
    """The verdicts of He et al.'s claims from the main grid (sizes x schedules x inits x seeds).

    df: ``main_runs(runs_table(records), runs)``; backbone_top1: the pre-trained backbone's
    Tiny ImageNet top-1 (%), a precondition. Every claim of the paper gets a verdict."""
    from ..verdicts import claims_by_id

    by_id = claims_by_id(claims)
    few = rules.not_tested("he2019-few-instances-hurt-scratch",
                           "the book has no VOC-like stand-in with fewer instances per scene")
    if df.empty or set(df["init"]) != {"scratch", "pretrained"}:
        why = "no pre-trained and scratch detectors at this profile"
        return [rules.not_tested(c, why) for c in HE_CLAIMS[:-1]] + [few]
    sizes, schedules = sorted(df["size"].unique()), sorted(df["schedule"].unique())
    shortest, longest, largest = schedules[0], schedules[-1], sizes[-1]
    seeds = sorted({int(s) for s in df["seed"]})
    compared = [shortest, longest]
    out = []

    def stats_at(size):
        return {"gap_short": gap(df, size, shortest), "gap_long": gap(df, size, longest)}

    m = measured_floor(df, backbone_top1=backbone_top1, size=largest, schedules=compared)
    st = stats_at(largest)
    ours = (f"gap {st['gap_short'].mean:+.1f} -> {st['gap_long'].mean:+.1f} AP ({shortest}x -> {longest}x, "
            f"{largest} scenes)")
    detail = (f"{largest} scenes: pre-trained {_ap(df, largest, shortest, 'pretrained')} -> "
              f"{_ap(df, largest, longest, 'pretrained')} AP, scratch {_ap(df, largest, shortest, 'scratch')} -> "
              f"{_ap(df, largest, longest, 'scratch')} AP ({shortest}x -> {longest}x); gap {st['gap_short'].fmt()} "
              f"-> {st['gap_long'].fmt()} AP (95% t intervals, paired by seed).")
    out.append(rules.decide(by_id["he2019-scratch-catches-up"], m,
                            lambda: _catch_up(df, largest, shortest, longest), ours=ours, rule=CATCH_UP_RULE,
                            detail=detail, stats=st, seeds=seeds))

    extra = rules.diff((_gains(df, largest, shortest, longest, "scratch")[s]
                        - _gains(df, largest, shortest, longest, "pretrained")[s])
                       for s in set(_gains(df, largest, shortest, longest, "scratch"))
                       & set(_gains(df, largest, shortest, longest, "pretrained")))

    def speeds():
        lead, g_l = st["gap_short"], st["gap_long"]
        if lead.sign is None:
            return rules.undecided(lead, f"gap at {shortest}x")
        if lead.sign == -1:
            return rules.NOT_REPRODUCED, f"scratch leads at {shortest}x ({lead.fmt()} AP): nothing to speed up"
        if lead.sign == 0:
            return rules.undecided(lead, f"the lead of pre-training at {shortest}x")
        if extra.sign == -1:
            return rules.NOT_REPRODUCED, f"pre-training gains more from the longer schedule ({extra.fmt()} AP)"
        if extra.sign != 1:
            return rules.undecided(extra, "the scratch arm's extra gain")
        if g_l.sign == 1:
            return rules.PARTLY, (f"pre-training converges faster, but it also still leads at {longest}x "
                                  f"({g_l.fmt()} AP): more than a speed-up at these schedules")
        return rules.REPRODUCED, ""

    out.append(rules.decide(
        by_id["he2019-pretraining-speeds-convergence"], m, speeds,
        ours=f"lead {st['gap_short'].mean:+.1f} AP at {shortest}x; scratch gains {extra.mean:+.1f} AP more",
        rule=("reproduced if pre-training leads at the shortest schedule, scratch gains significantly more "
              "from the longer schedules, and pre-training no longer leads significantly at the longest; "
              "partly if it converges faster but still leads at the end; not reproduced if scratch leads "
              "early or pre-training gains more; every comparison a 95% t interval paired by seed."),
        detail=f"scratch's extra gain {shortest}x -> {longest}x: {extra.fmt()} AP. " + detail,
        stats={**st, "extra_gain": extra}, seeds=seeds))

    if 10_000 in sizes:
        m10 = measured_floor(df, backbone_top1=backbone_top1, size=10_000, schedules=compared)
        s10 = stats_at(10_000)
        out.append(rules.decide(
            by_id["he2019-scratch-10k-images"], m10, lambda: _catch_up(df, 10_000, shortest, longest),
            ours=f"10k scenes: gap {s10['gap_short'].mean:+.1f} -> {s10['gap_long'].mean:+.1f} AP",
            rule=CATCH_UP_RULE.replace("reproduced if", "at 10k scenes: reproduced if", 1),
            detail=f"10k scenes: gap {s10['gap_short'].fmt()} -> {s10['gap_long'].fmt()} AP.", stats=s10,
            seeds=seeds))
    else:
        out.append(rules.verdict("he2019-scratch-10k-images", rules.INCONCLUSIVE, ours="",
                                 rule=CATCH_UP_RULE, checks=rules.check_preconditions(
                                     by_id["he2019-scratch-10k-images"], m),
                                 reason=f"{rules.BELOW_FLOOR}: no 10k-scene size at this profile "
                                        f"(sizes {', '.join(str(s) for s in sizes)})", seeds=seeds))

    s0 = sizes[0]
    m0 = measured_floor(df, backbone_top1=backbone_top1, size=s0, schedules=schedules[-2:])
    g0, g0_short = gap(df, s0, longest), gap(df, s0, shortest)
    scr_sch = arm_schedules(df, s0, "scratch")
    fall = rules.diff([]) if len(scr_sch) < 2 else rules.diff(
        -v for v in _gains(df, s0, scr_sch[-2], scr_sch[-1], "scratch").values())

    def overfits():
        if g0.sign is None:
            return rules.undecided(g0, f"gap at {longest}x")
        if g0.sign == 1:
            if fall.sign == 1:
                return rules.REPRODUCED, ""
            return rules.PARTLY, (f"scratch stays behind ({g0.fmt()} AP) but its AP does not fall at the "
                                  f"longest schedule ({-fall.mean:+.2f} AP): behind without overfitting shown")
        if g0.sign == -1 or g0.resolves(g0_short.mean):
            return rules.NOT_REPRODUCED, f"scratch is not behind at {s0} scenes, {longest}x ({g0.fmt()} AP)"
        return rules.undecided(g0, f"gap at {longest}x")

    out.append(rules.decide(
        by_id["he2019-scratch-overfits-below-10k"], m0, overfits,
        ours=f"{s0} scenes: gap {g0.mean:+.1f} AP at {longest}x; scratch "
             + " -> ".join(f"{np.mean(list(per_seed(df, s0, sch, 'scratch').values())):.1f}" for sch in scr_sch),
        rule=("reproduced if pre-training stays ahead at the smallest size and longest schedule and the scratch "
              "arm's AP falls from the second-longest to the longest schedule (overfitting); partly for the gap "
              "alone; not reproduced if scratch is not behind; 95% t intervals paired by seed."),
        detail=f"{s0} scenes, {longest}x: gap {g0.fmt()} AP; scratch change {scr_sch[-2] if len(scr_sch) > 1 else '-'}x "
               f"-> {longest}x: {(-fall.mean if fall.n else float('nan')):+.2f} AP.",
        stats={"gap": g0, "scratch_fall": fall}, seeds=seeds))

    rel50, rel75 = _relative_gap(df, largest, longest, "AP50"), _relative_gap(df, largest, longest, "AP75")
    loc = rules.diff(rel50[s] - rel75[s] for s in sorted(set(rel50) & set(rel75)))

    def localisation():
        if loc.sign == 1:
            return rules.REPRODUCED, ""
        if loc.sign == -1:
            return rules.NOT_REPRODUCED, f"scratch is relatively weaker at AP75 than at AP50 ({loc.fmt(3)})"
        return rules.undecided(loc, "relative gap at AP50 minus at AP75")

    d50, d75 = gap(df, largest, longest, "AP50"), gap(df, largest, longest, "AP75")
    out.append(rules.decide(
        by_id["he2019-localisation-favours-scratch"], m, localisation,
        ours=f"pre-trained minus scratch: AP50 {d50.mean:+.1f}, AP75 {d75.mean:+.1f}",
        rule=("reproduced if the relative gap (pre-trained - scratch) / pre-trained is smaller at AP75 than at "
              "AP50 (95% t interval of the difference above 0, paired by seed); not reproduced if larger."),
        detail=f"{largest} scenes, {longest}x: relative gap AP50 minus AP75 {loc.fmt(3)}; absolute AP50 gap "
               f"{d50.fmt()}, AP75 gap {d75.fmt()}.",
        stats={"relative_difference": loc, "gap_AP50": d50, "gap_AP75": d75}, seeds=seeds))
    out.append(few)
    return out
