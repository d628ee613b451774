"""Decode a dataset split once into uint8 arrays; memory-map them afterwards.

``load_split(name, split, image_size)`` returns a ``Split`` whose images are an
(N, 3, S, S) uint8 array memory-mapped from ``cache_root()/arrays/``. The
first call decodes every image with PIL (in a process pool, with a progress
bar); the cache key holds the dataset, split, size and the archive's SHA-256,
so a new archive never reuses stale arrays.

Resizing: images are converted to RGB. A square image is resized to S x S
with PIL's bicubic filter (antialiased when downscaling). A non-square image
has its short side resized to S, then the centre S x S is cropped; boxes get
the same scale and shift, clipped to the crop. Images already S x S are kept
as they are.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rethink import paths
from rethink.data.archives import DataError, ensure_extracted, extraction_info
from rethink.data.registry import CIFAR_PICKLE, IMAGE_FOLDERS, TINY_IMAGENET, DatasetSpec, get_spec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1  # bump when the decoding changes


class CorruptImageError(DataError):
    """An image file could not be read or decoded."""


@dataclass
class Split:
    images: np.ndarray  # (N, 3, S, S) uint8, memory-mapped, read-only
    labels: np.ndarray  # (N,) int64, index into `classes`
    classes: list[str]  # class ids in label order (wnids, folder names)
    boxes: np.ndarray | None  # (N, 4) float32 x0 y0 x1 y1 in pixels of the cached size, or None
    files: list[str]  # image paths relative to the dataset folder
    meta: dict  # dataset, split, image_size, source_sha256, ...
    class_names: list[str] = field(default_factory=list)  # human-readable, parallel to `classes`

    def __len__(self) -> int:
        return len(self.labels)


# ---------------------------------------------------------------- indexing each layout


@dataclass
class _Index:
    files: list[str]
    labels: list[int]
    classes: list[str]
    class_names: list[str]
    boxes: list[list[float]] | None = None


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _index_tiny_imagenet(root: Path, split: str) -> _Index:
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()})
    words = dict(line.split("\t", 1) for line in (root / "words.txt").read_text().splitlines() if "\t" in line)
    index = _Index([], [], wnids, [words.get(w, w).strip() for w in wnids], [])
    label_of = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        for wnid in wnids:
            boxes = {}
            for line in (root / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines():
                if line.strip():
                    name, *xyxy = line.split()
                    boxes[name] = [float(v) for v in xyxy]
            for name in sorted(os.listdir(root / "train" / wnid / "images"), key=_natural_key):
                if name not in boxes:
                    raise DataError(f"no box for {root / 'train' / wnid / 'images' / name} in {wnid}_boxes.txt")
                index.files.append(f"train/{wnid}/images/{name}")
                index.labels.append(label_of[wnid])
                index.boxes.append(boxes[name])
    else:
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            if line.strip():
                name, wnid, *xyxy = line.split()
                index.files.append(f"val/images/{name}")
                index.labels.append(label_of[wnid])
                index.boxes.append([float(v) for v in xyxy[:4]])
    return index


def _index_image_folders(root: Path, split: str, spec: DatasetSpec) -> _Index:
    split_dir = root / split
    found = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = list(spec.classes) if spec.classes else found
    if sorted(classes) != found:
        raise DataError(f"{split_dir} has class folders {found}, expected {sorted(classes)}")
    names = list(spec.class_names) if spec.class_names else classes
    index = _Index([], [], classes, names)
    for label, cls in enumerate(classes):
        for name in sorted(os.listdir(split_dir / cls), key=_natural_key):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                index.files.append(f"{split}/{cls}/{name}")
                index.labels.append(label)
    return index


# ---------------------------------------------------------------- decoding


def _square_geometry(w: int, h: int, size: int) -> tuple[int, int, int, int]:
    """Resized width, height and crop offsets (left, top) for a size x size centre crop."""
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    return nw, nh, (nw - size) // 2, (nh - size) // 2


def to_square(im: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size` (bicubic), then centre-crop to size x size."""
    if im.size == (size, size):
        return im
    nw, nh, left, top = _square_geometry(*im.size, size)
    im = im.resize((nw, nh), Image.BICUBIC)
    return im.crop((left, top, left + size, top + size))


