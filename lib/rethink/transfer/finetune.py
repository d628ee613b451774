"""Fine-tuning a pre-trained network, or training the same architecture from random
init, on a transfer target (Kornblith et al. regimes (b) and (c)).

The paper: Nesterov SGD, cosine schedule, batch 256, a grid over learning rate and
weight decay chosen on a validation split. Here each grid point is one run; the
validation score after every epoch is kept (learning curves, convergence speed).
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ..augment import Augment
from ..data.loader import GPULoader
from ..train.callbacks import Callback, ProgressBar
from ..train.loop import Recipe, Trainer
from .features import predict_classes
from .logistic import accuracy
from .targets import TargetData


class ScoreEachEpoch(Callback):
    """After every epoch, the target's metric on its validation split, into the history."""
    order = 50

    def __init__(self, images, labels, metric: str, num_classes: int, mean, std):
        self.images, self.labels = images, torch.as_tensor(labels)
        self.metric, self.num_classes, self.mean, self.std = metric, num_classes, mean, std

    def after_epoch(self, t):
        pred = predict_classes(t.raw_model, self.images, mean=self.mean, std=self.std, device=t.device)
        t.history[-1]["val_score"] = accuracy(pred, self.labels, self.metric, self.num_classes)


def new_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Replace the classifier with a freshly initialised one for the target's classes."""
    torch.manual_seed(seed)
    model.reset_classifier(num_classes)
    return model


def train_on_target(model: nn.Module, data: TargetData, *, lr: float, weight_decay: float,
                    epochs: int, batch_size: int, seed: int, mean, std,
                    device: torch.device | str | None = None, translate: int | None = None,
                    warmup_epochs: float = 0.0, progress: bool | None = None, desc: str = "",
                    steps: int | None = None) -> dict:
    """Train every layer of `model` (its head already sized for the target) on data.train.

    ``steps``: a fixed number of optimizer steps whatever the training-set size (``epochs``
    then only sets how often the validation score is taken: ceil(steps / epochs) steps per
    epoch, cycling the data); None: ``epochs`` passes over the data.
    Returns the per-epoch history (train loss, validation score), the final validation
    and test scores, the steps taken and the wall time.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images, labels = data.train
    size = images.shape[-1]
    batch_size = min(batch_size, len(labels))
    augment = Augment(translate=size // 8 if translate is None else translate, flip=True)
    loader = GPULoader(images, labels, batch_size, device=device, augment=augment, mean=mean,
                       std=std, shuffle=True, drop_last=True, seed=seed)
    if steps:
        import math

        from ..selftrain.loader import Cycled
        loader = Cycled(loader, math.ceil(steps / epochs))
    recipe = Recipe(epochs=epochs, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
                    seed=seed)
    callbacks = [ScoreEachEpoch(*data.val, data.metric, data.num_classes, mean, std),
                 ProgressBar(progress, desc=desc)]
    t0 = time.perf_counter()
    trainer = Trainer(model, loader, None, recipe, device=device, callbacks=callbacks)
    history = trainer.fit()
    wall = time.perf_counter() - t0
    test_pred = predict_classes(trainer.raw_model, data.test[0], mean=mean, std=std, device=device)
    return {
        "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"], "val_score": h.get("val_score")}
                    for h in history],
        "val_score": history[-1].get("val_score"),
        "test_score": accuracy(test_pred, torch.as_tensor(data.test[1]), data.metric, data.num_classes),
        "diverged": bool(history[-1].get("diverged", False)),
        "steps": trainer.step,
        "train_time_s": wall,
    }
