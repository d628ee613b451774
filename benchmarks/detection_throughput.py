"""Detector training throughput: the book's loop vs torchvision's stock detection training loop.

Same model (FCOS, ResNet-FPN from `rethink.detection.model.build_detector`), same scenes,
same batch size. The stock loop follows torchvision's detection reference
(references/detection/train.py): a `Dataset` returning float image tensors and target
dicts, per-image random horizontal flip in the dataset, a `DataLoader` with a list
collate, each image and target moved to the device, float32 (the reference's default;
on CUDA also with its `--amp`: float16 autocast and a GradScaler). The book's loop
(`rethink.detection.train.train_detector`) keeps the uint8 scenes on the device, flips
whole batches there, and uses bf16 autocast and channels_last on CUDA. Reported: scenes
per second of each (evaluation excluded), the ratio, and each loop's untimed warm-up
(cuDNN autotuning; the book's loop: one short call of `train_detector` before the timed
one; the stock loop: its first two steps).

Scenes: `rethink.detection.scenes.generate_scenes` when Tiny ImageNet is at hand, else a
scenes file written by `--save-scenes` on a machine that has it (`--scenes-file`), else
random boxes on noise with the same number of instances per scene (the result says which).

    python benchmarks/detection_throughput.py [--arch resnet18] [--size 160] [--scenes 512] [--out result.json]
    python benchmarks/detection_throughput.py --scenes 256 --size 160 --save-scenes .devdata/scenes-160.npz
"""
from __future__ import annotations

import argparse
import math
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


