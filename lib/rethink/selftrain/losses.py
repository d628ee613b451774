"""The student's loss: cross-entropy on labeled images plus soft cross-entropy on pseudo-labels."""
from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


class StudentTargets(NamedTuple):
    """Targets of a student batch: the first ``len(labels)`` rows are labeled images."""
    labels: Tensor   # (B_l,) int64
    pseudo: Tensor   # (B_u, C) float: teacher distributions (or one-hot)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over the batch of -sum_c q_c log softmax(z)_c (equals KL(q || p) + H(q))."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class NoisyStudentLoss:
    """CE(labeled) + unlabeled_weight * soft-CE(pseudo-labeled), each a mean over its part."""

    def __init__(self, label_smoothing: float = 0.0, unlabeled_weight: float = 1.0):
        self.label_smoothing = label_smoothing
        self.unlabeled_weight = unlabeled_weight

    def __call__(self, logits: Tensor, y: StudentTargets) -> Tensor:
        n_labeled = y.labels.shape[0]
        loss = F.cross_entropy(logits[:n_labeled], y.labels, label_smoothing=self.label_smoothing)
        if y.pseudo.shape[0]:
            loss = loss + self.unlabeled_weight * soft_cross_entropy(logits[n_labeled:], y.pseudo)
        return loss
