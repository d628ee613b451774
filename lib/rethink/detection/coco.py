"""COCO format in and out: ground-truth dicts for pycocotools, and real COCO-format data
(COCO128) letterboxed to a square canvas as a DetectionSet."""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from rethink.detection.data import DetectionSet

LETTERBOX_FILL = 114  # grey padding (as in YOLO-style letterboxing)


def to_coco(ds: DetectionSet) -> dict:
    """A COCO ground-truth dict: category ids are label + 1, annotation ids 1..K, bbox x y w h."""
    S = ds.image_size
    images, annotations = [], []
    for i, (image_id, boxes, labels) in enumerate(zip(ds.image_ids, ds.boxes, ds.labels)):
        images.append({"id": int(image_id), "width": S, "height": S, "file_name": f"{int(image_id):012d}.png"})
        for b, lab in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels).reshape(-1)):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            annotations.append({"id": len(annotations) + 1, "image_id": int(image_id), "category_id": int(lab) + 1,
                                "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(ds.class_names)]
    return {"info": {"description": ds.meta.get("kind", "rethink DetectionSet")}, "images": images,
            "annotations": annotations, "categories": categories}  # fmt: skip


def from_coco(gt: dict, images: np.ndarray) -> DetectionSet:
    """A DetectionSet from a COCO dict whose boxes are in pixels of `images` (N x 3 x S x S, in
    the order of gt["images"]). Labels index the categories sorted by id; crowd boxes are left out."""
    imgs = gt["images"]
    if len(imgs) != len(images):
        raise ValueError(f"{len(imgs)} images in the dict, {len(images)} arrays")
    S = int(images.shape[-1])
    for im in imgs:
        if ("width" in im and int(im["width"]) != S) or ("height" in im and int(im["height"]) != S):
            raise ValueError(f"image {im['id']} is {im.get('width')}x{im.get('height')}, arrays are {S}x{S}; "
                             "boxes must be in pixels of the arrays (see load_coco_format)")  # fmt: skip
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(cats)}
    row = {im["id"]: i for i, im in enumerate(imgs)}
    per = [[] for _ in imgs]
    crowd = 0
    for a in sorted(gt.get("annotations", []), key=lambda a: a["id"]):
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        per[row[a["image_id"]]].append((x, y, x + w, y + h, label_of[a["category_id"]]))
    boxes = [np.array([p[:4] for p in rows], np.float32).reshape(-1, 4) for rows in per]
    labels = [np.array([p[4] for p in rows], np.int64) for rows in per]
    meta = {"coco_category_ids": [c["id"] for c in cats], "crowd_left_out": crowd,
            "file_names": [im.get("file_name", "") for im in imgs]}  # fmt: skip
    return DetectionSet(images, boxes, labels, [c["name"] for c in cats], [int(im["id"]) for im in imgs], meta)


def letterbox(im: Image.Image, size: int) -> tuple[np.ndarray, float, int, int]:
    """Resize the long side to `size` (bicubic) and centre on a grey square. Returns the
    (3, size, size) uint8 array, the scale and the (left, top) offsets."""
    w, h = im.size
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = Image.new("RGB", (size, size), (LETTERBOX_FILL,) * 3)
    left, top = (size - nw) // 2, (size - nh) // 2
    canvas.paste(im.convert("RGB").resize((nw, nh), Image.BICUBIC), (left, top))
    return np.asarray(canvas).transpose(2, 0, 1), s, left, top


def letterbox_bbox(bbox, w: int, h: int, size: int) -> list[float]:
    """A COCO bbox (x y w h, original pixels) on the letterboxed canvas, clipped to the image."""
    s = size / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    left, top = (size - nw) // 2, (size - nh) // 2
    sx, sy = nw / w, nh / h  # the sizes actually rendered
    x0 = min(max(bbox[0], 0.0), w) * sx + left
    y0 = min(max(bbox[1], 0.0), h) * sy + top
    x1 = min(max(bbox[0] + bbox[2], 0.0), w) * sx + left
    y1 = min(max(bbox[1] + bbox[3], 0.0), h) * sy + top
    return [x0, y0, x1 - x0, y1 - y0]


def load_coco_format(name: str = "coco128", image_size: int = 160, data_root=None) -> DetectionSet:
    """Real COCO-format data (an instances_*.json + its image folder) letterboxed to image_size,
    boxes mapped the same way; categories are COCO's 80 (labels 0..79 in id order)."""
    ds = _load_coco_format(name, int(image_size), str(data_root) if data_root else None)
    return DetectionSet(ds.images, list(ds.boxes), list(ds.labels), list(ds.class_names), list(ds.image_ids),
                        dict(ds.meta))  # a fresh container around the cached, read-only arrays


@lru_cache(maxsize=4)
def _load_coco_format(name: str, size: int, data_root: str | None) -> DetectionSet:
    from rethink.data.archives import DataError, ensure_extracted

    root = ensure_extracted(name, data_root, progress=False)
    found = sorted((root / "annotations").glob("instances_*.json"))
    if not found:
        raise DataError(f"no annotations/instances_*.json under {root}")
    ann_path = found[0]
    folder = root / ann_path.stem[len("instances_"):]  # instances_train2017.json -> train2017/
    gt = json.loads(ann_path.read_text())
    images = np.empty((len(gt["images"]), 3, size, size), np.uint8)
    dims = {}
    for i, im in enumerate(gt["images"]):
        with Image.open(folder / im["file_name"]) as f:
            images[i] = letterbox(f, size)[0]
            dims[im["id"]] = f.size
    out_anns = []
    for a in gt["annotations"]:
        w, h = dims[a["image_id"]]
        bb = letterbox_bbox(a["bbox"], w, h, size)
        if bb[2] > 0 and bb[3] > 0:
            out_anns.append({**{k: a[k] for k in ("id", "image_id", "category_id", "iscrowd")}, "bbox": bb})
    out_images = [{"id": im["id"], "width": size, "height": size, "file_name": im["file_name"]} for im in gt["images"]]
    ds = from_coco({"images": out_images, "annotations": out_anns, "categories": gt["categories"]}, images)
    ds.meta.update(kind=f"{name} (COCO format)", dataset=name, image_size=size,
                   annotations_file=os.fspath(ann_path.relative_to(root)), letterbox_fill=LETTERBOX_FILL)  # fmt: skip
    ds.images.setflags(write=False)
    return ds
