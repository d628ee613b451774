"""Transfer targets: datasets at different distances from the source (Tiny ImageNet).

Each target has train / validation / test splits fixed by a seed:

=================  ===========================================  =====================
target             distance from Tiny ImageNet                  splits
=================  ===========================================  =====================
cifar10            near: 7 of 10 classes exist in the source     train -> train + val
                   at another size and from another source       (seeded), test = test
imagenette         near domain, no class shared                  train -> train + val
                                                                 (seeded), test = val
clothing           another domain (product photos of garments)   the dataset's own
coco128_crops      near domain, other framing: objects cropped   stratified by seed
                   out of cluttered scenes; 'person', absent
                   from the source; small and imbalanced
                   (scored by mean per-class accuracy, as the
                   paper scores Caltech, Pets, Aircraft, Flowers)
digits             far: scikit-learn's 8x8 grey handwritten      stratified by seed
                   digits, upsampled
=================  ===========================================  =====================

Images are uint8 N x 3 x S x S arrays, as everywhere in the book.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..data.cache import load_split, subset_per_class

METRICS = ("top1", "mean_per_class")


@dataclass
class TargetData:
    """One target's three splits (images uint8 N x 3 x S x S, labels int64)."""
    name: str
    classes: list[str]
    metric: str
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    notes: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])}


@dataclass(frozen=True)
class TargetSpec:
    name: str
    title: str
    distance: str  # near / near, no shared class / other domain / far
    metric: str
    build: Callable[[int, int, object], TargetData]  # (image_size, seed, data_root)


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Split indices class by class into len(fractions) parts (the last takes the rest).

    Deterministic for (labels, fractions, seed); each part sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.floor(np.cumsum(fractions)[:-1] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _take(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.ascontiguousarray(images[idx]), np.asarray(labels[idx], np.int64)


def _from_train_test(name: str, train_split: str, test_split: str, val_fraction: float,
                     metric: str = "top1") -> Callable:
    def build(image_size: int, seed: int, data_root) -> TargetData:
        train = load_split(name, train_split, image_size, data_root=data_root)
        test = load_split(name, test_split, image_size, data_root=data_root)
        tr, va = stratified_split(train.labels, (1 - val_fraction, val_fraction), seed)
        return TargetData(name, list(train.class_names or train.classes), metric,
                          _take(train.images, train.labels, tr), _take(train.images, train.labels, va),
                          _take(test.images, test.labels, np.arange(len(test))))
    return build


def _clothing(image_size: int, seed: int, data_root) -> TargetData:
    splits = [load_split("clothing", s, image_size, data_root=data_root)
              for s in ("train", "validation", "test")]
    tr, va, te = (_take(s.images, s.labels, np.arange(len(s))) for s in splits)
    return TargetData("clothing", list(splits[0].classes), "top1", tr, va, te,
                      notes={"splits": "the dataset's own (the seed does not change them)"})


def _resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """N x 3 x h x w uint8 -> N x 3 x size x size, bilinear with antialiasing (torch)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def digits_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits (8x8, 0..16 grey) as dark-on-light RGB at image_size."""
    from sklearn.datasets import load_digits

    d = load_digits()
    grey = (255 - np.round(d.images * (255 / 16))).astype(np.uint8)  # ink dark, paper light
    rgb = np.repeat(grey[:, None], 3, axis=1)
    return _resize_square(rgb, image_size), d.target.astype(np.int64)


def _digits(image_size: int, seed: int, data_root) -> TargetData:
    images, labels = digits_images(image_size)
    tr, va, te = stratified_split(labels, (0.6, 0.2, 0.2), seed)
    return TargetData("digits", [str(i) for i in range(10)], "top1", _take(images, labels, tr),
                      _take(images, labels, va), _take(images, labels, te))


def coco_object_crops(image_size: int, data_root=None, min_side: int = 16, min_count: int = 12,
                      context: float = 0.1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Square crops around COCO128's boxes (each widened by `context` per side, clipped to
    the image) of objects at least `min_side` px on each side, for the categories with
    at least `min_count` such objects. Returns images, labels, category names."""
    from PIL import Image

    from ..data.archives import ensure_extracted
    from ..data.cache import to_square

    root = ensure_extracted("coco128", data_root, progress=False)
    ann = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    names = {c["id"]: c["name"] for c in ann["categories"]}
    objects = [a for a in sorted(ann["annotations"], key=lambda a: a["id"])
               if not a.get("iscrowd") and min(a["bbox"][2:]) >= min_side]
    counts: dict[int, int] = {}
    for a in objects:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    kept = sorted(c for c, n in counts.items() if n >= min_count)
    label_of = {c: i for i, c in enumerate(kept)}
    images, labels, opened = [], [], {}
    for a in objects:
        if a["category_id"] not in label_of:
            continue
        path = root / "train2017" / files[a["image_id"]]
        im = opened.get(path) or opened.setdefault(path, Image.open(path).convert("RGB"))
        x, y, w, h = a["bbox"]
        side = max(w, h) * (1 + 2 * context)
        cx, cy = x + w / 2, y + h / 2
        box = (max(0, cx - side / 2), max(0, cy - side / 2),
               min(im.width, cx + side / 2), min(im.height, cy + side / 2))
        crop = to_square(im.crop(tuple(round(v) for v in box)), image_size)
        images.append(np.asarray(crop).transpose(2, 0, 1))
        labels.append(label_of[a["category_id"]])
    return np.stack(images), np.asarray(labels, np.int64), [names[c] for c in kept]


def _coco_crops(image_size: int, seed: int, data_root) -> TargetData:
    images, labels, classes = coco_object_crops(image_size, data_root)
    tr, va, te = stratified_split(labels, (0.5, 0.25, 0.25), seed)
    return TargetData("coco128_crops", classes, "mean_per_class", _take(images, labels, tr),
                      _take(images, labels, va), _take(images, labels, te))


TARGETS: dict[str, TargetSpec] = {t.name: t for t in [
    TargetSpec("cifar10", "CIFAR-10", "near: 7 classes in the source, other images", "top1",
               _from_train_test("cifar10", "train", "test", 0.1)),
    TargetSpec("imagenette", "Imagenette", "near domain, no class shared", "top1",
               _from_train_test("imagenette", "train", "val", 0.1)),
    TargetSpec("clothing", "Clothing (small)", "other domain", "top1", _clothing),
    TargetSpec("coco128_crops", "COCO128 object crops", "near domain, other framing; small, imbalanced",
               "mean_per_class", _coco_crops),
    TargetSpec("digits", "scikit-learn digits", "far (8x8 grey digits, upsampled)", "top1", _digits),
]}


def load_target(name: str, image_size: int, seed: int = 0, *, data_root=None,
                train_per_class: int | None = None, eval_per_class: int | None = None) -> TargetData:
    """A target's splits at image_size. train_per_class / eval_per_class subsample (by seed)
    the training split and the validation and test splits (None: all)."""
    if name not in TARGETS:
        raise KeyError(f"unknown transfer target {name!r}; choose from {sorted(TARGETS)}")
    data = TARGETS[name].build(image_size, seed, data_root)
    for split, per_class in (("train", train_per_class), ("val", eval_per_class), ("test", eval_per_class)):
        if per_class is not None:
            images, labels = getattr(data, split)
            setattr(data, split, _take(images, labels, subset_per_class(labels, per_class, seed)))
    return data
