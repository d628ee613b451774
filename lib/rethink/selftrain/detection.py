"""Self-training for detection (Zoph et al. 2020): pseudo-boxes from a teacher, and the student's loss.

* :func:`pseudo_boxes`: a teacher's detections -> training targets, keeping the detections
  with score >= ``score_threshold`` (the paper's 0.5 for detection; CLAIMS.md section 2).
  :func:`pseudo_box_set` wraps them with their images as a ``DetectionSet``.
* :class:`SelfTrainingLoss`: the student's loss from L_h (the loss on a human-labeled batch)
  and L_p (on a pseudo-labeled batch). ``mode="normalized"``:
  L = 1 / (1 + alpha) * (L_h + alpha * (mean L_h / mean L_p) * L_p), the means being moving
  averages; ``mode="sum"``: L = L_h + alpha * L_p (alpha = 1: the standard summed loss, which
  the paper says "can be unstable").

What is verified and what is not: the normalised form is the one quoted in CLAIMS.md from
the paper's Appendix B; the stored copies of the paper reachable here (arXiv 2006.06882 via
arxiv-vanity and vdocument.in, the NeurIPS 2020 text) showed only their opening pages, so
the formula's exact wording, how the moving averages are taken (momentum, initialisation,
whether the current step is included) and the default alpha are *unverified*. Choices made
here: exponential moving averages ``m <- momentum m + (1 - momentum) L`` of the detached
losses, initialised to the first step's values and updated before use (so at the first step
the ratio is L_h / L_p exactly); the ratio carries no gradient. The official
tensorflow/tpu ``projects/self_training`` folder has checkpoints and eval configs only, no
student-training code to check against. tests/test_selftrain_detection.py checks the class
against a hand computation over a few steps.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["pseudo_boxes", "pseudo_box_set", "SelfTrainingLoss", "LOSS_MODES"]

LOSS_MODES = ("normalized", "sum")


def _tensor(v, dtype, device=None) -> Tensor:
    t = v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v))
    return t.to(device=device or t.device, dtype=dtype)


def pseudo_boxes(detections: Sequence[Mapping], score_threshold: float = 0.5, *,
                 keep_scores: bool = False) -> list[dict]:
    """Per image: {"boxes" (k, 4) float32 xyxy, "labels" (k,) int64[, "scores" (k,)]} of the
    detections with score >= score_threshold.

    detections: one mapping per image with boxes, scores and labels, tensors (torchvision
    detector output) or numpy arrays (``rethink.detection.evaluate.predict``); outputs are
    tensors on the input's device.
    """
    out = []
    for d in detections:
        boxes = _tensor(d["boxes"], torch.float32).reshape(-1, 4)
        scores = _tensor(d["scores"], torch.float32, boxes.device).reshape(-1)
        labels = _tensor(d["labels"], torch.int64, boxes.device).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels in one image")
        keep = scores >= score_threshold
        target = {"boxes": boxes[keep], "labels": labels[keep]}
        if keep_scores:
            target["scores"] = scores[keep]
        out.append(target)
    return out


def pseudo_box_set(images: np.ndarray, detections: Sequence[Mapping], class_names: Sequence[str],
                   score_threshold: float = 0.5):
    """A ``DetectionSet`` of unlabeled `images` with the teacher's pseudo-boxes as its boxes."""
    from ..detection.data import DetectionSet

    targets = pseudo_boxes(detections, score_threshold)
    if len(targets) != len(images):
        raise ValueError(f"{len(images)} images but {len(targets)} detection lists")
    boxes = [t["boxes"].cpu().numpy().astype(np.float32) for t in targets]
    labels = [t["labels"].cpu().numpy().astype(np.int64) for t in targets]
    return DetectionSet(images, boxes, labels, list(class_names),
                        meta={"pseudo": True, "score_threshold": float(score_threshold)})


def _total(loss) -> Tensor:
    """A scalar loss, or the sum of a detector's loss dict."""
    if isinstance(loss, Mapping):
        return sum(v.float() for v in loss.values())
    return loss.float()


class SelfTrainingLoss:
    """The student's loss from the human-label loss L_h and the pseudo-label loss L_p (module docstring).

    Args:
        alpha: the weight of the pseudo-label loss.
        mode: 'normalized' (the paper's loss normalisation) or 'sum'.
        momentum: of the moving averages of L_h and L_p (normalized mode).
        eps: floor of the pseudo-loss average in the ratio.

    Call with two scalar losses (or detector loss dicts, summed); returns the scalar loss.
    The moving averages stay on the losses' device (no host synchronisation); ``state_dict``
    / ``load_state_dict`` carry them across a resumed run.
    """

    def __init__(self, alpha: float = 1.0, mode: str = "normalized", momentum: float = 0.9, eps: float = 1e-8):
        if mode not in LOSS_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {LOSS_MODES}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.alpha, self.mode, self.momentum, self.eps = float(alpha), mode, float(momentum), float(eps)
        self.mean_human: Tensor | None = None
        self.mean_pseudo: Tensor | None = None
        self.steps = 0

    def __repr__(self) -> str:
        return f"SelfTrainingLoss(alpha={self.alpha:g}, mode={self.mode!r}, momentum={self.momentum:g})"

    def _update(self, lh: Tensor, lp: Tensor) -> None:
        lh, lp = lh.detach(), lp.detach()
        if self.mean_human is None:
            self.mean_human, self.mean_pseudo = lh.clone(), lp.clone()
        else:
            m = self.momentum
            self.mean_human = m * self.mean_human.to(lh.device) + (1 - m) * lh
            self.mean_pseudo = m * self.mean_pseudo.to(lp.device) + (1 - m) * lp
        self.steps += 1

    @property
    def ratio(self) -> Tensor | None:
        """mean L_h / mean L_p (detached), or None before the first step."""
        if self.mean_human is None:
            return None
        return self.mean_human / self.mean_pseudo.clamp_min(self.eps)

    def __call__(self, loss_human, loss_pseudo) -> Tensor:
        lh, lp = _total(loss_human), _total(loss_pseudo)
        if self.mode == "sum":
            return lh + self.alpha * lp
        self._update(lh, lp)
        return (lh + self.alpha * self.ratio * lp) / (1 + self.alpha)

    def state_dict(self) -> dict:
        return {"mean_human": self.mean_human, "mean_pseudo": self.mean_pseudo, "steps": self.steps}

    def load_state_dict(self, state: Mapping) -> None:
        self.mean_human, self.mean_pseudo = state["mean_human"], state["mean_pseudo"]
        self.steps = int(state["steps"])
