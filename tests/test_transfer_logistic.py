"""Kornblith et al.'s fixed-feature logistic regression (`rethink.transfer.logistic`) against scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from rethink.transfer.logistic import (
    _select, accuracy, fit_logistic, fit_transfer, fit_transfer_sklearn, l2_from_sklearn_C,
    logistic_objective, penalty_grid, predict, sklearn_C_from_l2, standardize)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems: one thread each for torch and sklearn's BLAS/OpenMP (no oversubscription on shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small():
    """300 x 20, 4 classes, standardised (float64)."""
    x, y = make_classification(300, 20, n_informative=10, n_classes=4, random_state=0)
    return standardize(torch.tensor(x))[0], torch.tensor(y)


def _mixture(n: int, dim: int, classes: int, separation: float, seed: int):
    """Train/val/test of a noisy Gaussian mixture with per-feature scale and offset."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g, dtype=torch.float64) * separation
    scale = torch.rand(dim, generator=g, dtype=torch.float64) * 3 + 0.1
    offset = torch.randn(dim, generator=g, dtype=torch.float64)

    def split(m: int):
        y = torch.randint(0, classes, (m,), generator=g)
        return (means[y] + torch.randn(m, dim, generator=g, dtype=torch.float64)) * scale + offset, y

    return split(n[0]), split(n[1]), split(n[2])


@pytest.mark.parametrize("C", [1e-2, 1.0, 100.0])
def test_fit_logistic_matches_sklearn(small, C):
    x, y = small
    l2 = l2_from_sklearn_C(C, len(y))
    W, b = fit_logistic(x, y, 4, l2)
    clf = LogisticRegression(C=C, max_iter=1000, tol=1e-6).fit(x.numpy(), y.numpy())
    Ws, bs = torch.tensor(clf.coef_), torch.tensor(clf.intercept_)
    scale = max(1.0, float(Ws.abs().max()))
    assert W.shape == (4, 20) and b.shape == (4,)
    torch.testing.assert_close(W, Ws, atol=1e-3 * scale, rtol=0)
    torch.testing.assert_close(b, bs - bs.mean(), atol=1e-3 * scale, rtol=0)  # b is defined up to a shift
    pred = predict(x, W, b)
    assert (pred.numpy() == clf.predict(x.numpy())).all()
    assert abs(accuracy(pred, y) - clf.score(x.numpy(), y.numpy())) <= 0.002
    assert logistic_objective(x, y, W, b, l2) <= logistic_objective(x, y, Ws, bs, l2) + 1e-9


def test_two_classes_is_sklearn_binomial_at_twice_C():
    x, y = make_classification(300, 20, random_state=1)
    x, y = standardize(torch.tensor(x))[0], torch.tensor(y)
    W, b = fit_logistic(x, y, 2, l2_from_sklearn_C(1.0, 300))
    clf = LogisticRegression(C=2.0, max_iter=1000, tol=1e-6).fit(x.numpy(), y.numpy())
    torch.testing.assert_close(W[1] - W[0], torch.tensor(clf.coef_[0]), atol=1e-4, rtol=0)


def test_warm_start_matches_cold_start(small):
    x, y = small
    l2 = l2_from_sklearn_C(1.0, len(y))
    cold = fit_logistic(x, y, 4, l2)
    warm = fit_logistic(x, y, 4, l2, init=fit_logistic(x, y, 4, l2_from_sklearn_C(1e-2, len(y))))
    for a, c in zip(warm, cold):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_fit_transfer_matches_sklearn():
    tr, va, te = _mixture((2000, 500, 500), 64, 10, separation=0.35, seed=0)
    ours = fit_transfer(*tr, *va, *te, 10)
    ref = fit_transfer_sklearn(*tr, *va, *te, 10)
    grid = penalty_grid()
    for r in (ours, ref):
        assert r.grid == grid and len(r.val_scores) == 45 and r.metric == "top1"
        assert r.val_score == max(r.val_scores)
        assert r.C == 1.0 / grid[_select(grid, r.val_scores)]
        assert math.isclose(r.l2, 1.0 / (r.C * 2500))
        assert 0.5 < r.test_score < 1.0 and r.fit_time_s > 0
    assert ours.C == ref.C or abs(ours.test_score - ref.test_score) <= 0.002 + 1e-12
    assert abs(ours.test_score - ref.test_score) <= 0.002 + 1e-12


def test_fit_transfer_grid_order_and_mean_per_class():
    tr, va, te = _mixture((400, 200, 200), 16, 5, separation=0.5, seed=1)
    grid = [1e3, 1e0, 1e-3, 1e1]
    a = fit_transfer(*tr, *va, *te, 5, grid=grid, metric="mean_per_class")
    b = fit_transfer(*tr, *va, *te, 5, grid=sorted(grid), metric="mean_per_class")
    assert a.metric == "mean_per_class" and a.grid == grid
    assert dict(zip(a.grid, a.val_scores)) == pytest.approx(dict(zip(b.grid, b.val_scores)))
    assert a.C == b.C and a.test_score == pytest.approx(b.test_score)
    with pytest.raises(ValueError, match="top5.*top1, mean_per_class"):
        fit_transfer(*tr, *va, *te, 5, grid=grid, metric="top5")


