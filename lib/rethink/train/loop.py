"""The training core: one loop, plain PyTorch, behaviour added by hooks and callbacks.

One `Trainer` trains the book's classifiers (its default hooks) and its detectors
(`rethink.detection.train.train_detector` passes its own). What a step computes, what an
evaluation measures, how a batch is augmented and how the lr moves are hooks (functions
passed in); what happens around the steps (checkpoints, EMA, progress lines, gradient
clipping) are callbacks with named events. Recipe knobs live in `Recipe`. On CUDA: bf16
autocast, channels_last, fused SGD. On CPU the same code runs in fp32 with the foreach optimizer.

Determinism: every random draw of epoch k (data order, augmentation, dropout,
stochastic depth) is a function of (seed, k), and the batch hook's of (seed, k, step), so a
run resumed from the checkpoint after epoch k-1 matches an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from functools import partial
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping

import numpy as np
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


def recipe_schedule(schedule: str, warmup_steps: int) -> Callable[[int, int], float]:
    """The recipe's schedule as a Trainer ``lr_schedule``: f(step, total_steps) -> factor."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    return partial(lr_factor, schedule, warmup_steps=warmup_steps)


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


BATCH_STREAM = 1  # the spawn key of the batch hook's generators (loaders' streams have none)


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The CPU generator handed to the batch hook at optimizer step `step` of epoch `epoch`.

    A pure function of (seed, epoch, step) through ``np.random.SeedSequence`` (well mixed, and
    apart from the loaders' (seed, epoch, stream) generators), so a resumed run draws what the
    uninterrupted one drew.
    """
    ss = np.random.SeedSequence([int(seed), int(epoch), int(step)], spawn_key=(BATCH_STREAM,))
    return torch.Generator(device="cpu").manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0]))


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


def classification_loss(criterion: Callable) -> Callable[[nn.Module, tuple], dict]:
    """The default loss hook: ``logits = model(x)``; ``{"loss": criterion(logits.float(), y)}``."""
    def compute_loss(model, batch):
        x, y = batch
        return {"loss": criterion(model(x).float(), y)}
    return compute_loss


class ClassificationEval:
    """The default evaluation hook: `evaluate` on an un-augmented loader, as val_* keys.

    ``ema_keys``: the keys the Trainer also records for the EMA model (prefixed ``ema_``).
    """
    ema_keys = ("val_top1", "val_top5")

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, device

    def __call__(self, model: nn.Module) -> dict:
        ev = evaluate(model, self.loader, self.device)
        return {"val_top1": ev["top1"], "val_top5": ev["top5"], "val_loss": ev["loss"]}


def total_loss(terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """What is back-propagated: the lone term itself, or the float32 sum of the terms."""
    if len(terms) == 1:
        return next(iter(terms.values()))
    return sum(v.float() for v in terms.values())


def batch_samples(batch) -> int:
    """Samples in a batch: the len() of its first element (tuple, list) or value (dict), else its own."""
    if isinstance(batch, (tuple, list)):
        return len(batch[0])
    if isinstance(batch, Mapping):
        return len(next(iter(batch.values())))
    return len(batch)


class Trainer:
    """Train `model` on `train_loader` with `recipe`; evaluate at evaluation points; return the history.

    The loader yields batches already on `device` and has ``set_epoch(k)`` and ``len()`` (steps
    per epoch). The history is a list of records (dicts): one per epoch, and one more at each
    evaluation point inside an epoch; each holds the epoch, the mean loss of its steps
    (``train_loss``, and ``loss_<name>`` per term), ``lr_end``, ``epoch_time_s`` (the record's
    training time, evaluation excluded), ``images_per_s`` and the evaluation's keys.

    Hooks (the defaults are the classification loop the book's results were made with):

    * ``compute_loss(model, batch) -> dict[str, Tensor]``: the loss terms of a batch, run under
      autocast; their sum (``total_loss``) is back-propagated; each term is averaged into the
      record as ``loss_<name>``, unless the dict is just ``{"loss": ...}``. Default
      ``classification_loss(loss_fn)``, ``loss_fn(logits, targets) -> Tensor`` being
      cross-entropy with the recipe's label smoothing (pass one or the other, not both).
    * ``evaluate_fn(model) -> dict``: merged into the record at evaluation points. Default
      ``ClassificationEval(eval_loader)`` (val_top1, val_top5, val_loss; none without an
      eval_loader). With an EMA callback the EMA model is evaluated too, its keys prefixed
      ``ema_`` (only the hook's ``ema_keys`` if it has them). ``evaluate_diverged=False`` skips
      evaluating a record whose train_loss is not finite.
    * ``batch_fn(batch, generator) -> batch``: on-device augmentation of each loader batch
      (any structure), before ``before_batch``; the CPU generator is ``step_generator(seed,
      epoch, step)``.
    * ``lr_schedule(step, total_steps) -> factor`` of ``recipe.lr``, stateless. Default: the
      recipe's (``recipe_schedule``: cosine/onecycle/constant, ``warmup_epochs`` of warmup).

    Length: ``recipe.epochs`` epochs of ``len(train_loader)`` steps, or, with ``total_steps``,
    exactly that many optimizer steps: ceil(total_steps / len) epochs, the last one possibly
    partial; the records of such a run also carry ``step`` (optimizer steps done).
    Evaluation points: the end of every ``eval_every``-th epoch and of the last; or, with
    ``eval_steps``, after each of those optimizer steps and at the end of the run.
    Batches: the sample count of one is ``batch_samples(batch)``.

    Events (callback methods; each gets the Trainer): before_fit; per epoch before_epoch; per
    step before_batch (t.batch may be replaced), after_loss (t.loss may be replaced; t.loss_terms
    holds the terms), after_backward (gradients ready), after_step; after_evaluate (an evaluated record was
    appended to t.history); after_epoch; after_fit.
    """

    def __init__(self, model: nn.Module, train_loader, eval_loader, recipe: Recipe, *,
                 device: torch.device | str | None = None, callbacks: list[Callback] = (),
                 distributed=None, verbose: bool = False, eval_every: int = 1, loss_fn=None,
                 compute_loss: Callable | None = None, evaluate_fn: Callable | None = None,
                 batch_fn: Callable | None = None, lr_schedule: Callable[[int, int], float] | None = None,
                 total_steps: int | None = None, eval_steps: Iterable[int] | None = None,
                 evaluate_diverged: bool = True):
        if loss_fn is not None and compute_loss is not None:
            raise ValueError("pass loss_fn(logits, targets) or compute_loss(model, batch), not both")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.recipe = recipe
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
        self.compute_loss = compute_loss or classification_loss(self.loss_fn)
        if evaluate_fn is None and eval_loader is not None:
            evaluate_fn = ClassificationEval(eval_loader, self.device)
        self.evaluate_fn = evaluate_fn
        self.evaluate_diverged = evaluate_diverged
        self.batch_fn = batch_fn
        self.ema = None
        self.history: list[dict] = []
        self.start_epoch = 0
        self.step = 0
        self.last_loss = float("nan")
        steps_per_epoch = len(train_loader)
        self.steps_defined = total_steps is not None
        if self.steps_defined:
            if steps_per_epoch == 0:
                raise ValueError("the training loader yields no batches")
            self.total_steps = int(total_steps)
            self.epochs = math.ceil(self.total_steps / steps_per_epoch)
        else:
            self.total_steps = recipe.epochs * steps_per_epoch
            self.epochs = recipe.epochs
        self.warmup_steps = int(recipe.warmup_epochs * steps_per_epoch)
        self.lr_schedule = lr_schedule or recipe_schedule(recipe.schedule, self.warmup_steps)
        self.eval_steps = None
        if eval_steps is not None:
            self.eval_steps = frozenset(int(s) for s in eval_steps)
            if self.steps_defined:
                self.eval_steps |= {self.total_steps}  # always at the end

    def _event(self, name: str) -> None:
        for cb in self.callbacks:
            cb(name, self)

    def _set_lr(self) -> None:
        f = self.lr_schedule(self.step, self.total_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = self.recipe.lr * f

    def _train_step(self) -> None:
        self._set_lr()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            terms = self.compute_loss(self.model, self.batch)
        loss = total_loss(terms)
        self.loss, self.loss_terms = loss, terms
        self._event("after_loss")
        self.loss.backward()
        self._event("after_backward")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        n = batch_samples(self.batch)
        self.step_loss = loss.detach()
        self._loss_sum += self.step_loss * n
        if list(terms) != ["loss"]:
            for k, v in terms.items():
                self._term_sums[k] = self._term_sums.get(k, 0) + v.detach().float() * n
        self._seen += n
        self._record_steps += 1

    def _open_record(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        self._loss_sum = torch.zeros((), device=self.device)
        self._term_sums: dict[str, torch.Tensor] = {}
        self._seen = self._record_steps = 0

    def _close_record(self, evaluate: bool) -> dict:
        """Append the record of the steps since `_open_record`; evaluate first if asked."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - self._t0
        seen = max(self._seen, 1)
        record = {"epoch": self.epoch}
        if self.steps_defined:
            record["step"] = self.step
        record["train_loss"] = (self._loss_sum / seen).item()
        record.update({f"loss_{k}": (v / seen).item() for k, v in self._term_sums.items()})
        record.update(lr_end=self.optimizer.param_groups[0]["lr"], epoch_time_s=train_time,
                      images_per_s=self._seen * (self.dist.world_size if self.dist else 1) / train_time)
        diverged = not math.isfinite(record["train_loss"])
        evaluated = evaluate and self.evaluate_fn is not None and (self.evaluate_diverged or not diverged)
        if evaluated:
            record.update(self.evaluate_fn(self.raw_model))
            if self.ema is not None:
                ev = self.evaluate_fn(self.ema.module)
                keys = getattr(self.evaluate_fn, "ema_keys", None) or list(ev)
                record.update({f"ema_{k}": ev[k] for k in keys})
        if diverged:
            record["diverged"] = True  # the run stops after this record; the record says so
        self.history.append(record)
        self._seen = self._record_steps = 0
        if evaluated:
            self._event("after_evaluate")
        return record

    def _evaluate_at_epoch_end(self) -> bool:
        last = self.epoch == self.epochs - 1
        if self.eval_steps is None:
            return last or (self.epoch + 1) % self.eval_every == 0
        return last

    def fit(self) -> list[dict]:
        self._event("before_fit")
        self.model.train()
        diverged = False
        for epoch in range(self.start_epoch, self.epochs):
            self.epoch = epoch
            torch.manual_seed(epoch_seed(self.recipe.seed, self.epoch))
            self.train_loader.set_epoch(self.epoch)
            self._event("before_epoch")
            self._open_record()
            for batch in self.train_loader:
                if self.batch_fn is not None:
                    batch = self.batch_fn(batch, step_generator(self.recipe.seed, self.epoch, self.step))
                self.batch = batch
                self._event("before_batch")
                self._train_step()
                self.step += 1
                if self.step % 50 == 0:
                    self.last_loss = self.step_loss.item()
                self._event("after_step")
                if self.eval_steps is not None and self.step in self.eval_steps:
                    diverged = "diverged" in self._close_record(evaluate=True)
                    if diverged:
                        break
                    self._open_record()
                if self.steps_defined and self.step >= self.total_steps:
                    break
            if self._record_steps or self.eval_steps is None:  # an epoch's last record
                diverged = "diverged" in self._close_record(evaluate=self._evaluate_at_epoch_end())
            self._event("after_epoch")
            if diverged:
                break
        self._event("after_fit")
        return self.history
