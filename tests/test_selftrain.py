"""Self-training kernels: pseudo-label filtering and balancing, the soft-label loss,
stochastic depth survival, the student loader, and the chapter's cell layout."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rethink.data.loader import GPULoader
from rethink.models.cifar import CIFAR_ARCHITECTURES, create_cifar_model, drop_path_rates
from rethink.selftrain import (NoisyStudentLoss, StudentLoader, StudentTargets, select_pseudo_labels,
                               soft_cross_entropy)


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


# Constructed pool of 10 images, 3 classes. Class 0: 5 confident images; class 1: 2 images;
# class 2: one image below the 0.3 threshold (dropped) and one kept.
POOL = _probs([
    [0.90, 0.05, 0.05],  # 0 -> class 0, conf 0.90
    [0.80, 0.10, 0.10],  # 1 -> 0, 0.80
    [0.70, 0.20, 0.10],  # 2 -> 0, 0.70
    [0.60, 0.20, 0.20],  # 3 -> 0, 0.60
    [0.50, 0.25, 0.25],  # 4 -> 0, 0.50
    [0.10, 0.85, 0.05],  # 5 -> 1, 0.85
    [0.30, 0.40, 0.30],  # 6 -> 1, 0.40
    [0.28, 0.28, 0.44],  # 7 -> 2, 0.44
    [0.25, 0.25, 0.50],  # 8 -> 2, 0.50
    [0.35, 0.36, 0.29],  # 9 -> 1, 0.36
])


def test_filter_drops_low_confidence():
    pl = select_pseudo_labels(POOL, threshold=0.45, balance=False)
    # kept: conf >= 0.45 -> images 0,1,2,3,4 (class 0), 5 (class 1), 8 (class 2)
    assert sorted(pl.indices.tolist()) == [0, 1, 2, 3, 4, 5, 8]
    assert pl.stats["kept_after_filter"] == 7
    assert pl.stats["per_class_after_filter"] == [5, 1, 1]
    # sorted by class, then by decreasing confidence
    assert pl.indices.tolist() == [0, 1, 2, 3, 4, 5, 8]


def test_balance_keeps_most_confident_and_duplicates_rare_classes():
    pl = select_pseudo_labels(POOL, threshold=0.3, balance=True, images_per_class=3, seed=0)
    counts = pl.stats["per_class_final"]
    assert counts == [3, 3, 3]
    by_class = {c: pl.indices[pl.predicted == c].tolist() for c in range(3)}
    assert by_class[0] == [0, 1, 2]                      # the three most confident of class 0
    assert sorted(set(by_class[1])) == [5, 6, 9]          # exactly 3 members -> each once
    assert sorted(by_class[1]) == [5, 6, 9]
    # class 2: images 7 and 8 survive the filter -> one of them duplicated
    assert sorted(set(by_class[2])) == [7, 8] and len(by_class[2]) == 3
    assert pl.stats["unique_images"] == 8 and pl.stats["total"] == 9


def test_balance_repeats_whole_class_before_sampling():
    probs = _probs([[0.9, 0.1]] * 2 + [[0.2, 0.8]] * 7)
    pl = select_pseudo_labels(probs, threshold=0.0, images_per_class=5, seed=3)
    rare = pl.indices[pl.predicted == 0]
    # 5 = 2 * 2 + 1: both images twice, one of them a third time
    assert sorted(np.bincount(rare, minlength=2).tolist()) == [2, 3]
    assert pl.stats["per_class_final"] == [5, 5]


def test_default_images_per_class_is_the_mean_after_filtering():
    pl = select_pseudo_labels(POOL, threshold=0.3)       # counts after filter [5, 3, 2]
    assert pl.stats["images_per_class"] == round(10 / 3)
    assert pl.stats["per_class_final"] == [3, 3, 3]


def test_balancing_is_deterministic_by_seed():
    probs = torch.softmax(torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 2, 1)
    a = select_pseudo_labels(probs, threshold=0.3, seed=1)
    b = select_pseudo_labels(probs, threshold=0.3, seed=1)
    c = select_pseudo_labels(probs, threshold=0.3, seed=2)
    assert np.array_equal(a.indices, b.indices) and torch.equal(a.targets, b.targets)
    assert not np.array_equal(np.sort(a.indices), np.sort(c.indices))


def test_soft_and_hard_targets():
    soft = select_pseudo_labels(POOL, threshold=0.3, balance=False)
    assert torch.allclose(soft.targets, POOL[torch.as_tensor(soft.indices)])
    hard = select_pseudo_labels(POOL, threshold=0.3, balance=False, hard=True)
    assert torch.equal(hard.targets.argmax(1), torch.as_tensor(hard.predicted))
    assert torch.equal(hard.targets.sum(1), torch.ones(len(hard)))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="threshold"):
        select_pseudo_labels(POOL, threshold=1.5)
    with pytest.raises(ValueError, match="N x C"):
        select_pseudo_labels(POOL[0])


def test_soft_cross_entropy_matches_the_formula_and_kl():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    q = torch.softmax(torch.randn(6, 5, generator=g), 1)
    p = torch.softmax(logits, 1)
    slow = sum(-sum(q[i, c] * math.log(p[i, c]) for c in range(5)) for i in range(6)) / 6
    assert soft_cross_entropy(logits, q).item() == pytest.approx(float(slow), rel=1e-5)
    entropy = -(q * q.log()).sum(1).mean()
    kl = F.kl_div(torch.log_softmax(logits, 1), q, reduction="batchmean")
    assert soft_cross_entropy(logits, q).item() == pytest.approx((kl + entropy).item(), rel=1e-5)
    # one-hot targets reduce it to ordinary cross-entropy
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert soft_cross_entropy(logits, F.one_hot(y, 5).float()).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6)


def test_student_loss_sums_the_two_means():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, generator=g)
    labels = torch.tensor([0, 3, 1])
    pseudo = torch.softmax(torch.randn(4, 4, generator=g), 1)
    loss = NoisyStudentLoss(unlabeled_weight=0.5)(logits, StudentTargets(labels, pseudo))
    expected = F.cross_entropy(logits[:3], labels) + 0.5 * soft_cross_entropy(logits[3:], pseudo)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_stochastic_depth_follows_huang_et_als_linear_rule():
    """Huang et al. 2016: p_l = 1 - (l / L)(1 - p_L), l = 1..L: survival 0.975 .. 0.8 for 8 blocks."""
    model = create_cifar_model("resnet18_w32", dropout=0.5, drop_path=0.2)
    rates = drop_path_rates(model)
    n = len(rates)
    assert n == 8
    assert rates == pytest.approx([0.2 * l / n for l in range(1, n + 1)])
    assert [round(1 - r, 3) for r in drop_path_rates(create_cifar_model("resnet10_w16", drop_path=0.2))] == \
        [0.95, 0.9, 0.85, 0.8]
    assert drop_path_rates(create_cifar_model("resnet10_w16")) == [0.0] * 4


def test_stochastic_depth_survival_is_measured_in_training():
    from timm.layers import DropPath
    from timm.models.resnet import BasicBlock

    torch.manual_seed(0)
    model = create_cifar_model("resnet10_w16", drop_path=0.3)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    last = blocks[-1].drop_path
    assert isinstance(last, DropPath)
    last.train()
    x = torch.ones(20000, 1)
    y = last(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.015)         # survival 1 - 0.3 at the last block
    assert torch.unique(y[y != 0]).tolist() == pytest.approx([1 / 0.7])  # rescaled survivors
    last.eval()
    assert torch.equal(last(x), x)                       # no noise at inference: teacher is un-noised


def test_dropout_before_classifier_only_in_training():
    model = create_cifar_model("resnet10_w16", dropout=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    feats = model.forward_features(x)
    a, b = model.forward_head(feats.detach()), model.forward_head(feats.detach())
    assert not torch.equal(a, b)


@pytest.mark.parametrize("arch", list(CIFAR_ARCHITECTURES))
def test_cifar_models_shape(arch):
    if arch.startswith("resnet26"):
        pytest.skip("same code path as resnet18_w64, slower")
    model = create_cifar_model(arch, num_classes=10).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(KeyError, match="choose one of"):
        create_cifar_model("resnet99")


def _loader(n, bs, labels=None, seed=0):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return GPULoader(images, np.arange(n) if labels is None else labels, bs, device="cpu",
                     shuffle=True, drop_last=True, seed=seed, mean=(0, 0, 0), std=(1, 1, 1))


def test_student_loader_pairs_batches_and_targets():
    labeled = _loader(8, 2, labels=np.arange(8) % 3)
    pseudo = _loader(30, 6, seed=5)
    targets = torch.softmax(torch.randn(30, 3), 1)
    loader = StudentLoader(labeled, pseudo, targets)
    assert len(loader) == 5
    batches = list(loader)
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape[0] == 2 + 6 and y.labels.shape == (2,) and y.pseudo.shape == (6, 3)
        rows = (x[2:, 0, 0, 0] * 255).round().long()     # image i holds value i
        assert torch.allclose(y.pseudo, targets[rows])
    # the labeled set is cycled: 5 steps of 4 batches per labeled epoch -> two epochs used
    seen = torch.cat([(x[:2, 0, 0, 0] * 255).round().long() for x, _ in batches])
    assert len(set(seen.tolist())) == 8


def test_student_loader_is_deterministic_by_epoch():
    def epoch_batches(epoch):
        loader = StudentLoader(_loader(8, 2), _loader(30, 6, seed=5), torch.rand(30, 3))
        loader.set_epoch(epoch)
        return [x for x, _ in loader]
    a, b, c = epoch_batches(3), epoch_batches(3), epoch_batches(4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_student_loader_refuses_an_empty_pseudo_set():
    with pytest.raises(ValueError, match="threshold"):
        StudentLoader(_loader(8, 2), _loader(3, 6), torch.rand(3, 3))


def test_student_loader_fixed_steps_cycle_the_pseudo_set():
    loader = StudentLoader(_loader(8, 2), _loader(12, 6, seed=5), torch.rand(12, 3), steps_per_epoch=5)
    batches = list(loader)
    assert len(loader) == 5 and len(batches) == 5
    rows = torch.cat([(x[2:, 0, 0, 0] * 255).round().long() for x, _ in batches])
    # 2 batches per pass over the pseudo set: passes 1 and 2 complete, the third cut after one batch
    assert sorted(rows[:12].tolist()) == list(range(12)) and sorted(rows[12:24].tolist()) == list(range(12))