def test_select_ties_go_to_the_stronger_penalty():
    assert _select([1e-2, 1e0, 1e2, 1e4], [0.5, 0.7, 0.7, 0.6]) == 2
    assert _select([1e4, 1e2, 1e0], [0.6, 0.7, 0.7]) == 1


def test_l2_from_sklearn_C_round_trip():
    assert l2_from_sklearn_C(2.0, 500) == pytest.approx(1e-3)
    for C, n in [(1e-6, 10), (0.3, 1234), (1e5, 50000)]:
        assert sklearn_C_from_l2(l2_from_sklearn_C(C, n), n) == pytest.approx(C)


def test_penalty_grid():
    grid = penalty_grid()
    assert len(grid) == 45
    assert grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e5)
    steps = np.diff(np.log10(grid))
    np.testing.assert_allclose(steps, 0.25)  # 4 per decade
    assert penalty_grid(3, 1e-2, 1e2) == pytest.approx([1e-2, 1.0, 1e2])


def test_accuracy_top1_and_mean_per_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 0])
    assert accuracy(pred, labels) == pytest.approx(4 / 7)
    # recalls: class 0 3/4, class 1 1/2, class 2 0/1; class 3 absent from labels is skipped
    expected = (3 / 4 + 1 / 2 + 0) / 3
    assert accuracy(pred, labels, "mean_per_class") == pytest.approx(expected)
    assert accuracy(pred, labels, "mean_per_class", num_classes=4) == pytest.approx(expected)
    with pytest.raises(ValueError, match="'top5'.*top1, mean_per_class"):
        accuracy(pred, labels, "top5")


def test_standardize_uses_train_statistics_only():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(100, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.0]) + 2
    other = torch.randn(50, 3, generator=g, dtype=torch.float64) * 3 - 7
    ztrain, zother = standardize(train, other)
    torch.testing.assert_close(ztrain[:, :2].mean(0), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(ztrain[:, :2].std(0, correction=0), torch.ones(2, dtype=torch.float64))
    std = train.std(0, correction=0).clamp_min(1e-6)
    torch.testing.assert_close(zother, (other - train.mean(0)) / std)
    assert zother.mean().abs() > 1  # not re-centred on its own statistics
    assert torch.isfinite(zother).all()  # constant feature: std clamped at 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_matches_cpu(small):
    x, y = small
    l2 = l2_from_sklearn_C(1.0, len(y))
    cpu = fit_logistic(x, y, 4, l2)
    gpu = fit_logistic(x.cuda(), y.cuda(), 4, l2)
    assert gpu[0].device.type == "cuda"
    for a, c in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), c, atol=1e-5, rtol=0)
    tr, va, te = _mixture((600, 200, 200), 32, 5, separation=0.5, seed=2)
    grid = penalty_grid(12)
    on_cpu = fit_transfer(*tr, *va, *te, 5, grid=grid)
    on_gpu = fit_transfer(*(t.cuda() for t in (*tr, *va, *te)), 5, grid=grid)
    assert on_gpu.C == on_cpu.C and abs(on_gpu.test_score - on_cpu.test_score) <= 0.002 + 1e-12


def test_two_class_protocol_matches_sklearn():
    tr, va, te = _mixture((400, 200, 200), 16, 2, separation=0.3, seed=3)
    grid = penalty_grid(12)
    ours = fit_transfer(*tr, *va, *te, 2, grid=grid)
    ref = fit_transfer_sklearn(*tr, *va, *te, 2, grid=grid)
    assert ours.val_scores == pytest.approx(ref.val_scores) and ours.C == ref.C
    assert abs(ours.test_score - ref.test_score) <= 0.005 + 1e-12


def test_float32_close_to_float64(small):
    x, y = small
    l2 = l2_from_sklearn_C(1.0, len(y))
    W64, b64 = fit_logistic(x, y, 4, l2)
    W32, b32 = fit_logistic(x.float(), y, 4, l2, dtype=torch.float32)
    assert W32.dtype == torch.float32
    torch.testing.assert_close(W32.double(), W64, atol=1e-3, rtol=0)
    torch.testing.assert_close(b32.double(), b64, atol=1e-3, rtol=0)


def test_patience_stops_the_path_without_changing_the_choice():
    tr, va, te = _mixture((600, 300, 300), 48, 6, separation=0.35, seed=5)
    grid = penalty_grid(23)
    full = fit_transfer(*tr, *va, *te, 6, grid=grid)
    short = fit_transfer(*tr, *va, *te, 6, grid=grid, patience=4)
    assert short.C == full.C and short.test_score == full.test_score
    skipped = [i for i, v in enumerate(short.val_scores) if math.isnan(v)]
    assert skipped, "the weak end of the path should have been skipped"
    assert all(grid[i] < 1 / short.C for i in skipped)  # only weaker penalties than the chosen one
    for mine, ref in zip(short.val_scores, full.val_scores):  # the fitted part of the path is the same
        assert math.isnan(mine) or mine == ref
