"""Throughput of batched `rethink.augment.Augment` vs torchvision.transforms.v2 image by image.

Both do translate-by-padding (reflect, 4 px) + horizontal flip + cutout/erasing on a
uint8 batch N x 3 x H x W on the same device (CUDA if available, else CPU).

    python benchmarks/augment_throughput.py [--batch-size 512] [--size 64] [--out result.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from _report import device_label, emit  # noqa: E402
from rethink.augment import Augment, normalize  # noqa: E402


def _timed(fn, device: str, min_seconds: float, min_reps: int = 3) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    reps, t0 = 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - t0 < min_seconds:
        fn()
        reps += 1
    sync()
    return (time.perf_counter() - t0) / reps


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--padding", type=int, default=4)
    p.add_argument("--cutout", type=int, default=16)
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timing window per method")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    device, n, s = args.device, args.batch_size, args.size
    images = torch.randint(0, 256, (n, 3, s, s), dtype=torch.uint8, device=device)
    generator = torch.Generator().manual_seed(0)
    augment = Augment(translate=args.padding, flip=True, cutout=args.cutout, padding_mode="reflect")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    # RandomErasing with a fixed square of the same area as the cutout, always applied
    area = args.cutout ** 2 / (s * s)
    per_image = T.Compose([
        T.RandomCrop(s, padding=args.padding, padding_mode="reflect"),
        T.RandomHorizontalFlip(p=0.5),
        T.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0),
    ])

    batched_s = _timed(lambda: augment(images, generator), device, args.seconds)
    batched_norm_s = _timed(lambda: normalize(augment(images, generator), mean, std, channels_last=True),
                            device, args.seconds)
    loop_s = _timed(lambda: torch.stack([per_image(img) for img in images]), device, args.seconds)

    result = {
        "device": device_label(device),
        "batch": [n, 3, s, s], "dtype": "uint8", "padding": args.padding, "cutout": args.cutout,
        "augment_images_per_s": round(n / batched_s, 1),
        "augment_plus_normalize_images_per_s": round(n / batched_norm_s, 1),
        "torchvision_v2_loop_images_per_s": round(n / loop_s, 1),
        "speedup": round(loop_s / batched_s, 1),
        "torch": torch.__version__,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