def _collate(batch):
    return tuple(zip(*batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stock_loop(model, ds: DetectionSet, *, batch_size: int, device, steps: int, workers: int,
               amp: bool = False, warmup_steps: int = 2, deadline: float | None = None) -> dict:
    """torchvision's reference-style loop: `warmup_steps` untimed steps, then up to `steps` timed ones.

    amp: the reference's --amp (float16 autocast + GradScaler; CUDA only). deadline: a
    time.perf_counter() value after which no further timed step starts (at least one runs).
    Returns {scenes_per_s, steps, warmup_s}.
    """
    device = torch.device(device)
    if len(ds) < batch_size:
        raise ValueError(f"{len(ds)} scenes are fewer than one batch of {batch_size}")
    loader = torch.utils.data.DataLoader(_StockDataset(ds), batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, collate_fn=_collate,
                                         persistent_workers=workers > 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp else None
    model.to(device).train()
    done, timed, t_start, t0 = 0, 0, time.perf_counter(), None
    warmup_s = 0.0
    while t0 is None or timed < steps:
        for images, targets in loader:
            if done == warmup_steps:
                _sync(device)
                t0 = time.perf_counter()
                warmup_s = t0 - t_start
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = sum(model(images, targets).values())
            opt.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            done += 1
            if t0 is not None:
                timed += 1
                if timed >= steps or (deadline is not None and time.perf_counter() > deadline):
                    break
        if t0 is not None and deadline is not None and time.perf_counter() > deadline:
            break
    _sync(device)
    dt = time.perf_counter() - t0
    return {"scenes_per_s": timed * batch_size / dt, "steps": timed, "warmup_s": warmup_s}


def book_loop(make_model, ds: DetectionSet, *, batch_size: int, device, steps: int) -> dict:
    """The book's `train_detector` over `steps` steps (no evaluation), after an untimed warm-up
    call of two steps on a fresh model (cuDNN autotuning, fused-SGD set-up).
    Returns {scenes_per_s, steps, warmup_s}."""
    from rethink.detection.train import train_detector

    device = torch.device(device)
    kw = dict(batch_size=batch_size, lr=0.01, warmup_steps=1, eval_points=1, device=device, seed=0)
    t0 = time.perf_counter()
    train_detector(make_model(), ds.subset(min(len(ds), 2 * batch_size)), None, None, steps=2, **kw)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    out = train_detector(make_model(), ds, None, None, steps=steps, **kw)
    return {"scenes_per_s": out["images_per_s"], "steps": out["steps"], "warmup_s": warmup_s}


def synthetic_scenes(n: int, size: int, *, mean_instances: float = 4.0, max_instances: int = 8,
                     num_classes: int = 20, seed: int = 0) -> DetectionSet:
    """Random boxes on uint8 noise: 1 + Poisson(mean - 1) instances per scene (at most
    max_instances), sides 10-40% of the canvas, as the generated scenes' counts and scales."""
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    boxes, labels = [], []
    for _ in range(n):
        k = int(min(max_instances, 1 + g.poisson(max(mean_instances - 1, 0))))
        xy = g.uniform(0, size * 0.6, (k, 2))
        wh = g.uniform(size * 0.1, size * 0.4, (k, 2))
        boxes.append(np.concatenate([xy, xy + wh], 1).clip(0, size).astype(np.float32))
        labels.append(g.integers(0, num_classes, k).astype(np.int64))
    return DetectionSet(images, boxes, labels, [f"c{i}" for i in range(num_classes)],
                        meta={"synthetic": True})


def save_scenes(ds: DetectionSet, path: str | Path) -> Path:
    """One .npz (images, concatenated boxes and labels, per-scene counts, class names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.array([len(b) for b in ds.boxes], dtype=np.int64)
    kind = "synthetic" if ds.meta.get("synthetic") else "generated"
    np.savez(path, images=np.asarray(ds.images), counts=counts, kind=np.array(kind),
             boxes=np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in ds.boxes]),
             labels=np.concatenate([np.asarray(l, np.int64).reshape(-1) for l in ds.labels]),
             class_names=np.array(ds.class_names))
    return path


def load_scenes(path: str | Path) -> DetectionSet:
    with np.load(path) as z:
        ends = np.cumsum(z["counts"])
        starts = ends - z["counts"]
        boxes = [z["boxes"][a:b] for a, b in zip(starts, ends)]
        labels = [z["labels"][a:b] for a, b in zip(starts, ends)]
        kind = str(z["kind"]) if "kind" in z.files else "generated"
        return DetectionSet(z["images"], boxes, labels, [str(c) for c in z["class_names"]],
                            meta={"scenes_file": str(path), "synthetic": kind == "synthetic"})


def scenes(n: int, size: int, *, data_root=None, scenes_file=None, mean_instances: float = 4.0,
           allow_generate: bool = True) -> tuple[DetectionSet, str]:
    """(scenes, what they are): a scenes file, generated scenes, or synthetic boxes on noise."""
    if scenes_file and Path(scenes_file).exists():
        ds = load_scenes(scenes_file)
        if len(ds) >= n and ds.image_size == size:
            kind = "synthetic boxes on noise" if ds.meta["synthetic"] else "generated scenes"
            return ds.subset(n), f"{kind} from {Path(scenes_file).name}"
        print(f"{scenes_file}: {len(ds)} scenes of {ds.image_size}px, need {n} of {size}px; not used",
              file=sys.stderr)
    why = "not asked to generate scenes"
    if allow_generate:
        try:
            from rethink.detection.scenes import generate_scenes
            ds = generate_scenes(n, split="train", image_size=size, mean_instances=mean_instances,
                                 data_root=data_root)
            return ds, "generated scenes (rethink.detection.scenes)"
        except Exception as e:  # noqa: BLE001 - no Tiny ImageNet here: random boxes on noise
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            print(f"no scenes ({why}); using synthetic boxes", file=sys.stderr)
    return (synthetic_scenes(n, size, mean_instances=mean_instances),
            f"synthetic boxes on noise, {mean_instances:g} instances per scene on average ({why})")


def measure(*, arch: str = "resnet18", size: int = 160, n_scenes: int = 512, batch_size: int = 32,
            fpn_channels: int = 128, norm: str = "gn", book_steps: int = 16, stock_steps: int = 10,
            workers: int = 2, amp_reference: bool | None = None, device=None, data_root=None,
            scenes_file=None, mean_instances: float = 4.0, allow_generate: bool = True,
            deadline: float | None = None) -> dict:
    """Both loops on the same scenes and model; amp_reference (default: on CUDA) adds the
    reference loop with --amp. deadline: perf_counter() value; the stock loops stop there."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train_detector and the reference (--amp or not) do
    amp_reference = device.type == "cuda" if amp_reference is None else amp_reference
    ds, data = scenes(n_scenes, size, data_root=data_root, scenes_file=scenes_file, mean_instances=mean_instances,
                      allow_generate=allow_generate)

    def model():
        torch.manual_seed(0)
        return build_detector(arch, ds.num_classes, image_size=size, norm=norm, fpn_channels=fpn_channels)

    ours = book_loop(model, ds, batch_size=batch_size, device=device, steps=book_steps)
    stock = stock_loop(model(), ds, batch_size=batch_size, device=device, steps=stock_steps, workers=workers,
                       deadline=deadline)
    amp = None
    if amp_reference and (deadline is None or time.perf_counter() < deadline):
        amp = stock_loop(model(), ds, batch_size=batch_size, device=device, steps=stock_steps, workers=workers,
                         amp=True, deadline=deadline)
    rate = ours["scenes_per_s"]
    out = {"device": device_label(device), "arch": arch, "image_size": size, "batch_size": batch_size,
           "fpn_channels": fpn_channels, "norm": norm, "scenes": len(ds), "data": data,
           "instances_per_scene": round(sum(len(b) for b in ds.boxes) / len(ds), 2),
           "stock_loop_scenes_per_s": round(stock["scenes_per_s"], 1),
           "book_loop_scenes_per_s": round(rate, 1),
           "ratio": round(rate / stock["scenes_per_s"], 2),
           "book_steps": ours["steps"], "stock_steps": stock["steps"], "workers": workers,
           "book_warmup_s": round(ours["warmup_s"], 2), "stock_warmup_s": round(stock["warmup_s"], 2),
           "torch": torch.__version__}
    if amp is not None:
        out.update(stock_amp_loop_scenes_per_s=round(amp["scenes_per_s"], 1),
                   ratio_to_stock_amp=round(rate / amp["scenes_per_s"], 2), stock_amp_steps=amp["steps"],
                   stock_amp_warmup_s=round(amp["warmup_s"], 2))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--fpn-channels", type=int, default=128)
    p.add_argument("--book-steps", type=int, default=16, help="timed steps of the book's loop (whole epochs)")
    p.add_argument("--stock-steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--mean-instances", type=float, default=4.0)
    p.add_argument("--no-amp-reference", action="store_true", help="skip the reference loop with --amp (CUDA)")
    p.add_argument("--data-root")
    p.add_argument("--scenes-file", help="a .npz written by --save-scenes (used if it has enough scenes)")
    p.add_argument("--save-scenes", metavar="FILE", help="generate the scenes, write them to FILE and exit")
    args = parse_args(add_device_options(p), argv)
    if args.save_scenes:
        from rethink.detection.scenes import generate_scenes
        ds = generate_scenes(args.scenes, split="train", image_size=args.size, mean_instances=args.mean_instances,
                             data_root=args.data_root)
        print(save_scenes(ds, args.save_scenes))
        return {}
    return emit(measure(arch=args.arch, size=args.size, n_scenes=args.scenes, batch_size=args.batch_size,
                        fpn_channels=args.fpn_channels, book_steps=args.book_steps, stock_steps=args.stock_steps,
                        workers=args.workers, amp_reference=False if args.no_amp_reference else None,
                        device=args.device, data_root=args.data_root, scenes_file=args.scenes_file,
                        mean_instances=args.mean_instances), args.out)


if __name__ == "__main__":
    main()
