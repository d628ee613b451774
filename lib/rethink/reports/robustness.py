"""Tables, curves and verdicts of the robustness chapter, from results-store records.

Every model is compared with the fixed baseline (mCE, mFR, the -A filter) and every
student with its own teacher, paired by seed. Accuracies and errors are in percent.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..models import arch_family
from ..robustness import metrics, stability
from ..robustness.corruptions import BENCHMARK, HELD_OUT
from ..robustness.natural import adversarial_filter
from . import rules
from .rules import fmt

ROLE_ORDER = ("baseline", "teacher", "student_1", "student_2", "student_3", "supervised_student_arch",
              "supervised_all", "ablation:no_noise")
FINAL_STUDENTS = ("student_3", "student_2", "student_1")


def results_by_model(records) -> dict[tuple[str, int], dict[str, dict]]:
    """(role, seed) -> {benchmark: result}."""
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for r in records:
        c = r["config"]
        out.setdefault((c["role"], c["model"]["seed"]), {})[c["benchmark"]] = r["result"]
    return out


def _baseline(by_model) -> dict[str, dict]:
    base = [v for (role, _), v in by_model.items() if role == "baseline"]
    if not base:
        raise KeyError("no baseline records: the metrics are normalised by the fixed baseline")
    return base[0]


def model_metrics(records, fgsm_eps: tuple = (), pgd_eps: tuple = ()) -> pd.DataFrame:
    """One row per (role, seed): clean, natural-shift and -A top-1, mCE, relative mCE,
    accuracy under corruption, mFR, mT5D, FGSM/PGD accuracy (all in %)."""
    by_model = results_by_model(records)
    base = _baseline(by_model)
    a_set = None
    if "natural" in base:
        nat = base["natural"]
        a_set = adversarial_filter(np.asarray(nat["predictions"]), np.asarray(nat["labels"]))
    rows = []
    for (role, seed), res in by_model.items():
        row = {"role": role, "seed": seed}
        if "corruptions" in res:
            c = res["corruptions"]
            row["clean top-1"] = 100 * (1 - c["clean_error"])
            names = [n for n in BENCHMARK if n in c["errors"]]
            if "corruptions" in base and len(names) == len(BENCHMARK):
                b = base["corruptions"]
                row["mCE"] = 100 * metrics.mce(c["errors"], b["errors"])
                try:
                    row["relative mCE"] = 100 * metrics.relative_mce(c["errors"], c["clean_error"], b["errors"],
                                                                     b["clean_error"])
                except ValueError:  # a baseline at chance (smoke runs) never degrades: undefined
                    row["relative mCE"] = np.nan
            row["-C top-1"] = 100 * metrics.mean_corruption_accuracy(c["errors"], names)
            held = [n for n in HELD_OUT if n in c["errors"]]
            if held:
                row["held-out -C top-1"] = 100 * metrics.mean_corruption_accuracy(c["errors"], held)
        if "natural" in res:
            pred, lab = np.asarray(res["natural"]["predictions"]), np.asarray(res["natural"]["labels"])
            row["natural top-1"] = 100 * float((pred == lab).mean())
            if a_set is not None and len(a_set):
                row["-A top-1"] = 100 * float((pred[a_set] == lab[a_set]).mean())
        if "perturbations" in res and "perturbations" in base:
            p, b = res["perturbations"], base["perturbations"]
            # a perturbation that never flips the baseline (possible on tiny smoke sets) has no FR
            fr = [n for n in p["flip_probability"] if b["flip_probability"].get(n, 0) > 0]
            t5 = [n for n in p["top5_distance"] if b["top5_distance"].get(n, 0) > 0]
            if fr:
                row["mFR"] = 100 * stability.mfr(p["flip_probability"], b["flip_probability"], fr)
            if t5:
                row["mT5D"] = 100 * stability.mt5d(p["top5_distance"], b["top5_distance"], t5)
            row["mean flip probability"] = 100 * float(np.mean(list(p["flip_probability"].values())))
        if "adversarial" in res:
            for e, acc in res["adversarial"]["fgsm"].items():
                row[f"FGSM {e}"] = 100 * acc
            for e, acc in res["adversarial"]["pgd"].items():
                row[f"PGD {e}"] = 100 * acc
        rows.append(row)
    df = pd.DataFrame(rows)
    order = {r: i for i, r in enumerate(ROLE_ORDER)}
    return df.sort_values(["role", "seed"], key=lambda s: s.map(order).fillna(99) if s.name == "role" else s,
                          ignore_index=True)


SUMMARY_COLUMNS = ("clean top-1", "natural top-1", "-A top-1", "mCE", "relative mCE", "-C top-1", "mFR",
                   "mT5D")


def summary_table(df: pd.DataFrame, columns=SUMMARY_COLUMNS) -> pd.DataFrame:
    """Mean ± std over seeds per role (the paper's Table: clean, -A, -C, -P)."""
    cols = [c for c in columns if c in df]
    rows = []
    for role, g in df.groupby("role", sort=False):
        rows.append({"model": role, "seeds": len(g), **{c: fmt(g[c].dropna().tolist()) for c in cols}})
    return pd.DataFrame(rows)


def severity_curves(records, names=BENCHMARK) -> pd.DataFrame:
    """Mean error (%) over ``names`` at each severity (0 = clean), per (role, seed)."""
    rows = []
    for (role, seed), res in results_by_model(records).items():
        if "corruptions" not in res:
            continue
        c = res["corruptions"]
        present = [n for n in names if n in c["errors"]]
        rows.append({"role": role, "seed": seed, "severity": 0, "error": 100 * c["clean_error"]})
        for s in range(5):
            rows.append({"role": role, "seed": seed, "severity": s + 1,
                         "error": 100 * float(np.mean([c["errors"][n][s] for n in present]))})
    return pd.DataFrame(rows)


def corruption_table(records, roles=("baseline", "teacher", "student_3")) -> pd.DataFrame:
    """Error (%) per corruption, averaged over severities and seeds, for a few roles."""
    acc: dict[tuple[str, str], list[float]] = {}
    for (role, _), res in results_by_model(records).items():
        if role in roles and "corruptions" in res:
            for n, errs in res["corruptions"]["errors"].items():
                acc.setdefault((n, role), []).append(100 * float(np.mean(errs)))
    names = [n for n in BENCHMARK + HELD_OUT if any(k[0] == n for k in acc)]
    return pd.DataFrame([{"corruption": n, "held out": n in HELD_OUT,
                          **{r: fmt(acc[(n, r)]) for r in roles if (n, r) in acc}} for n in names])


def attack_curves(df: pd.DataFrame, attack: str = "FGSM") -> pd.DataFrame:
    """Long format: role, seed, epsilon (1/255), accuracy (%)."""
    cols = [c for c in df if c.startswith(attack + " ")]
    long = df.melt(id_vars=["role", "seed"], value_vars=cols, var_name="epsilon", value_name="accuracy")
    long["epsilon"] = long["epsilon"].str.split().str[1].astype(float)
    return long.dropna()


def by_role(df: pd.DataFrame, column: str) -> dict[str, dict[int, float]]:
    """role -> {seed: value} of one column of model_metrics."""
    out: dict[str, dict[int, float]] = {}
    for _, r in df.dropna(subset=[column]).iterrows():
        out.setdefault(r["role"], {})[int(r["seed"])] = float(r[column])
    return out


def paired_move(df: pd.DataFrame, column: str, role: str, sign: int = +1) -> rules.Diff:
    """sign * (role - teacher) of one metric, paired by seed (positive: an improvement)."""
    vals = by_role(df, column) if column in df else {}
    a, t = vals.get(role, {}), vals.get("teacher", {})
    return rules.diff(sign * (a[s] - t[s]) for s in sorted(set(a) & set(t)))


MOVES = (("clean top-1", 1), ("-C top-1", 1), ("mCE", -1), ("relative mCE", -1), ("natural top-1", 1),
         ("-A top-1", 1), ("mFR", -1), ("mT5D", -1))


def moves_table(df: pd.DataFrame, roles=None) -> pd.DataFrame:
    """Each role against the teacher, paired by seed, with 95% t intervals (positive: better)."""
    present = set(df["role"])
    final = next((r for r in FINAL_STUDENTS if r in present), None)
    roles = [r for r in (roles or (final, "supervised_all", "ablation:no_noise")) if r in present]
    rows = []
    for col, sign in MOVES:
        if col in df and not df[col].isna().all():
            rows.append({"metric": col, **{f"{r} vs teacher": paired_move(df, col, r, sign).fmt() for r in roles}})
    return pd.DataFrame(rows)


def reading(df: pd.DataFrame) -> str:
    """What the paired moves say, in words, only as far as the intervals allow."""
    final = next((r for r in FINAL_STUDENTS if r in set(df["role"])), None)
    if final is None or "clean top-1" not in df or "-C top-1" not in df:
        return "No student and teacher to compare at this profile."
    clean, corrupt = paired_move(df, "clean top-1", final), paired_move(df, "-C top-1", final)
    keeps = rules.diff(c - k for c, k in zip(corrupt.values, clean.values))
    words = {1: "significantly more than", -1: "significantly less than", 0: "about as much as"}
    text = (f"The final student is {clean.fmt(1)} points more accurate than its teacher on clean images and "
            f"{corrupt.fmt(1)} points under corruption (95% t intervals, paired by seed).")
    if keeps.sign is None:
        text += f" With {keeps.n} seed(s), whether it keeps more or less than its clean gain is not decided."
    else:
        text += f" Under corruption it gains {words[keeps.sign]} its clean gain ({keeps.fmt(1)} points)."
    if "ablation:no_noise" in set(df["role"]) and "mFR" in df:
        quiet, noised = paired_move(df, "mFR", "ablation:no_noise", -1), paired_move(df, "mFR", final, -1)
        text += (f" Against the teacher, the student trained without noise changes mFR by {quiet.fmt(1)}, the "
                 f"noised final student by {noised.fmt(1)} points (positive: more stable).")
        if quiet.decided and noised.decided and noised.low > quiet.high:
            text += " The intervals do not overlap: the noise, more than the pseudo-labels, keeps predictions stable."
        else:
            text += " These intervals do not separate the two, so nothing is concluded about which part helps."
    return text


AUGMIX_CORRUPTION_ERROR = (26.9, 30.8)   # Hendrycks et al. 2020 (AugMix), Table 1, standard training
AUGMIX_CLEAN_ACCURACY = (94.0, 95.0)


def outside_check(df: pd.DataFrame) -> str:
    """The baseline's corruption error against published CIFAR-10-C figures, concluded."""
    base = df[df["role"] == "baseline"]
    if base.empty or "-C top-1" not in base:
        return "No baseline corruption records at this profile."
    clean, c_err = float(base["clean top-1"].iloc[0]), 100 - float(base["-C top-1"].iloc[0])
    lo, hi = AUGMIX_CORRUPTION_ERROR
    text = (f"Baseline: clean top-1 **{clean:.1f}%**, mean error under the 15 corruptions **{c_err:.1f}%** "
            f"(a rise of {c_err - (100 - clean):.1f} points over its clean error). Published: {lo}-{hi}% at "
            f"{AUGMIX_CLEAN_ACCURACY[0]:.0f}-{AUGMIX_CLEAN_ACCURACY[1]:.0f}% clean accuracy. ")
    if clean < AUGMIX_CLEAN_ACCURACY[0] - 5:
        return text + ("**Not comparable**: the baseline is far less accurate than the published networks, so "
                       "its corruption error says nothing about whether the generated set is as hard as "
                       "CIFAR-10-C.")
    if lo - 5 <= c_err <= hi + 5:
        return text + "**Consistent**: the generated -C set is about as hard as the published CIFAR-10-C."
    return text + ("**Inconsistent**: the generated -C set is " + ("easier" if c_err < lo else "harder")
                   + " than the published CIFAR-10-C for networks of this accuracy.")


# ------------------------------------------------------------------ verdicts

CHAPTER = "05_robustness"
CLAIMS = ("xie2020-imagenet-a", "xie2020-imagenet-c", "xie2020-imagenet-p", "xie2020-adversarial")


def measured_floor(df: pd.DataFrame, final: str, *, baseline_arch: str, scored_archs: dict[str, str],
                   num_natural_classes: int, sequences: int | None) -> dict:
    """What the robustness preconditions measure. scored_archs: role -> architecture."""
    top1 = by_role(df, "clean top-1")
    teacher = list(top1.get("teacher", {}).values())
    nat = by_role(df, "natural top-1") if "natural top-1" in df else {}
    chance = 100 / num_natural_classes
    ratios = [float(np.mean(list(nat[r].values()))) / chance for r in ("teacher", final) if nat.get(r)]
    fgsm = [float(c.split()[1]) for c in df if c.startswith("FGSM ")]
    pgd = [float(c.split()[1]) for c in df if c.startswith("PGD ")]
    families = {arch_family(a) for r, a in scored_archs.items() if r in ("teacher", final)}
    return {"teacher_top1": float(np.mean(teacher)) if teacher else None,
            "seeds": min(len(top1.get("teacher", {})), len(top1.get(final, {}))),
            "natural_over_chance": min(ratios) if ratios else None,
            "filter_other_family": {"value": arch_family(baseline_arch) not in families,
                                    "note": f"filter {baseline_arch}; scored {', '.join(sorted(families))}"},
            "p_sequences": sequences,
            "fgsm_max_eps": max(fgsm) if fgsm else None,
            "pgd_eps16": max(pgd, default=0) >= 16}


def _sign_rule(d: rules.Diff, what: str) -> tuple[str, str]:
    if d.sign == 1:
        return rules.REPRODUCED, ""
    if d.sign == -1:
        return rules.NOT_REPRODUCED, f"the student is worse than its teacher: {what} {d.fmt()}"
    return rules.undecided(d, what)


def verdicts(df: pd.DataFrame, *, baseline_arch: str, scored_archs: dict[str, str], num_natural_classes: int,
             sequences: int | None, pgd_steps: int, claims: dict | None = None) -> list[dict]:
    """One verdict per robustness claim of Xie et al.: the final student against its own
    teacher, paired by seed, above the scale floor."""
    from ..verdicts import claims_by_id

    by_id = claims_by_id(claims)
    roles = set(df["role"]) if not df.empty else set()
    final = next((r for r in FINAL_STUDENTS if r in roles), None)
    if final is None or "teacher" not in roles:
        return [rules.not_tested(c, "no teacher and student scored at this profile") for c in CLAIMS]
    m = measured_floor(df, final, baseline_arch=baseline_arch, scored_archs=scored_archs,
                       num_natural_classes=num_natural_classes, sequences=sequences)
    if pgd_steps < 10:
        m["pgd_eps16"] = {"value": False, "note": f"PGD with {pgd_steps} steps"}
    seeds = sorted({int(s) for s in df["seed"]})
    clean = paired_move(df, "clean top-1", final)
    vals = lambda col: by_role(df, col) if col in df else {}   # noqa: E731
    out = []

    a = paired_move(df, "-A top-1", final)
    out.append(rules.decide(
        by_id["xie2020-imagenet-a"], m, lambda: _sign_rule(a, "-A top-1 gain"),
        ours=f"-A top-1 {fmt(vals('-A top-1').get('teacher', {}).values(), 1)} -> "
             f"{fmt(vals('-A top-1').get(final, {}).values(), 1)}% ({final})",
        rule="reproduced if the final student's -A top-1 beats its teacher's (95% t interval of the paired gain "
             "above 0); not reproduced if it is below; inconclusive otherwise.",
        detail=f"-A gain {a.fmt()} pts; clean gain {clean.fmt()} pts.", stats={"gain": a, "clean_gain": clean},
        seeds=seeds))

    c, rel = paired_move(df, "mCE", final, -1), paired_move(df, "relative mCE", final, -1)

    def corruptions():
        if c.sign == 1:
            if rel.sign == 1:
                return rules.REPRODUCED, ""
            return rules.PARTLY, (f"mCE falls ({c.fmt()}) but the relative mCE does not ({rel.fmt()}): the lower "
                                  "mCE is the clean accuracy gain carried through, not a smaller loss under corruption")
        return _sign_rule(c, "mCE improvement")

    out.append(rules.decide(
        by_id["xie2020-imagenet-c"], m, corruptions,
        ours=f"mCE {fmt(vals('mCE').get('teacher', {}).values(), 1)} -> {fmt(vals('mCE').get(final, {}).values(), 1)}",
        rule="reproduced if both the mCE and the relative mCE fall from teacher to final student (95% t intervals "
             "of the paired improvements above 0); partly if only the mCE falls; not reproduced if the mCE rises.",
        detail=f"mCE improvement {c.fmt()}, relative mCE improvement {rel.fmt()} (baseline = 100).",
        stats={"mce": c, "relative_mce": rel}, seeds=seeds))

    fr = paired_move(df, "mFR", final, -1)
    out.append(rules.decide(
        by_id["xie2020-imagenet-p"], m, lambda: _sign_rule(fr, "mFR improvement"),
        ours=f"mFR {fmt(vals('mFR').get('teacher', {}).values(), 1)} -> {fmt(vals('mFR').get(final, {}).values(), 1)}",
        rule="reproduced if the mFR falls from teacher to final student (95% t interval of the paired improvement "
             "above 0); not reproduced if it rises.",
        detail=f"mFR improvement {fr.fmt()} (baseline = 100).", stats={"mfr": fr}, seeds=seeds))

    eps = sorted((c for c in df if c.startswith("FGSM ") and float(c.split()[1]) > 0), key=lambda c: float(c.split()[1]))
    pgds = sorted((c for c in df if c.startswith("PGD ")), key=lambda c: float(c.split()[1]))
    if not eps:
        out.append(rules.not_tested("xie2020-adversarial", "no FGSM evaluation at this profile"))
        return out
    fgsm = paired_move(df, eps[-1], final)
    excess = rules.diff(g - k for g, k in zip(fgsm.values, clean.values))
    pgd = paired_move(df, pgds[-1], final) if pgds else rules.diff([])
    pgd_excess = rules.diff(g - k for g, k in zip(pgd.values, clean.values))

    def adversarial():
        if excess.sign == 1:
            return rules.REPRODUCED, ""
        if fgsm.sign == 1:
            return rules.PARTLY, (f"the student is more accurate under FGSM ({fgsm.fmt()}), but by no more than on "
                                  f"clean images ({excess.fmt()}): the clean gain carried through")
        if fgsm.sign == -1 or excess.sign == -1:
            return rules.NOT_REPRODUCED, f"the FGSM gain {fgsm.fmt()} does not exceed the clean gain ({excess.fmt()})"
        return rules.undecided(excess, f"FGSM gain at {eps[-1].split()[1]}/255 minus the clean gain")

    out.append(rules.decide(
        by_id["xie2020-adversarial"], m, adversarial,
        ours="; ".join(f"{e.split()[1]}/255: {paired_move(df, e, final).mean:+.1f}" for e in eps) + " pts (FGSM)",
        rule=("reproduced if the final student's FGSM accuracy gain over its teacher at the largest epsilon "
              "exceeds its clean-accuracy gain (95% t interval of the difference above 0); partly if it gains "
              "under FGSM but no more than on clean images; not reproduced if it gains less."),
        detail=(f"FGSM at {eps[-1].split()[1]}/255: gain {fgsm.fmt()}, minus the clean gain {excess.fmt()}; "
                + (f"PGD-{pgd_steps} at {pgds[-1].split()[1]}/255: gain {pgd.fmt()}, minus the clean gain "
                   f"{pgd_excess.fmt()}." if pgds else "no PGD.")),
        stats={"fgsm_gain": fgsm, "fgsm_excess": excess, "pgd_gain": pgd, "pgd_excess": pgd_excess},
        seeds=seeds))
    return out
