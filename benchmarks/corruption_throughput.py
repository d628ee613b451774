"""Generating the -C set: batched `rethink.robustness.corruptions` vs the per-image NumPy reference.

For each of the 19 corruptions (severity 3), images per second of

* ours, batched on the device (CUDA if available, else CPU), with CIFAR-10-C's and with
  ImageNet-C's parameters, over ``--images`` CIFAR-sized images at once;
* the `imagecorruptions` package (the reference, NumPy/OpenCV, one image at a time on
  the CPU) with ImageNet-C's parameters, over ``--reference-images`` of the same images;

the ratio (ours with ImageNet-C's parameters / the reference: the same operations), the
estimated time to generate the full set (19 x 5 severities x 10,000 images) each way, and
the rate of the -P sequences (frames per second; no per-image reference exists for them:
CIFAR-10-P's generator needs ImageMagick).

    python benchmarks/corruption_throughput.py [--images 2000] [--reference-images 50] [--out result.json]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from _report import add_device_options, device_label, emit, parse_args  # noqa: E402
from rethink.robustness.corruptions import ALL, corrupt  # noqa: E402
from rethink.robustness.perturbations import BENCHMARK_P, sequences  # noqa: E402


def _rate(fn, n: int, device: str, repeats: int) -> float:
    """Images per second: the fastest of ``repeats`` calls of fn() over n images (after a warm-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n / best


def _images(n: int, size: int, data_root: str | None) -> np.ndarray:
    """CIFAR-10 test images if the archive is at hand, else smooth random images."""
    try:
        from rethink.data.cache import load_split
        return np.asarray(load_split("cifar10", "test", size, data_root=data_root).images[:n])
    except Exception:  # noqa: BLE001 - any data problem: fall back to synthetic images
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 3, size // 4, size // 4, generator=g)
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
        return (x * 255).to(torch.uint8).numpy()


def _reference():
    """imagecorruptions.corrupt, shimmed for today's skimage (``multichannel=``) and NumPy 2 (``np.float_``)."""
    import skimage.filters
    from imagecorruptions import corrupt, corruptions as icc

    def gaussian(image, sigma=1, multichannel=None, **kw):
        return skimage.filters.gaussian(image, sigma=sigma, **({"channel_axis": -1} if multichannel else {}), **kw)

    icc.gaussian = gaussian
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    return corrupt


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--reference-images", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-root")
    args = parse_args(add_device_options(p), argv)
    warnings.filterwarnings("ignore")
    try:
        reference = _reference()
    except ImportError:
        reference = None

    images = _images(max(args.images, args.reference_images), args.size, args.data_root)
    x = torch.as_tensor(images[:args.images]).to(args.device)
    rows, ours_total, ref_total = [], 0.0, 0.0
    for name in ALL:
        row = {"corruption": name}
        for params in ("cifar", "imagenet"):
            rate = _rate(lambda: corrupt(x, name, args.severity, params=params, seed=0), len(x), args.device,
                         args.repeats)
            row[f"ours_{params}_images_per_s"] = round(rate, 1)
        ours_total += 5 * 10_000 / row["ours_cifar_images_per_s"]
        if reference is not None:
            hwc = [im.transpose(1, 2, 0) for im in images[:args.reference_images]]
            try:
                np.random.seed(0)
                ref = _rate(lambda: [reference(im, corruption_name=name, severity=args.severity) for im in hwc],
                            len(hwc), "cpu", 1)
                row["reference_images_per_s"] = round(ref, 1)
                row["speedup"] = round(row["ours_imagenet_images_per_s"] / ref, 1)
                ref_total += 5 * 10_000 / ref
            except Exception as e:  # noqa: BLE001 - the reference cannot run at this size
                row["reference_images_per_s"] = f"fails: {type(e).__name__}"
        rows.append(row)

    p_rows = []
    n_seq = max(1, args.images // 10)
    xs = x[:n_seq]
    for name in BENCHMARK_P:
        frames = sequences(xs, name, seed=0).shape[1]
        rate = _rate(lambda: sequences(xs, name, seed=0), n_seq * frames, args.device, args.repeats)
        p_rows.append({"perturbation": name, "frames": frames, "frames_per_s": round(rate, 1)})

    result = {
        "device": device_label(args.device), "image": [3, args.size, args.size], "severity": args.severity,
        "images": args.images, "reference_images": args.reference_images,
        "full_C_set_minutes_ours": round(ours_total / 60, 2),
        "full_C_set_minutes_reference": round(ref_total / 60, 1) if reference is not None else None,
        "rows": rows + p_rows,
        "torch": torch.__version__,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    main()
