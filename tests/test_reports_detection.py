"""He et al. verdict rules on constructed runs: every outcome of every rule, and the floor."""
from __future__ import annotations

import pandas as pd
import pytest

from rethink.reports import detection as report
from rethink.reports import rules

NOISE = (-0.2, 0.0, 0.2)   # per-seed jitter added to every AP (three seeds)


def runs(points, seeds=3, norm=("bn", "bn"), noise=NOISE):
    """points: {(size, schedule, init): (AP, AP50, AP75)} -> a runs table over `seeds` seeds."""
    rows = []
    for (size, schedule, init), (ap, ap50, ap75) in points.items():
        for s in range(seeds):
            e = noise[s % len(noise)] * (1 + s)   # not the same jitter in both arms' differences
            e_other = noise[(s + 1) % len(noise)]
            j = e if init == "pretrained" else e_other
            rows.append({"size": size, "schedule": schedule, "init": init,
                         "norm": norm[0] if init == "pretrained" else norm[1], "seed": s,
                         "AP": ap + j, "AP50": ap50 + j, "AP75": ap75 + j})
    return pd.DataFrame(rows)


def grid(size, pre, scr, schedules=(1, 2, 4)):
    """AP per schedule for both arms at one size; AP50 = 2 AP, AP75 = 0.9 AP unless given."""
    out = {}
    for i, sch in enumerate(schedules):
        for init, aps in (("pretrained", pre), ("scratch", scr)):
            ap = aps[i]
            out[(size, sch, init)] = ap if isinstance(ap, tuple) else (ap, 2 * ap, 0.9 * ap)
    return out


def by_id(vs):
    return {v["claim_id"]: v for v in vs}


