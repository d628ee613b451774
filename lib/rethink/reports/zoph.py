"""Tables, curves and verdicts of the pre-training vs self-training chapter (Zoph et al. 2020), from records.

AP values are COCO box AP in percent on the stand-in's validation scenes. A "gap" is ImageNet
Init minus Rand Init AP at the same strength, data fraction and seed (positive: pre-training
helps); a "gain" of self-training is student minus its teacher's arm (same init, strength,
fraction, seed). Every comparison is paired by seed with a 95% t interval (``rules``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import rules
from .rules import Diff

METRICS = ("AP", "AP50", "AP75")
INIT_NAMES = {"rand": "Rand Init", "imagenet": "ImageNet Init", "imagenet++": "ImageNet++ Init",
              "simclr": "SimCLR Init"}
CHAPTER = "06_self_training"
ZOPH_CLAIMS = ("zoph2020-strong-aug-pretraining-hurts", "zoph2020-more-data-diminishes-pretraining",
               "zoph2020-self-training-always-helps", "zoph2020-self-training-additive",
               "zoph2020-self-supervised-fails-too", "zoph2020-joint-training-helps", "zoph2020-self-training-cost")

# What the paper reports, as far as it could be checked here (CLAIMS.md section 2). The stored
# copies of the paper show its opening pages only; the other cells of its tables were not retrieved.
PAPER = {
    "imagenet_top1": (84.5, "ImageNet Init, EfficientNet-B7 with AutoAugment (a review of the paper)"),
    "imagenet_pp_top1": (86.9, "ImageNet++ Init, EfficientNet-B7 Noisy Student (a review of the paper)"),
    "gap_S4_100": (-1.0, "ImageNet Init minus Rand Init at Augment-S4, 100% COCO: about -1 AP (unverified)"),
    "gap_20": (2.6, "ImageNet Init minus Rand Init at 20% COCO (CLAIMS.md; unverified)"),
    "st_on_imagenet_20": (2.7, "self-training on top of ImageNet Init at 20% COCO (CLAIMS.md; unverified)"),
    "st_range": ((1.3, 3.4), "self-training over Rand Init, across dataset sizes (the abstract)"),
    "speedup": ((1.3, 8.0), "pre-training's speed-up over self-training (section 6)"),
}


# ------------------------------------------------------------------ records -> tables


def runs_table(records) -> pd.DataFrame:
    """One row per trained detector or student (pre-training cells are left out)."""
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        if c["kind"] not in ("detector", "student"):
            continue
        final = res.get("final") or {}
        pl = res.get("pseudo_labels") or {}
        rows.append({"kind": c["kind"], "init": c["init"], "augment_strength": c["augment_strength"],
                     "data_fraction": c["data_fraction"], "seed": c["seed"],
                     "self_training": c["kind"] == "student", "joint": bool(c.get("joint")),
                     "loss_mode": c["loss"]["mode"] if c["kind"] == "student" else None,
                     "train_scenes": c["train"]["size"], "steps": c["steps"],
                     **{m: final.get(m, math.nan) for m in METRICS},
                     "train_time_s": res.get("train_time_s", math.nan), "label_time_s": res.get("label_time_s", 0.0),
                     "wall_time_s": r["provenance"]["wall_time_s"], "device": r["provenance"].get("device", ""),
                     "pseudo_scenes": pl.get("scenes_used"), "pseudo_precision": pl.get("precision"),
                     "pseudo_recall": pl.get("recall"), "teacher_pool_AP": pl.get("teacher_pool_AP"),
                     "empty_kept": pl.get("empty_kept")})
    cols = ["kind", "init", "augment_strength", "data_fraction", "seed", "self_training", "joint", "loss_mode",
            "train_scenes", "steps", *METRICS, "train_time_s", "label_time_s", "wall_time_s", "device"]
    return pd.DataFrame(rows, columns=cols + [k for k in (rows[0] if rows else {}) if k not in cols])


def select(df: pd.DataFrame, *, init, strength, fraction, st: bool = False, joint: bool = False,
           loss_mode: str = "normalized") -> pd.DataFrame:
    """The rows of one arm."""
    if df.empty:
        return df
    m = ((df["init"] == init) & (df["augment_strength"] == strength) & np.isclose(df["data_fraction"], fraction)
         & (df["self_training"] == st) & (df["joint"] == joint))
    if st:
        m &= df["loss_mode"] == loss_mode
    return df[m]


def per_seed(df, metric: str = "AP", **arm) -> dict[int, float]:
    g = select(df, **arm)
    return {int(s): float(v) for s, v in zip(g["seed"], g[metric])}


def ci(values, digits: int = 1) -> str:
    """'mean ± 95% t half-width (n)'; the mean alone, marked, for one seed; '—' for none."""
    d = rules.diff(v for v in values if not (isinstance(v, float) and math.isnan(v)))
    if d.n == 0:
        return "—"
    if d.n == 1:
        return f"{d.mean:.{digits}f} (1 seed)"
    return f"{d.mean:.{digits}f} ± {d.halfwidth:.{digits}f} (n={d.n})"


def ci_diff(d: Diff, digits: int = 1) -> str:
    if d.n == 0:
        return "—"
    if d.n == 1:
        return f"{d.mean:+.{digits}f} (1 seed)"
    return f"{d.mean:+.{digits}f} ± {d.halfwidth:.{digits}f} (n={d.n})"


def gap(df, *, strength, fraction, a="imagenet", b="rand", metric="AP") -> Diff:
    """AP(a) - AP(b), paired by seed (supervised arms)."""
    return rules.paired(per_seed(df, metric, init=a, strength=strength, fraction=fraction),
                        per_seed(df, metric, init=b, strength=strength, fraction=fraction))


def st_gain(df, *, init, strength, fraction, joint: bool = False, metric="AP") -> Diff:
    """Student minus its teacher's arm, paired by seed."""
    return rules.paired(per_seed(df, metric, init=init, strength=strength, fraction=fraction, st=True, joint=joint),
                        per_seed(df, metric, init=init, strength=strength, fraction=fraction))


