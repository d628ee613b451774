"""Kornblith et al. verdict rules on constructed records: every outcome and the floor."""
import numpy as np
import pytest
from scipy.special import expit

from rethink.reports import transfer as report

ARCHS = [f"net{i}" for i in range(9)]
TOP1 = dict(zip(ARCHS, np.linspace(0.30, 0.55, 9)))   # 30%..55%: best 55, spread 25 points
TARGETS = ("t1", "t2")


def zoo(top1=TOP1, variants=None, seeds=(0,)):
    out = [{"config": {"arch": a, "variant": "baseline", "seed": s}, "result": {"top1": v + 0.002 * s}}
           for a, v in top1.items() for s in seeds]
    for (arch, variant), per_seed in (variants or {}).items():
        out += [{"config": {"arch": arch, "variant": variant, "seed": s}, "result": {"top1": v}}
                for s, v in per_seed.items()]
    return out


def rec(regime, arch, target, seed, score, *, variant="baseline", source_seed=0, n=100, steps=2000,
        history=None):
    config = {"regime": regime, "target": target, "seed": seed, "train_per_class": n}
    if regime in ("scratch", "random"):
        config["arch"] = arch
    else:
        config["source"] = {"arch": arch, "variant": variant, "seed": source_seed}
    hist = history or [{"epoch": e, "train_loss": 1.0, "val_score": score} for e in range(6)]
    return {"key": f"{regime}-{arch}-{variant}-{source_seed}-{target}-{seed}-{n}", "config": config,
            "result": {"val_score": score, "test_score": score, "metric": "top1", "history": hist,
                       "steps": steps if regime in ("finetune", "scratch") else None}}


def transfer_scores(slope, noise, offset=0.0):
    """logit(acc) = offset + slope * logit(top1) + noise, per arch."""
    rng = np.random.default_rng(0)
    x = {a: np.log(t / (1 - t)) for a, t in TOP1.items()}
    return {a: float(expit(offset + slope * x[a] + noise * rng.normal())) for a in ARCHS}


def records(fixed_slope=2.0, random_slope=0.0, ft_slope=2.0, sc_slope=0.0, noise=0.05, random=True,
            steps=2000, plateau=True):
    out = []
    for regime, slope, off in (("fixed", fixed_slope, 0.5), ("random", random_slope, -1.0),
                               ("finetune", ft_slope, 1.0), ("scratch", sc_slope, 0.0)):
        if regime == "random" and not random:
            continue
        scores = transfer_scores(slope, noise, off)
        for a in ARCHS:
            for t in TARGETS:
                for seed in (0, 1, 2):
                    s = scores[a]
                    hist = None
                    if regime == "scratch" and not plateau:
                        hist = [{"epoch": e, "val_score": s * (e + 1) / 6 + 0.01 * seed} for e in range(6)]
                    out.append(rec(regime, a, t, seed, s, steps=steps, history=hist))
    return out


def verdicts(recs, zoo_recs=None, **kw):
    runs = report.runs_table(recs, zoo_recs or zoo())
    return {v["claim_id"]: v for v in report.verdicts(runs, zoo_recs or zoo(), variant_arch="net8",
                                                      size_target="t1", size_model="net8",
                                                      size_sizes=(10, 30, 300), **kw)}


def test_strong_correlations_with_a_flat_random_control_are_reproduced():
    v = verdicts(records())
    assert v["kornblith2019-fixed-features-correlate"]["verdict"] == "reproduced"
    assert v["kornblith2019-finetune-correlate"]["verdict"] == "reproduced"
    assert v["kornblith2019-scratch-architecture-weak"]["verdict"] == "reproduced"
    assert v["kornblith2019-fine-grained-little-gain"]["verdict"] == "not tested"


def test_random_features_that_correlate_as_well_make_it_partly():
    v = verdicts(records(random_slope=2.0))["kornblith2019-fixed-features-correlate"]
    assert v["verdict"] == "partly" and "architecture alone" in v["reason"]


def test_no_correlation_is_not_reproduced_and_a_noisy_one_inconclusive():
    v = verdicts(records(fixed_slope=-1.0, ft_slope=-1.0, noise=0.01))
    assert v["kornblith2019-fixed-features-correlate"]["verdict"] == "not reproduced"
    assert v["kornblith2019-finetune-correlate"]["verdict"] == "not reproduced"
    v = verdicts(records(ft_slope=0.3, noise=1.0))
    assert v["kornblith2019-finetune-correlate"]["verdict"] == "inconclusive"


def test_scratch_correlating_more_is_not_reproduced():
    v = verdicts(records(ft_slope=0.5, sc_slope=3.0, noise=0.1))
    assert v["kornblith2019-scratch-architecture-weak"]["verdict"] == "not reproduced"


