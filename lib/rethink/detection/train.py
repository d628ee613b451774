"""The detector training loop (He et al. 2019's schedule shape on torchvision detectors).

Step schedule: linear warmup, then the lr x0.1 at fixed fractions of the run (He et al.'s
"2/3 and 8/9 of training", e.g. 60k and 80k of 90k iterations). SGD with momentum (fused on
CUDA), weight decay not on norms and biases (the book's ``param_groups``), bf16 autocast and
channels_last on CUDA.

Data stay on the device: the images as one uint8 tensor moved once, boxes and labels as lists
of small tensors; the only augmentation is a random horizontal flip of images and boxes.

Determinism and resume (as ``rethink.train.loop``): every random draw of epoch k (order,
flips) comes from a generator seeded by (seed, k), so the checkpoint of the book's
``Checkpoint`` callback (model, optimizer, step, history; saved each epoch) is all a resumed
run needs to reproduce an uninterrupted one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..train.callbacks import Callback, Checkpoint, ProgressBar
from ..train.loop import epoch_seed, param_groups
from .data import DetectionSet
from .evaluate import coco_detections, coco_evaluate, predict


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


def step_lr_factor(step: int, total_steps: int, warmup_steps: int, drops=(2 / 3, 8 / 9)) -> float:
    """Multiplier of the base lr at `step`: linear warmup, then x0.1 at each fraction in `drops`."""
    f = 0.1 ** sum(step >= round(d * total_steps) for d in drops)
    if step < warmup_steps:
        f *= (step + 1) / warmup_steps
    return f


class _Steps:
    """What ProgressBar needs of a loader: its length in steps."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class _Run:
    """The state the book's Checkpoint and ProgressBar callbacks read (a Trainer look-alike)."""

    def __init__(self, model, optimizer, device, epochs, steps_per_epoch, verbose):
        self.raw_model = self.model = model
        self.optimizer = optimizer
        self.device = device
        self.epochs = epochs
        self.train_loader = _Steps(steps_per_epoch)
        self.ema = None
        self.history: list[dict] = []
        self.start_epoch = 0
        self.epoch = 0
        self.step = 0
        self.last_loss = float("nan")
        self.is_main = True
        self.verbose = verbose


class DetectionProgress(ProgressBar):
    """The book's progress bar; its epoch line shows the validation AP instead of top-1."""

    def after_epoch(self, t):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if t.verbose:
            h = t.history[-1]
            val = f"  val AP {h['val']['AP']:.1f} AP50 {h['val']['AP50']:.1f}" if h.get("val") else ""
            print(f"{self.desc} epoch {h['epoch'] + 1}/{t.epochs}  loss {h['train_loss']:.3f}{val}  "
                  f"{h['epoch_time_s']:.1f}s", flush=True)


def _to_device(ds: DetectionSet, device: torch.device):
    images = torch.from_numpy(np.array(ds.images)).to(device)  # a copy: cached scenes are memory-mapped, read-only
    boxes = [torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4), device=device) for b in ds.boxes]
    labels = [torch.as_tensor(np.asarray(l, dtype=np.int64).reshape(-1), device=device) for l in ds.labels]
    return images, boxes, labels