def table2(df: pd.DataFrame, inits=("rand", "imagenet", "imagenet++"), fraction: float = 1.0) -> pd.DataFrame:
    """The paper's Table 2: AP (mean ± 95% t half-width) per init and augmentation strength."""
    strengths = sorted(set(df["augment_strength"])) if not df.empty else []
    rows = []
    for init in inits:
        row = {"init": INIT_NAMES[init]}
        for s in strengths:
            row[f"Augment-{s}"] = ci(per_seed(df, init=init, strength=s, fraction=fraction).values())
        rows.append(row)
    for init in inits[1:]:
        row = {"init": f"{INIT_NAMES[init]} - Rand Init"}
        for s in strengths:
            row[f"Augment-{s}"] = ci_diff(gap(df, strength=s, fraction=fraction, a=init))
        rows.append(row)
    return pd.DataFrame(rows)


def table3(df: pd.DataFrame, strength: str = "S4", inits=("rand", "imagenet")) -> pd.DataFrame:
    """The paper's Tables 3-4 shape: AP per init with and without self-training, per data fraction,
    with the gaps and gains."""
    fractions = sorted(set(df[df["augment_strength"] == strength]["data_fraction"])) if not df.empty else []
    cols = [f"{100 * f:g}%" for f in fractions]
    rows = []
    for init in inits:
        rows.append({"setup": INIT_NAMES[init], **{c: ci(per_seed(df, init=init, strength=strength, fraction=f)
                                                          .values()) for c, f in zip(cols, fractions)}})
        rows.append({"setup": f"{INIT_NAMES[init]} + self-training",
                     **{c: ci(per_seed(df, init=init, strength=strength, fraction=f, st=True).values())
                        for c, f in zip(cols, fractions)}})
    rows.append({"setup": "ImageNet Init - Rand Init",
                 **{c: ci_diff(gap(df, strength=strength, fraction=f)) for c, f in zip(cols, fractions)}})
    for init in inits:
        rows.append({"setup": f"self-training gain on {INIT_NAMES[init]}",
                     **{c: ci_diff(st_gain(df, init=init, strength=strength, fraction=f))
                        for c, f in zip(cols, fractions)}})
    return pd.DataFrame(rows)


def extras_table(df: pd.DataFrame, strength: str = "S4") -> pd.DataFrame:
    """Table 4-like extras at 100%: SimCLR Init, joint training, self-training (+ joint)."""
    arms = [("Rand Init", dict(init="rand")), ("ImageNet Init", dict(init="imagenet")),
            ("SimCLR Init", dict(init="simclr")), ("Rand Init + joint training", dict(init="rand", joint=True)),
            ("Rand Init + self-training", dict(init="rand", st=True)),
            ("Rand Init + self-training + joint training", dict(init="rand", st=True, joint=True)),
            ("Rand Init + self-training, plain summed loss", dict(init="rand", st=True, loss_mode="sum"))]
    base = per_seed(df, init="rand", strength=strength, fraction=1.0)
    rows = []
    for name, arm in arms:
        v = per_seed(df, strength=strength, fraction=1.0, **arm)
        rows.append({"setup": name, "AP": ci(v.values()),
                     "minus Rand Init": "" if name == "Rand Init" else ci_diff(rules.paired(v, base))})
    return pd.DataFrame(rows)


