"""Student batches: labeled and pseudo-labeled images side by side, at a fixed ratio.

An epoch is ``steps_per_epoch`` steps (default: one pass over the pseudo-labeled set);
both sets are cycled as needed. The epochs of a loader with ``b`` batches used by
student epoch ``e`` are ``e * r .. e * r + r - 1`` with ``r = ceil(steps / b)``, so every
draw is a function of (seed, e) and a resumed run sees the same batches.
"""
from __future__ import annotations

import math
from itertools import chain, islice

import torch

from .losses import StudentTargets


class StudentLoader:
    """Yield ``(cat(x_labeled, x_pseudo), StudentTargets(labels, pseudo_targets))``.

    ``pseudo`` is a GPULoader whose labels are row numbers into ``pseudo_targets``
    (M x C on the same device), so soft targets travel with their images.
    """

    def __init__(self, labeled, pseudo, pseudo_targets: torch.Tensor, steps_per_epoch: int | None = None):
        if pseudo.num_samples != pseudo_targets.shape[0]:
            raise ValueError(f"{pseudo.num_samples} pseudo-labeled images but "
                             f"{pseudo_targets.shape[0]} targets")
        if len(pseudo) == 0 or len(labeled) == 0:
            raise ValueError("the student needs at least one labeled and one pseudo-labeled batch "
                             "(lower the confidence threshold or the batch sizes)")
        self.labeled, self.pseudo = labeled, pseudo
        self.pseudo_targets = pseudo_targets.to(pseudo.device)
        self.steps_per_epoch = steps_per_epoch or len(pseudo)
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return self.pseudo.num_samples

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _cycled(self, loader, epoch: int):
        reps = math.ceil(len(self) / len(loader))

        def one(k):
            loader.set_epoch(epoch * reps + k)
            return iter(loader)
        return islice(chain.from_iterable(one(k) for k in range(reps)), len(self))

    def __iter__(self):
        epoch = self.epoch
        for (xl, yl), (xu, rows) in zip(self._cycled(self.labeled, epoch), self._cycled(self.pseudo, epoch)):
            yield torch.cat([xl, xu]), StudentTargets(yl, self.pseudo_targets.index_select(0, rows))
        self.epoch = epoch + 1
