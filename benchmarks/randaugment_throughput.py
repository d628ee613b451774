"""Throughput of batched `rethink.augment.RandAugment` vs torchvision.transforms.v2.RandAugment image by image.

Both apply RandAugment (2 ops, magnitude 9; ours with per-sample random magnitudes in
[0, 9]) to uint8 N x 3 x S x S images on the same device (CUDA if available, else CPU).
torchvision runs over a subset of the images, one at a time, and its rate is taken as
images per second of that loop. Each rate is the best of ``--repeats`` timing windows
(robust to a shared, noisy machine).

    python benchmarks/randaugment_throughput.py [--batch-sizes 512 4096] [--size 32] [--out result.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms.v2 as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from _report import add_device_options, device_label, emit, parse_args  # noqa: E402
from rethink.augment import RandAugment, randaugment_apply  # noqa: E402


def _best_time(fn, device: str, repeats: int, calls: int = 1, warmup: bool = True) -> float:
    """Seconds per call: the fastest of ``repeats`` windows of ``calls`` calls (after a warm-up call)."""
    if warmup:
        fn()
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def measure(*, batch_sizes=(512, 4096), size: int = 32, num_ops: int = 2, magnitude: int = 9,
            reference_images: int = 2000, repeats: int = 5, device: str = "cpu", window_images: int = 4096) -> dict:
    """Batched RandAugment at each batch size vs torchvision's, image by image, on `device`; each
    timing window of the batched version covers about `window_images` images."""
    device = str(torch.device(device))
    batch_sizes = list(batch_sizes)
    s = size
    n_max = max(batch_sizes + [reference_images])
    images = torch.randint(0, 256, (n_max, 3, s, s), dtype=torch.uint8, device=device)
    generator = torch.Generator().manual_seed(0)
    augment = RandAugment(num_ops=num_ops, magnitude=magnitude)
    on_cpu = torch.device(device).type == "cpu"

    batched = {}
    t_warm = time.perf_counter()
    for n in batch_sizes:  # warm-up: every batch size once (kernels, tables)
        augment.apply(images[:n], augment.sample_params(n, s, s, generator).to(device))
    if not on_cpu:
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t_warm
    for n in batch_sizes:
        x = images[:n]
        # as in GPULoader: parameters drawn on the CPU once (per epoch), moved, sliced per batch
        sample_s = _best_time(lambda: augment.sample_params(n, s, s, generator), "cpu", repeats)
        params = augment.sample_params(n, s, s, generator).to(device)
        calls = max(1, window_images // n)
        apply_s = _best_time(lambda: augment.apply(x, params), device, repeats, calls)
        row = {"images_per_s": round(n / apply_s, 1), "sample_params_ms": round(sample_s * 1e3, 3)}
        if not on_cpu:  # on CPU the default already runs each op family on its samples only
            row["subsets_images_per_s"] = round(n / _best_time(
                lambda: randaugment_apply(x, params, subsets=True), device, repeats, calls), 1)
        batched[str(n)] = row

    # torchvision: one image at a time over a subset; the fastest of `repeats` equal chunks
    reference = T.RandAugment(num_ops=num_ops, magnitude=magnitude)
    subset = images[:reference_images]
    t_warm = time.perf_counter()
    [reference(img) for img in subset[:20]]  # warm-up
    if not on_cpu:
        torch.cuda.synchronize()
    reference_warmup_s = time.perf_counter() - t_warm
    loop_s = min(_best_time(lambda: [reference(img) for img in chunk], device, 1, warmup=False) / len(chunk)
                 for chunk in subset.chunk(repeats))
    loop_rate = 1.0 / loop_s

    return {
        "device": device_label(device),
        "image": [3, s, s], "dtype": "uint8", "num_ops": num_ops, "magnitude": magnitude,
        "random_magnitude": True,
        "batched": batched,
        "torchvision_v2_loop_images_per_s": round(loop_rate, 1),
        "torchvision_loop_images": reference_images,
        "speedup": {n: round(row["images_per_s"] / loop_rate, 1) for n, row in batched.items()},
        "warmup_s": round(warmup_s, 3), "reference_warmup_s": round(reference_warmup_s, 3),
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--num-ops", type=int, default=2)
    p.add_argument("--magnitude", type=int, default=9)
    p.add_argument("--reference-images", type=int, default=2000, help="images for the torchvision loop")
    p.add_argument("--repeats", type=int, default=5, help="timing windows; the fastest is reported")
    args = parse_args(add_device_options(p), argv)
    return emit(measure(batch_sizes=args.batch_sizes, size=args.size, num_ops=args.num_ops,
                        magnitude=args.magnitude, reference_images=args.reference_images, repeats=args.repeats,
                        device=args.device), args.out)


if __name__ == "__main__":
    main()