def curves(records) -> pd.DataFrame:
    """Per evaluation point of each run: step, val AP and the training losses (long format)."""
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        if c["kind"] not in ("detector", "student"):
            continue
        for h in res.get("history", []):
            rows.append({"kind": c["kind"], "init": c["init"], "augment_strength": c["augment_strength"],
                         "data_fraction": c["data_fraction"], "seed": c["seed"], "joint": bool(c.get("joint")),
                         "loss_mode": c["loss"]["mode"] if c["kind"] == "student" else None,
                         "step": h.get("step"), "AP": (h.get("val") or {}).get("AP", math.nan),
                         "train_loss": h.get("train_loss"), "loss_human": h.get("loss_human"),
                         "loss_pseudo": h.get("loss_pseudo"), "loss_optimized": h.get("loss_optimized"),
                         "loss_ratio": h.get("loss_ratio")})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ measured floors


def seeds_at(df, arms: list[dict]) -> int:
    """The fewest seeds any compared arm has."""
    return min((len(per_seed(df, **a)) for a in arms), default=0)


def lowest_ap(df, arms: list[dict]) -> float | None:
    """The lowest mean AP among the compared supervised arms (the "detectors that learned" floor)."""
    means = [np.mean(list(v.values())) for a in arms if not a.get("st") if (v := per_seed(df, **a))]
    return float(min(means)) if means else None


def strength_order(distortion: dict | None) -> dict | None:
    """S4 changes the scenes more than S1: larger mean pixel change and lower retained box IoU."""
    if not distortion or "S1" not in distortion or "S4" not in distortion:
        return None
    s1, s4 = distortion["S1"], distortion["S4"]
    ok = s4["pixel_change"] > s1["pixel_change"] and s4["box_iou"] < s1["box_iou"]
    return {"value": bool(ok), "note": f"pixel change S1 {s1['pixel_change']:.1f} vs S4 {s4['pixel_change']:.1f} "
                                       f"levels; box IoU kept S1 {s1['box_iou']:.2f} vs S4 {s4['box_iou']:.2f}"}


def _fractions(df, strength) -> list[float]:
    return sorted(set(df[df["augment_strength"] == strength]["data_fraction"])) if not df.empty else []


# ------------------------------------------------------------------ rules

STRONG_AUG_RULE = (
    "At 100% of the scenes, g(S) = AP(ImageNet Init) - AP(Rand Init) per seed. Reproduced if pre-training "
    "hurts at Augment-S4 (95% t interval of g(S4) below 0) and its value shrinks from S1 to S4 (interval of "
    "g(S1) - g(S4) above 0); partly if only one of the two holds (it shrinks but does not hurt, or it hurts at "
    "S4 without a significant change from S1); not reproduced if stronger augmentation makes pre-training "
    "more valuable (shrink below 0), or if it still helps at S4 with a shrink interval narrower than the S1 "
    "gap; inconclusive otherwise. The ImageNet++ arm is shown beside, counted in no outcome, and only when "
    "its top-1 is above its teacher's (else it is not a better ImageNet model).")


def _strong_aug(g1: Diff, g4: Diff, d: Diff) -> tuple[str, str]:
    for x, what in ((g1, "gap at S1"), (g4, "gap at S4"), (d, "shrink S1 -> S4")):
        if not x.decided:
            return rules.undecided(x, what)
    if d.sign == -1:
        return rules.NOT_REPRODUCED, f"pre-training gains value with stronger augmentation (shrink {d.fmt()} AP)"
    if g4.sign == -1 and d.sign == 1:
        return rules.REPRODUCED, ""
    if g4.sign == -1:
        return rules.PARTLY, (f"pre-training hurts at S4 ({g4.fmt()} AP) but not significantly more than at S1 "
                              f"(shrink {d.fmt()} AP): the augmentation is not shown to be the cause")
    if d.sign == 1:
        return rules.PARTLY, (f"stronger augmentation diminishes pre-training's value (shrink {d.fmt()} AP) "
                              f"but at S4 it does not hurt ({g4.fmt()} AP)")
    if g4.sign == 1 and d.resolves(g1.mean):
        return rules.NOT_REPRODUCED, f"pre-training still helps at S4 ({g4.fmt()} AP) and its value did not shrink"
    return rules.undecided(d, "shrink S1 -> S4")


MORE_DATA_RULE = (
    "At Augment-S4, g(f) = AP(ImageNet Init) - AP(Rand Init) per seed at each data fraction f, and per seed "
    "the least-squares slope of g against log2 f. Reproduced if pre-training helps at the smallest fraction "
    "(interval of g above 0), its value falls with more data (interval of the slope below 0) and it no longer "
    "helps at 100% (interval of g not above 0); partly if it falls but still helps at 100%; not reproduced if "
    "the slope's interval lies above 0, or if pre-training does not help at the smallest fraction while the "
    "slope is not negative; inconclusive otherwise.")