def test_below_the_floor():
    few = {a: t for a, t in list(TOP1.items())[:5]}
    recs = [r for r in records(random=False, steps=300, plateau=False)
            if r["config"].get("arch", r["config"].get("source", {}).get("arch")) in few]
    v = verdicts(recs, zoo(few))
    fixed = v["kornblith2019-fixed-features-correlate"]
    assert fixed["verdict"] == "inconclusive"
    assert "source architectures 5 (needs >= 8)" in fixed["reason"]
    assert "random-init features of every architecture no" in fixed["reason"]
    assert "fine-tuning optimizer steps 300 (needs >= 1000)" in v["kornblith2019-finetune-correlate"]["reason"]
    assert "scratch networks trained to a plateau no" in v["kornblith2019-scratch-architecture-weak"]["reason"]


def variant_records(effect, premise):
    """net8 with a dropout variant over three source seeds (fixed features, two split seeds)."""
    out = [r for r in records() if not (r["config"]["regime"] == "fixed"
                                        and r["config"]["source"]["arch"] == "net8")]
    for s in (0, 1, 2):
        for t in TARGETS:
            for seed in (0, 1):
                base = 0.6 + 0.01 * s + 0.005 * seed
                out.append(rec("fixed", "net8", t, seed, base, source_seed=s))
                hurt = float(expit(np.log(base / (1 - base)) + effect + 0.01 * s))
                out.append(rec("fixed", "net8", t, seed, hurt, variant="dropout", source_seed=s))
    base = TOP1["net8"]
    z = zoo(seeds=(0, 1, 2), variants={("net8", "dropout"): {s: base + premise + 0.001 * s for s in (0, 1, 2)}})
    return out, z


@pytest.mark.parametrize("effect,premise,expected", [(-0.3, 0.02, "reproduced"), (0.3, 0.02, "not reproduced"),
                                                     (-0.3, -0.02, "inconclusive")])
def test_regularizers_are_judged_only_where_top1_rose(effect, premise, expected):
    recs, z = variant_records(effect, premise)
    v = verdicts(recs, z)["kornblith2019-regularizers-hurt-features"]
    assert v["verdict"] == expected
    if expected == "inconclusive":
        assert "premise" in v["reason"]


def size_records(gaps, steps=(500, 500, 500)):
    """Fine-tune minus scratch log-odds gap per size (10, 30, 300), three seeds."""
    out = records()
    for (n, g, st) in zip((10, 30, 300), gaps, steps):
        for seed in (0, 1, 2):
            sc = 0.5 + 0.01 * seed
            out.append(rec("scratch", "net8", "t1", seed, sc, n=n, steps=st))
            out.append(rec("finetune", "net8", "t1", seed, float(expit(np.log(sc / (1 - sc)) + g + 0.02 * seed)),
                           n=n, steps=st))
    return out


def test_benefit_fades_with_size():
    assert verdicts(size_records([2.0, 1.0, 0.2]))["kornblith2019-benefit-fades-with-size"]["verdict"] == \
        "reproduced"
    assert verdicts(size_records([0.2, 1.0, 2.0]))["kornblith2019-benefit-fades-with-size"]["verdict"] == \
        "not reproduced"
    v = verdicts(size_records([2.0, 1.0, 0.2], steps=(100, 300, 1000)))["kornblith2019-benefit-fades-with-size"]
    assert v["verdict"] == "inconclusive" and "same optimizer steps at every training size no" in v["reason"]


def test_convergence_saving_is_a_t_interval_over_settings():
    out = records()
    for seed in (0, 1, 2):
        for t in TARGETS:
            out.append(rec("scratch", "net8", t, seed, 0.5, n=7,
                           history=[{"epoch": e, "val_score": min(0.5, 0.2 * (e + 1))} for e in range(5)]))
            out.append(rec("finetune", "net8", t, seed, 0.7, n=7,
                           history=[{"epoch": e, "val_score": 0.3 * (e + 1)} for e in range(5)]))
    v = verdicts(out)["kornblith2019-pretraining-speeds-convergence"]
    assert v["verdict"] == "reproduced"


def test_scratch_still_rising_is_below_the_convergence_floor():
    v = verdicts(records(plateau=False))["kornblith2019-pretraining-speeds-convergence"]
    assert v["verdict"] == "inconclusive" and "plateau" in v["reason"]


def test_no_cells_means_not_tested():
    import pandas as pd
    vs = report.verdicts(pd.DataFrame(), [], variant_arch="a", size_target="t", size_model="a")
    assert {v["verdict"] for v in vs} == {"not tested"} and len(vs) == len(report.CLAIMS)
