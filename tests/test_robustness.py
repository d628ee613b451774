"""Robustness chapter: -C metrics, the -A stand-in, gradient attacks and the experiment's cells."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rethink.robustness import adversarial, metrics, natural
from rethink.robustness.corruptions import BENCHMARK


# --------------------------------------------------------------------------- -C metrics

def test_ce_and_mce_by_hand():
    base = {"a": [0.2, 0.3, 0.4, 0.5, 0.6], "b": [0.1, 0.1, 0.1, 0.1, 0.1]}
    model = {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.05, 0.05, 0.05, 0.05, 0.05]}
    ce = metrics.corruption_errors(model, base, names=["a", "b"])
    assert ce["a"] == pytest.approx(1.5 / 2.0)   # sums 1.5 / 2.0
    assert ce["b"] == pytest.approx(0.25 / 0.5)
    assert metrics.mce(model, base, names=["a", "b"]) == pytest.approx((0.75 + 0.5) / 2)
    # relative: sum_s (E - E_clean) / sum_s (E_base - E_clean_base)
    rel = metrics.relative_corruption_errors(model, 0.05, base, 0.1, names=["a"])
    assert rel["a"] == pytest.approx((1.5 - 5 * 0.05) / (2.0 - 5 * 0.1))
    with pytest.raises(ValueError, match="never rises"):
        metrics.relative_corruption_errors(model, 0.05, base, 0.1, names=["b"])
    assert metrics.mean_corruption_accuracy(model, names=["a", "b"]) == pytest.approx(1 - (0.3 + 0.05) / 2)


def test_mce_defaults_to_the_15_benchmark_corruptions_and_names_missing_ones():
    errs = {n: [0.5] * 5 for n in BENCHMARK}
    assert metrics.mce(errs, errs) == pytest.approx(1.0)
    with pytest.raises(KeyError, match="gaussian_noise"):
        metrics.mce({n: v for n, v in errs.items() if n != "gaussian_noise"}, errs)
    with pytest.raises(ValueError, match="5 severities"):
        metrics.mce({**errs, "fog": [0.1]}, errs)


# --------------------------------------------------------------------------- -A

def test_mapping_covers_seven_cifar_classes_without_duplicates():
    assert len(set(natural.TINY_TO_CIFAR)) == len(natural.TINY_TO_CIFAR)
    assert set(natural.TINY_TO_CIFAR.values()) <= set(natural.CIFAR10_CLASSES)
    assert natural.present_classes() == [1, 2, 3, 5, 6, 8, 9]   # no airplane, deer, horse


def test_restricted_predictions_ignore_absent_classes():
    logits = torch.tensor([[9.0, 1.0, 2.0, 0.0], [0.0, 0.5, 0.1, 3.0]])
    assert natural.restricted_predictions(logits, [1, 2]).tolist() == [2, 1]
    assert natural.restricted_predictions(logits, [0, 3]).tolist() == [0, 3]


def test_adversarial_filter_keeps_the_baselines_mistakes():
    assert natural.adversarial_filter(np.array([1, 2, 3, 3]), np.array([1, 0, 3, 5])).tolist() == [1, 3]


SHARED = Path(os.environ.get("RETHINK_DATA", "/nonexistent"))


@pytest.mark.skipif(not (SHARED / "tiny-imagenet-200-sub400.tar.gz").exists(),
                    reason="needs the Tiny ImageNet archive in $RETHINK_DATA")
def test_natural_shift_set_on_real_tiny_imagenet():
    nat = natural.natural_shift_set(SHARED)
    assert nat["images"].shape[1:] == (3, 32, 32) and nat["images"].dtype == np.uint8
    assert len(nat["labels"]) == len(nat["wnids"]) == 50 * len(natural.TINY_TO_CIFAR)  # 50 val images per class
    assert all(natural.CIFAR10_CLASSES[l] == natural.TINY_TO_CIFAR[w] for l, w in zip(nat["labels"], nat["wnids"]))


# --------------------------------------------------------------------------- attacks

def _linear(seed=0, d=12, k=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k))


def test_fgsm_matches_the_analytic_gradient_of_a_linear_model():
    model = _linear()
    x = torch.rand(5, 3, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1])
    W = model[1].weight.detach()
    p = torch.softmax(model(x), 1).detach()
    grad = ((p - nn.functional.one_hot(y, 3).float()) @ W).view_as(x)  # d CE / d x
    eps = 0.03
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert torch.allclose(adversarial.fgsm(model, x, y, eps), expected, atol=1e-7)
    assert torch.equal(adversarial.fgsm(model, x, y, 0.0), x)


def test_fgsm_raises_the_loss_and_pgd_stays_in_the_ball():
    model = _linear(1)
    x = torch.rand(64, 3, 2, 2)
    y = torch.randint(0, 3, (64,))
    loss = lambda z: nn.functional.cross_entropy(model(z), y).item()
    eps = 4 / 255
    adv = adversarial.fgsm(model, x, y, eps)
    assert loss(adv) > loss(x)
    g = torch.Generator().manual_seed(0)
    adv = adversarial.pgd(model, x, y, eps, steps=5, generator=g)
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert loss(adv) >= loss(adversarial.fgsm(model, x, y, eps)) - 1e-4  # a linear model: PGD ~ FGSM or better


def test_attack_accuracy_at_zero_is_clean_accuracy_and_falls_with_epsilon():
    model = _linear(2)
    images = (torch.rand(40, 3, 2, 2) * 255).to(torch.uint8).numpy()
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (torch.as_tensor(images).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    labels = model(x).argmax(1).numpy()  # the clean predictions: clean accuracy 1.0
    acc = adversarial.attack_accuracy(model, images, labels, [0, 2 / 255, 16 / 255], mean=mean, std=std)
    assert acc[0.0] == 1.0
    assert acc[16 / 255] <= acc[2 / 255] <= 1.0 and acc[16 / 255] < 1.0
    with pytest.raises(ValueError, match="attack"):
        adversarial.attack_accuracy(model, images, labels, [0], mean=mean, std=std, attack="cw")


# --------------------------------------------------------------------------- experiment cells

SMALL_NS = dict(labels=40, in_domain_unlabeled=60, out_of_domain_unlabeled=60, teacher_arch="resnet10_w16",
                student_archs=["resnet10_w16", "resnet10_w16"], seeds=[0, 1], ablations=["no_noise"],
                ablation_seeds=[0], supervised_all_labels=False)


def test_cells_cover_models_times_benchmarks_with_one_baseline():
    from rethink.experiments import robustness as rb

    params = {"roles": ["teacher", "student_2", "ablation:no_noise"], "baseline_arch": "resnet10_w16"}
    ms = rb.models(params, SMALL_NS)
    assert [m.role for m in ms] == ["baseline", "teacher", "student_2", "teacher", "student_2",
                                    "ablation:no_noise"]
    base = ms[0].config
    assert base["labels"] == "all" and not base["randaugment"] and base["dropout"] == 0 and base["drop_path"] == 0
    cells = rb.cell_configs(params, SMALL_NS)
    assert len(cells) == len(ms) * len(rb.BENCHMARKS)
    assert len({rb.config_key(c) for c in cells}) == len(cells)
    # a student's cell embeds its teacher chain, so a retrained teacher changes the key
    s2 = next(c for c in cells if c["role"] == "student_2")
    assert s2["model"]["teacher"]["teacher"]["kind"] == "supervised"


def test_bad_parameters_are_named():
    from rethink.experiments import robustness as rb

    with pytest.raises(ValueError, match="unknown robustness parameter"):
        rb.resolve_params({"epsilon": 3})
    with pytest.raises(ValueError, match="unknown corruption"):
        rb.resolve_params({"corruptions": ["rain"]})
    with pytest.raises(ValueError, match="severities"):
        rb.resolve_params({"severities": [0, 6]})
    with pytest.raises(ValueError, match="supervised_all"):
        rb.models({"roles": ["teacher", "supervised_all"]}, SMALL_NS)


def test_report_normalises_by_the_baseline_and_filters_minus_a():
    from rethink.reports import robustness as report

    def rec(role, seed, bench, result):
        return {"config": {"role": role, "benchmark": bench, "model": {"seed": seed}}, "result": result}

    errs = lambda v: {n: [v] * 5 for n in BENCHMARK}
    labels = [1, 2, 3, 5]
    records = [
        rec("baseline", 0, "corruptions", {"clean_error": 0.1, "errors": errs(0.4)}),
        rec("baseline", 0, "natural", {"predictions": [1, 1, 1, 1], "labels": labels}),  # wrong on 1, 2, 3
        rec("baseline", 0, "perturbations", {"flip_probability": {"rotate": 0.2}, "top5_distance": {"rotate": 0.5}}),
        rec("teacher", 0, "corruptions", {"clean_error": 0.2, "errors": errs(0.3)}),
        rec("teacher", 0, "natural", {"predictions": [1, 2, 0, 0], "labels": labels}),
        rec("teacher", 0, "perturbations", {"flip_probability": {"rotate": 0.1}, "top5_distance": {"rotate": 1.0}}),
    ]
    df = report.model_metrics(records).set_index("role")
    assert df.loc["teacher", "mCE"] == pytest.approx(75.0)
    assert df.loc["teacher", "relative mCE"] == pytest.approx(100 * (1.5 - 1.0) / (2.0 - 0.5))
    assert df.loc["teacher", "natural top-1"] == pytest.approx(50.0)
    assert df.loc["teacher", "-A top-1"] == pytest.approx(100 / 3)   # right on 1 of the baseline's 3 mistakes
    assert df.loc["baseline", "-A top-1"] == 0.0 and df.loc["baseline", "mCE"] == pytest.approx(100.0)
    assert df.loc["teacher", "mFR"] == pytest.approx(50.0) and df.loc["teacher", "mT5D"] == pytest.approx(200.0)