def _slopes(df, strength, fractions) -> Diff:
    """Per seed, the least-squares slope of the gap against log2(data fraction)."""
    gaps = {f: per_seed_gap(df, strength, f) for f in fractions}
    seeds = set.intersection(*(set(g) for g in gaps.values())) if gaps else set()
    return rules.diff(rules.slope(np.log2(fractions), [gaps[f][s] for f in fractions]) for s in sorted(seeds))


def _more_data(g_small: Diff, g_large: Diff, slope: Diff) -> tuple[str, str]:
    for x, what in ((g_small, "gap at the smallest fraction"), (g_large, "gap at 100%"), (slope, "slope")):
        if not x.decided:
            return rules.undecided(x, what)
    if slope.sign == 1:
        return rules.NOT_REPRODUCED, f"pre-training gains value with more data (slope {slope.fmt()} AP per doubling)"
    if g_small.sign == 1 and slope.sign == -1:
        if g_large.sign != 1:
            return rules.REPRODUCED, ""
        return rules.PARTLY, (f"pre-training's value falls with more data (slope {slope.fmt()} AP per doubling) "
                              f"but it still helps at 100% ({g_large.fmt()} AP)")
    if g_small.sign != 1 and slope.sign != -1:
        return rules.NOT_REPRODUCED, (f"pre-training does not help at the smallest fraction ({g_small.fmt()} AP) "
                                      f"and its value does not fall with more data (slope {slope.fmt()})")
    if g_small.sign != 1:
        return rules.INCONCLUSIVE, (f"pre-training does not help at the smallest fraction ({g_small.fmt()} AP): "
                                    "nothing for more data to diminish")
    return rules.undecided(slope, "slope of the gap against log2 data fraction")


ALWAYS_RULE = (
    "At Augment-S4, the gain AP(Rand Init + self-training) - AP(Rand Init) per seed at every data fraction. "
    "Reproduced if its 95% t interval lies above 0 at every fraction; partly if above 0 at some fractions "
    "and below at none; not reproduced if below 0 at any fraction; inconclusive if above and below at none.")


def _always(gains: dict[float, Diff]) -> tuple[str, str]:
    for f, g in gains.items():
        if not g.decided:
            return rules.undecided(g, f"gain at {100 * f:g}%")
    signs = {f: g.sign for f, g in gains.items()}
    neg = [f for f, s in signs.items() if s == -1]
    pos = [f for f, s in signs.items() if s == 1]
    if neg:
        return rules.NOT_REPRODUCED, "self-training hurts at " + ", ".join(f"{100 * f:g}% ({gains[f].fmt()} AP)"
                                                                          for f in neg)
    if len(pos) == len(gains):
        return rules.REPRODUCED, ""
    if pos:
        return rules.PARTLY, ("self-training helps at " + ", ".join(f"{100 * f:g}%" for f in pos)
                              + "; no difference detected at " + ", ".join(
                                  f"{100 * f:g}% ({gains[f].fmt()} AP)" for f in gains if f not in pos))
    return rules.INCONCLUSIVE, (f"{rules.WITHIN_NOISE}: no fraction shows a gain ("
                                + "; ".join(f"{100 * f:g}%: {g.fmt()}" for f, g in gains.items()) + ")")


ADDITIVE_RULE = (
    "At Augment-S4 and the smallest data fraction, per seed: pre-training's gain AP(ImageNet Init) - "
    "AP(Rand Init) and self-training's on top of it, AP(ImageNet Init + self-training) - AP(ImageNet Init). "
    "The claim is about the case where pre-training helps: inconclusive unless the first interval lies "
    "above 0. Then reproduced if the second lies above 0; not reproduced if it lies below 0, or contains 0 "
    "while narrower than pre-training's gain; inconclusive otherwise.")


def _additive(pre: Diff, add: Diff) -> tuple[str, str]:
    if not pre.decided:
        return rules.undecided(pre, "pre-training's gain")
    if pre.sign != 1:
        return rules.INCONCLUSIVE, (f"pre-training does not help here ({pre.fmt()} AP): the claim's premise "
                                    "(self-training adds to a helpful pre-training) is absent")
    if not add.decided:
        return rules.undecided(add, "self-training's gain on ImageNet Init")
    if add.sign == 1:
        return rules.REPRODUCED, ""
    if add.sign == -1 or add.resolves(pre.mean):
        return rules.NOT_REPRODUCED, f"self-training adds nothing on top of ImageNet Init ({add.fmt()} AP)"
    return rules.undecided(add, "self-training's gain on ImageNet Init")


