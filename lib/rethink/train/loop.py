"""The training core: one classifier loop, plain PyTorch, behaviour added by callbacks.

Recipe knobs live in `Recipe`. On CUDA: bf16 autocast, channels_last, fused SGD.
On CPU the same code runs in fp32 with the foreach optimizer.

Determinism: every random draw of epoch k (data order, augmentation, dropout,
stochastic depth) is a function of (seed, k), so a run resumed from the checkpoint
after epoch k-1 matches an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from functools import partial
from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .callbacks import Callback


@dataclass
class Recipe:
    epochs: int = 10
    lr: float = 0.4                 # peak learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4      # not applied to norm weights and biases
    schedule: str = "cosine"        # "cosine" (warmup then cosine) | "onecycle" (triangle) | "constant"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


SCHEDULES = ("cosine", "onecycle", "constant")


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak lr at a given optimizer step (stateless, so resume is exact)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle":
        peak = max(warmup_steps, 1)
        if step < peak:
            return (step + 1) / peak
        return max(0.0, (total_steps - step) / max(total_steps - peak, 1))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(param_groups(model, recipe.weight_decay), lr=recipe.lr,
                           momentum=recipe.momentum, nesterov=recipe.nesterov, **impl)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, topk=(1, 5)) -> dict:
    """Top-k accuracy and mean loss of `model` over an (un-augmented) loader."""
    was_training = model.training
    model.eval()
    correct = {k: 0 for k in topk}
    loss_sum, n = 0.0, 0
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(max(topk), logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        for k in topk:
            correct[k] += hit[:, :k].any(dim=1).sum().item()
        n += y.numel()
    model.train(was_training)
    return {**{f"top{k}": correct[k] / max(n, 1) for k in topk}, "loss": loss_sum / max(n, 1), "n": n}


class Trainer:
    """Train `model` on `train_loader` with `recipe`; evaluate on `eval_loader` each epoch.

    Loaders yield (images, targets) already on `device`, and have `set_epoch(k)`; targets
    are whatever `loss_fn(logits, targets)` takes (class labels for the default).
    """

    def __init__(self, model: nn.Module, train_loader, eval_loader, recipe: Recipe, *,
                 device: torch.device | str | None = None, callbacks: list[Callback] = (),
                 distributed=None, verbose: bool = False, eval_every: int = 1, loss_fn=None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.recipe = recipe
        self.epochs = recipe.epochs
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.raw_model = model.to(self.device)
        if self.device.type == "cuda":
            self.raw_model = self.raw_model.to(memory_format=torch.channels_last)
        self.dist = distributed
        self.model = distributed.wrap(self.raw_model) if distributed else self.raw_model
        self.is_main = distributed.is_main if distributed else True
        self.optimizer = make_optimizer(self.raw_model, recipe, self.device)
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.verbose = verbose
        self.eval_every = eval_every
        # loss_fn(logits, y) -> scalar; default: cross-entropy with the recipe's label smoothing
        self.loss_fn = loss_fn or partial(F.cross_entropy, label_smoothing=recipe.label_smoothing)
        self.ema = None
        self.history: list[dict] = []
        self.start_epoch = 0
        self.step = 0
        self.last_loss = float("nan")
        self.total_steps = recipe.epochs * len(train_loader)
        self.warmup_steps = int(recipe.warmup_epochs * len(train_loader))

    def _event(self, name: str) -> None:
        for cb in self.callbacks:
            cb(name, self)

    def _set_lr(self) -> None:
        f = lr_factor(self.recipe.schedule, self.step, self.total_steps, self.warmup_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = self.recipe.lr * f

    def _train_step(self, x, y) -> torch.Tensor:
        self._set_lr()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(x)
            loss = self.loss_fn(logits.float(), y)
        self.loss = loss
        self._event("after_loss")
        self.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def fit(self) -> list[dict]:
        self._event("before_fit")
        self.model.train()
        for epoch in range(self.start_epoch, self.epochs):
            self.epoch = epoch
            torch.manual_seed(epoch_seed(self.recipe.seed, self.epoch))
            self.train_loader.set_epoch(self.epoch)
            self._event("before_epoch")
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=self.device)
            seen = 0
            for batch in self.train_loader:
                self.batch = batch
                self._event("before_batch")
                x, y = self.batch
                loss = self._train_step(x, y)
                loss_sum += loss * x.shape[0]
                seen += x.shape[0]
                self.step += 1
                if self.step % 50 == 0:
                    self.last_loss = loss.item()
                self._event("after_step")
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_time = time.perf_counter() - t0
            record = {"epoch": self.epoch, "train_loss": (loss_sum / max(seen, 1)).item(),
                      "lr_end": self.optimizer.param_groups[0]["lr"], "epoch_time_s": train_time,
                      "images_per_s": seen * (self.dist.world_size if self.dist else 1) / train_time}
            last = self.epoch == self.epochs - 1
            if self.eval_loader is not None and (last or (self.epoch + 1) % self.eval_every == 0):
                ev = evaluate(self.raw_model, self.eval_loader, self.device)
                record.update(val_top1=ev["top1"], val_top5=ev["top5"], val_loss=ev["loss"])
                if self.ema is not None:
                    ev = evaluate(self.ema.module, self.eval_loader, self.device)
                    record.update(ema_val_top1=ev["top1"], ema_val_top5=ev["top5"])
            self.history.append(record)
            self._event("after_epoch")
            if not math.isfinite(record["train_loss"]):
                record["diverged"] = True  # stop here; the record says so
                break
        self._event("after_fit")
        return self.history
