"""Robustness verdict rules on constructed metrics: every outcome, the floor, the reading."""
import pandas as pd

from rethink.reports import robustness as report

FLOOR = dict(baseline_arch="airbench94", scored_archs={"teacher": "resnet18_w32", "student_3": "resnet18_w64"},
             num_natural_classes=7, sequences=2000, pgd_steps=10)


def metrics(teacher: dict, student: dict, n=3, jitter=(0.0, 0.3, -0.2), role="student_3", **extra):
    rows = []
    for seed in range(n):
        j = jitter[seed % len(jitter)]
        rows.append({"role": "teacher", "seed": seed, **{k: v + j for k, v in teacher.items()}})
        rows.append({"role": role, "seed": seed, **{k: v + j * (1 + seed) for k, v in student.items()}})
    rows.append({"role": "baseline", "seed": 0, "clean top-1": 95.0, "-C top-1": 72.0})
    return pd.DataFrame(rows)


T = {"clean top-1": 80.0, "natural top-1": 50.0, "-A top-1": 30.0, "mCE": 90.0, "relative mCE": 95.0,
     "mFR": 90.0, "FGSM 4": 20.0, "FGSM 16": 5.0, "PGD 16": 1.0}


def v(df, **floor):
    return {x["claim_id"]: x for x in report.verdicts(df, **{**FLOOR, **floor})}


def test_a_robust_student_is_reproduced_everywhere():
    s = {**T, "clean top-1": 82.0, "-A top-1": 36.0, "mCE": 80.0, "relative mCE": 85.0, "mFR": 80.0,
         "FGSM 4": 26.0, "FGSM 16": 12.0, "PGD 16": 4.0}
    out = v(metrics(T, s))
    assert {k: x["verdict"] for k, x in out.items()} == {k: "reproduced" for k in report.CLAIMS}


def test_clean_gain_carried_through_is_partly():
    s = {**T, "clean top-1": 84.0, "-A top-1": 36.0, "mCE": 85.0, "relative mCE": 97.0, "mFR": 80.0,
         "FGSM 4": 24.0, "FGSM 16": 8.0, "PGD 16": 2.0}
    out = v(metrics(T, s))
    assert out["xie2020-imagenet-c"]["verdict"] == "partly"
    assert "clean accuracy gain carried through" in out["xie2020-imagenet-c"]["reason"]
    assert out["xie2020-adversarial"]["verdict"] == "partly"       # +3 under FGSM 16, +4 clean


def test_a_worse_student_is_not_reproduced():
    s = {**T, "-A top-1": 25.0, "mCE": 95.0, "relative mCE": 99.0, "mFR": 99.0, "FGSM 16": 2.0, "PGD 16": 0.5}
    out = v(metrics(T, s))
    assert {k: x["verdict"] for k, x in out.items()} == {k: "not reproduced" for k in report.CLAIMS}


def test_below_the_floor_whatever_the_numbers():
    s = {**T, "clean top-1": 82.0, "-A top-1": 36.0, "mCE": 80.0, "relative mCE": 85.0, "mFR": 80.0,
         "FGSM 4": 26.0, "FGSM 16": 12.0}
    df = metrics({**T, "clean top-1": 55.0, "natural top-1": 18.0}, {**s, "natural top-1": 18.0})
    out = v(df.drop(columns=["PGD 16"]), baseline_arch="resnet18_w64", sequences=200, pgd_steps=3)
    for x in out.values():
        assert x["verdict"] == "inconclusive" and x["reason"].startswith("below the scale floor")
        assert "teacher's CIFAR-10 top-1 55.0% (needs >= 75%)" in x["reason"]
    assert "-A filter model of another architecture family than the scored models no" in \
        out["xie2020-imagenet-a"]["reason"]
    assert "natural-shift top-1 over chance 1.26x (needs >= 2x)" in out["xie2020-imagenet-a"]["reason"]
    assert "-P sequences 200 (needs >= 1000)" in out["xie2020-imagenet-p"]["reason"]
    assert "PGD (>= 10 steps) at epsilon 16/255 no" in out["xie2020-adversarial"]["reason"]


def test_one_seed_and_noise_are_inconclusive():
    s = {**T, "-A top-1": 36.0}
    assert v(metrics(T, s, n=1))["xie2020-imagenet-a"]["reason"].startswith("below the scale floor: seeds")
    wide = metrics(T, {**T, "-A top-1": 31.0}, jitter=(-4.0, 0.0, 4.0))
    assert v(wide)["xie2020-imagenet-a"]["reason"].startswith("difference within noise")


def test_no_student_means_not_tested():
    df = pd.DataFrame([{"role": "teacher", "seed": 0, **T}])
    assert {x["verdict"] for x in v(df).values()} == {"not tested"}


def test_reading_speaks_only_as_far_as_the_intervals_allow():
    one = metrics(T, {**T, "clean top-1": 82.0, "-C top-1": 60.0}, n=1)
    one.loc[one["role"] == "teacher", "-C top-1"] = 58.0
    assert "not decided" in report.reading(one)
    df = metrics({**T, "-C top-1": 58.0}, {**T, "clean top-1": 82.0, "-C top-1": 60.0})
    quiet = metrics({**T, "-C top-1": 58.0}, {**T, "mFR": 89.0}, role="ablation:no_noise")
    both = pd.concat([df, quiet[quiet["role"] == "ablation:no_noise"]])
    text = report.reading(both)
    assert "about as much as its clean gain" in text and "nothing is concluded" in text


def test_outside_check_is_concluded():
    df = metrics(T, T)
    assert "**Consistent**" in report.outside_check(df)     # 95% clean, 28% corruption error
    df.loc[df["role"] == "baseline", "clean top-1"] = 60.0
    assert "**Not comparable**" in report.outside_check(df)


def test_arch_family():
    assert report.arch_family("resnet18_w64") == "resnet" and report.arch_family("airbench94") == "airbench"
