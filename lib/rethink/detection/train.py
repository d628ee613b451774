"""Detector training: the book's `Trainer` configured for torchvision detectors.

A run is `steps` optimizer steps exactly; an epoch is one pass of len(train) // batch_size
steps (the last partial batch dropped), and the last epoch stops short so the total is exact.
The step is torchvision's detection reference: the detector's loss dict, summed for the
backward (the history keeps each term). SGD with momentum (fused on CUDA), weight decay not
on norms and biases, bf16 autocast and channels_last on CUDA: the Trainer's.

Schedule (`lr_schedule`): linear warmup, then x0.1 drops: He et al. 2019's rule ("he2019",
:func:`he2019_lr_factor`), drops at fixed fractions of each run ("fractions",
:func:`step_lr_factor`), or any stateless f(step, total_steps) -> factor.

Data stay on the device (:class:`DetectionBatches`): the images as one uint8 tensor moved
once, boxes and labels as lists of small tensors. Augmentation is the Trainer's batch hook,
per batch on the device: `augment` (a ``rethink.detection.augment.DetectionAugment``, or any
callable (images, boxes, labels, generator) -> (images, boxes, labels)), else a random
horizontal flip (`hflip`).

Determinism and resume (the Trainer's): the order of epoch k is drawn from (seed, k) and the
augmentation of each batch from (seed, k, step), so the book's ``Checkpoint`` callback (model,
optimizer, step, history; saved each epoch) is all a resumed run needs to reproduce an
uninterrupted one.
"""
from __future__ import annotations

import math
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..train.callbacks import Callback, Checkpoint, ProgressBar
from ..train.loop import Recipe, Trainer, epoch_seed
from .data import DetectionSet
from .evaluate import coco_detections, coco_evaluate, predict

LR_SCHEDULES = ("he2019", "fractions")


def hflip_batch(images: torch.Tensor, boxes_list: list[torch.Tensor], flags: torch.Tensor):
    """Flip image i and its boxes horizontally where flags[i]: x0' = W - x1, x1' = W - x0.

    images (N, C, H, W), boxes_list N tensors (k_i, 4) xyxy in pixels, flags (N,) bool (same
    device). Pure: returns new tensors; no host synchronisation.
    """
    w = images.shape[-1]
    out = torch.where(flags[:, None, None, None], images.flip(-1), images)
    boxes = []
    for b, f in zip(boxes_list, flags.unbind(0)):
        flipped = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
        boxes.append(torch.where(f, flipped, b))
    return out, boxes


# ------------------------------------------------------------------ schedules


def step_lr_factor(step: int, total_steps: int, warmup_steps: int, drops=(2 / 3, 8 / 9)) -> float:
    """Multiplier of the base lr at `step`: linear warmup, then x0.1 at each fraction in `drops` of the run."""
    f = 0.1 ** sum(step >= round(d * total_steps) for d in drops)
    if step < warmup_steps:
        f *= (step + 1) / warmup_steps
    return f


def he2019_lr_factor(step: int, total_steps: int, base_steps: int, warmup_steps: int = 0) -> float:
    """He et al. 2019's schedule: linear warmup, then x0.1 for the last (2/3)·base_steps steps of
    the run and x0.1 again for the last (2/9)·base_steps, whatever the run's length.

    He, Girshick and Dollár, "Rethinking ImageNet Pre-training", ICCV 2019 (arXiv:1811.08883),
    §4, learning-rate scheduling: the lr is reduced by 10x in the last 60k and the last 20k
    iterations, however long the schedule (their 1x is 90k iterations, so the reduced rates
    always run for the same number of iterations). With base_steps standing for 90k:

        f(step) = w(step) · 0.1^[step >= T - round(2B/3)] · 0.1^[step >= T - round(2B/9)]

    T = total_steps, B = base_steps, w(step) = (step + 1) / warmup_steps during warmup, else 1.
    Drops, as fractions of the run: 1x at 1/3 and 7/9, 2x at 2/3 and 8/9 (Detectron's 2x:
    120k and 160k of 180k), 4x at 5/6 and 17/18; a run shorter than (2/3)·B starts at x0.1.
    """
    first, second = total_steps - round(2 * base_steps / 3), total_steps - round(2 * base_steps / 9)
    f = 0.1 ** ((step >= first) + (step >= second))
    if step < warmup_steps:
        f *= (step + 1) / warmup_steps
    return f


def detection_schedule(lr_schedule: str | Callable[[int, int], float], *, base_steps: int, warmup_steps: int,
                       lr_drops=(2 / 3, 8 / 9)) -> Callable[[int, int], float]:
    """The Trainer's lr_schedule f(step, total_steps) for a name of :data:`LR_SCHEDULES` (or a callable, as is)."""
    if callable(lr_schedule):
        return lr_schedule
    if lr_schedule == "he2019":
        return partial(he2019_lr_factor, base_steps=base_steps, warmup_steps=warmup_steps)
    if lr_schedule == "fractions":
        return partial(step_lr_factor, warmup_steps=warmup_steps, drops=tuple(lr_drops))
    raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of {LR_SCHEDULES} or pass f(step, total)")


