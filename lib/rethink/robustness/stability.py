"""ImageNet-P / CIFAR-10-P stability metrics (Hendrycks & Dietterich 2019).

Defined by the benchmark and followed here (``ImageNet-P/test.py`` and ``cifar-p-eval.py``):

* **Flip probability** FP of one perturbation: the fraction of frame pairs in a sequence
  whose top-1 predictions differ, averaged over sequences. Noise sequences (``noise=True``,
  the perturbations whose name contains "noise") compare every frame with the FIRST
  (clean) frame; all others compare frames ``difficulty`` apart (consecutive frames at the
  default difficulty 1, as the CIFAR script uses).
* **Top-5 distance** T5D: for a pair of frames (earlier a, later b) take the classes in a's
  top-5 order and their ranks in b, sigma_j = rank_b(a's j-th class) (1-based); the
  distance is sum_{j<5} |j - min(sigma_j - 1, 5)| (the benchmark's ``cum_sum_top5``
  formula). It is not symmetric in (a, b); pairs are taken as the benchmark does.
* **Flip rate** FR = FP_model / FP_baseline per perturbation, mFR its mean over the
  perturbations; mT5D likewise with T5D (the paper normalises by AlexNet).

``predict_sequences`` runs a classifier over uint8 sequences and keeps, per frame, the
top-1 prediction and the top-5 classes (ordinal ranking: ties go to the lower class index,
like ``scipy.stats.rankdata(-logits, method='ordinal')`` and ``argmax``), which is all the
two metrics need.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

TOP = 5


def _as_tensor(x) -> Tensor:
    return x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _pair_indices(t: int, noise: bool, difficulty: int) -> tuple[Tensor, Tensor]:
    """(earlier, later) frame indices of the pairs the benchmark compares."""
    if t < 2:
        raise ValueError(f"sequences need at least 2 frames, got {t}")
    if noise:  # every frame against the first; step size 1 whatever the difficulty
        later = torch.arange(1, t)
        return torch.zeros_like(later), later
    d = int(difficulty)
    if not 1 <= d < t:
        raise ValueError(f"difficulty (step size) must be in 1..{t - 1}, got {difficulty}")
    later = torch.arange(d, t)
    return later - d, later


def flip_probability(predictions, noise: bool, *, difficulty: int = 1) -> float:
    """Flip probability FP of top-1 ``predictions`` (N x T class indices; array or tensor)."""
    p = _as_tensor(predictions)
    if p.ndim != 2:
        raise ValueError(f"predictions must be N x T, got shape {tuple(p.shape)}")
    a, b = _pair_indices(p.shape[1], noise, difficulty)
    # Every sequence has the same number of pairs, so the mean of per-sequence means is the
    # mean over all pairs.
    return (p[:, a] != p[:, b]).double().mean().item()


def top5_from_scores(scores: Tensor) -> Tensor:
    """Top-5 class indices, best first, of scores ... x K (ties: lower index first)."""
    s = _as_tensor(scores).float()
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    return order[..., :TOP]


def top5_from_ranks(ranks: Tensor) -> Tensor:
    """Top-5 class indices from 1-based rank arrays ... x K (``rankdata(-scores, 'ordinal')``)."""
    r = _as_tensor(ranks).long()
    return torch.argsort(r, dim=-1)[..., :TOP]


def _top5_pair_distance(a: Tensor, b: Tensor) -> Tensor:
    """Benchmark top-5 distance from frame a (earlier) to b (later), both ... x k top-k lists."""
    k = a.shape[-1]
    eq = a[..., :, None] == b[..., None, :]                  # ... x k x k
    pos = torch.where(eq.any(-1), eq.to(torch.int64).argmax(-1),
                      torch.full(eq.shape[:-1], TOP, dtype=torch.int64))
    # a class outside b's top-5 (or beyond it) counts as rank 6: min(sigma - 1, 5)
    pos = pos.clamp(max=TOP)
    j = torch.arange(k, dtype=torch.int64)
    return (j - pos).abs().sum(-1)


def top5_distance(ranks_or_logits, noise: bool, *, difficulty: int = 1, kind: str = "auto") -> float:
    """Mean top-5 distance T5D of sequences N x T x K.

    ``kind``: "logits" (any scores, higher = better), "ranks" (1-based ordinal ranks per
    class, the benchmark's ``rankdata(-logits, method='ordinal')``), "top5" (N x T x 5 class
    indices, best first, as ``predict_sequences`` returns) or "auto": floating -> logits;
    integer with last dim 5 -> top5; integer with last dim > 5 -> ranks.
    """
    x = _as_tensor(ranks_or_logits)
    if x.ndim != 3:
        raise ValueError(f"expected N x T x K, got shape {tuple(x.shape)}")
    if kind == "auto":
        if x.is_floating_point():
            kind = "logits"
        else:
            kind = "top5" if x.shape[-1] == TOP else "ranks"
    if kind == "logits":
        top = top5_from_scores(x)
    elif kind == "ranks":
        top = top5_from_ranks(x)
    elif kind == "top5":
        if x.shape[-1] < TOP:
            raise ValueError(f"top5 lists need {TOP} entries, got {x.shape[-1]}")
        top = x[..., :TOP].long()
    else:
        raise ValueError(f"kind must be auto, logits, ranks or top5, got {kind!r}")
    if top.shape[-1] < TOP:
        raise ValueError(f"top-5 distance needs at least {TOP} classes, got {top.shape[-1]}")
    a, b = _pair_indices(top.shape[1], noise, difficulty)
    return _top5_pair_distance(top[:, a], top[:, b]).double().mean().item()


def flip_rate(fp_model: float, fp_baseline: float) -> float:
    """FR = FP_model / FP_baseline (the paper's baseline is AlexNet)."""
    if not fp_baseline > 0:
        raise ValueError(f"baseline flip probability must be > 0, got {fp_baseline}")
    return float(fp_model) / float(fp_baseline)


def _mean_ratio(model: Mapping[str, float], baseline: Mapping[str, float],
                names: Iterable[str] | None, what: str) -> float:
    names = list(model) if names is None else list(names)
    if not names:
        raise ValueError("no perturbations to average")
    missing = [n for n in names if n not in model or n not in baseline]
    if missing:
        raise KeyError(f"{what}: perturbations missing from model or baseline: {missing}")
    ratios = []
    for n in names:
        if not baseline[n] > 0:
            raise ValueError(f"{what}: baseline value for {n!r} must be > 0, got {baseline[n]}")
        ratios.append(float(model[n]) / float(baseline[n]))
    return float(np.mean(ratios))


def mfr(fp_model: Mapping[str, float], fp_baseline: Mapping[str, float],
        names: Iterable[str] | None = None) -> float:
    """Mean flip rate: mean over perturbations ``names`` (default: the model's) of FP/FP_baseline."""
    return _mean_ratio(fp_model, fp_baseline, names, "mFR")


def mt5d(t5d_model: Mapping[str, float], t5d_baseline: Mapping[str, float],
         names: Iterable[str] | None = None) -> float:
    """Mean top-5 distance ratio: mean over perturbations of T5D/T5D_baseline."""
    return _mean_ratio(t5d_model, t5d_baseline, names, "mT5D")


class SequencePredictions(NamedTuple):
    predictions: Tensor  # N x T int64 top-1 classes
    top5: Tensor         # N x T x 5 int64 classes, best first


def predict_sequences(model: torch.nn.Module, seqs_uint8, mean: Sequence[float], std: Sequence[float],
                      batch_size: int = 512, device: str | torch.device | None = None) -> SequencePredictions:
    """Run ``model`` on every frame of uint8 sequences N x T x 3 x H x W.

    Frames go through in batches of ``batch_size`` images (``models.inference.eval_batches``:
    normalised by ``mean``/``std``, eval mode, no gradients, bf16 autocast on CUDA only).
    The model must already be on ``device`` (default: the device of its first parameter).
    Returns CPU tensors.
    """
    from ..models.inference import eval_batches

    seqs = seqs_uint8 if isinstance(seqs_uint8, Tensor) else torch.as_tensor(np.array(seqs_uint8))
    if seqs.dtype != torch.uint8 or seqs.ndim != 5:
        raise ValueError(f"expected uint8 N x T x C x H x W, got {seqs.dtype} {tuple(seqs.shape)}")
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    n, t = seqs.shape[:2]

    def top(m, x):
        logits = m(x).float()
        return torch.sort(logits, dim=-1, descending=True, stable=True).indices[:, :TOP].cpu()

    tops = eval_batches(model, seqs.reshape(n * t, *seqs.shape[2:]).cpu(), top, mean=mean, std=std,
                        device=device, batch_size=int(batch_size), empty=torch.zeros(0, TOP, dtype=torch.int64),
                        channels_last=device.type == "cuda")
    tops = tops.view(n, t, -1)
    return SequencePredictions(tops[..., 0].clone(), tops)


__all__ = ["SequencePredictions", "flip_probability", "flip_rate", "mfr", "mt5d",
           "predict_sequences", "top5_distance", "top5_from_ranks", "top5_from_scores"]