def test_catch_up_reproduced_at_10k_with_overfitting_below():
    df = runs({**grid(1000, [20, 21, 21], [8, 9, 7]), **grid(10_000, [30, 31, 31], [20, 27, 31])})
    v = by_id(report.verdicts(df, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "reproduced"
    assert v["he2019-pretraining-speeds-convergence"]["verdict"] == "reproduced"
    assert v["he2019-scratch-10k-images"]["verdict"] == "reproduced"
    assert v["he2019-scratch-overfits-below-10k"]["verdict"] == "reproduced"
    assert v["he2019-few-instances-hurt-scratch"]["verdict"] == "not tested"
    assert all(c["met"] for c in v["he2019-scratch-catches-up"]["preconditions"])


def test_gap_narrows_but_persists_is_partly_and_a_steady_gap_not_reproduced():
    narrows = runs(grid(10_000, [30, 31, 31], [20, 24, 26]))
    v = by_id(report.verdicts(narrows, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "partly"
    assert v["he2019-pretraining-speeds-convergence"]["verdict"] == "partly"   # faster, yet still ahead
    steady = runs(grid(10_000, [30, 31, 31], [20, 21, 21]))
    v = by_id(report.verdicts(steady, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "not reproduced"
    assert v["he2019-pretraining-speeds-convergence"]["verdict"] == "inconclusive"   # equal gains: within noise


def test_below_the_floor_is_inconclusive_whatever_the_numbers():
    df = runs(grid(1000, [30, 31, 31], [20, 27, 31]), norm=("frozen_bn", "gn"))
    v = by_id(report.verdicts(df, backbone_top1=8.0))
    for cid in ("he2019-scratch-catches-up", "he2019-pretraining-speeds-convergence",
                "he2019-localisation-favours-scratch"):
        assert v[cid]["verdict"] == "inconclusive"
        reason = v[cid]["reason"]
        assert reason.startswith("below the scale floor")
        assert "backbone's Tiny ImageNet top-1 8.0% (needs >= 40%)" in reason
        assert "training scenes at the compared size 1000 (needs >= 10000)" in reason
        assert "same normalisation in both arms no" in reason
    assert v["he2019-scratch-10k-images"]["verdict"] == "inconclusive"
    assert "no 10k-scene size" in v["he2019-scratch-10k-images"]["reason"]


def test_one_seed_never_decides():
    df = runs(grid(10_000, [30, 31, 31], [20, 27, 31]), seeds=1)
    v = by_id(report.verdicts(df, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "inconclusive"
    assert "seeds at every compared point 1 (needs >= 3)" in v["he2019-scratch-catches-up"]["reason"]


def test_a_still_rising_pretrained_arm_is_below_the_floor():
    df = runs(grid(10_000, [20, 26, 31], [10, 20, 31]))
    v = by_id(report.verdicts(df, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "inconclusive"
    assert "plateaued" in v["he2019-scratch-catches-up"]["reason"]


def test_no_gap_to_close_and_wide_intervals_are_inconclusive():
    none = runs(grid(10_000, [30, 30, 30], [30, 30, 30]))
    v = by_id(report.verdicts(none, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "inconclusive"
    assert v["he2019-scratch-catches-up"]["reason"].startswith("no gap to close")
    noisy = runs(grid(10_000, [30, 31, 31], [27, 29, 30.5]), noise=(-3.0, 0.0, 3.0))
    v = by_id(report.verdicts(noisy, backbone_top1=50.0))
    assert v["he2019-scratch-catches-up"]["verdict"] == "inconclusive"


def test_scratch_not_behind_at_small_size_is_not_reproduced_and_behind_without_fall_is_partly():
    ok = runs({**grid(1000, [20, 21, 21], [10, 18, 21]), **grid(10_000, [30, 31, 31], [20, 27, 31])})
    assert by_id(report.verdicts(ok, backbone_top1=50.0))["he2019-scratch-overfits-below-10k"]["verdict"] \
        == "not reproduced"
    behind = runs({**grid(1000, [20, 21, 21], [8, 9, 10]), **grid(10_000, [30, 31, 31], [20, 27, 31])})
    v = by_id(report.verdicts(behind, backbone_top1=50.0))["he2019-scratch-overfits-below-10k"]
    assert v["verdict"] == "partly" and "without overfitting" in v["reason"]


def test_localisation_rule_compares_relative_gaps():
    # absolute gaps: AP50 4, AP75 2 (scratch "better" at AP75 in points) but relative: 10% vs 10%
    pts = grid(10_000, [(30, 40, 20)] * 3, [(29, 36, 18)] * 3)
    v = by_id(report.verdicts(runs(pts), backbone_top1=50.0))["he2019-localisation-favours-scratch"]
    assert v["verdict"] == "inconclusive"
    # relative gaps: AP50 10%, AP75 0%: scratch relatively better at the strict IoU
    pts = grid(10_000, [(30, 40, 20)] * 3, [(29, 36, 20)] * 3)
    assert by_id(report.verdicts(runs(pts), backbone_top1=50.0))["he2019-localisation-favours-scratch"][
        "verdict"] == "reproduced"
    pts = grid(10_000, [(30, 40, 20)] * 3, [(29, 39, 16)] * 3)
    assert by_id(report.verdicts(runs(pts), backbone_top1=50.0))["he2019-localisation-favours-scratch"][
        "verdict"] == "not reproduced"


def test_no_runs_means_not_tested():
    vs = report.verdicts(pd.DataFrame(columns=["size", "schedule", "init", "norm", "seed", "AP"]),
                         backbone_top1=None)
    assert {v["verdict"] for v in vs} == {"not tested"} and len(vs) == len(report.HE_CLAIMS)


def test_speeds_convergence_not_reproduced_when_scratch_leads_early():
    df = runs(grid(10_000, [20, 25, 30], [25, 28, 30]))
    df.loc[df["init"] == "pretrained", "AP"] -= 0  # pre-trained still rising: floor unmet
    v = by_id(report.verdicts(df, backbone_top1=50.0))["he2019-pretraining-speeds-convergence"]
    assert v["verdict"] == "inconclusive"
    flat = runs(grid(10_000, [25, 26, 26], [30, 30, 30]))
    v = by_id(report.verdicts(flat, backbone_top1=50.0))["he2019-pretraining-speeds-convergence"]
    assert v["verdict"] == "not reproduced" and "scratch leads" in v["reason"]


def test_summary_and_gap_tables():
    df = runs({(100, 1, "pretrained"): (10, 20, 8), (100, 1, "scratch"): (4, 9, 3)}, seeds=1)
    assert report.gap_table(df)["gap"].round(6).tolist() == [6.0 - 0.0 + (-0.2) - 0.0]
    s = report.summary(df)
    assert list(s.columns) == ["1x"]


def test_every_verdict_states_its_rule_and_checks_every_precondition():
    df = runs({**grid(1000, [20, 21, 21], [8, 9, 7]), **grid(10_000, [30, 31, 31], [20, 27, 31])})
    from rethink.verdicts import claims_by_id
    claims = claims_by_id()
    for v in report.verdicts(df, backbone_top1=50.0):
        if v["verdict"] == rules.NOT_TESTED:
            continue
        assert v["rule"]
        wanted = {p["id"] for p in claims[v["claim_id"]].get("preconditions", [])}
        assert wanted == {c["id"] for c in v["preconditions"]}


def test_a_scratch_arm_without_the_middle_schedule_gives_the_same_verdicts():
    """The full profile runs scratch at 1x and 4x only (schedules_per_init): no verdict
    compares its 2x, and the pre-trained arm's plateau is its own last two schedules."""
    points = grid(10_000, [30, 31, 31], [20, 27, 31])
    full = by_id(report.verdicts(runs(points), backbone_top1=50.0))
    del points[(10_000, 2, "scratch")]
    cut = by_id(report.verdicts(runs(points), backbone_top1=50.0))
    for cid in ("he2019-scratch-catches-up", "he2019-pretraining-speeds-convergence", "he2019-scratch-10k-images",
                "he2019-localisation-favours-scratch"):
        assert cut[cid]["verdict"] == full[cid]["verdict"], cid
    assert cut["he2019-scratch-catches-up"]["verdict"] == "reproduced"
    rising = grid(10_000, [20, 26, 31], [10, 20, 31])
    del rising[(10_000, 2, "scratch")]
    v = by_id(report.verdicts(runs(rising), backbone_top1=50.0))
    assert "plateaued" in v["he2019-scratch-catches-up"]["reason"]
    # overfitting needs three points of the scratch curve: two are below that floor
    small = grid(1000, [20, 21, 21], [8, 9, 7])
    del small[(1000, 2, "scratch")]
    v = by_id(report.verdicts(runs({**small, **points}), backbone_top1=50.0))
    assert v["he2019-scratch-overfits-below-10k"]["verdict"] == "inconclusive"
    assert "schedules compared 2 (needs >= 3)" in v["he2019-scratch-overfits-below-10k"]["reason"]