def spread_steps(steps: int, points: int) -> list[int]:
    """`points` optimizer steps spread evenly over a run: i·steps // points for i = 1..points (the last: the end)."""
    points = max(1, min(int(points), steps))
    return [i * steps // points for i in range(1, points + 1)]


# ------------------------------------------------------------------ the Trainer's data and hooks


def _to_device(ds: DetectionSet, device: torch.device):
    images = torch.from_numpy(np.array(ds.images)).to(device)  # a copy: cached scenes are memory-mapped, read-only
    boxes = [torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4), device=device) for b in ds.boxes]
    labels = [torch.as_tensor(np.asarray(l, dtype=np.int64).reshape(-1), device=device) for l in ds.labels]
    return images, boxes, labels


class DetectionBatches:
    """A DetectionSet held on `device`, served as (images, boxes, labels) batches.

    images: uint8 (batch_size, 3, H, W); boxes: list of (k_i, 4) float32 xyxy pixels; labels:
    list of (k_i,) int64. len() = len(ds) // batch_size (the last partial batch dropped); the
    order of epoch k is a permutation drawn from epoch_seed(seed, k) (``set_epoch(k)``).
    """

    def __init__(self, ds: DetectionSet, batch_size: int, device, seed: int = 0):
        if len(ds) // batch_size == 0:
            raise ValueError(f"{len(ds)} training images are fewer than one batch of {batch_size}")
        self.device = torch.device(device)
        self.images, self.boxes, self.labels = _to_device(ds, self.device)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def __len__(self) -> int:
        return len(self.boxes) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(len(self.boxes), generator=g)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            rows = idx.tolist()
            yield (self.images.index_select(0, idx.to(self.device)), [self.boxes[i] for i in rows],
                   [self.labels[i] for i in rows])


def random_hflip(batch, generator: torch.Generator):
    """The default batch hook: each image and its boxes flipped horizontally with probability 1/2."""
    images, boxes, labels = batch
    flags = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    images, boxes = hflip_batch(images, boxes, flags)
    return images, boxes, labels


class AugmentBatch:
    """Batch hook around a box-aware augmentation called as augment(images, boxes, labels, generator)."""

    def __init__(self, augment: Callable):
        self.augment = augment

    def __call__(self, batch, generator: torch.Generator):
        images, boxes, labels = batch
        images, boxes, labels = self.augment(images, boxes, labels, generator)[:3]
        return images, boxes, labels


def detection_loss(model: nn.Module, batch) -> dict[str, torch.Tensor]:
    """The loss hook: the detector's loss dict (float32 terms) on a batch of uint8 (or [0, 1] float) images."""
    images, boxes, labels = batch
    x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]
    return {k: v.float() for k, v in model(list(x), targets).items()}


class DetectionEval:
    """The evaluation hook: COCO AP on `val`, as {"val": AP dict, "eval_time_s": seconds}."""

    def __init__(self, val: DetectionSet, val_gt: dict, *, device, batch_size: int = 64, area_scale: float = 1.0,
                 backend: str = "pycocotools"):
        self.val, self.val_gt, self.device = val, val_gt, device
        self.batch_size, self.area_scale, self.backend = batch_size, area_scale, backend

    def __call__(self, model: nn.Module) -> dict:
        t0 = time.perf_counter()
        preds = predict(model, self.val, batch_size=self.batch_size, device=self.device)
        ap = coco_evaluate(self.val_gt, coco_detections(preds, self.val.image_ids), area_scale=self.area_scale,
                           backend=self.backend)
        return {"val": ap, "eval_time_s": time.perf_counter() - t0}


class ClipGradNorm(Callback):
    """Clip the global gradient norm of the model's parameters to `max_norm` before each optimizer step."""

    def __init__(self, max_norm: float):
        self.max_norm = max_norm

    def after_backward(self, t):
        nn.utils.clip_grad_norm_(t.raw_model.parameters(), self.max_norm)


class DetectionProgress(ProgressBar):
    """The book's progress bar; with `verbose`, one line per evaluation (step, loss, val AP) and per
    epoch that ends without one."""

    def __init__(self, enabled: bool | None = None, desc: str = ""):
        super().__init__(enabled, desc)
        self.printed = None

    def _line(self, t) -> None:
        h = t.history[-1]
        if not (t.verbose and t.is_main) or h is self.printed:
            return
        self.printed = h
        val = f"  val AP {h['val']['AP']:.1f} AP50 {h['val']['AP50']:.1f}" if h.get("val") else ""
        line = (f"{self.desc} step {h['step']}/{t.total_steps} (epoch {h['epoch'] + 1}/{t.epochs})  "
                f"loss {h['train_loss']:.3f}{val}{'  diverged' if h.get('diverged') else ''}  "
                f"{h['epoch_time_s']:.1f}s")
        (self.bar.write if self.bar is not None else partial(print, flush=True))(line)

    def after_evaluate(self, t):
        self._line(t)

    def after_epoch(self, t):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if t.history:
            self._line(t)


