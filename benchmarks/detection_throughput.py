"""Detector training throughput: the book's loop vs torchvision's stock detection training loop.

Same model (FCOS, ResNet-FPN from `rethink.detection.model.build_detector`), same scenes,
same batch size. The stock loop follows torchvision's detection reference
(references/detection/train.py): a `Dataset` returning float image tensors and target
dicts, per-image random horizontal flip in the dataset, a `DataLoader` with a list
collate, each image and target moved to the device, float32. The book's loop
(`rethink.detection.train.train_detector`) keeps the uint8 scenes on the device, flips
whole batches there, and uses bf16 autocast and channels_last on CUDA. Reported: scenes
per second of each (the book's loop over one epoch, evaluation excluded) and the ratio.

    python benchmarks/detection_throughput.py [--arch resnet18] [--size 160] [--scenes 512] [--out result.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from _report import add_device_options, device_label, emit, parse_args  # noqa: E402
from rethink.detection.data import DetectionSet  # noqa: E402
from rethink.detection.model import build_detector  # noqa: E402


class _StockDataset(torch.utils.data.Dataset):
    """torchvision-reference style: float CHW image and a target dict per item, flip per item."""

    def __init__(self, ds: DetectionSet, seed: int = 0):
        self.ds, self.rng = ds, np.random.default_rng(seed)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img = torch.as_tensor(np.array(self.ds.images[i])).float() / 255
        boxes = torch.as_tensor(self.ds.boxes[i], dtype=torch.float32).reshape(-1, 4)
        if self.rng.random() < 0.5:
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return img, {"boxes": boxes, "labels": torch.as_tensor(self.ds.labels[i], dtype=torch.int64)}


def stock_loop(model, ds: DetectionSet, *, batch_size: int, device, steps: int, workers: int) -> float:
    """Scenes per second of torchvision's reference-style loop over `steps` steps (after 2 warm-up steps)."""
    loader = torch.utils.data.DataLoader(_StockDataset(ds), batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, collate_fn=lambda b: tuple(zip(*b)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.to(device).train()
    done, t0 = 0, None
    while done < steps + 2:
        for images, targets in loader:
            if done == 2:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps + 2:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def _scenes(n: int, size: int, data_root):
    try:
        from rethink.detection.scenes import generate_scenes
        return generate_scenes(n, split="train", image_size=size, data_root=data_root)
    except Exception as e:  # noqa: BLE001 - no Tiny ImageNet here: random boxes on noise
        print(f"no scenes ({type(e).__name__}: {e}); using synthetic boxes", file=sys.stderr)
        g = np.random.default_rng(0)
        images = g.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
        boxes, labels = [], []
        for _ in range(n):
            k = int(g.integers(1, 6))
            xy = g.uniform(0, size * 0.6, (k, 2))
            wh = g.uniform(size * 0.1, size * 0.4, (k, 2))
            boxes.append(np.concatenate([xy, xy + wh], 1).astype(np.float32))
            labels.append(g.integers(0, 20, k))
        return DetectionSet(images, boxes, labels, [f"c{i}" for i in range(20)])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--fpn-channels", type=int, default=128)
    p.add_argument("--stock-steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-root")
    args = parse_args(add_device_options(p), argv)
    from rethink.detection.coco import to_coco
    from rethink.detection.train import train_detector

    device = torch.device(args.device)
    ds = _scenes(args.scenes, args.size, args.data_root)
    val = ds.subset(min(8, len(ds)))

    def model():
        torch.manual_seed(0)
        return build_detector(args.arch, ds.num_classes, image_size=args.size, norm="gn",
                              fpn_channels=args.fpn_channels)

    stock = stock_loop(model(), ds, batch_size=args.batch_size, device=device, steps=args.stock_steps,
                       workers=args.workers)
    ours = train_detector(model(), ds, val, to_coco(val), steps=len(ds) // args.batch_size, batch_size=args.batch_size,
                          lr=0.01, warmup_steps=1, eval_points=1, device=device, seed=0)  # one epoch, one evaluation
    rate = ours.get("images_per_s")
    return emit({"device": device_label(device), "arch": args.arch, "image_size": args.size,
                 "batch_size": args.batch_size, "fpn_channels": args.fpn_channels, "scenes": len(ds),
                 "stock_loop_scenes_per_s": round(stock, 1),
                 "book_loop_scenes_per_s": round(rate, 1) if rate else None,
                 "ratio": round(rate / stock, 2) if rate else None, "torch": torch.__version__}, args.out)


if __name__ == "__main__":
    main()
