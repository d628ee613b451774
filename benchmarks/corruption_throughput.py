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
import json
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


STORED_REFERENCE = Path(__file__).resolve().parent / "results" / "corruption_throughput-cpu.json"


def _rate(fn, n: int, device: str, repeats: int) -> float:
    """Images per second: the fastest of ``repeats`` calls of fn() over n images (after a warm-up)."""
    cuda = torch.device(device).type == "cuda"
    fn()
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n / best


def _images(n: int, size: int, data_root: str | None, synthetic: bool = False) -> tuple[np.ndarray, str]:
    """CIFAR-10 test images if the archive is at hand (and not `synthetic`), else smooth random images."""
    if not synthetic:
        try:
            from rethink.data.cache import load_split
            return np.asarray(load_split("cifar10", "test", size, data_root=data_root).images[:n]), "cifar10 test"
        except Exception:  # noqa: BLE001 - any data problem: fall back to synthetic images
            pass
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    return (x * 255).to(torch.uint8).numpy(), "smooth random images"


def _reference():
    """imagecorruptions.corrupt, shimmed for today's skimage (``multichannel=``), NumPy 2 (``np.float_``)
    and a setuptools without ``pkg_resources`` (the package finds its frost pictures with it)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib
        import types

        def resource_filename(module: str, name: str) -> str:  # a file beside the module, as pkg_resources
            mod = sys.modules.get(module) or importlib.import_module(module)
            return str(Path(mod.__file__).parent / name)
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    import skimage.filters
    from imagecorruptions import corrupt, corruptions as icc

    def gaussian(image, sigma=1, multichannel=None, **kw):
        return skimage.filters.gaussian(image, sigma=sigma, **({"channel_axis": -1} if multichannel else {}), **kw)

    icc.gaussian = gaussian
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    return corrupt


def stored_reference(path: Path = STORED_REFERENCE) -> dict | None:
    """The per-image reference's rates from an earlier run of this script: {corruption: images/s}
    plus where they came from (None if the file has none)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    rates = {r["corruption"]: r["reference_images_per_s"] for r in data.get("rows", [])
             if "corruption" in r and isinstance(r.get("reference_images_per_s"), (int, float))}
    if not rates:
        return None
    return {"rates": rates, "file": Path(path).name, "device": data.get("device"), "torch": data.get("torch"),
            "images": data.get("reference_images"), "image": data.get("image"), "severity": data.get("severity")}


def measure(*, images: int = 2000, reference_images: int = 50, size: int = 32, severity: int = 3,
            repeats: int = 3, device: str = "cpu", data_root=None, synthetic: bool = False, names=ALL,
            perturbations: bool = True, fallback: Path | None = None, deadline: float | None = None) -> dict:
    """Ours (both parameter sets) and the per-image reference for each corruption in `names`.

    Without the `imagecorruptions` package and with `fallback` (a results file of this script),
    the reference rates are that file's, labelled as such (`reference_source`). deadline: a
    time.perf_counter() value after which no further corruption starts (`rows` says which ran).
    """
    warnings.filterwarnings("ignore")
    device = str(torch.device(device))
    try:
        reference, why = _reference(), None
    except ImportError as e:
        reference, why = None, f"imagecorruptions not importable ({e})"
    stored = stored_reference(fallback) if reference is None and fallback else None
    if stored and (stored["severity"] != severity or stored["image"] != [3, size, size]):
        why += (f"; {stored['file']} was measured at severity {stored['severity']} on {stored['image']} images, "
                "not comparable")
        stored = None
    source = ("measured in this run (CPU, one image at a time)" if reference is not None else
              f"stored: {stored['file']} ({stored['device']}, torch {stored['torch']}); {why}" if stored else
              f"none: {why}")

    pics, data = _images(max(images, reference_images), size, data_root, synthetic)
    x = torch.as_tensor(pics[:images]).to(device)
    t_warm = time.perf_counter()
    corrupt(x[:8], names[0], severity, seed=0)  # first call: kernels, lazy imports (each corruption's own
    warmup_s = time.perf_counter() - t_warm     # warm-up call is also excluded, in _rate)
    rows, ours_total, ours_imagenet_total, ref_total = [], 0.0, 0.0, 0.0
    for name in names:
        if rows and deadline is not None and time.perf_counter() > deadline:
            break
        row = {"corruption": name}
        for params in ("cifar", "imagenet"):
            rate = _rate(lambda: corrupt(x, name, severity, params=params, seed=0), len(x), device, repeats)
            row[f"ours_{params}_images_per_s"] = round(rate, 1)
        ours_total += 5 * 10_000 / row["ours_cifar_images_per_s"]
        ref = None
        if reference is not None:
            hwc = [im.transpose(1, 2, 0) for im in pics[:reference_images]]
            try:
                np.random.seed(0)
                ref = _rate(lambda: [reference(im, corruption_name=name, severity=severity) for im in hwc],
                            len(hwc), "cpu", 1)
            except Exception as e:  # noqa: BLE001 - the reference cannot run at this size
                row["reference_images_per_s"] = f"fails: {type(e).__name__}"
        elif stored is not None:
            ref = stored["rates"].get(name)
        if ref is not None:
            row["reference_images_per_s"] = round(ref, 1)
            row["speedup"] = round(row["ours_imagenet_images_per_s"] / ref, 1)
            ref_total += 5 * 10_000 / ref
            ours_imagenet_total += 5 * 10_000 / row["ours_imagenet_images_per_s"]
        rows.append(row)

    p_rows = []
    if perturbations:
        n_seq = max(1, images // 10)
        xs = x[:n_seq]
        for name in BENCHMARK_P:
            frames = sequences(xs, name, seed=0).shape[1]
            rate = _rate(lambda: sequences(xs, name, seed=0), n_seq * frames, device, repeats)
            p_rows.append({"perturbation": name, "frames": frames, "frames_per_s": round(rate, 1)})

    with_ref = [r for r in rows if "speedup" in r]
    return {
        "device": device_label(device), "image": [3, size, size], "severity": severity,
        "images": images, "reference_images": reference_images, "data": data,
        "reference_source": source,
        "corruptions_measured": len(rows), "corruptions_requested": len(names),
        "full_C_set_minutes_ours": round(ours_total / 60, 2),
        "full_C_set_minutes_reference": round(ref_total / 60, 2) if with_ref else None,
        "full_C_set_minutes_ours_imagenet": round(ours_imagenet_total / 60, 3) if with_ref else None,
        # the same operations (ImageNet-C parameters) over the corruptions with a reference rate
        "full_C_set_ratio": round(ref_total / ours_imagenet_total, 2) if with_ref else None,
        "speedup_geometric_mean": (round(float(np.exp(np.mean(np.log([r["speedup"] for r in with_ref])))), 2)
                                   if with_ref else None),
        "warmup_s": round(warmup_s, 3),
        "rows": rows + p_rows,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--reference-images", type=int, default=50)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-root")
    p.add_argument("--stored-reference", type=Path, metavar="FILE",
                   help="without imagecorruptions: take the reference rates from this results file")
    args = parse_args(add_device_options(p), argv)
    return emit(measure(images=args.images, reference_images=args.reference_images, size=args.size,
                        severity=args.severity, repeats=args.repeats, device=args.device, data_root=args.data_root,
                        fallback=args.stored_reference), args.out)


if __name__ == "__main__":
    main()