SSL_RULE = (
    "At Augment-S4 and 100% of the scenes, AP(SimCLR Init) - AP(Rand Init) per seed. The claim is that it "
    "does not help: reproduced if the 95% t interval lies below 0, or contains 0 while narrower than the "
    "largest gain supervised pre-training shows in these runs (ImageNet Init at Augment-S1 or at the "
    "smallest fraction; else |the S4 gap|); not reproduced if it lies above 0; inconclusive otherwise.")


def _ssl(d: Diff, reference: float) -> tuple[str, str]:
    if not d.decided:
        return rules.undecided(d, "SimCLR Init minus Rand Init")
    if d.sign == 1:
        return rules.NOT_REPRODUCED, f"SimCLR Init helps at S4 / 100% ({d.fmt()} AP)"
    if d.sign == -1 or (not math.isnan(reference) and d.resolves(reference)):
        return rules.REPRODUCED, ""
    return rules.INCONCLUSIVE, (f"{rules.WITHIN_NOISE}: SimCLR Init minus Rand Init {d.fmt()} AP, an interval "
                                f"as wide as the supervised gain it is read against ({reference:+.2f} AP)")


JOINT_RULE = (
    "At Augment-S4 and 100% of the scenes from Rand Init, per seed: joint training minus plain training, and "
    "joint training + self-training minus each of joint training alone and self-training alone. Reproduced "
    "if all three 95% t intervals lie above 0; partly if joint training helps but the combination is not "
    "significantly best, or the combination is best while joint training alone shows no gain; not "
    "reproduced if joint training hurts and the combination is not best; inconclusive otherwise.")


def _joint(j: Diff, over_joint: Diff, over_st: Diff) -> tuple[str, str]:
    for x, what in ((j, "joint minus plain"), (over_joint, "combination minus joint"),
                    (over_st, "combination minus self-training")):
        if not x.decided:
            return rules.undecided(x, what)
    best = over_joint.sign == 1 and over_st.sign == 1
    if j.sign == 1 and best:
        return rules.REPRODUCED, ""
    if j.sign == 1:
        return rules.PARTLY, (f"joint training helps ({j.fmt()} AP) but joint + self-training is not "
                              f"significantly best (over joint {over_joint.fmt()}, over self-training {over_st.fmt()})")
    if best:
        return rules.PARTLY, f"joint + self-training is best, but joint training alone shows no gain ({j.fmt()} AP)"
    if j.sign == -1:
        return rules.NOT_REPRODUCED, f"joint training hurts ({j.fmt()} AP) and the combination is not best"
    return rules.undecided(j, "joint minus plain")


COST_RULE = (
    "Per seed at Augment-S4 and each data fraction: the training time of self-training from Rand Init "
    "(its teacher + labelling the pool + the student) over that of fine-tuning the ImageNet Init (one "
    "detector), both measured (train_time_s, evaluations excluded). Reproduced if the 95% t interval of "
    "log(ratio) lies above 0 at every fraction; not reproduced if it lies below 0 at any; inconclusive "
    "otherwise. By this chapter's recipe a student takes as many steps as its teacher with twice the images "
    "per step, so the ratio is mostly the recipe's; the paper's 1.3x-8x is pre-training's speed-up, whose "
    "reading from our learning curves is shown beside (not part of the outcome).")


def _cost(ratios: dict[float, Diff]) -> tuple[str, str]:
    if not ratios:
        return rules.INCONCLUSIVE, "no data fraction with both arms"
    for f, r in ratios.items():
        if not r.decided:
            return rules.undecided(r, f"log time ratio at {100 * f:g}%")
    if any(r.sign == -1 for r in ratios.values()):
        return rules.NOT_REPRODUCED, "self-training took less time than fine-tuning at some fraction"
    if all(r.sign == 1 for r in ratios.values()):
        return rules.REPRODUCED, ""
    return rules.undecided(next(r for r in ratios.values() if r.sign != 1), "log time ratio")


def time_ratios(df, strength: str, fraction: float) -> dict[int, float]:
    """Per seed: log((teacher train + labelling + student train) / ImageNet Init detector train)."""
    teacher = select(df, init="rand", strength=strength, fraction=fraction)
    student = select(df, init="rand", strength=strength, fraction=fraction, st=True)
    fine = select(df, init="imagenet", strength=strength, fraction=fraction)
    t = dict(zip(teacher["seed"], teacher["train_time_s"]))
    s = dict(zip(student["seed"], student["train_time_s"] + student["label_time_s"]))
    f = dict(zip(fine["seed"], fine["train_time_s"]))
    return {int(k): math.log((t[k] + s[k]) / f[k]) for k in set(t) & set(s) & set(f) if f[k] > 0}


