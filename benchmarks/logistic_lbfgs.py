"""Kornblith et al.'s fixed-feature logistic regression: torch L-BFGS (`fit_transfer`) vs scikit-learn.

Both run the whole protocol on the same synthetic Gaussian-mixture "features" (fixed seed; random
per-feature scale and offset, so standardisation matters): ``--n`` training examples, ``--n // 4``
validation and ``--n // 4`` test examples, ``--grid`` log-spaced penalties in [1e-6, 1e5] walked
with warm starts, the best on validation refitted on train + val and scored on test. The torch
solver runs on ``--device`` (CUDA if available), sklearn's ``LogisticRegression(solver="lbfgs")``
on the CPU with as many BLAS/OpenMP threads as torch has. Each wall time is the best of
``--repeats`` runs (CUDA synchronised); the report gives the ratio sklearn / torch, both test
accuracies and their difference in points, and the chosen penalties. On a shared CPU use
``--threads 1``: OpenMP threads competing with other processes slow both solvers many times over.

    python benchmarks/logistic_lbfgs.py [--n 10000] [--dim 512] [--classes 10] [--grid 45]
        [--device auto] [--dtype float64] [--threads N] [--out result.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import sklearn
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from _report import device_label, emit  # noqa: E402
from rethink.transfer.logistic import (  # noqa: E402
    fit_logistic, fit_transfer, fit_transfer_sklearn, penalty_grid)


def make_features(n: int, dim: int, classes: int, separation: float, seed: int = 0):
    """``(train, val, test)`` splits of ``(x, y)``: class means ~ N(0, separation^2 / dim * 4) plus
    unit Gaussian noise, then a random positive scale and offset per feature (float32, CPU)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g) * separation * 2 / dim ** 0.5
    scale = torch.rand(dim, generator=g) * 2 + 0.1
    offset = torch.randn(dim, generator=g)

    def split(m: int):
        y = torch.randint(0, classes, (m,), generator=g)
        return (means[y] + torch.randn(m, dim, generator=g)) * scale + offset, y

    return split(n), split(n // 4), split(n // 4)


def _best_time(fn, device: str, repeats: int):
    """(result of the last call, fastest wall seconds of ``repeats`` calls)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best, out = float("inf"), None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return out, best


def measure(*, n: int = 10000, dim: int = 512, classes: int = 10, grid: int = 45, separation: float = 1.5,
            max_iter: int = 1000, tol: float = 1e-6, repeats: int = 1, dtype: str = "float64",
            device: str = "cpu", sklearn_threads: int | None = None) -> dict:
    """Both solvers over the whole penalty path on the same features; sklearn on the CPU with
    `sklearn_threads` BLAS/OpenMP threads (default: as many as torch has)."""
    device = str(torch.device(device))
    (trx, tr_y), (vax, va_y), (tex, te_y) = make_features(n, dim, classes, separation)
    penalties = penalty_grid(grid)
    kw = dict(grid=penalties, max_iter=max_iter, tol=tol)
    torch_dtype = getattr(torch, dtype)
    on = [t.to(device) for t in (trx, tr_y, vax, va_y, tex, te_y)]
    t0 = time.perf_counter()  # warm-up (lazy init, kernels)
    fit_logistic(on[0][:256], on[1][:256], classes, 1e-2, max_iter=20, dtype=torch_dtype)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0

    ours, torch_s = _best_time(lambda: fit_transfer(*on, classes, dtype=torch_dtype, **kw), device, repeats)
    threads = sklearn_threads or torch.get_num_threads()
    with threadpool_limits(threads):  # sklearn's BLAS/OpenMP: as many threads as torch's
        ref, sklearn_s = _best_time(
            lambda: fit_transfer_sklearn(trx, tr_y, vax, va_y, tex, te_y, classes, **kw), "cpu", repeats)
    return {
        "device": device_label(device),
        "sklearn_device": f"cpu ({threads} threads)",
        "n_train": n, "n_val": n // 4, "n_test": n // 4, "dim": dim,
        "classes": classes, "grid": grid, "max_iter": max_iter, "tol": tol,
        "dtype": dtype,
        "torch_s": round(torch_s, 3),
        "sklearn_s": round(sklearn_s, 3),
        "ratio_sklearn_over_torch": round(sklearn_s / torch_s, 2),
        "torch_test_acc": round(ours.test_score, 5),
        "sklearn_test_acc": round(ref.test_score, 5),
        "test_acc_diff_points": round(100 * (ours.test_score - ref.test_score), 3),
        "torch_val_acc": round(ours.val_score, 5),
        "sklearn_val_acc": round(ref.val_score, 5),
        "torch_C": ours.C, "sklearn_C": ref.C,
        "same_penalty": ours.C == ref.C,
        "max_val_score_diff_points": round(
            100 * max(abs(a - b) for a, b in zip(ours.val_scores, ref.val_scores)), 3),
        "warmup_s": round(warmup_s, 3),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="training examples (val and test: n // 4 each)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--grid", type=int, default=45, help="penalties, log-spaced in [1e-6, 1e5]")
    p.add_argument("--separation", type=float, default=1.5, help="scale of the class means (higher: easier)")
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each; the fastest is reported")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="torch solver's dtype")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    return emit(measure(n=args.n, dim=args.dim, classes=args.classes, grid=args.grid, separation=args.separation,
                        max_iter=args.max_iter, tol=args.tol, repeats=args.repeats, dtype=args.dtype,
                        device=device), args.out)


if __name__ == "__main__":
    main()