# ------------------------------------------------------------------ the run


def train_detector(model: nn.Module, train: DetectionSet, val: DetectionSet | None, val_gt: dict | None, *,
                   steps: int, batch_size: int, lr: float, base_steps: int | None = None,
                   lr_schedule: str | Callable[[int, int], float] = "he2019", warmup_steps: int = 0,
                   eval_points: int = 6, augment: Callable | None = None, hflip: bool = True,
                   lr_drops=(2 / 3, 8 / 9), weight_decay: float = 1e-4, momentum: float = 0.9, device=None,
                   seed: int = 0, artifact_dir=None, progress: bool | None = None,
                   clip_grad_norm: float | None = None, area_scale: float = 1.0, eval_batch_size: int = 64,
                   eval_backend: str = "pycocotools", callbacks: list[Callback] = (), verbose: bool = False,
                   batches=None, compute_loss: Callable | None = None) -> dict:
    """Train a torchvision detector on `train` for exactly `steps` optimizer steps; COCO AP on `val`
    at `eval_points` steps spread over the run (always including the end).

    Steps per epoch = len(train) // batch_size. lr_schedule: "he2019" (drops for the last 2/3 and
    2/9 of `base_steps`, the schedule's 1x; default base_steps = steps), "fractions" (drops at
    `lr_drops` of the run: 2/3 and 8/9), or f(step, total_steps) -> factor; warmup_steps of
    linear warmup for the named ones. augment: a DetectionAugment (or any callable (images, boxes,
    labels, generator)) applied on the device per batch; without one, `hflip` flips each image
    with probability 1/2. area_scale / eval_backend: passed to ``coco_evaluate``;
    clip_grad_norm: optional max gradient norm. callbacks: extra book Callbacks (the Trainer's
    events). artifact_dir: checkpoint after each epoch, resume from it.

    Returns {history (records per epoch and per evaluation: step, train_loss, loss_<term>, lr_end,
    epoch_time_s, images_per_s; 'val' AP dict and eval_time_s at evaluation points), final (AP
    dict of the end, or None without val or after divergence), train_time_s, images_per_s,
    steps (done), total_steps, steps_per_epoch, epochs, diverged, lr_schedule, base_steps,
    eval_steps}.

    batches: a prebuilt loader with DetectionBatches' interface (len, set_epoch, (images, boxes,
    labels) batches on `device`, ``batch_size``) instead of DetectionBatches(train); compute_loss:
    the Trainer's loss hook (default :func:`detection_loss`). Self-training's student uses both.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = batches if batches is not None else DetectionBatches(train, batch_size, device, seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    base = steps if base_steps is None else base_steps
    schedule = detection_schedule(lr_schedule, base_steps=base, warmup_steps=warmup_steps, lr_drops=lr_drops)
    evaluate_fn = None
    if val is not None and val_gt is not None:
        evaluate_fn = DetectionEval(val, val_gt, device=device, batch_size=eval_batch_size, area_scale=area_scale,
                                    backend=eval_backend)
    eval_steps = spread_steps(steps, eval_points) if evaluate_fn is not None else []
    batch_fn = AugmentBatch(augment) if augment is not None else (random_hflip if hflip else None)
    cbs = list(callbacks)
    if artifact_dir is not None:
        cbs.append(Checkpoint(Path(artifact_dir)))
    cbs.append(DetectionProgress(progress, desc="detector"))
    if clip_grad_norm:
        cbs.append(ClipGradNorm(clip_grad_norm))
    recipe = Recipe(epochs=math.ceil(steps / len(loader)), lr=lr, momentum=momentum, nesterov=False,
                    weight_decay=weight_decay, schedule="constant", warmup_epochs=0.0, seed=seed)
    trainer = Trainer(model, loader, None, recipe, device=device, callbacks=cbs, verbose=verbose,
                      compute_loss=compute_loss or detection_loss, evaluate_fn=evaluate_fn, batch_fn=batch_fn,
                      lr_schedule=schedule, total_steps=steps, eval_steps=eval_steps, evaluate_diverged=False)
    history = trainer.fit()
    train_time = sum(h["epoch_time_s"] for h in history)
    return {"history": history, "final": history[-1].get("val") if history else None,
            "train_time_s": train_time,
            "images_per_s": (trainer.step * getattr(loader, "batch_size", batch_size) / train_time
                             if train_time else float("nan")),
            "steps": trainer.step, "total_steps": steps, "steps_per_epoch": len(loader), "epochs": trainer.epochs,
            "diverged": bool(history and history[-1].get("diverged", False)),
            "lr_schedule": lr_schedule if isinstance(lr_schedule, str) else getattr(lr_schedule, "__name__",
                                                                                    repr(lr_schedule)),
            "base_steps": base, "eval_steps": eval_steps}
