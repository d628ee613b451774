"""Tables and verdicts of the Noisy Student chapter, computed from results-store records.

Every comparison is paired by seed: a student's gain is its top-1 minus that of the
teacher it was trained from (same seed), so seed-to-seed variation of the labeled
training cancels out. Values are in percentage points.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import rules
from .rules import fmt

CHAIN_ROLES = ("teacher", "student_1", "student_2", "student_3")
BASELINE_ROLES = ("matched_control", "matched_control_teacher_size", "supervised_student_arch", "supervised_all")


def top1_by_role(pairs) -> dict[str, dict[int, float]]:
    """role -> {seed: top-1 in %} from (cell, record) pairs."""
    out: dict[str, dict[int, float]] = {}
    for cell, rec in pairs:
        out.setdefault(cell.role, {})[cell.seed] = 100 * rec["result"]["top1"]
    return out


def paired_gain(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a - b for every seed both have."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def chain_table(pairs) -> pd.DataFrame:
    """Teacher, students and baselines: top-1 mean ± std, per-seed values, gain over the teacher."""
    top1 = top1_by_role(pairs)
    arch = {c.role: c.config["arch"] for c, _ in pairs}
    rows = []
    for role in CHAIN_ROLES + BASELINE_ROLES:
        if role not in top1:
            continue
        vals = [top1[role][s] for s in sorted(top1[role])]
        gain = paired_gain(top1[role], top1.get("teacher", {})) if role != "teacher" else []
        rows.append({"model": role, "architecture": arch[role], "top-1 (%)": fmt(vals),
                     "gain over teacher (pts)": fmt(gain) if gain else "",
                     "seeds": len(vals), "per seed": ", ".join(f"{v:.1f}" for v in vals)})
    return pd.DataFrame(rows)


def ablation_table(pairs) -> pd.DataFrame:
    """Each ablation against the full Noisy Student student of iteration 1 (same seeds)."""
    top1 = top1_by_role(pairs)
    full, teacher = top1.get("student_1", {}), top1.get("teacher", {})
    rows = [{"student": "Noisy Student (iteration 1)", "top-1 (%)": fmt(list(full.values())),
             "vs teacher (pts)": fmt(paired_gain(full, teacher)), "vs Noisy Student (pts)": ""}]
    for role, vals in top1.items():
        if not role.startswith("ablation:"):
            continue
        rows.append({"student": role.split(":", 1)[1].replace("_", " "),
                     "top-1 (%)": fmt(list(vals.values())),
                     "vs teacher (pts)": fmt(paired_gain(vals, teacher)),
                     "vs Noisy Student (pts)": fmt(paired_gain(vals, full))})
    return pd.DataFrame(rows)


def pseudo_label_table(pairs) -> pd.DataFrame:
    """What the teacher's filter and balancing let into each student's training set."""
    rows = []
    for cell, rec in pairs:
        st = rec["result"].get("pseudo_labels")
        if st is None:
            continue
        pool = sum(st["pool_sizes"].values())
        rates = st.get("pass_rate", {})
        rows.append({"student": cell.role, "seed": cell.seed, "pool": pool,
                     "threshold used": st.get("threshold_used", math.nan),
                     "in-domain passing the threshold (%)": 100 * rates.get("in_domain", math.nan),
                     "out-of-domain passing the threshold (%)": 100 * rates.get("out_of_domain", math.nan),
                     "kept by filter (%)": 100 * st["kept_after_filter"] / max(pool, 1),
                     "after balancing": st["total"], "unique images": st["unique_images"],
                     "out-of-domain share (%)": 100 * st["from_out_of_domain"],
                     "in-domain pseudo-label accuracy (%)": (
                         100 * st["in_domain_accuracy"] if st["in_domain_accuracy"] is not None else math.nan)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ verdicts

CHAPTER = "03_noisy_student"
# the paper's smallest effect of each claim (top-1 points): an interval that excludes it
# says the experiment could have seen the paper's effect and did not
PAPER_EFFECT = {"xie2020-top1-gain": 1.9,        # B7: 85.0 -> 86.9
                "xie2020-gain-every-size": 0.8,  # "about +0.8 for B0...B7"
                "xie2020-iteration-helps": 0.8}  # 87.6 -> 88.4 over two more iterations
FINAL_STUDENTS = ("student_3", "student_2", "student_1")


def _min_seeds(top1, roles) -> int:
    return min((len(top1.get(r, {})) for r in roles), default=0)


def measured_floor(pairs, *, pool_size: int, labels: int) -> dict:
    """What the Xie et al. preconditions measure on this chapter's cells."""
    top1 = top1_by_role(pairs)
    teacher = list(top1.get("teacher", {}).values())
    return {"teacher_top1": float(np.mean(teacher)) if teacher else None,
            "pool_ratio": pool_size / labels if labels else None,
            "matched_control": "matched_control" in top1}


