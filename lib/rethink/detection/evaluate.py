"""Detector inference and COCO box AP (pycocotools' COCOeval, or faster-coco-eval's C++ twin).

COCO results format: one dict per detection, bbox [x, y, w, h] in pixels, category_id =
label + 1 (labels are 0-based, COCO ids 1-based), score.
"""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch

from .data import DetectionSet

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")   # COCOeval.stats[0:6], in percent
BACKENDS = ("pycocotools", "faster")


@torch.no_grad()
def predict(model: torch.nn.Module, ds: DetectionSet, *, batch_size: int = 64, device=None,
            indices=None) -> list[dict]:
    """Detections of `model` on `ds` (eval mode, no grad, bf16 autocast on CUDA only).

    Returns one dict per image (in `indices` order): boxes (k, 4) xyxy float32, scores (k,),
    labels (k,) int64 -- numpy arrays on the CPU.
    """
    device = torch.device(device or next(model.parameters()).device)
    idx = np.arange(len(ds)) if indices is None else np.asarray(indices)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(idx), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(ds.images[idx[i:i + batch_size]])).to(device)
            x = x.float().div_(255)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                dets = model(list(x))
            for d in dets:
                out.append({"boxes": d["boxes"].float().cpu().numpy(),
                            "scores": d["scores"].float().cpu().numpy(),
                            "labels": d["labels"].cpu().numpy().astype(np.int64)})
    finally:
        model.train(was_training)
    return out


def coco_detections(predictions: list[dict], image_ids) -> list[dict]:
    """Per-image predictions -> COCO results list (bbox xywh, category_id = label + 1)."""
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
    results = []
    for pred, image_id in zip(predictions, image_ids):
        boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        for b, s, c in zip(xywh.tolist(), np.asarray(pred["scores"]).tolist(),
                           np.asarray(pred["labels"]).tolist()):
            results.append({"image_id": int(image_id), "category_id": int(c) + 1,
                            "bbox": [round(v, 3) for v in b], "score": float(s)})
    return results


def _area_ranges(area_scale: float) -> list[list[float]]:
    # COCO: all [0, 1e5^2], small < 32^2, medium 32^2..96^2, large > 96^2 (pixel areas)
    s, m = 32 ** 2 * area_scale, 96 ** 2 * area_scale
    return [[0.0, 1e5 ** 2], [0.0, s], [s, m], [m, 1e5 ** 2]]


def _empty_result(gt: dict, area_scale: float) -> dict:
    """No detections: AP 0 where there is ground truth in the area range, NaN where none (COCO's -1)."""
    areas = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in gt.get("annotations", [])
                      if not a.get("iscrowd", 0)], dtype=np.float64)
    rng = _area_ranges(area_scale)
    has = [bool(((areas >= lo) & (areas <= hi)).any()) for lo, hi in rng]
    return {"AP": 0.0 if has[0] else math.nan, "AP50": 0.0 if has[0] else math.nan,
            "AP75": 0.0 if has[0] else math.nan, "APs": 0.0 if has[1] else math.nan,
            "APm": 0.0 if has[2] else math.nan, "APl": 0.0 if has[3] else math.nan}


def coco_evaluate(gt: dict, detections: list[dict], *, area_scale: float = 1.0,
                  backend: str = "pycocotools") -> dict:
    """COCO box AP of `detections` against the COCO-format ground truth dict `gt`, in percent.

    area_scale multiplies COCO's small/medium/large *area* thresholds (32^2, 96^2 px^2); for a
    canvas of side S compared with COCO's ~640 px, (S / 640)^2 keeps the same relative sizes.
    A metric without ground truth in its range (COCO's -1) is returned as NaN.
    backend: 'pycocotools' (the reference) or 'faster' (faster-coco-eval, same numbers).
    The evaluators' printing is suppressed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not detections:  # COCO.loadRes cannot take an empty list
        return _empty_result(gt, area_scale)
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        try:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        except ImportError as e:
            raise ImportError("backend='faster' needs the faster-coco-eval package "
                              "(pip install faster-coco-eval)") from e
    gt = dict(gt)
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.areaRng = _area_ranges(area_scale)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:6]]
    return {k: (100.0 * v if v >= 0 else math.nan) for k, v in zip(METRICS, stats)}


def evaluate_detector(model: torch.nn.Module, ds: DetectionSet, gt: dict, *, batch_size: int = 64,
                      device=None, area_scale: float = 1.0, backend: str = "pycocotools") -> dict:
    """predict -> coco_detections -> coco_evaluate, in one call."""
    preds = predict(model, ds, batch_size=batch_size, device=device)
    return coco_evaluate(gt, coco_detections(preds, ds.image_ids), area_scale=area_scale, backend=backend)
