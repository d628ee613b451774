"""Fixed-feature transfer (Kornblith et al. 2019, Sec. 3): L2-regularised multinomial logistic regression.

The paper freezes the ImageNet network, takes penultimate-layer features, and trains an
L2-regularised multinomial logistic regression on them with L-BFGS (full batch, no data
augmentation). The L2 regularisation parameter is chosen on a validation split from 45
logarithmically spaced values between 1e-6 and 1e5; the classifier is then retrained on
train + validation with that parameter and evaluated on the test split. Features are
standardised (z-scored) before fitting.

Here the solver is `torch.optim.LBFGS` (strong-Wolfe line search) on the features' device, so the
whole penalty path runs on the GPU when the features are there. `fit_transfer_sklearn` is the
same protocol with scikit-learn's `LogisticRegression(solver="lbfgs")`, the reference it is
checked against.

Scales of the penalty. `fit_logistic` minimises

    mean_i CE(W x_i + b, y_i) + (l2 / 2) * ||W||^2        (bias not penalised)

which is scikit-learn's objective ``0.5 ||W||^2 + C * sum_i CE_i`` divided by ``C * n``, so
``l2 = 1 / (C * n)`` (`l2_from_sklearn_C`). The grid values are read as the paper's penalty
``lambda`` on the summed-loss scale, ``sum_i CE_i + (lambda / 2) ||W||^2``, i.e. sklearn's
``C = 1 / lambda`` and ``l2 = lambda / n``.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

METRICS = ("top1", "mean_per_class")
_FTOL = 64 * float(np.finfo(np.float64).eps)  # sklearn's L-BFGS ftol, also used in float32


def l2_from_sklearn_C(C: float, n: int) -> float:
    """Penalty on `fit_logistic`'s mean-loss scale equivalent to sklearn's ``C`` with ``n`` samples."""
    return 1.0 / (C * n)


def sklearn_C_from_l2(l2: float, n: int) -> float:
    """Inverse of `l2_from_sklearn_C`."""
    return 1.0 / (l2 * n)


def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Z-score every split with the train split's per-feature mean and (population) std, std clamped at 1e-6."""
    mean = train.mean(0)
    std = train.std(0, correction=0).clamp_min(1e-6)
    return tuple((x - mean) / std for x in (train, *others))


def _default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    # float64 on every device: on the GPU the fit is launch/sync bound for Kornblith-sized
    # problems, so float64 costs little and keeps the optimum (and gradient tolerance) as sklearn's.
    return torch.float64 if dtype is None else dtype