def _decode(task: tuple[str, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image file to (3, size, size) uint8; also return its original (w, h)."""
    path, size = task
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises many kinds on bad files
        raise CorruptImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return np.asarray(to_square(rgb, size)).transpose(2, 0, 1), rgb.size


def _scale_boxes(boxes: np.ndarray, sizes: np.ndarray, size: int) -> np.ndarray:
    """Map boxes from original pixels to the cached image (same resize + crop as to_square)."""
    out = np.empty_like(boxes)
    for i, ((w, h), box) in enumerate(zip(sizes, boxes)):
        nw, nh, left, top = _square_geometry(int(w), int(h), size)
        sx, sy = nw / w, nh / h
        out[i] = box * [sx, sy, sx, sy] - [left, top, left, top]
    return np.clip(out, 0, size).astype(np.float32)


def _pool(workers: int):
    """A process pool; forked on Linux so scripts need no `if __name__ == "__main__"` guard
    (workers only run PIL and numpy)."""
    ctx = mp.get_context("fork") if sys.platform == "linux" else mp.get_context()
    return ctx.Pool(workers)


def _default_workers() -> int:
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)


def _decode_files(root: Path, files: list[str], size: int, out: np.ndarray, desc: str,
                  progress: bool, workers: int) -> np.ndarray:  # fmt: skip
    """Decode `files` into `out` (N, 3, size, size); returns original sizes (N, 2)."""
    tasks = [(str(root / f), size) for f in files]
    sizes = np.zeros((len(files), 2), np.int64)
    bar = tqdm(total=len(files), desc=desc, unit="img", disable=not progress)
    pool = _pool(workers) if workers > 1 and len(files) > 1 else None
    try:
        results = pool.imap(_decode, tasks, chunksize=64) if pool else map(_decode, tasks)
        for i, (img, wh) in enumerate(results):
            out[i], sizes[i] = img, wh
            bar.update()
    finally:
        bar.close()
        if pool:
            pool.terminate()
    return sizes


def _cifar_batches(root: Path, split: str, spec: DatasetSpec) -> tuple[np.ndarray, list[int], list[str]]:
    """Images (N, 3, 32, 32), labels and file names from CIFAR's pickled batches.

    Only ever called on a digest-verified archive (pickle runs code from the file)."""
    meta = pickle.loads((root / "batches.meta").read_bytes(), encoding="bytes")
    names = [n.decode() for n in meta[b"label_names"]]
    if spec.classes and names != list(spec.classes):
        raise DataError(f"{root / 'batches.meta'} lists classes {names}, expected {list(spec.classes)}")
    batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels, files = [], [], []
    for b in batches:
        d = pickle.loads((root / b).read_bytes(), encoding="bytes")
        images.append(np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32))
        labels += [int(v) for v in d[b"labels"]]
        files += [f"{b}/{n.decode()}" for n in d[b"filenames"]]
    return np.concatenate(images), labels, files


# ---------------------------------------------------------------- cache files


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _cache_paths(key: str) -> dict[str, Path]:
    d = paths.cache_root() / "arrays"
    return {k: d / f"{key}.{k}.npy" for k in ("images", "labels", "boxes")} | {"meta": d / f"{key}.json"}


def _open(p: dict[str, Path]) -> Split:
    info = json.loads(p["meta"].read_text())
    return Split(
        images=np.load(p["images"], mmap_mode="r"),
        labels=np.load(p["labels"]).astype(np.int64),
        classes=info.pop("classes"),
        boxes=np.load(p["boxes"]) if p["boxes"].exists() else None,
        files=info.pop("files"),
        class_names=info.pop("class_names"),
        meta=info,
    )


def load_split(name: str, split: str, image_size: int | None = None, data_root: str | os.PathLike | None = None,
               progress: bool = True, workers: int | None = None) -> Split:  # fmt: skip
    """Images, labels (and boxes) of one split, decoded once then memory-mapped.

    image_size: side of the square cached images (default: the dataset's
    `default_image_size`, 64 for Tiny ImageNet, 32 for CIFAR-10).
    workers: decoding processes (default: available cores, at most 8).
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"{name!r} has splits {spec.splits}, not {split!r}")
    size = int(image_size or spec.default_image_size)
    root = ensure_extracted(name, data_root, progress)
    info = extraction_info(root)
    key = f"{name}_{split}_{size}px_{info['sha256'][:16]}_v{CACHE_VERSION}"
    p = _cache_paths(key)
    if p["meta"].is_file():  # written last: the arrays are complete
        return _open(p)

    p["meta"].parent.mkdir(parents=True, exist_ok=True)
    workers = workers or _default_workers()
    desc = f"decoding {name}/{split} at {size}px"
    tmp_images = p["images"].with_name(f".{p['images'].name}.{os.getpid()}.tmp")
    boxes = None
    try:
        if info["layout"] == CIFAR_PICKLE:
            raw, labels, files = _cifar_batches(root, split, spec)
            classes, class_names = list(spec.classes or []), list(spec.class_names or spec.classes or [])
            images = np.lib.format.open_memmap(tmp_images, "w+", np.uint8, (len(raw), 3, size, size))
            if size == 32:
                images[:] = raw
            else:
                for i in tqdm(range(len(raw)), desc=desc, disable=not progress):
                    im = Image.fromarray(raw[i].transpose(1, 2, 0))
                    images[i] = np.asarray(to_square(im, size)).transpose(2, 0, 1)
        elif info["layout"] in (TINY_IMAGENET, IMAGE_FOLDERS):
            if info["layout"] == TINY_IMAGENET:
                index = _index_tiny_imagenet(root, split)
            else:
                index = _index_image_folders(root, split, spec)
            files, labels, classes, class_names = index.files, index.labels, index.classes, index.class_names
            images = np.lib.format.open_memmap(tmp_images, "w+", np.uint8, (len(files), 3, size, size))
            sizes = _decode_files(root, files, size, images, desc, progress, workers)
            if index.boxes is not None:
                boxes = _scale_boxes(np.asarray(index.boxes, np.float32).reshape(-1, 4), sizes, size)
        else:
            raise DataError(f"{name!r} ({info['layout']} layout) has no load_split; use ensure_extracted({name!r})")
        images.flush()
        del images
        os.replace(tmp_images, p["images"])
    finally:
        tmp_images.unlink(missing_ok=True)

    save_npy(p["labels"], np.asarray(labels, np.int64))
    if boxes is not None:
        save_npy(p["boxes"], boxes)
    meta = {"dataset": name, "split": split, "image_size": size, "count": len(labels),
            "source_sha256": info["sha256"], "source": info["source"], "archive": info["archive"],
            "classes": classes, "class_names": class_names, "files": files}  # fmt: skip
    tmp = p["meta"].with_name(f".{p['meta'].name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, p["meta"])
    return _open(p)


def subset_per_class(split: Split | np.ndarray, n_per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n_per_class` random examples of each class (all of a class
    with fewer). Deterministic for a given seed and label array."""
    labels = np.asarray(split.labels if isinstance(split, Split) else split)
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(idx, size=min(n_per_class, len(idx)), replace=False)
        for idx in (np.flatnonzero(labels == c) for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
