"""Pseudo-labels: the un-noised teacher labels the unlabeled pool, then filter and balance.

Xie et al. (2020), section 3 / appendix: images whose teacher confidence is below 0.3
are dropped; each class is then brought to the same number of images K -- classes
with fewer are duplicated, classes with more keep their K most confident images.
Soft pseudo-labels (the teacher's distribution) are the default; hard ones are its
one-hot argmax.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def teacher_probabilities(teacher: torch.nn.Module, images: np.ndarray | Tensor, *, mean, std,
                          device: torch.device | str, batch_size: int = 1024,
                          temperature: float = 1.0) -> Tensor:
    """Class probabilities (N x C, float32, CPU) of the un-noised teacher.

    Un-noised: eval mode (no dropout, no stochastic depth, BN running statistics) and
    no augmentation of the input, as the paper prescribes.
    """
    from ..models.inference import eval_batches

    device = torch.device(device)
    return eval_batches(teacher, images, lambda m, x: torch.softmax(m(x).float() / temperature, dim=1).cpu(),
                        mean=mean, std=std, device=device, batch_size=batch_size, empty=torch.zeros(0, 0),
                        channels_last=device.type == "cuda")


@dataclass
class PseudoLabels:
    """The student's unlabeled training set: pool indices (with duplicates) and targets."""
    indices: np.ndarray            # (M,) int64 rows of the pool, repeated where duplicated
    targets: Tensor                # (M, C) float32: soft distribution or one-hot
    predicted: np.ndarray          # (M,) teacher's argmax class
    confidence: np.ndarray         # (M,) teacher's max probability
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)


def _per_class_counts(classes: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(classes, minlength=num_classes).tolist()


def select_pseudo_labels(probs: Tensor, *, threshold: float = 0.3, balance: bool = True,
                         images_per_class: int | None = None, hard: bool = False,
                         seed: int = 0) -> PseudoLabels:
    """Filter by confidence, balance classes, and make soft or hard targets.

    Args:
        probs: N x C teacher probabilities over the unlabeled pool.
        threshold: drop images whose max probability is below it (0 keeps all).
        balance: bring every class to ``images_per_class`` images: the most confident
            K of a common class; a rare class repeated whole ``K // n`` times plus
            ``K % n`` of its images drawn without replacement (seeded).
        images_per_class: K; None: the mean count per class after filtering (so the
            total stays about the same).
        hard: one-hot argmax targets instead of the distribution.
    Returns indices sorted by class then by decreasing confidence (duplicates adjacent).
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must be N x C, got shape {tuple(probs.shape)}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    probs = probs.float().cpu()
    n, num_classes = probs.shape
    conf_t, pred_t = probs.max(dim=1)
    conf, pred = conf_t.numpy(), pred_t.numpy().astype(np.int64)
    kept = np.flatnonzero(conf >= threshold)
    stats = {"pool": n, "threshold": threshold, "kept_after_filter": int(len(kept)),
             "per_class_after_filter": _per_class_counts(pred[kept], num_classes)}
    if balance:
        counts = np.asarray(stats["per_class_after_filter"])
        present = counts > 0
        k = images_per_class if images_per_class is not None else (
            int(round(counts[present].mean())) if present.any() else 0)
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(num_classes):
            members = kept[pred[kept] == c]
            if len(members) == 0 or k == 0:
                continue
            members = members[np.argsort(-conf[members], kind="stable")]
            if len(members) >= k:
                chosen.append(members[:k])
            else:
                extra = rng.choice(members, size=k % len(members), replace=False)
                picked = np.concatenate([np.tile(members, k // len(members)), extra])
                # keep the class sorted by confidence so duplicates sit together
                chosen.append(picked[np.argsort(-conf[picked], kind="stable")])
        indices = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
        stats.update(images_per_class=int(k), classes_missing=int((~present).sum()))
    else:
        order = np.lexsort((-conf[kept], pred[kept]))
        indices = kept[order]
    stats["per_class_final"] = _per_class_counts(pred[indices], num_classes)
    stats["unique_images"] = int(len(np.unique(indices)))
    stats["total"] = int(len(indices))
    idx_t = torch.as_tensor(indices, dtype=torch.int64)
    if hard:
        targets = torch.nn.functional.one_hot(pred_t[idx_t], num_classes).float()
    else:
        targets = probs[idx_t].clone()
    return PseudoLabels(indices=indices.astype(np.int64), targets=targets,
                        predicted=pred[indices], confidence=conf[indices], stats=stats)
