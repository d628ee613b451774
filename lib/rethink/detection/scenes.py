"""A COCO stand-in: multi-object scenes composed from real Tiny ImageNet instances.

Each scene is a background (a Tiny ImageNet *train* image of a scene class: alp,
seashore, bridge, ...) upscaled to the canvas, with object instances pasted over it:
crops of Tiny ImageNet *val* images around their real box, with some context, at a
random scale, randomly flipped, pasted with a feathered alpha mask. Feathered patches
of background images (clutter) are pasted the same way, so that a soft-edged blob is
not by itself an object. Pre-training (on Tiny ImageNet train) never saw an instance;
val scenes use val images that train scenes never use.

What it cannot capture: each source image has one real box, so any other object in a
crop's context is unlabeled; sources are 64 px, so pasted objects are upscaled (blurry
at large scales); a class has 40 (train) / 10 (val) source images, so instances repeat
across scenes; objects do not interact with the scene (no shadows, support, or scale
consistent with the background); background classes are seen in pre-training.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from .. import paths
from .data import DetectionSet
from ..results.store import atomic_write_text, config_key

GENERATOR_VERSION = 1  # bump when rendering changes (part of the cache key)

# Detection classes. Chosen from the Tiny ImageNet val box statistics (50 boxes per class at
# 64 px): median box area between 20% and 65% of the image (neither a speck that would be
# upscaled 10x nor the whole frame, leaving room for context), at most 10% of boxes covering
# more than 90% of the image, at most 15% touching 3 or more image borders. Of the ~40 classes
# passing, these 20 are distinct, concrete COCO-like things (animals, vehicles, objects); near
# duplicates (a second butterfly), foods and garments were left out.
DEFAULT_CLASSES = (
    "n01855672",  # goose
    "n02002724",  # black stork
    "n01641577",  # bullfrog
    "n01629819",  # European fire salamander
    "n02279972",  # monarch butterfly
    "n02206856",  # bee
    "n02190166",  # fly
    "n01944390",  # snail
    "n01774384",  # black widow
    "n02226429",  # grasshopper
    "n02403003",  # ox
    "n04487081",  # trolleybus
    "n03977966",  # police van
    "n02814533",  # beach wagon
    "n02917067",  # bullet train
    "n02823428",  # beer bottle
    "n02909870",  # bucket
    "n07734744",  # mushroom
    "n02841315",  # binoculars
    "n04133789",  # sandal
)  # fmt: skip

# Scene classes (landscapes, structures, shop interiors): their train images are backgrounds
# and clutter. None is a default detection class.
BACKGROUND_CLASSES = (
    "n09193705",  # alp
    "n09246464",  # cliff
    "n09256479",  # coral reef
    "n09332890",  # lakeside
    "n09428293",  # seashore
    "n04311004",  # steel arch bridge
    "n04366367",  # suspension bridge
    "n03160309",  # dam
    "n04532670",  # viaduct
    "n03042490",  # cliff dwelling
    "n02791270",  # barbershop
    "n02927161",  # butcher shop
    "n03089624",  # confectionery
)  # fmt: skip

# COCO train2017 (instances_train2017.json): 860,001 instances over 118,287 images = 7.3 per
# image. Size shares by count are from COCO's detection evaluation page
# (https://cocodataset.org/#detection-eval): "approximately 41% of objects are small
# (area < 32²), 34% are medium (32² < area < 96²), and 24% are large (area > 96²)"
# (areas there are segment areas in pixels of the original images, long side ~640).
COCO_REFERENCE = {
    "source": "COCO train2017 instances_train2017.json; cocodataset.org/#detection-eval",
    "images": 118287,
    "instances": 860001,
    "instances_per_image": 7.3,
    "small": 0.41,
    "medium": 0.34,
    "large": 0.24,
    "long_side": 640,
}

SOURCE_SIZE = 64  # Tiny ImageNet's native resolution
MIN_SOURCE_SIDE = 12.0  # instances whose box is smaller (geometric mean side, px of 64) are not used
TRAIN_FRACTION = 0.8  # share of each class's val images that feed train scenes
PLACEMENT_TRIES = 20  # placements drawn per item before it is dropped
_SPLIT_CODE = {"train": 0, "val": 1}


# ---------------------------------------------------------------- box functions (pure)
# Boxes are float arrays (..., 4) x0 y0 x1 y1 in pixels (pixel edges: a box 0 0 W H covers
# a W x H image).


def box_area(box) -> np.ndarray:
    b = np.asarray(box, np.float64)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def expand_box(box, margin: float, width: float, height: float) -> np.ndarray:
    """The box grown by `margin` x its width/height on each side, clipped to the image."""
    b = np.asarray(box, np.float64)
    w, h = b[2] - b[0], b[3] - b[1]
    return clip_box(b + np.array([-margin * w, -margin * h, margin * w, margin * h]), width, height)


def crop_box(box, crop) -> np.ndarray:
    """A box in the coordinates of a crop (x0 y0 x1 y1) of its image (not clipped)."""
    b, c = np.asarray(box, np.float64), np.asarray(crop, np.float64)
    return b - np.array([c[0], c[1], c[0], c[1]])


def scale_box(box, sx: float, sy: float) -> np.ndarray:
    """A box in an image resized by sx horizontally and sy vertically."""
    return np.asarray(box, np.float64) * np.array([sx, sy, sx, sy])


def flip_box(box, width: float) -> np.ndarray:
    """A box in an image of this width flipped left-right."""
    b = np.asarray(box, np.float64)
    return np.stack([width - b[..., 2], b[..., 1], width - b[..., 0], b[..., 3]], -1)


def translate_box(box, dx: float, dy: float) -> np.ndarray:
    return np.asarray(box, np.float64) + np.array([dx, dy, dx, dy])


def clip_box(box, width: float, height: float) -> np.ndarray:
    """A box clipped to a width x height image (may become empty: x1 <= x0)."""
    b = np.asarray(box, np.float64)
    return np.clip(b, 0, np.array([width, height, width, height]))


# ---------------------------------------------------------------- one pasted item


@dataclass
class Placement:
    """Where a source crop goes: crop (source px), output size, flip, top-left on the canvas,
    and the source box mapped onto the canvas (unclipped)."""

    crop: np.ndarray
    out_w: int
    out_h: int
    flip: bool
    x: int
    y: int
    box: np.ndarray


def place(box, src_w: int, src_h: int, *, margin: float, side: float, flip: bool,
          cx: float, cy: float) -> Placement:  # fmt: skip
    """Crop around `box` with `margin`, resize so the box's geometric-mean side is ~`side`
    canvas px, flip, and put the box centre at (cx, cy) (rounded to whole pixels)."""
    crop = expand_box(box, margin, src_w, src_h)
    cw, ch = crop[2] - crop[0], crop[3] - crop[1]
    b = crop_box(box, crop)
    f = side / math.sqrt(max(box_area(box), 1e-6))
    out_w, out_h = max(1, round(cw * f)), max(1, round(ch * f))
    b = scale_box(b, out_w / cw, out_h / ch)  # the sizes actually rendered
    if flip:
        b = flip_box(b, out_w)
    x, y = round(cx - (b[0] + b[2]) / 2), round(cy - (b[1] + b[3]) / 2)
    return Placement(crop, out_w, out_h, bool(flip), x, y, translate_box(b, x, y))


def feather_mask(h: int, w: int, feather: float) -> np.ndarray:
    """(h, w) float32 alpha: 1 inside, smoothstep ramps to 0 over `feather` x the side at each edge."""

    def ramp(n: int) -> np.ndarray:
        r = feather * n
        if r < 1:
            return np.ones(n, np.float32)
        d = np.minimum(np.arange(n) + 0.5, n - 0.5 - np.arange(n)) / r  # distance to the edge
        t = np.clip(d, 0, 1)
        return (t * t * (3 - 2 * t)).astype(np.float32)

    return ramp(h)[:, None] * ramp(w)[None, :]


def render(src: Image.Image, p: Placement) -> np.ndarray:
    """The placed crop as an (out_h, out_w, 3) float32 patch (bilinear; antialiased when shrinking)."""
    patch = np.asarray(src.resize((p.out_w, p.out_h), Image.BILINEAR, box=tuple(float(v) for v in p.crop)),
                       np.float32)  # fmt: skip
    return patch[:, ::-1] if p.flip else patch


def paste(canvas: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> tuple | None:
    """Alpha-blend patch (h, w, 3) onto canvas (S, S, 3) float32 at top-left (x, y), cut at the
    border. Returns the canvas slices (ys, xs) and patch slices touched, or None if off-canvas."""
    S = canvas.shape[0]
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, S), min(y + h, S)
    if x1 <= x0 or y1 <= y0:
        return None
    cs = (slice(y0, y1), slice(x0, x1))
    ps = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    a = alpha[ps][..., None]
    canvas[cs] = canvas[cs] * (1 - a) + patch[ps] * a
    return cs, ps


def paste_instance(canvas: np.ndarray, src: np.ndarray | Image.Image, box, *, margin: float, side: float,
                   flip: bool, cx: float, cy: float, feather: float) -> np.ndarray:  # fmt: skip
    """Paste one instance onto a float32 (S, S, 3) canvas; return its box on the canvas, clipped."""
    im = src if isinstance(src, Image.Image) else Image.fromarray(np.asarray(src, np.uint8))
    p = place(box, im.width, im.height, margin=margin, side=side, flip=flip, cx=cx, cy=cy)
    paste(canvas, render(im, p), feather_mask(p.out_h, p.out_w, feather), p.x, p.y)
    S = canvas.shape[0]
    return clip_box(p.box, S, S)


# ---------------------------------------------------------------- sources


@dataclass
class _Sources:
    class_wnids: list[str]
    class_names: list[str]
    pools: list[list[tuple[Image.Image, np.ndarray, int]]]  # per class: (image, box, val index)
    backgrounds: list[Image.Image]
    source_sha256: str
    excluded_small: int


def _short_name(name: str) -> str:
    return name.split(",")[0].strip()


def instance_split(files: list[str], labels: np.ndarray, class_index: int) -> tuple[list[int], list[int]]:
    """Val indices of one class, partitioned 80/20 into (train-scene, val-scene) sources by a
    hash of the file name: fixed, independent of seeds and of which classes are used."""
    idx = np.flatnonzero(np.asarray(labels) == class_index).tolist()
    idx.sort(key=lambda i: hashlib.sha1(files[i].encode()).hexdigest())
    k = round(TRAIN_FRACTION * len(idx))
    return sorted(idx[:k]), sorted(idx[k:])


def resolve_classes(classes=None, data_root=None) -> list[str]:
    """Detection wnids: None -> DEFAULT_CLASSES; an int k -> DEFAULT_CLASSES then the other
    classes by the same box criterion (median val box area closest to 45% of the image; scene
    classes last), up to all 200; a sequence -> those wnids."""
    if classes is None:
        return list(DEFAULT_CLASSES)
    if isinstance(classes, (int, np.integer)):
        from rethink.data.cache import load_split

        val = load_split("tiny-imagenet", "val", SOURCE_SIZE, data_root, progress=False)
        k = int(classes)
        if not 1 <= k <= len(val.classes):
            raise ValueError(f"classes must be 1..{len(val.classes)}, got {k}")
        area = box_area(val.boxes) / SOURCE_SIZE**2
        med = {w: float(np.median(area[val.labels == c])) for c, w in enumerate(val.classes)}
        rest = sorted((w for w in val.classes if w not in DEFAULT_CLASSES),
                      key=lambda w: (w in BACKGROUND_CLASSES, abs(med[w] - 0.45), w))  # fmt: skip
        return (list(DEFAULT_CLASSES) + rest)[:k]
    out = [str(w) for w in classes]
    if len(set(out)) != len(out):
        raise ValueError("duplicate classes")
    return out


@lru_cache(maxsize=4)
def _load_sources(classes: tuple[str, ...], split: str, data_root: str | None) -> _Sources:
    from rethink.data.cache import load_split

    val = load_split("tiny-imagenet", "val", SOURCE_SIZE, data_root, progress=False)
    train = load_split("tiny-imagenet", "train", SOURCE_SIZE, data_root, progress=False)
    col = {w: i for i, w in enumerate(val.classes)}
    missing = [w for w in classes + BACKGROUND_CLASSES if w not in col]
    if missing:
        raise ValueError(f"not Tiny ImageNet wnids: {missing}")
    pools, excluded = [], 0
    for w in classes:
        part = instance_split(val.files, val.labels, col[w])[_SPLIT_CODE[split]]
        pool = []
        for i in part:
            box = val.boxes[i].astype(np.float64)
            if math.sqrt(box_area(box)) < MIN_SOURCE_SIDE:
                excluded += 1
                continue
            pool.append((Image.fromarray(np.ascontiguousarray(val.images[i].transpose(1, 2, 0))), box, i))
        if not pool:
            raise ValueError(f"class {w} has no usable {split} instances")
        pools.append(pool)
    bg_idx = np.flatnonzero(np.isin(train.labels, [col[w] for w in BACKGROUND_CLASSES]))
    bg_images = np.asarray(train.images[bg_idx]).transpose(0, 2, 3, 1)
    backgrounds = [Image.fromarray(np.ascontiguousarray(im)) for im in bg_images]
    names = [_short_name(val.class_names[col[w]]) for w in classes]
    return _Sources(list(classes), names, pools, backgrounds, val.meta.get("source_sha256", ""), excluded)


# ---------------------------------------------------------------- one scene


def poisson_rate(mean_instances: float, max_instances: int) -> float:
    """lam such that E[min(max_instances, 1 + Poisson(lam))] = mean_instances."""
    target = mean_instances - 1

    def capped_mean(lam: float) -> float:
        k = np.arange(max_instances)  # 1 + k < max_instances
        logp = -lam + k * math.log(max(lam, 1e-300)) - np.array([math.lgamma(i + 1) for i in k])
        p = np.exp(logp)
        return float((k * p).sum() + (max_instances - 1) * (1 - p.sum()))

    if not 0 <= target < max_instances - 1:
        raise ValueError(f"mean_instances must be in [1, max_instances), got {mean_instances}")
    lo, hi = 0.0, 10.0 * max_instances
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if capped_mean(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _scene_rng(seed: int, split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), _SPLIT_CODE[split], int(i), 0x5CE9E])


@dataclass
class _Params:
    image_size: int
    lam: float
    max_instances: int
    scale_range: tuple[float, float]
    feather: float
    clutter: int
    max_overlap: float
    margin: tuple[float, float]


def _render_scene(rng: np.random.Generator, src: _Sources, P: _Params):
    """One scene: (S, S, 3) uint8, boxes (k, 4) float32, labels (k,), source val indices, stats."""
    S = P.image_size
    # background: a random crop (60-100% of the side) of a scene image, bilinear to S, maybe flipped
    bg = src.backgrounds[rng.integers(len(src.backgrounds))]
    c = SOURCE_SIZE * rng.uniform(0.6, 1.0)
    bx, by = rng.uniform(0, SOURCE_SIZE - c, 2)
    canvas = np.asarray(bg.resize((S, S), Image.BILINEAR, box=(bx, by, bx + c, by + c)), np.float32)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]
    canvas = np.ascontiguousarray(canvas)

    n_inst = min(P.max_instances, 1 + int(rng.poisson(P.lam)))
    kinds = np.array([0] * n_inst + [1] * P.clutter)  # 0 instance, 1 clutter
    kinds = kinds[rng.permutation(len(kinds))]  # drawing order
    lo, hi = math.log(P.scale_range[0] * S), math.log(P.scale_range[1] * S)
    placed = []  # instances so far: [clipped box, canvas slices of the box, visible mask, full px, label, src]
    stats = {"rejected": 0, "dropped": 0}
    for kind in kinds:
        if kind == 0:
            cls = int(rng.integers(len(src.pools)))
            im, box, vidx = src.pools[cls][rng.integers(len(src.pools[cls]))]
        else:  # clutter: a random region of a background image, treated like an instance box
            cls, vidx = -1, -1
            im = src.backgrounds[rng.integers(len(src.backgrounds))]
            bw = SOURCE_SIZE * rng.uniform(0.3, 0.7)
            bh = float(np.clip(bw * math.exp(rng.uniform(-0.7, 0.7)), 8, SOURCE_SIZE * 0.8))
            x0, y0 = rng.uniform(0, SOURCE_SIZE - bw), rng.uniform(0, SOURCE_SIZE - bh)
            box = np.array([x0, y0, x0 + bw, y0 + bh])
        margin = rng.uniform(*P.margin)
        flip = bool(rng.random() < 0.5)
        for _ in range(PLACEMENT_TRIES):
            side = math.exp(rng.uniform(lo, hi))
            cx, cy = rng.uniform(0, S, 2)
            p = place(box, im.width, im.height, margin=margin, side=side, flip=flip, cx=cx, cy=cy)
            clipped = clip_box(p.box, S, S)
            full = box_area(p.box)
            if kind == 0 and box_area(clipped) < 0.5 * full:  # mostly off the canvas
                stats["rejected"] += 1
                continue
            alpha = feather_mask(p.out_h, p.out_w, P.feather)
            # occlusion of earlier instances by this patch's opaque part (alpha >= 0.5)
            ox0, oy0 = max(p.x, 0), max(p.y, 0)
            ox1, oy1 = min(p.x + p.out_w, S), min(p.y + p.out_h, S)
            new_vis, ok = [], True
            for q in placed:
                (ys, xs), vis = q[1], q[2]
                iy0, iy1, ix0, ix1 = max(ys.start, oy0), min(ys.stop, oy1), max(xs.start, ox0), min(xs.stop, ox1)
                if iy1 <= iy0 or ix1 <= ix0:
                    new_vis.append(None)
                    continue
                opaque = alpha[iy0 - p.y:iy1 - p.y, ix0 - p.x:ix1 - p.x] >= 0.5
                v = vis.copy()
                v[iy0 - ys.start:iy1 - ys.start, ix0 - xs.start:ix1 - xs.start] &= ~opaque
                if 1 - v.sum() / q[3] > P.max_overlap:
                    ok = False
                    break
                new_vis.append(v)
            if not ok:
                stats["rejected"] += 1
                continue
            for q, v in zip(placed, new_vis):
                if v is not None:
                    q[2] = v
            paste(canvas, render(im, p), alpha, p.x, p.y)
            if kind == 0:
                ys = slice(int(math.floor(clipped[1])), int(math.ceil(clipped[3])))
                xs = slice(int(math.floor(clipped[0])), int(math.ceil(clipped[2])))
                vis = np.ones((ys.stop - ys.start, xs.stop - xs.start), bool)
                placed.append([clipped, (ys, xs), vis, max(vis.size, 1), cls, vidx])
            break
        else:
            if kind == 0:
                stats["dropped"] += 1
    keep = [q for q in placed if box_area(q[0]) > 0]
    boxes = np.array([q[0] for q in keep], np.float32).reshape(-1, 4)
    labels = np.array([q[4] for q in keep], np.int64)
    occluded = [1 - q[2].sum() / q[3] for q in keep]
    stats["occluded"] = float(np.mean(occluded)) if occluded else 0.0
    img = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return img, boxes, labels, [q[5] for q in keep], stats


# ---------------------------------------------------------------- the set, cached


def _cache_files(cache_dir: Path, key: str, n: int) -> tuple[Path, Path]:
    stem = f"scenes_{key}_n{n}"
    return cache_dir / f"{stem}.images.npy", cache_dir / f"{stem}.json"


def _find_cached(cache_dir: Path, key: str) -> list[tuple[int, Path]]:
    """Complete cached sets of these parameters, (n, json path), largest first."""
    found = []
    for j in cache_dir.glob(f"scenes_{key}_n*.json"):
        try:
            found.append((int(j.name[len(f"scenes_{key}_n"):-len(".json")]), j))
        except ValueError:
            pass
    return sorted(found, reverse=True)


def _open_cached(json_path: Path, n: int) -> DetectionSet:
    info = json.loads(json_path.read_text())
    images = np.load(json_path.with_name(json_path.name[:-5] + ".images.npy"), mmap_mode="r")
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in info["boxes"][:n]]
    labels = [np.asarray(lab, np.int64) for lab in info["labels"][:n]]
    meta = dict(info["meta"])
    meta.update(n=n, cached_from=str(json_path), source_val_indices=meta["source_val_indices"][:n])
    return DetectionSet(images[:n], boxes, labels, info["class_names"], list(range(1, n + 1)), meta)


def generate_scenes(n: int, *, split: str, image_size: int = 160, classes=None, mean_instances: float = 4.0,
                    max_instances: int = 8, scale_range: tuple[float, float] = (0.15, 0.6), seed: int = 0,
                    feather: float = 0.15, clutter: int = 2, max_overlap: float = 0.5,
                    margin: tuple[float, float] = (0.2, 0.35), data_root=None, progress=None,
                    cache: bool = True, cache_dir: str | os.PathLike | None = None) -> DetectionSet:  # fmt: skip
    """`n` scenes of `image_size` px composed from Tiny ImageNet instances (see the module doc).

    split: "train" (80% of each class's val images as instance sources) or "val" (the other 20%).
    classes: None (DEFAULT_CLASSES), an int k (see resolve_classes) or a list of wnids.
    mean_instances / max_instances: instances per scene are min(max, 1 + Poisson(lam)) with lam
    set so the mean is mean_instances (placements that fail PLACEMENT_TRIES times are dropped).
    scale_range: an object's geometric-mean side as a fraction of the canvas, log-uniform.
    feather: alpha ramp width as a fraction of each pasted patch's side. clutter: feathered
    background patches per scene. max_overlap: largest fraction of an instance's box that later
    pastes may cover. margin: context around the box in the crop, as a fraction of its size.
    Scene i depends only on (seed, split, i) and the parameters, so sets are prefix-stable;
    sets are cached under cache_dir (default cache_root()/detection) and a cached larger set
    serves a smaller n. progress: True/False for a tqdm bar (default: when n >= 5000).
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    wnids = resolve_classes(classes, data_root)
    if max_instances < 1 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError("need max_instances >= 1 and 0 < scale_range[0] <= scale_range[1]")
    params = {"version": GENERATOR_VERSION, "split": split, "image_size": int(image_size), "classes": wnids,
              "mean_instances": float(mean_instances), "max_instances": int(max_instances),
              "scale_range": [float(v) for v in scale_range], "seed": int(seed), "feather": float(feather),
              "clutter": int(clutter), "max_overlap": float(max_overlap), "margin": [float(v) for v in margin],
              "background_classes": list(BACKGROUND_CLASSES), "train_fraction": TRAIN_FRACTION,
              "min_source_side": MIN_SOURCE_SIDE}  # fmt: skip
    src = _load_sources(tuple(wnids), split, str(data_root) if data_root else None)
    params["source_sha256"] = src.source_sha256
    key = config_key(params)
    cdir = Path(cache_dir) if cache_dir else paths.cache_root() / "detection"

    start, prefix = 0, None
    if cache and cdir.is_dir():
        found = _find_cached(cdir, key)
        for m, j in found:
            if m >= n:
                return _open_cached(j, n)
        if found:  # extend the largest smaller set (prefix stability)
            prefix = _open_cached(found[0][1], found[0][0])
            start = len(prefix)

    P = _Params(int(image_size), poisson_rate(mean_instances, max_instances), int(max_instances),
                (float(scale_range[0]), float(scale_range[1])), float(feather), int(clutter),
                float(max_overlap), (float(margin[0]), float(margin[1])))  # fmt: skip
    S = int(image_size)
    img_path, json_path = _cache_files(cdir, key, n)
    if cache:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp_img = img_path.with_name(f".{img_path.name}.{os.getpid()}.tmp")
        images = np.lib.format.open_memmap(tmp_img, "w+", np.uint8, (n, 3, S, S))
    else:
        images = np.empty((n, 3, S, S), np.uint8)
    boxes, labels, sources = [], [], []
    totals = {"rejected": 0, "dropped": 0, "occluded": 0.0}
    if prefix is not None:
        images[:start] = prefix.images
        boxes, labels = list(prefix.boxes), list(prefix.labels)
        sources = list(prefix.meta.get("source_val_indices", [[]] * start))
    t0 = time.perf_counter()
    show = progress if progress is not None else (n - start >= 5000)
    bar = None
    if show:
        from tqdm import tqdm

        from ..files import progress_off

        bar = tqdm(total=n - start, desc=f"composing {split} scenes at {S}px", unit="scene", disable=progress_off())
    try:
        for i in range(start, n):
            img, b, lab, used, st = _render_scene(_scene_rng(seed, split, i), src, P)
            images[i] = img.transpose(2, 0, 1)
            boxes.append(b)
            labels.append(lab)
            sources.append(used)
            for k in totals:
                totals[k] += st[k]
            if bar:
                bar.update()
    except BaseException:
        if cache:
            del images
            tmp_img.unlink(missing_ok=True)
        raise
    finally:
        if bar:
            bar.close()
    seconds = time.perf_counter() - t0
    made = max(n - start, 1)
    counts = np.array([len(b) for b in boxes]) if boxes else np.zeros(0)
    meta = {
        "kind": "tiny-imagenet scenes",
        "params": params,
        "n": n,
        "poisson_rate": P.lam,
        "class_wnids": wnids,
        "source_instances": {"per_class": [len(p) for p in src.pools], "excluded_small": src.excluded_small},
        "background_images": len(src.backgrounds),
        "background_also_detection": sorted(set(wnids) & set(BACKGROUND_CLASSES)),
        "stats": {
            "instances_per_image": float(counts.mean()) if len(counts) else 0.0,
            "generated": n - start,
            "seconds": seconds,
            "scenes_per_second": (n - start) / seconds if seconds > 0 else None,
            "placements_rejected_per_scene": totals["rejected"] / made,
            "instances_dropped_per_scene": totals["dropped"] / made,
            "mean_occluded_fraction": totals["occluded"] / made,
        },
        "source_val_indices": sources,
    }
    if cache:
        images.flush()
        del images
        os.replace(tmp_img, img_path)
        doc = {"class_names": src.class_names, "meta": meta,
               "boxes": [b.tolist() for b in boxes], "labels": [lab.tolist() for lab in labels]}  # fmt: skip
        atomic_write_text(json_path, json.dumps(doc))
        return _open_cached(json_path, n)
    return DetectionSet(images, boxes, labels, list(src.class_names), list(range(1, n + 1)), meta)


# ---------------------------------------------------------------- statistics


def scene_statistics(ds: DetectionSet) -> dict:
    """Instances per image, object sizes in COCO's small/medium/large terms (absolute: 32², 96²
    px; and scaled to the canvas: x (S/640)²), per-class counts. Areas are box areas (COCO's
    own size split uses segment areas, a little smaller)."""
    counts = np.array([len(b) for b in ds.boxes], np.int64)
    allb = np.concatenate([np.asarray(b, np.float64).reshape(-1, 4) for b in ds.boxes]) if len(ds) else np.zeros((0, 4))
    area = box_area(allb)
    S = ds.image_size

    def split(t_small: float, t_large: float) -> dict:
        n = max(len(area), 1)
        return {"small": float((area < t_small).sum() / n),
                "medium": float(((area >= t_small) & (area < t_large)).sum() / n),
                "large": float((area >= t_large).sum() / n), "thresholds": [t_small, t_large]}  # fmt: skip

    f = (S / COCO_REFERENCE["long_side"]) ** 2
    labs = np.concatenate([np.asarray(lab).reshape(-1) for lab in ds.labels]) if len(ds) else np.zeros(0, int)
    per_class = np.bincount(labs.astype(np.int64), minlength=ds.num_classes)
    return {
        "images": len(ds),
        "instances": int(counts.sum()),
        "image_size": S,
        "instances_per_image": {
            "mean": float(counts.mean()) if len(counts) else 0.0,
            "median": float(np.median(counts)) if len(counts) else 0.0,
            "histogram": np.bincount(counts).tolist() if len(counts) else [],
        },
        "sizes_absolute": split(32.0**2, 96.0**2),
        "sizes_scaled": split(32.0**2 * f, 96.0**2 * f),
        "box_side_fraction": {  # geometric-mean side / canvas side
            "median": float(np.median(np.sqrt(area)) / S) if len(area) else 0.0,
            "p10": float(np.percentile(np.sqrt(area), 10) / S) if len(area) else 0.0,
            "p90": float(np.percentile(np.sqrt(area), 90) / S) if len(area) else 0.0,
        },
        "per_class": {name: int(c) for name, c in zip(ds.class_names, per_class)},
        "coco_reference": dict(COCO_REFERENCE),
    }