def speedup_from_curves(cur: pd.DataFrame, strength: str, fraction: float) -> dict[int, float]:
    """Pre-training's speed-up read from the curves, per seed: the run's steps over the first evaluated
    step at which ImageNet Init reaches Rand Init's final AP (nan if it never does)."""
    out = {}
    if cur.empty:
        return out
    base = cur[(cur["kind"] == "detector") & ~cur["joint"] & (cur["augment_strength"] == strength)
               & np.isclose(cur["data_fraction"], fraction)]
    for seed in sorted(set(base["seed"])):
        r = base[(base["init"] == "rand") & (base["seed"] == seed)].dropna(subset=["AP"]).sort_values("step")
        i = base[(base["init"] == "imagenet") & (base["seed"] == seed)].dropna(subset=["AP"]).sort_values("step")
        if r.empty or i.empty:
            continue
        target, total = float(r["AP"].iloc[-1]), float(r["step"].iloc[-1])
        reached = i[i["AP"] >= target]
        out[int(seed)] = total / float(reached["step"].iloc[0]) if len(reached) else math.nan
    return out


# ------------------------------------------------------------------ verdicts


def verdicts(df: pd.DataFrame, *, backbone_top1: float | None = None, imagenet_pp: dict | None = None,
             simclr: dict | None = None, distortion: dict | None = None, pool_disjoint: bool | None = None,
             curves_df: pd.DataFrame | None = None, strength: str = "S4", claims: dict | None = None) -> list[dict]:
    """Every Zoph et al. claim's verdict from the runs table.

    backbone_top1: the ImageNet Init's Tiny ImageNet top-1 (%); imagenet_pp: {"top1", "teacher_top1"} (%)
    of the ImageNet++ Init; simclr: {"probe_top1", "random_probe_top1"} (%); distortion:
    ``zoph.augmentation_distortion``; pool_disjoint: ``zoph.pool_disjoint`` of the cells' data specs."""
    from ..verdicts import claims_by_id

    by_id = claims_by_id(claims)
    if df.empty:
        return [rules.not_tested(c, "no detectors at this profile") for c in ZOPH_CLAIMS]
    out = []
    fractions = _fractions(df, strength)
    seeds = sorted({int(s) for s in df["seed"]})
    order = strength_order(distortion)

    # 1. stronger augmentation makes pre-training hurt
    arms = [dict(init=i, strength=s, fraction=1.0) for i in ("rand", "imagenet") for s in ("S1", "S4")]
    g1, g4 = gap(df, strength="S1", fraction=1.0), gap(df, strength="S4", fraction=1.0)
    shrink = rules.paired(per_seed_gap(df, "S1", 1.0), per_seed_gap(df, "S4", 1.0))
    m = {"backbone_top1": backbone_top1, "detector_ap": lowest_ap(df, arms), "seeds": seeds_at(df, arms),
         "strength_order": order}
    pp_note = _imagenet_pp_note(df, imagenet_pp)
    out.append(rules.decide(
        by_id["zoph2020-strong-aug-pretraining-hurts"], m, lambda: _strong_aug(g1, g4, shrink),
        ours=f"ImageNet - Rand: {g1.mean:+.1f} AP at S1, {g4.mean:+.1f} AP at S4 (100%)",
        rule=STRONG_AUG_RULE,
        detail=(f"gap at S1 {g1.fmt()} AP, at S4 {g4.fmt()} AP, shrink {shrink.fmt()} AP (95% t intervals, paired "
                f"by seed). The paper: about -1 AP at S4 / 100% COCO (unverified). " + pp_note),
        stats={"gap_S1": g1, "gap_S4": g4, "shrink": shrink}, seeds=seeds))

    # 2. more labeled data diminishes pre-training
    arms = [dict(init=i, strength=strength, fraction=f) for i in ("rand", "imagenet") for f in fractions]
    small = fractions[0] if fractions else math.nan
    gs = gap(df, strength=strength, fraction=small) if fractions else rules.diff([])
    gl = gap(df, strength=strength, fraction=1.0)
    sl = _slopes(df, strength, fractions) if len(fractions) >= 2 else rules.diff([])
    m = {"backbone_top1": backbone_top1, "detector_ap": lowest_ap(df, arms), "seeds": seeds_at(df, arms),
         "data_fractions": len(fractions)}
    out.append(rules.decide(
        by_id["zoph2020-more-data-diminishes-pretraining"], m, lambda: _more_data(gs, gl, sl),
        ours=f"ImageNet - Rand at S4: {gs.mean:+.1f} AP at {100 * small:g}%, {gl.mean:+.1f} AP at 100%",
        rule=MORE_DATA_RULE,
        detail=(" ; ".join(f"{100 * f:g}%: {gap(df, strength=strength, fraction=f).fmt()}" for f in fractions)
                + f"; slope per doubling of the data {sl.fmt()} AP. The paper: helps at 20% (+2.6 AP, unverified), "
                  "hurts at 100% COCO."),
        stats={"gap_smallest": gs, "gap_100": gl, "slope": sl}, seeds=seeds))

    # 3. self-training helps in every regime
    arms = [dict(init="rand", strength=strength, fraction=f) for f in fractions]
    gains = {f: st_gain(df, init="rand", strength=strength, fraction=f) for f in fractions}
    m = {"detector_ap": lowest_ap(df, arms), "seeds": seeds_at(df, arms + [dict(a, st=True) for a in arms]),
         "pool_disjoint": pool_disjoint, "data_fractions": len(fractions)}
    hurt = [f for f in fractions if gap(df, strength=strength, fraction=f).sign == -1]
    out.append(rules.decide(
        by_id["zoph2020-self-training-always-helps"], m, lambda: _always(gains),
        ours="self-training on Rand Init: " + ", ".join(f"{g.mean:+.1f}" for g in gains.values()) + " AP at "
             + ", ".join(f"{100 * f:g}%" for f in fractions),
        rule=ALWAYS_RULE,
        detail=("; ".join(f"{100 * f:g}%: {g.fmt()} AP" for f, g in gains.items())
                + (f". Pre-training hurts at {', '.join(f'{100 * f:g}%' for f in hurt)}" if hurt else
                   ". Pre-training hurts significantly at no fraction here")
                + ". The paper: +1.3 to +3.4 AP over Rand Init across COCO sizes (abstract)."),
        stats={f"gain_{f:g}": g for f, g in gains.items()}, seeds=seeds))

    # 4. self-training is additive to pre-training
    arms = [dict(init=i, strength=strength, fraction=small) for i in ("rand", "imagenet")]
    pre = gs
    add = st_gain(df, init="imagenet", strength=strength, fraction=small) if fractions else rules.diff([])
    m = {"backbone_top1": backbone_top1, "detector_ap": lowest_ap(df, arms),
         "seeds": seeds_at(df, arms + [dict(arms[1], st=True)]), "pool_disjoint": pool_disjoint}
    out.append(rules.decide(
        by_id["zoph2020-self-training-additive"], m, lambda: _additive(pre, add),
        ours=f"{100 * small:g}%: ImageNet Init {pre.mean:+.1f} AP over Rand, self-training {add.mean:+.1f} AP on top",
        rule=ADDITIVE_RULE,
        detail=(f"at {100 * small:g}% and {strength}: pre-training {pre.fmt()} AP, self-training on ImageNet Init "
                f"{add.fmt()} AP. Other fractions: " + "; ".join(
                    f"{100 * f:g}%: {st_gain(df, init='imagenet', strength=strength, fraction=f).fmt()}"
                    for f in fractions[1:]) + ". The paper at 20% COCO: +2.6 then +2.7 AP (unverified)."),
        stats={"pretraining": pre, "self_training_on_imagenet": add}, seeds=seeds))

    # 5. self-supervised pre-training fails the same way
    sim = gap(df, strength=strength, fraction=1.0, a="simclr")
    refs = [abs(x.mean) for x in (g1, gs) if x.n and x.mean > 0]
    reference = max(refs) if refs else abs(g4.mean) if g4.n else math.nan
    arms = [dict(init=i, strength=strength, fraction=1.0) for i in ("rand", "simclr")]
    gain = None
    if simclr and simclr.get("probe_top1") is not None and simclr.get("random_probe_top1") is not None:
        gain = {"value": simclr["probe_top1"] - simclr["random_probe_top1"],
                "note": (f"linear probe {simclr['probe_top1']:.1f}% vs {simclr['random_probe_top1']:.1f}% "
                         "at random init")}
    m = {"simclr_probe_gain": gain, "detector_ap": lowest_ap(df, arms), "seeds": seeds_at(df, arms)}
    if not per_seed(df, init="simclr", strength=strength, fraction=1.0):
        out.append(rules.not_tested("zoph2020-self-supervised-fails-too", "no SimCLR Init detectors at this profile",
                                    rule=SSL_RULE))
    else:
        out.append(rules.decide(
            by_id["zoph2020-self-supervised-fails-too"], m, lambda: _ssl(sim, reference),
            ours=f"SimCLR - Rand at S4 / 100%: {sim.mean:+.1f} AP", rule=SSL_RULE,
            detail=(f"SimCLR Init minus Rand Init {sim.fmt()} AP; read against {reference:+.2f} AP (the largest "
                    "supervised gain in these runs). The paper: SimCLR Init does not help at S4 / 100% COCO."),
            stats={"simclr_minus_rand": sim, "reference": reference}, seeds=seeds))

    # 6. joint training
    plain = per_seed(df, init="rand", strength=strength, fraction=1.0)
    joint = per_seed(df, init="rand", strength=strength, fraction=1.0, joint=True)
    st = per_seed(df, init="rand", strength=strength, fraction=1.0, st=True)
    both = per_seed(df, init="rand", strength=strength, fraction=1.0, st=True, joint=True)
    j, oj, os_ = rules.paired(joint, plain), rules.paired(both, joint), rules.paired(both, st)
    arms = [dict(init="rand", strength=strength, fraction=1.0, **k)
            for k in ({}, {"joint": True}, {"st": True}, {"st": True, "joint": True})]
    m = {"detector_ap": lowest_ap(df, arms), "seeds": seeds_at(df, arms), "pool_disjoint": pool_disjoint}
    if not joint:
        out.append(rules.not_tested("zoph2020-joint-training-helps", "no joint-training runs at this profile",
                                    rule=JOINT_RULE))
    else:
        out.append(rules.decide(
            by_id["zoph2020-joint-training-helps"], m, lambda: _joint(j, oj, os_),
            ours=f"joint {j.mean:+.1f} AP over plain; joint + self-training {oj.mean:+.1f} over joint, "
                 f"{os_.mean:+.1f} over self-training",
            rule=JOINT_RULE,
            detail=(f"Rand Init, {strength}, 100%: joint minus plain {j.fmt()} AP; joint + self-training minus joint "
                    f"{oj.fmt()} AP, minus self-training {os_.fmt()} AP. The paper's figures were not retrieved; "
                    "its joint training used ImageNet and COCO, ours Tiny ImageNet and the stand-in."),
            stats={"joint_minus_plain": j, "combined_minus_joint": oj, "combined_minus_self_training": os_},
            seeds=seeds))

    # 7. compute
    ratios = {f: rules.diff(time_ratios(df, strength, f).values()) for f in fractions}
    cmp = pd.concat([select(df, init="rand", strength=strength, fraction=f) for f in fractions]
                    + [select(df, init="rand", strength=strength, fraction=f, st=True) for f in fractions]
                    + [select(df, init="imagenet", strength=strength, fraction=f) for f in fractions]) \
        if fractions else df.iloc[:0]
    devices = sorted(set(cmp["device"]))
    arms = [dict(init=i, strength=strength, fraction=f) for i in ("rand", "imagenet") for f in fractions]
    m = {"seeds": min((r.n for r in ratios.values()), default=0), "same_device":
         {"value": len(devices) == 1, "note": "; ".join(devices) or "no runs"},
         "detector_ap": lowest_ap(df, arms)}
    speed = {f: speedup_from_curves(curves_df if curves_df is not None else pd.DataFrame(), strength, f)
             for f in fractions}
    speed_txt = "; ".join(f"{100 * f:g}%: " + (", ".join("never" if math.isnan(v) else f"{v:.1f}x"
                                                      for v in s.values()) or "—") for f, s in speed.items())
    out.append(rules.decide(
        by_id["zoph2020-self-training-cost"], m, lambda: _cost(ratios),
        ours="self-training / fine-tuning time: " + ", ".join(
            f"{math.exp(r.mean):.1f}x" for r in ratios.values() if r.n) + " at " + ", ".join(
            f"{100 * f:g}%" for f in fractions),
        rule=COST_RULE,
        detail=("; ".join(f"{100 * f:g}%: ratio {math.exp(r.mean):.2f}x (log {r.fmt(3)})" for f, r in ratios.items()
                          if r.n)
                + f". Pre-training's speed-up read from the curves (steps for ImageNet Init to reach Rand Init's "
                  f"final AP, per seed): {speed_txt}. The paper: 1.3x to 8x (section 6)."),
        stats={f"log_ratio_{f:g}": r for f, r in ratios.items()}, seeds=seeds))
    return out


def per_seed_gap(df, strength, fraction) -> dict[int, float]:
    a = per_seed(df, init="imagenet", strength=strength, fraction=fraction)
    b = per_seed(df, init="rand", strength=strength, fraction=fraction)
    return {s: a[s] - b[s] for s in set(a) & set(b)}


def _imagenet_pp_note(df, imagenet_pp: dict | None) -> str:
    if not imagenet_pp or imagenet_pp.get("top1") is None:
        return "No ImageNet++ Init at this profile."
    top, teacher = imagenet_pp["top1"], imagenet_pp["teacher_top1"]
    head = f"ImageNet++ Init top-1 {top:.1f}% vs its teacher's {teacher:.1f}%"
    if not top > teacher:
        return head + ": not above its teacher's, so it is not a better ImageNet model; its arm is not read."
    p1, p4 = gap(df, strength="S1", fraction=1.0, a="imagenet++"), gap(df, strength="S4", fraction=1.0, a="imagenet++")
    return head + f"; ImageNet++ - Rand: {p1.fmt()} AP at S1, {p4.fmt()} AP at S4."
