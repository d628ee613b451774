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


def cycled(loader, epoch: int, steps: int):
    """``steps`` batches of ``loader`` for epoch ``epoch`` of a cycled schedule: the loader's
    epochs ``epoch * r .. epoch * r + r - 1`` with ``r = ceil(steps / len(loader))``, so every
    draw is a function of (seed, epoch) and a resumed run sees the same batches."""
    reps = math.ceil(steps / len(loader))

    def one(k):
        loader.set_epoch(epoch * reps + k)
        return iter(loader)
    return islice(chain.from_iterable(one(k) for k in range(reps)), steps)


class _Epochs:
    """``steps_per_epoch`` batches per epoch, the epoch set by the Trainer (``set_epoch``)."""
    steps_per_epoch: int
    epoch: int = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class Cycled(_Epochs):
    """A loader stretched (or cut) to exactly ``steps_per_epoch`` batches per epoch."""

    def __init__(self, loader, steps_per_epoch: int):
        if len(loader) == 0:
            raise ValueError("the loader yields no batch (fewer samples than one batch)")
        self.loader, self.steps_per_epoch, self.epoch = loader, int(steps_per_epoch), 0

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    def __iter__(self):
        epoch = self.epoch
        yield from cycled(self.loader, epoch, len(self))
        self.epoch = epoch + 1


class StudentLoader(_Epochs):
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

    def __iter__(self):
        epoch = self.epoch
        for (xl, yl), (xu, rows) in zip(cycled(self.labeled, epoch, len(self)), cycled(self.pseudo, epoch, len(self))):
            yield torch.cat([xl, xu]), StudentTargets(yl, self.pseudo_targets.index_select(0, rows))
        self.epoch = epoch + 1