def fit_logistic(features: Tensor, labels: Tensor, num_classes: int, l2: float, *,
                 init: tuple[Tensor, Tensor] | None = None, max_iter: int = 1000,
                 tol: float = 1e-6, history_size: int = 10,
                 dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression: minimise mean CE + (l2 / 2) ||W||^2 with full-batch L-BFGS.

    Runs on ``features.device`` in ``dtype`` (default float64 everywhere; pass torch.float32 to
    halve memory on a GPU, and then keep TF32 matmuls off). Stops when the largest absolute
    gradient entry is <= ``tol`` (scipy/sklearn's ``gtol`` on the same mean-loss objective), after
    ``max_iter`` L-BFGS iterations, or when the objective changes by < 64 eps (sklearn's ``ftol``
    for objectives below 1). ``history_size`` 10 is scipy's default. The gradient is analytic (no
    autograd graph). ``init=(W, b)`` warm-starts. Returns ``(W [C, D], b [C])`` with ``b``
    centred (the softmax is invariant to a shift of ``b``, which is unpenalised).
    """
    dtype = _default_dtype(dtype)
    x = features.to(dtype)
    n, d = x.shape
    y = labels.to(x.device, torch.long)
    onehot = torch.zeros(num_classes, n, dtype=dtype, device=x.device)  # class-major [C, n]
    onehot[y, torch.arange(n, device=x.device)] = 1.0
    if init is None:  # W = 0 and b = log class priors, the optimum of the bias alone
        W = torch.zeros(num_classes, d, dtype=dtype, device=x.device)
        b = onehot.sum(1).clamp_min(1.0).log()
    else:
        W = init[0].detach().to(x.device, dtype).clone()
        b = init[1].detach().to(x.device, dtype).clone()
    W.requires_grad_(True)
    b.requires_grad_(True)
    # L-BFGS sees the summed loss, n x the objective: torch skips curvature pairs with an absolute
    # s.y <= 1e-10, which on the mean scale stalls it near the optimum; tolerances scale along.
    nl2 = n * l2

    def closure() -> Tensor:
        with torch.no_grad():  # logits class-major [C, n]: log_softmax over dim 0 is faster
            logp = torch.addmm(b[:, None], W, x.T).log_softmax(0)
            loss = -(onehot * logp).sum() + 0.5 * nl2 * W.square().sum()
            g = logp.exp_().sub_(onehot)
            W.grad = torch.addmm(W, g, x, beta=nl2)
            b.grad = g.sum(1)
        return loss

    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, max_eval=max(15000, 2 * max_iter),
                            tolerance_grad=n * tol, tolerance_change=n * _FTOL,
                            history_size=history_size, line_search_fn="strong_wolfe")
    opt.step(closure)
    W, b = W.detach(), b.detach()
    return W, b - b.mean()


def logistic_objective(features: Tensor, labels: Tensor, W: Tensor, b: Tensor, l2: float) -> float:
    """`fit_logistic`'s objective, mean CE + (l2 / 2) ||W||^2, evaluated in float64."""
    x, W, b = features.double(), W.double().to(features.device), b.double().to(features.device)
    ce = torch.nn.functional.cross_entropy(torch.addmm(b, x, W.T), labels.to(features.device).long())
    return float(ce + 0.5 * l2 * W.square().sum())


def predict(features: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """Argmax class of ``features @ W.T + b``."""
    return torch.addmm(b.to(features.dtype), features, W.to(features.dtype).T).argmax(1)


def accuracy(pred: Tensor, labels: Tensor, metric: str = "top1", num_classes: int | None = None) -> float:
    """Top-1 accuracy, or (``"mean_per_class"``) the mean over classes present in ``labels`` of the
    per-class recall, which Kornblith et al. report for Aircraft, Pets, Caltech-101 and Flowers."""
    pred, labels = torch.as_tensor(pred).long().cpu(), torch.as_tensor(labels).long().cpu()
    correct = (pred == labels).double()
    if metric == "top1":
        return float(correct.mean())
    if metric == "mean_per_class":
        k = num_classes if num_classes is not None else int(labels.max()) + 1
        count = torch.bincount(labels, minlength=k).double()
        hits = torch.bincount(labels, weights=correct, minlength=k)
        present = count > 0
        return float((hits[present] / count[present]).mean())
    raise ValueError(f"unknown metric {metric!r}; valid choices: {', '.join(METRICS)}")


def penalty_grid(n: int = 45, low: float = 1e-6, high: float = 1e5) -> list[float]:
    """Kornblith's ``n`` log-spaced L2 penalties in ``[low, high]`` (45 in [1e-6, 1e5]: 4 per decade).

    The values are the penalty ``lambda`` on the summed-loss scale, ``sum_i CE_i + (lambda/2)||W||^2``
    (the paper's "L2 regularization parameter"), i.e. sklearn's ``C = 1 / lambda`` — not sklearn's C.
    """
    return [float(v) for v in np.logspace(math.log10(low), math.log10(high), n)]


@dataclass
class LogisticResult:
    l2: float                # chosen penalty, on fit_logistic's (mean-loss) scale, for the train+val refit
    C: float                 # the same as sklearn's C for the train+val refit (= 1 / grid value)
    val_scores: list[float]  # validation score at each grid value (same order as grid)
    grid: list[float]
    val_score: float         # best validation score
    test_score: float        # after refitting on train+val with the chosen penalty
    metric: str
    fit_time_s: float


def _select(grid: list[float], val_scores: list[float]) -> int:
    # best validation score; ties -> the stronger (larger) penalty
    return max((i for i in range(len(grid)) if not math.isnan(val_scores[i])),
               key=lambda i: (val_scores[i], grid[i]))


def _check(metric: str, grid: list[float] | None) -> list[float]:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid choices: {', '.join(METRICS)}")
    return penalty_grid() if grid is None else [float(g) for g in grid]


def fit_transfer(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor,
                 test_x: Tensor, test_y: Tensor, num_classes: int, *,
                 grid: list[float] | None = None, metric: str = "top1", max_iter: int = 1000,
                 tol: float = 1e-6, dtype: torch.dtype | None = None,
                 patience: int | None = None) -> LogisticResult:
    """Kornblith's protocol with the torch solver, on ``train_x.device``.

    Standardise with train statistics; fit each grid penalty (``l2 = lambda / n_train``) from the
    strongest to the weakest, warm-starting from the previous solution; keep the best validation
    score (ties -> stronger penalty); refit on train + val, standardised with train + val
    statistics, at the same sklearn ``C`` (so ``l2 = lambda / n_trainval``); score test.

    ``patience``: stop walking the path after that many weaker penalties in a row without a
    better validation score (their ``val_scores`` are NaN). The weak end of the path is the
    slow end (near-separable features never meet the tolerance); None walks the whole grid.
    """
    grid = _check(metric, grid)
    device = train_x.device
    dtype = _default_dtype(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    cast = lambda t: t.to(device, dtype)  # noqa: E731
    ys = [t.to(device, torch.long) for t in (train_y, val_y, test_y)]
    xtr, xva = standardize(cast(train_x), cast(val_x))
    n = xtr.shape[0]
    order = sorted(range(len(grid)), key=lambda i: -grid[i])
    val_scores = [math.nan] * len(grid)
    params, best_so_far, since_best = None, -math.inf, 0
    for i in order:
        params = fit_logistic(xtr, ys[0], num_classes, grid[i] / n, init=params,
                              max_iter=max_iter, tol=tol, dtype=dtype)
        val_scores[i] = accuracy(predict(xva, *params), ys[1], metric, num_classes)
        best_so_far, since_best = ((val_scores[i], 0) if val_scores[i] > best_so_far
                                   else (best_so_far, since_best + 1))
        if patience is not None and since_best >= patience:
            break
    best = _select(grid, val_scores)

    xall, xte = standardize(torch.cat([cast(train_x), cast(val_x)]), cast(test_x))
    yall = torch.cat([ys[0], ys[1]])
    C = 1.0 / grid[best]
    l2 = l2_from_sklearn_C(C, xall.shape[0])
    params = fit_logistic(xall, yall, num_classes, l2, max_iter=max_iter, tol=tol, dtype=dtype)
    test_score = accuracy(predict(xte, *params), ys[2], metric, num_classes)
    sync()
    return LogisticResult(l2=l2, C=C, val_scores=val_scores, grid=grid, val_score=val_scores[best],
                          test_score=test_score, metric=metric, fit_time_s=time.perf_counter() - t0)


def fit_transfer_sklearn(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor,
                         test_x: Tensor, test_y: Tensor, num_classes: int, *,
                         grid: list[float] | None = None, metric: str = "top1", max_iter: int = 1000,
                         tol: float = 1e-6) -> LogisticResult:
    """The same protocol as `fit_transfer` with sklearn's ``LogisticRegression(solver="lbfgs")`` (reference).

    Same float64 standardisation, grid order, warm starts (``warm_start=True``) and selection rule.
    With 2 classes sklearn fits a binomial model whose one weight vector ``w`` equals ``2 v`` of the
    symmetric multinomial ``(v, -v)``; its penalty is then half of ours, so ``C`` is doubled there to
    solve the same problem. Convergence warnings (weak penalties reaching ``max_iter``) are silenced.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    grid = _check(metric, grid)
    t0 = time.perf_counter()
    f64 = lambda t: torch.as_tensor(t).detach().cpu().double()  # noqa: E731
    lab = lambda t: torch.as_tensor(t).detach().cpu().long()  # noqa: E731
    ytr, yva, yte = lab(train_y), lab(val_y), lab(test_y)
    xtr, xva = (t.numpy() for t in standardize(f64(train_x), f64(val_x)))
    scale = 2.0 if num_classes == 2 else 1.0

    def score(clf, x, y) -> float:
        return accuracy(torch.as_tensor(clf.predict(x)), y, metric, num_classes)

    order = sorted(range(len(grid)), key=lambda i: -grid[i])
    val_scores = [0.0] * len(grid)
    clf = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in order:
            clf.set_params(C=scale / grid[i]).fit(xtr, ytr.numpy())
            val_scores[i] = score(clf, xva, yva)
        best = _select(grid, val_scores)
        xall, xte = (t.numpy() for t in standardize(torch.cat([f64(train_x), f64(val_x)]), f64(test_x)))
        C = 1.0 / grid[best]
        clf = LogisticRegression(solver="lbfgs", C=scale * C, max_iter=max_iter, tol=tol)
        clf.fit(xall, torch.cat([ytr, yva]).numpy())
    test_score = score(clf, xte, yte)
    return LogisticResult(l2=l2_from_sklearn_C(C, xall.shape[0]), C=C, val_scores=val_scores, grid=grid,
                          val_score=val_scores[best], test_score=test_score, metric=metric,
                          fit_time_s=time.perf_counter() - t0)
