"""COCO box-AP evaluation time: pycocotools (the reference) vs faster-coco-eval, same inputs.

Ground truth: ``--images`` synthetic images of ``--size`` px with 1-8 boxes of 20 classes;
detections: every true box jittered (so AP is neither 0 nor 100) plus random false
positives, ``--detections-per-image`` per image. Both backends run through
`rethink.detection.evaluate.coco_evaluate`; the script checks that their numbers agree
and reports the best of ``--repeats`` wall times and the ratio.

    python benchmarks/coco_eval_time.py [--images 1000] [--detections-per-image 100] [--out result.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from _report import emit  # noqa: E402
from rethink.detection.data import DetectionSet  # noqa: E402
from rethink.detection.coco import to_coco  # noqa: E402
from rethink.detection.evaluate import coco_evaluate  # noqa: E402


def synthetic(n: int, size: int, per_image: int, seed: int = 0):
    g = np.random.default_rng(seed)
    boxes, labels, dets = [], [], []
    for i in range(n):
        k = int(g.integers(1, 9))
        xy = g.uniform(0, size * 0.7, (k, 2))
        wh = g.uniform(size * 0.05, size * 0.3, (k, 2))
        b = np.concatenate([xy, np.minimum(xy + wh, size)], 1).astype(np.float32)
        lab = g.integers(0, 20, k)
        boxes.append(b)
        labels.append(lab)
        jitter = b + g.normal(0, 2.0, b.shape)
        extra = per_image - k
        fxy = g.uniform(0, size * 0.7, (extra, 2))
        fb = np.concatenate([fxy, fxy + g.uniform(5, size * 0.3, (extra, 2))], 1)
        allb = np.concatenate([jitter, fb])
        alll = np.concatenate([lab, g.integers(0, 20, extra)])
        scores = np.concatenate([g.uniform(0.5, 1, k), g.uniform(0, 0.7, extra)])
        for bb, ll, ss in zip(allb, alll, scores):
            dets.append({"image_id": i + 1, "category_id": int(ll) + 1, "score": float(ss),
                         "bbox": [float(bb[0]), float(bb[1]), float(bb[2] - bb[0]), float(bb[3] - bb[1])]})
    ds = DetectionSet(np.zeros((n, 3, 1, 1), np.uint8), boxes, labels, [f"c{j}" for j in range(20)])
    gt = to_coco(ds)
    for im in gt["images"]:
        im["width"] = im["height"] = size
    return gt, dets


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--detections-per-image", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    gt, dets = synthetic(args.images, args.size, args.detections_per_image)
    times, results = {}, {}
    for backend in ("pycocotools", "faster"):
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            results[backend] = coco_evaluate(gt, dets, area_scale=(args.size / 640) ** 2, backend=backend)
            best = min(best, time.perf_counter() - t0)
        times[backend] = best
    diff = max(abs(results["pycocotools"][k] - results["faster"][k]) for k in results["pycocotools"]
               if not np.isnan(results["pycocotools"][k]))
    return emit({"images": args.images, "detections": len(dets), "pycocotools_s": round(times["pycocotools"], 3),
                 "faster_coco_eval_s": round(times["faster"], 3),
                 "speedup": round(times["pycocotools"] / times["faster"], 1),
                 "AP": round(results["pycocotools"]["AP"], 3), "max_metric_difference": diff}, args.out)


if __name__ == "__main__":
    main()
