"""A tiny, fully deterministic training run used by the resume and DDP tests.

python tests/train_script.py OUT_DIR [--kill-at-step N] [--world check]
Writes OUT_DIR/weights.pt (final weights) and OUT_DIR/history.json.
"""
import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from rethink.augment import Augment  # noqa: E402
from rethink.data.loader import GPULoader  # noqa: E402
from rethink.train.callbacks import EMA, Callback, Checkpoint  # noqa: E402
from rethink.train.distributed import Distributed  # noqa: E402
from rethink.train.loop import Recipe, Trainer  # noqa: E402


def tiny_data(n=96, classes=4, size=12):
    g = torch.Generator().manual_seed(123)
    y = torch.arange(n) % classes
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    x[:, y % 3, :, :] //= 2  # a learnable signal: one channel darkened per class
    return x, y


def tiny_model(classes=4, per_sample=True):
    """per_sample=False drops BatchNorm and dropout, whose batch statistics and random
    masks differ between one process and a batch split across ranks."""
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    if per_sample:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.Dropout(0.2 if per_sample else 0.0), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(8, classes)]
    return nn.Sequential(*layers)


class KillAt(Callback):
    def __init__(self, step):
        self.at = step

    def after_step(self, t):
        if t.step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--kill-at-step", type=int)
    ap.add_argument("--plain", action="store_true", help="no BatchNorm, no dropout")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--ema", type=float, help="EMA decay (weights.pt then holds the EMA model)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    dist = Distributed.from_env()
    x, y = tiny_data()
    train = GPULoader(x, y, 16, device="cpu", augment=Augment(translate=2, flip=True, cutout=4),
                      shuffle=True, drop_last=True, seed=7)
    evl = train.eval_loader(32)
    if dist:
        train = dist.shard(train)
    torch.manual_seed(0)
    model = tiny_model(per_sample=not args.plain)
    cbs = [Checkpoint(args.out)]
    if args.ema:
        cbs.append(EMA(args.ema))
    if args.kill_at_step:
        cbs.append(KillAt(args.kill_at_step))
    recipe = Recipe(epochs=args.epochs, lr=0.1, weight_decay=5e-4, warmup_epochs=1, label_smoothing=0.1, seed=3)
    history = Trainer(model, train, evl, recipe, device="cpu", callbacks=cbs, distributed=dist).fit()
    if dist is None or dist.is_main:
        (args.out / "history.json").write_text(json.dumps(history))
    if dist:
        dist.close()


if __name__ == "__main__":
    main()