def _gain_rule(d: rules.Diff, effect: float, what: str) -> tuple[str, str]:
    if d.sign == 1:
        return rules.REPRODUCED, ""
    if d.decided and d.high < effect:
        return rules.NOT_REPRODUCED, (f"{what} {d.fmt()} pts: the interval excludes a gain as large as "
                                      f"the paper's {effect:+.1f}")
    return rules.undecided(d, what)


def verdicts(pairs, *, pool_size: int, labels: int, claims: dict | None = None) -> list[dict]:
    """One verdict per Xie et al. section-3 accuracy claim, from (cell, record) pairs.

    pool_size: unlabeled images offered to the teacher; labels: labeled images."""
    from ..verdicts import claims_by_id

    by_id = claims_by_id(claims)
    top1 = top1_by_role(pairs)
    arch = {c.role: c.config["arch"] for c, _ in pairs}
    base = measured_floor(pairs, pool_size=pool_size, labels=labels)
    teacher = top1.get("teacher", {})
    out = []
    finals = [r for r in FINAL_STUDENTS if r in top1]
    if not finals or not teacher:
        why = "no teacher and student at this profile"
        return [rules.not_tested(c, why) for c in ("xie2020-top1-gain", "xie2020-gain-every-size",
                                                   "xie2020-iteration-helps", "xie2020-noise-essential")]
    final = finals[0]
    control = top1.get("matched_control", {})
    gain_t, gain_c = rules.paired(top1[final], teacher), rules.paired(top1[final], control)

    def top1_gain():
        if gain_t.sign == 1:
            if gain_c.sign == 1:
                return rules.REPRODUCED, ""
            return rules.PARTLY, (f"the student beats its teacher ({gain_t.fmt()} pts) but not a supervised "
                                  f"network of its size trained on as many images ({gain_c.fmt()} pts)")
        return _gain_rule(gain_t, PAPER_EFFECT["xie2020-top1-gain"], f"{final} minus teacher")

    out.append(rules.decide(
        by_id["xie2020-top1-gain"], {**base, "seeds": _min_seeds(top1, ["teacher", final, "matched_control"])},
        top1_gain, ours=f"{fmt(teacher.values(), 1)} -> {fmt(top1[final].values(), 1)}% ({final})",
        rule=("reproduced if the final student beats its teacher and the matched supervised control (95% t "
              "intervals of the paired gains above 0); partly if it beats only the teacher; not reproduced "
              f"if the interval of its gain over the teacher excludes the paper's smallest gain "
              f"(+{PAPER_EFFECT['xie2020-top1-gain']} points, B7)."),
        detail=f"gain over the teacher {gain_t.fmt()} pts; over the matched control {gain_c.fmt()} pts.",
        stats={"gain_over_teacher": gain_t, "gain_over_control": gain_c}, seeds=teacher))

    sizes = []
    if "student_1" in top1 and control:
        sizes.append((arch["student_1"], rules.paired(top1["student_1"], control)))
    if "ablation:equal_size_student" in top1 and "matched_control_teacher_size" in top1:
        sizes.append((arch["teacher"], rules.paired(top1["ablation:equal_size_student"],
                                                    top1["matched_control_teacher_size"])))
    size_roles = ["student_1", "matched_control"] + (
        ["ablation:equal_size_student", "matched_control_teacher_size"] if len(sizes) > 1 else [])

    def every_size():
        if not sizes:
            return rules.INCONCLUSIVE, "no iteration-1 student with a matched control"
        signs = [d.sign for _, d in sizes]
        if all(s == 1 for s in signs):
            return rules.REPRODUCED, ""
        if any(s == 1 for s in signs):
            return rules.PARTLY, "the gain is significant at " + ", ".join(a for a, d in sizes if d.sign == 1) + \
                " only"
        if all(d.decided and d.high < PAPER_EFFECT["xie2020-gain-every-size"] for _, d in sizes):
            return rules.NOT_REPRODUCED, "no size gains, and every interval excludes the paper's +0.8"
        return rules.INCONCLUSIVE, f"{rules.WITHIN_NOISE}: " + "; ".join(f"{a}: {d.fmt()}" for a, d in sizes)

    out.append(rules.decide(
        by_id["xie2020-gain-every-size"],
        {**base, "seeds": _min_seeds(top1, size_roles), "student_sizes": len(sizes)}, every_size,
        ours="; ".join(f"{a}: {d.mean:+.1f} pts" for a, d in sizes) or "—",
        rule=("reproduced if every student size's iteration-1 student beats its matched supervised control "
              "(95% t interval above 0); partly if some do; not reproduced if none does and every interval "
              "excludes the paper's +0.8."),
        detail="; ".join(f"{a}: {d.fmt()} pts over its control" for a, d in sizes),
        stats={a: d for a, d in sizes}, seeds=teacher))

    iters = [r for r in ("student_1", "student_2", "student_3") if r in top1]
    it = rules.paired(top1[iters[-1]], top1["student_1"]) if len(iters) >= 2 else rules.diff([])
    out.append(rules.decide(
        by_id["xie2020-iteration-helps"], {**base, "seeds": _min_seeds(top1, iters), "iterations": len(iters)},
        lambda: _gain_rule(it, PAPER_EFFECT["xie2020-iteration-helps"], f"{iters[-1]} minus student_1"),
        ours=" -> ".join(fmt(top1[r].values(), 1) for r in iters) + "%",
        rule=("reproduced if the last student beats the first (95% t interval of the paired difference above "
              "0); not reproduced if the interval excludes the paper's +0.8 (87.6 -> 88.4)."),
        detail=f"{iters[-1]} minus student_1: {it.fmt()} pts.", stats={"iteration_gain": it}, seeds=teacher))

    quiet_top1 = top1.get("ablation:no_noise", {})
    quiet, boost = rules.paired(quiet_top1, teacher), rules.paired(top1.get("student_1", {}), quiet_top1)

    def noise():
        if quiet.sign is None or boost.sign is None:
            return rules.undecided(quiet if quiet.sign is None else boost, "the no-noise ablation")
        if boost.sign == 1:
            if quiet.sign == 1:
                return rules.PARTLY, (f"noise adds {boost.fmt()} pts, but the un-noised student also beats "
                                      f"its teacher ({quiet.fmt()} pts): noise helps, it is not essential")
            if quiet.high < boost.mean:
                return rules.REPRODUCED, ""
            return rules.undecided(quiet, "the un-noised student's gain over the teacher")
        if quiet.sign == 1:
            return rules.NOT_REPRODUCED, (f"the un-noised student beats its teacher ({quiet.fmt()} pts) and noise "
                                          f"adds nothing significant ({boost.fmt()} pts)")
        return rules.undecided(boost, "the noised minus the un-noised student")

    out.append(rules.decide(
        by_id["xie2020-noise-essential"],
        {**base, "seeds": _min_seeds(top1, ["teacher", "student_1", "ablation:no_noise"])}, noise,
        ours=f"over the teacher: no noise {quiet.mean:+.1f}, with noise {quiet.mean + boost.mean:+.1f} pts",
        rule=("reproduced if the noised student beats the un-noised one and the un-noised student's gain over "
              "the teacher is not significant, its interval below the noised student's gain; partly if noise "
              "adds but the un-noised student also beats the teacher; not reproduced if the un-noised student "
              "beats the teacher and noise adds nothing significant (95% t intervals, paired by seed)."),
        detail=(f"un-noised student minus teacher {quiet.fmt()} pts; noised minus un-noised {boost.fmt()} pts. "
                "No noise = no RandAugment, dropout or stochastic depth; crop and flip kept, as for the teacher."),
        stats={"no_noise_gain": quiet, "noise_adds": boost}, seeds=teacher))
    return out
