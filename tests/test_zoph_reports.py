"""Zoph et al. verdict rules on constructed runs tables: every outcome of every rule, and the floors."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from rethink.reports import rules
from rethink.reports import zoph as report

NOISE = (-0.1, 0.02, 0.08)        # per-seed jitter (three seeds), permuted differently in every arm
FRACTIONS = (0.2, 0.5, 1.0)
DISTORTION = {"S1": {"pixel_change": 10.0, "box_iou": 0.8}, "S4": {"pixel_change": 40.0, "box_iou": 0.5}}
GOOD = dict(backbone_top1=50.0, imagenet_pp={"top1": 52.0, "teacher_top1": 50.0},
            simclr={"probe_top1": 20.0, "random_probe_top1": 8.0}, distortion=DISTORTION, pool_disjoint=True)


def rows(arms: dict, seeds: int = 3, noise=NOISE, times: dict | None = None, device: str = "gpu") -> pd.DataFrame:
    """arms: {(init, strength, fraction, st, joint[, loss_mode]): AP} -> a runs table over `seeds` seeds."""
    out = []
    for n, (arm, ap) in enumerate(arms.items()):
        init, strength, fraction, st, joint, *mode = arm
        for s in range(seeds):
            e = noise[(s + n) % len(noise)]
            t = (times or {}).get(arm, 100.0)
            out.append({"kind": "student" if st else "detector", "init": init, "augment_strength": strength,
                        "data_fraction": fraction, "seed": s, "self_training": st, "joint": joint,
                        "loss_mode": (mode[0] if mode else "normalized") if st else None, "train_scenes": 100,
                        "steps": 10, "AP": ap + e, "AP50": 2 * (ap + e), "AP75": 0.9 * (ap + e),
                        "train_time_s": t + s, "label_time_s": 3.0 if st else 0.0, "wall_time_s": t,
                        "device": device})
    return pd.DataFrame(out)


def grid(*, s1=(30, 33), s4=(40, 39), fractions=None, st=None, st_imagenet=None, simclr=None, joint=None,
         both=None, pp=(34, 38)):
    """A full chapter: Table 2 at S1/S4 (rand, imagenet), ImageNet++ at S1/S4, fractions at S4 for
    rand and imagenet (with self-training), SimCLR and joint training at S4 / 100%."""
    fractions = fractions or {0.2: (20, 23), 0.5: (30, 31), 1.0: s4}
    st = st or {0.2: 23, 0.5: 32, 1.0: 42}
    st_imagenet = st_imagenet or {0.2: 26, 0.5: 33, 1.0: 41}
    arms = {("rand", "S1", 1.0, False, False): s1[0], ("imagenet", "S1", 1.0, False, False): s1[1],
            ("imagenet++", "S1", 1.0, False, False): pp[0], ("imagenet++", "S4", 1.0, False, False): pp[1]}
    for f, (r, i) in fractions.items():
        arms[("rand", "S4", f, False, False)] = r
        arms[("imagenet", "S4", f, False, False)] = i
        arms[("rand", "S4", f, True, False)] = st[f]
        arms[("imagenet", "S4", f, True, False)] = st_imagenet[f]
    arms[("simclr", "S4", 1.0, False, False)] = simclr if simclr is not None else fractions[1.0][0] - 1.5
    arms[("rand", "S4", 1.0, False, True)] = joint if joint is not None else fractions[1.0][0] + 1.0
    arms[("rand", "S4", 1.0, True, True)] = both if both is not None else st[1.0] + 1.5
    return arms


def verdicts(arms, **kw):
    df = kw.pop("df", None)
    df = rows(arms) if df is None else df
    return {v["claim_id"]: v for v in report.verdicts(df, **{**GOOD, **kw})}


def outcome(arms, claim, **kw):
    return verdicts(arms, **kw)[claim]


# ------------------------------------------------------------------ the whole chapter


def test_the_paper_s_story_reproduces_every_claim():
    v = verdicts(grid())
    assert {cid: x["verdict"] for cid, x in v.items()} == {c: "reproduced" for c in report.ZOPH_CLAIMS}
    assert all(c["met"] for c in v["zoph2020-strong-aug-pretraining-hurts"]["preconditions"])
    assert "ImageNet++ Init top-1 52.0% vs its teacher's 50.0%" in v["zoph2020-strong-aug-pretraining-hurts"]["note"]


def test_every_verdict_checks_its_claim_s_preconditions_and_states_its_rule():
    from rethink.verdicts import claims_by_id

    claims = claims_by_id()
    for v in report.verdicts(rows(grid()), **GOOD):
        assert v["rule"]
        assert {c["id"] for c in v["preconditions"]} == {p["id"] for p in claims[v["claim_id"]]["preconditions"]}


def test_no_runs_means_not_tested():
    vs = report.verdicts(pd.DataFrame(columns=["init", "augment_strength", "data_fraction", "seed", "AP"]), **GOOD)
    assert {v["verdict"] for v in vs} == {"not tested"} and len(vs) == len(report.ZOPH_CLAIMS)


# ------------------------------------------------------------------ floors


def test_below_the_floor_is_inconclusive_whatever_the_numbers():
    v = verdicts(grid(), backbone_top1=8.0, pool_disjoint=False,
                 distortion={"S1": {"pixel_change": 40.0, "box_iou": 0.5},
                             "S4": {"pixel_change": 10.0, "box_iou": 0.8}},
                 simclr={"probe_top1": 9.0, "random_probe_top1": 8.0})
    r = v["zoph2020-strong-aug-pretraining-hurts"]
    assert r["verdict"] == "inconclusive" and r["reason"].startswith("below the scale floor")
    assert "ImageNet Init backbone's Tiny ImageNet top-1 8.0% (needs >= 40%)" in r["reason"]
    assert "Augment-S4 distorts the scenes more than Augment-S1 (measured) no" in r["reason"]
    assert "unlabeled pool disjoint" in v["zoph2020-self-training-always-helps"]["reason"]
    assert "linear-probe top-1" in v["zoph2020-self-supervised-fails-too"]["reason"]
    for cid in ("zoph2020-more-data-diminishes-pretraining", "zoph2020-self-training-additive",
                "zoph2020-joint-training-helps"):
        assert v[cid]["verdict"] == "inconclusive"


def test_detectors_that_did_not_learn_and_one_seed_are_below_the_floor():
    weak = {k: a / 10 for k, a in grid().items()}      # every AP under 5
    v = verdicts(weak)
    assert all(x["verdict"] == "inconclusive" for x in v.values())
    assert "lowest mean AP of the compared supervised detectors" in v["zoph2020-self-training-cost"]["reason"]
    one = verdicts(None, df=rows(grid(), seeds=1))
    assert "seeds at every compared point 1 (needs >= 3)" in one["zoph2020-self-training-always-helps"]["reason"]


def test_two_fractions_are_below_the_floor_of_the_data_claims():
    arms = {k: a for k, a in grid().items() if k[2] != 0.5}
    v = verdicts(arms)
    assert "data fractions compared 2 (needs >= 3)" in v["zoph2020-more-data-diminishes-pretraining"]["reason"]
    assert v["zoph2020-self-training-always-helps"]["verdict"] == "inconclusive"


# ------------------------------------------------------------------ 1. strong augmentation


@pytest.mark.parametrize("s1, s4, expected, why", [
    ((30, 33), (40, 39), "reproduced", ""),
    ((30, 33), (40, 41), "partly", "does not hurt"),                  # shrinks, still helps
    ((30, 29), (40, 39), "partly", "not significantly more"),          # hurts at both
    ((30, 31), (40, 44), "not reproduced", "gains value"),             # helps more under S4
    ((30, 33), (40, 43), "not reproduced", "still helps"),             # the same gap at S1 and S4
])
def test_strong_augmentation_rule(s1, s4, expected, why):
    fr = {0.2: (20, 23), 0.5: (30, 31), 1.0: s4}
    v = outcome(grid(s1=s1, fractions=fr), "zoph2020-strong-aug-pretraining-hurts")
    assert v["verdict"] == expected and why in v["reason"]


def test_strong_augmentation_within_noise_is_inconclusive_and_a_worse_imagenet_pp_is_not_read():
    noisy = rows(grid(s1=(30, 31), fractions={0.2: (20, 23), 0.5: (30, 31), 1.0: (40, 40.5)}))
    noisy.loc[(noisy["init"] == "imagenet") & (noisy["augment_strength"] == "S1"), "AP"] += [-3.0, 0.5, 3.0]
    noisy.loc[(noisy["init"] == "imagenet") & (noisy["augment_strength"] == "S4") & (noisy["data_fraction"] == 1.0)
              & ~noisy["self_training"], "AP"] += [2.0, -3.0, 1.0]
    v = report.verdicts(noisy, **{**GOOD, "imagenet_pp": {"top1": 48.0, "teacher_top1": 50.0}})
    r = next(x for x in v if x["claim_id"] == "zoph2020-strong-aug-pretraining-hurts")
    assert r["verdict"] == "inconclusive" and "within noise" in r["reason"]
    assert "not above its teacher's" in r["note"]


# ------------------------------------------------------------------ 2. more data


@pytest.mark.parametrize("fractions, expected, why", [
    ({0.2: (20, 23), 0.5: (30, 31), 1.0: (40, 39)}, "reproduced", ""),
    ({0.2: (20, 24), 0.5: (30, 32.5), 1.0: (40, 41)}, "partly", "still helps"),
    ({0.2: (20, 21), 0.5: (30, 32), 1.0: (40, 43)}, "not reproduced", "gains value"),
    ({0.2: (20, 19), 0.5: (30, 29), 1.0: (40, 39)}, "not reproduced", "does not help at the smallest"),
    ({0.2: (20, 20), 0.5: (30, 29), 1.0: (40, 38)}, "inconclusive", "nothing for more data to diminish"),
])
def test_more_data_rule(fractions, expected, why):
    v = outcome(grid(fractions=fractions), "zoph2020-more-data-diminishes-pretraining")
    assert v["verdict"] == expected and why in v["reason"]


# ------------------------------------------------------------------ 3. self-training always helps


@pytest.mark.parametrize("st, expected, why", [
    ({0.2: 23, 0.5: 32, 1.0: 42}, "reproduced", ""),
    ({0.2: 23, 0.5: 30, 1.0: 42}, "partly", "no difference detected at 50%"),
    ({0.2: 23, 0.5: 32, 1.0: 38}, "not reproduced", "hurts at 100%"),
    ({0.2: 20, 0.5: 30, 1.0: 40}, "inconclusive", "no fraction shows a gain"),
])
def test_self_training_always_helps_rule(st, expected, why):
    v = outcome(grid(st=st), "zoph2020-self-training-always-helps")
    assert v["verdict"] == expected and why in v["reason"]


# ------------------------------------------------------------------ 4. additive


@pytest.mark.parametrize("fraction_02, st_imagenet_02, expected, why", [
    ((20, 23), 26, "reproduced", ""),
    ((20, 23), 21, "not reproduced", "adds nothing"),
    ((20, 23), 23, "not reproduced", "adds nothing"),          # an interval narrower than pre-training's +3
    ((20, 20), 24, "inconclusive", "premise"),
])
def test_additive_rule(fraction_02, st_imagenet_02, expected, why):
    fr = {0.2: fraction_02, 0.5: (30, 31), 1.0: (40, 39)}
    v = outcome(grid(fractions=fr, st_imagenet={0.2: st_imagenet_02, 0.5: 33, 1.0: 41}),
                "zoph2020-self-training-additive")
    assert v["verdict"] == expected and why in v["reason"]


def test_additive_within_noise_is_inconclusive():
    arms = grid(fractions={0.2: (20, 20.8), 0.5: (30, 31), 1.0: (40, 39)}, st_imagenet={0.2: 21.2, 0.5: 33, 1.0: 41})
    df = rows(arms, noise=(-0.05, 0.0, 0.05))
    df.loc[(df["init"] == "imagenet") & df["self_training"] & (df["data_fraction"] == 0.2), "AP"] += [-2.0, 0.0, 2.0]
    v = {x["claim_id"]: x for x in report.verdicts(df, **GOOD)}["zoph2020-self-training-additive"]
    assert v["verdict"] == "inconclusive" and "within noise" in v["reason"]


# ------------------------------------------------------------------ 5. self-supervised


@pytest.mark.parametrize("simclr, expected", [(38.0, "reproduced"), (40.0, "reproduced"), (43.0, "not reproduced")])
def test_self_supervised_rule(simclr, expected):
    assert outcome(grid(simclr=simclr), "zoph2020-self-supervised-fails-too")["verdict"] == expected


def test_self_supervised_wide_interval_is_inconclusive_and_no_simclr_is_not_tested():
    df = rows(grid(simclr=40.5))
    df.loc[df["init"] == "simclr", "AP"] += [-5.0, 0.0, 5.0]
    v = {x["claim_id"]: x for x in report.verdicts(df, **GOOD)}["zoph2020-self-supervised-fails-too"]
    assert v["verdict"] == "inconclusive" and "within noise" in v["reason"]
    none = rows({k: a for k, a in grid().items() if k[0] != "simclr"})
    v = {x["claim_id"]: x for x in report.verdicts(none, **GOOD)}["zoph2020-self-supervised-fails-too"]
    assert v["verdict"] == "not tested"


# ------------------------------------------------------------------ 6. joint training


@pytest.mark.parametrize("joint, both, expected, why", [
    (41.0, 43.5, "reproduced", ""),
    (41.0, 42.0, "partly", "not significantly best"),
    (40.0, 43.5, "partly", "joint training alone shows no gain"),
    (38.0, 41.0, "not reproduced", "hurts"),
])
def test_joint_training_rule(joint, both, expected, why):
    v = outcome(grid(joint=joint, both=both), "zoph2020-joint-training-helps")
    assert v["verdict"] == expected and why in v["reason"]


def test_joint_training_within_noise_and_absent():
    df = rows(grid(joint=40.2, both=42.0))
    df.loc[df["joint"] & ~df["self_training"], "AP"] += [-3.0, 0.0, 3.0]
    v = {x["claim_id"]: x for x in report.verdicts(df, **GOOD)}["zoph2020-joint-training-helps"]
    assert v["verdict"] == "inconclusive"
    none = rows({k: a for k, a in grid().items() if not k[4]})
    v = {x["claim_id"]: x for x in report.verdicts(none, **GOOD)}["zoph2020-joint-training-helps"]
    assert v["verdict"] == "not tested"


# ------------------------------------------------------------------ 7. compute


def _timed(student_time, fine_time, device="gpu"):
    arms = grid()
    times = {}
    for f in FRACTIONS:
        times[("rand", "S4", f, False, False)] = 100.0
        times[("rand", "S4", f, True, False)] = student_time
        times[("imagenet", "S4", f, False, False)] = fine_time
    return rows(arms, times=times, device=device)


def test_cost_rule():
    by = lambda df: {x["claim_id"]: x for x in report.verdicts(df, **GOOD)}["zoph2020-self-training-cost"]  # noqa
    v = by(_timed(200.0, 100.0))
    assert v["verdict"] == "reproduced" and "3.0x" in v["our_value"]
    assert by(_timed(20.0, 400.0))["verdict"] == "not reproduced"
    close = _timed(30.0, 133.0)           # (100 + 30 + 3) vs 133: a ratio of 1, give or take the seeds' spread
    students = close["self_training"] & (close["init"] == "rand") & ~close["joint"]
    close.loc[students, "train_time_s"] += [-30.0, 0.0, 30.0] * 3
    assert by(close)["verdict"] == "inconclusive"
    mixed = _timed(200.0, 100.0)
    mixed.loc[mixed["init"] == "imagenet", "device"] = "cpu"
    v = by(mixed)
    assert v["verdict"] == "inconclusive" and "compared runs timed on one kind of device no" in v["reason"]


def test_time_ratio_and_speed_up_from_curves():
    df = _timed(200.0, 100.0)
    r = report.time_ratios(df, "S4", 1.0)
    assert r[0] == pytest.approx(math.log((100 + 200 + 3) / 100))
    cur = pd.DataFrame([
        {"kind": "detector", "init": init, "augment_strength": "S4", "data_fraction": 1.0, "seed": 0, "joint": False,
         "step": step, "AP": ap} for init, aps in (("rand", (5, 10, 20, 30)), ("imagenet", (25, 31, 33, 34)))
        for step, ap in zip((25, 50, 75, 100), aps)])
    assert report.speedup_from_curves(cur, "S4", 1.0) == {0: 100 / 50}
    cur.loc[cur["init"] == "imagenet", "AP"] = 10.0
    assert math.isnan(report.speedup_from_curves(cur, "S4", 1.0)[0])


# ------------------------------------------------------------------ helpers


def test_ci_formats_and_strength_order():
    assert report.ci([1.0, 2.0, 3.0]) == f"2.0 ± {rules.diff([1, 2, 3]).halfwidth:.1f} (n=3)"
    assert report.ci([2.0]) == "2.0 (1 seed)" and report.ci([]) == "—"
    assert report.strength_order(DISTORTION)["value"] is True
    assert report.strength_order({"S1": {"pixel_change": 5, "box_iou": 0.9},
                                  "S4": {"pixel_change": 9, "box_iou": 0.95}})["value"] is False
    assert report.strength_order(None) is None


def test_tables_have_the_paper_s_shape():
    df = rows(grid())
    t2 = report.table2(df)
    assert list(t2["init"]) == ["Rand Init", "ImageNet Init", "ImageNet++ Init", "ImageNet Init - Rand Init",
                                "ImageNet++ Init - Rand Init"]
    assert list(t2.columns) == ["init", "Augment-S1", "Augment-S4"]
    t3 = report.table3(df)
    assert list(t3.columns) == ["setup", "20%", "50%", "100%"] and len(t3) == 7
    ex = report.extras_table(df)
    assert ex.loc[ex["setup"] == "SimCLR Init", "minus Rand Init"].item().startswith("-1.")