def train_detector(model: nn.Module, train: DetectionSet, val: DetectionSet | None, val_gt: dict | None, *,
                   epochs: int, batch_size: int, lr: float, weight_decay: float = 1e-4, momentum: float = 0.9,
                   warmup_steps: int = 0, lr_drops=(2 / 3, 8 / 9), eval_every: int = 1, hflip: bool = True,
                   device=None, seed: int = 0, artifact_dir=None, progress: bool | None = None,
                   clip_grad_norm: float | None = None, area_scale: float = 1.0, eval_batch_size: int = 64,
                   eval_backend: str = "pycocotools",
                   callbacks: list[Callback] = (), verbose: bool = False) -> dict:
    """Train a torchvision detector on `train`; COCO AP on `val` every `eval_every` epochs and at the end.

    Steps per epoch = len(train) // batch_size (last partial batch dropped). lr_drops: fractions
    of the total steps where the lr is multiplied by 0.1 (He et al.'s schedule shape).
    area_scale / eval_backend: passed to ``coco_evaluate`` (small/medium/large thresholds; 'faster'
    uses faster-coco-eval, same numbers). clip_grad_norm: optional max gradient norm.
    callbacks: extra book Callbacks (events before_fit ... after_fit, as the classification loop).
    artifact_dir: checkpoint after each epoch, resume from it (Checkpoint callback). Returns
    {history (per epoch: losses, lr, time, images/s, step; 'val' AP dict at evaluation points),
    final (AP dict, or None without val), train_time_s, images_per_s, steps, diverged}.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    steps_per_epoch = len(train) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} training images are fewer than one batch of {batch_size}")
    total_steps = epochs * steps_per_epoch
    model = model.to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    impl = {"fused": True} if cuda else {"foreach": True}
    optimizer = torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, **impl)

    run = _Run(model, optimizer, device, epochs, steps_per_epoch, verbose)
    cbs = list(callbacks)
    if artifact_dir is not None:
        cbs.append(Checkpoint(Path(artifact_dir)))
    cbs.append(DetectionProgress(progress, desc="detector"))
    cbs.sort(key=lambda c: c.order)

    def event(name):
        for cb in cbs:
            cb(name, run)

    images, boxes, labels = _to_device(train, device)
    event("before_fit")  # may resume: model, optimizer, history, step, start_epoch
    model.train()
    for epoch in range(run.start_epoch, epochs):
        run.epoch = epoch
        torch.manual_seed(epoch_seed(seed, epoch))
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(len(train), generator=g)
        flips = torch.rand(len(train), generator=g) < 0.5
        event("before_epoch")
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sums: dict[str, torch.Tensor] = {}
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            f = lr * step_lr_factor(run.step, total_steps, warmup_steps, lr_drops)
            for group in optimizer.param_groups:
                group["lr"] = f
            idx_dev = idx.to(device)
            x = images.index_select(0, idx_dev)
            bx = [boxes[i] for i in idx.tolist()]
            if hflip:
                x, bx = hflip_batch(x, bx, flips[idx].to(device))
            x = x.float().div_(255)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            targets = [{"boxes": bb, "labels": labels[i]} for bb, i in zip(bx, idx.tolist())]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                losses = model(list(x), targets)
            loss = sum(v.float() for v in losses.values())
            run.loss = loss
            event("after_loss")
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            sums["loss"] = sums.get("loss", 0) + loss.detach()
            run.step += 1
            if run.step % 20 == 0 or b == steps_per_epoch - 1:
                run.last_loss = loss.item()
            event("after_step")
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        means = {k: v.item() / steps_per_epoch for k, v in sums.items()}
        record = {"epoch": epoch, "step": run.step, "train_loss": means.pop("loss"),
                  **{f"loss_{k}": v for k, v in means.items()},
                  "lr_end": optimizer.param_groups[0]["lr"], "epoch_time_s": dt,
                  "images_per_s": steps_per_epoch * batch_size / dt}
        last = epoch == epochs - 1
        diverged = not math.isfinite(record["train_loss"])
        if val is not None and val_gt is not None and not diverged and (last or (epoch + 1) % eval_every == 0):
            t1 = time.perf_counter()
            preds = predict(model, val, batch_size=eval_batch_size, device=device)
            record["val"] = coco_evaluate(val_gt, coco_detections(preds, val.image_ids), area_scale=area_scale,
                                          backend=eval_backend)
            record["eval_time_s"] = time.perf_counter() - t1
        if diverged:
            record["diverged"] = True
        run.history.append(record)
        event("after_epoch")
        if diverged:
            break
    event("after_fit")
    history = run.history
    train_time = sum(h["epoch_time_s"] for h in history)
    n_images = sum(steps_per_epoch * batch_size for _ in history)
    final = history[-1].get("val") if history else None
    return {"history": history, "final": final, "train_time_s": train_time,
            "images_per_s": n_images / train_time if train_time else float("nan"),
            "steps": run.step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
            "diverged": bool(history and history[-1].get("diverged", False))}
