"""Decode a dataset split into uint8 arrays, each row the first time it is used; memory-map them.

``load_split(name, split, image_size)`` returns a ``Split`` whose images are an
(N, 3, S, S) uint8 array cached under ``cache_root()/arrays/``; the cache key holds
the dataset, split, size and the archive's SHA-256, so a new archive never reuses
stale arrays.

Decoding only the rows a run uses
---------------------------------
``load_split`` only *indexes* the split (file names, labels, boxes: seconds) and
creates the cache entry at full size, sparse, so no disk is used until rows are
written. A row is decoded the first time it is read -- ``split.images[idx]``,
``np.asarray(split.images)``, a ``GPULoader`` over the split -- written into the
entry, and marked in a one-byte-per-row ``filled`` file; decoding many rows at once
uses a process pool and a progress bar. A smoke run that reads 400 of Tiny
ImageNet's 80,000 training images decodes those 400. A full run reads every row,
so it decodes each image once, as before; once every row is filled, ``load_split``
returns plain read-only memory maps (``np.memmap``), exactly as a one-off full
decode did, and a run killed half-way keeps the rows it decoded.

Why this and not ``load_split(..., rows=indices)`` returning only those rows: the
call sites choose rows from the split's labels (``subset_per_class``) and index the
split again later (loaders, pools, examples), so they would all have to change and
two runs would decode the same rows twice; the lazily filled cache changes no
call site and never decodes a row twice.

Entry files, ``<key>.<part>``: ``images.npy`` (rows), ``boxes.npy`` (boxes in cached
pixels, filled with the rows) and ``srcboxes.npy`` (boxes in original pixels), for
datasets with boxes; ``labels.npy``; ``filled`` (absent in an entry written by a full
decode: complete); ``json`` (the index, written last: the entry exists); ``lock`` (held
while building the entry or filling rows, so processes never decode a row twice).
Rows are written with ``pwrite``, never through the memory map: a full disk is an
error naming the folder (``DiskFullError``), not a Bus error, and each fill first
checks the free space it needs. An entry whose files disagree with their headers
(e.g. truncated) is reported and rebuilt. The rows a process has filled are only in
the page cache until the kernel writes them: a power cut (not a killed process) can
leave filled rows unwritten; delete ``arrays/<key>.*`` then.

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
from typing import Callable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from rethink import paths
from rethink.data.archives import (IMAGE_EXTENSIONS, CorruptImageError, DataError, ensure_extracted,
                                   extraction_info)
from rethink.data.registry import CIFAR_PICKLE, IMAGE_FOLDERS, TINY_IMAGENET, DatasetSpec, get_spec
from rethink.files import atomic_write, check_free_space, progress_off, disk_full_error, exclusive, is_disk_full, remove_stale_temps

CACHE_VERSION = 1  # bump when the decoding changes (not the file layout: entries of v1 full decodes still open)
CHUNK_ROWS = 512  # rows decoded between two writes of the cache
POOL_MIN_ROWS = 256  # fewer rows than this are decoded in-process
__all__ = ["CorruptImageError", "LazyRows", "Split", "load_split", "subset_per_class", "to_square", "save_npy"]


@dataclass
class Split:
    images: np.ndarray | "LazyRows"  # (N, 3, S, S) uint8, read-only: memory-mapped, or decoded on first read
    labels: np.ndarray  # (N,) int64, index into `classes`
    classes: list[str]  # class ids in label order (wnids, folder names)
    boxes: np.ndarray | "LazyRows" | None  # (N, 4) float32 x0 y0 x1 y1 in cached pixels, or None
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


def _decode_rows(root: Path, files: list[str], rows: np.ndarray, size: int, workers: int,
                 bar: tqdm) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Decode files[rows] in order; yields (image (3, size, size), original (w, h)) per row."""
    tasks = [(str(root / files[i]), size) for i in rows]
    pool = _pool(workers) if workers > 1 and len(tasks) >= POOL_MIN_ROWS else None
    try:
        for img, wh in pool.imap(_decode, tasks, chunksize=64) if pool else map(_decode, tasks):
            bar.update()
            yield img, np.asarray(wh)
    finally:
        if pool:
            pool.terminate()


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


# ---------------------------------------------------------------- decoders: rows -> images (and boxes)


class _FileDecoder:
    """Rows of a split stored as image files (Tiny ImageNet, image folders)."""

    def __init__(self, root: Path, files: list[str], size: int, src_boxes: np.ndarray | None, workers: int):
        self.root, self.files, self.size, self.src_boxes, self.workers = root, files, size, src_boxes, workers

    def __call__(self, rows: np.ndarray, bar: tqdm) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(image, original (w, h)) of each row, in order; _Rows scales the boxes."""
        return _decode_rows(self.root, self.files, rows, self.size, self.workers, bar)


class _PickleDecoder:
    """Rows of CIFAR's pickled batches, resized when the cached size is not 32."""

    def __init__(self, root: Path, split: str, spec: DatasetSpec, size: int):
        self.root, self.split, self.spec, self.size = root, split, spec, size
        self.src_boxes = None
        self._raw: np.ndarray | None = None

    def __call__(self, rows: np.ndarray, bar: tqdm) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._raw is None:
            self._raw = _cifar_batches(self.root, self.split, self.spec)[0]
        for i in rows:
            raw = self._raw[i]
            if self.size != 32:
                raw = np.asarray(to_square(Image.fromarray(raw.transpose(1, 2, 0)), self.size)).transpose(2, 0, 1)
            bar.update()
            yield raw, np.array([32, 32])


# ---------------------------------------------------------------- cache entries


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically (a temporary file renamed into place)."""
    atomic_write(path, lambda f: np.save(f, array))


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a .npy file's header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return shape, dtype, f.tell()


def _create_sparse_npy(path: Path, shape: tuple[int, ...], dtype) -> None:
    """A .npy file of `shape` whose data is a hole (zeros) until rows are written."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    def write(f):
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    atomic_write(path, write)


class _Entry:
    """The files of one cache entry (see the module doc)."""

    PARTS = ("images.npy", "boxes.npy", "srcboxes.npy", "labels.npy", "filled", "json")

    def __init__(self, key: str):
        self.dir = paths.cache_root() / "arrays"
        self.key = key
        self.p = {part.split(".")[0] if part != "json" else "meta": self.dir / f"{key}.{part}" for part in self.PARTS}
        self.lock = self.dir / f"{key}.lock"

    def meta(self) -> dict:
        return json.loads(self.p["meta"].read_text())

    def has_boxes(self, meta: dict) -> bool:
        return bool(meta.get("boxes", self.p["boxes"].exists()))  # entries of v1 say nothing

    def problem(self) -> str | None:
        """None if the entry is usable, 'missing' if absent, else what is wrong with it."""
        if not self.p["meta"].is_file():
            return "missing"
        try:
            meta = self.meta()
            n, size = int(meta["count"]), int(meta["image_size"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            return f"{self.p['meta'].name} is unreadable ({type(e).__name__})"
        expected = {"images": ((n, 3, size, size), np.uint8), "labels": ((n,), np.int64)}
        if self.has_boxes(meta):
            expected["boxes"] = ((n, 4), np.float32)
        for part, (shape, dtype) in expected.items():
            if why := _npy_problem(self.p[part], shape, dtype):
                return why
        filled = self.p["filled"]
        if filled.exists() and filled.stat().st_size != n:
            return f"{filled.name} has {filled.stat().st_size} bytes for {n} rows"
        if filled.exists() and self.has_boxes(meta) and not self.p["srcboxes"].exists():
            return f"{self.p['srcboxes'].name} is missing (rows still to decode need it)"
        return None

    def remove(self) -> None:
        for p in self.p.values():
            p.unlink(missing_ok=True)


def _npy_problem(path: Path, shape: tuple[int, ...], dtype) -> str | None:
    """What is wrong with a .npy file expected to hold `shape` of `dtype`, or None."""
    try:
        got_shape, got_dtype, offset = _npy_header(path)
        actual = path.stat().st_size
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError) as e:
        return f"{path.name} has no valid header ({type(e).__name__})"
    if tuple(got_shape) != tuple(shape) or got_dtype != np.dtype(dtype):
        return f"{path.name} holds {got_dtype}{list(got_shape)}, expected {np.dtype(dtype)}{list(shape)}"
    needed = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if actual != needed:
        return f"{path.name} has {actual:,} bytes, its header says {needed:,}"
    return None


# ---------------------------------------------------------------- rows decoded on first read


class _Rows:
    """Fills the rows of one entry on demand: decodes them, writes images (and boxes), marks them."""

    def __init__(self, entry: _Entry, meta: dict, decoder: Callable, progress: bool):
        self.entry, self.decoder, self.progress = entry, decoder, progress
        self.n, self.size = int(meta["count"]), int(meta["image_size"])
        self.what = f"{meta['dataset']}/{meta['split']} at {self.size}px"
        self.images = np.load(entry.p["images"], mmap_mode="r")
        self.boxes = np.load(entry.p["boxes"], mmap_mode="r") if entry.has_boxes(meta) else None
        self.filled = self._read_filled()

    def _read_filled(self) -> np.ndarray:
        try:
            return np.fromfile(self.entry.p["filled"], np.uint8).astype(bool)
        except FileNotFoundError:  # a complete entry (written by a full decode)
            return np.ones(self.n, bool)

    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    def ensure(self, rows: np.ndarray) -> None:
        """Decode whichever of `rows` are not in the cache yet."""
        rows = np.asarray(rows, np.int64).ravel()
        if rows.size and not self.filled[rows].all():
            waiting = f"another process (pid {{pid}}) is decoding {self.what}; waiting for it"
            with exclusive(self.entry.lock, waiting):
                self.filled = self._read_filled()
                missing = np.unique(rows[~self.filled[rows]])
                if missing.size:
                    self._fill(missing)

    def _row_bytes(self) -> int:
        return self.images[0].nbytes + (self.boxes[0].nbytes if self.boxes is not None else 0)

    def _fill(self, rows: np.ndarray) -> None:
        folder = self.entry.dir
        check_free_space(folder, rows.size * self._row_bytes(), f"the decoded images of {self.what}")
        bar = tqdm(total=rows.size, desc=f"decoding {self.what}", unit="img",
                   disable=not self.progress or rows.size < POOL_MIN_ROWS or progress_off())
        try:
            for chunk, images, boxes in self._decode_chunks(rows, bar):
                self._write(chunk, images, boxes)
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(folder, f"the decoded images of {self.what} "
                                              f"({self.entry.p['images'].name})") from None
            raise
        finally:
            bar.close()

    def _decode_chunks(self, rows: np.ndarray, bar: tqdm):
        """(rows, images, boxes) in chunks of CHUNK_ROWS rows, decoded in order."""
        src = self.decoder.src_boxes
        images, sizes, start = [], [], 0

        def chunk():
            done = rows[start:start + len(images)]
            boxes = None if src is None else _scale_boxes(src[done], np.stack(sizes), self.size)
            return done, np.stack(images), boxes

        try:
            for img, wh in self.decoder(rows, bar):
                images.append(img)
                sizes.append(wh)
                if len(images) == CHUNK_ROWS or start + len(images) == rows.size:
                    yield chunk()
                    start += len(images)
                    images, sizes = [], []
        except Exception:  # a bad image: keep the rows decoded before it
            if images:
                yield chunk()
            raise

    def _write(self, rows: np.ndarray, images: np.ndarray, boxes: np.ndarray | None) -> None:
        """pwrite the rows (runs of consecutive rows at once), then mark them filled."""
        runs = np.split(np.arange(rows.size), np.flatnonzero(np.diff(rows) != 1) + 1)
        targets = [(self.entry.p["images"], images, self.images)]
        if boxes is not None:
            targets.append((self.entry.p["boxes"], boxes, self.boxes))
        for path, data, mapped in targets:
            offset, row_bytes = mapped.offset, mapped[0].nbytes
            fd = os.open(path, os.O_WRONLY)
            try:
                for run in runs:
                    os.pwrite(fd, np.ascontiguousarray(data[run]).tobytes(), offset + int(rows[run[0]]) * row_bytes)
            finally:
                os.close(fd)
        fd = os.open(self.entry.p["filled"], os.O_WRONLY)
        try:
            for run in runs:
                os.pwrite(fd, b"\x01" * len(run), int(rows[run[0]]))
        finally:
            os.close(fd)
        self.filled[rows] = True


class LazyRows(np.lib.mixins.NDArrayOperatorsMixin):
    """A read-only array (N, ...) of a cache entry whose rows are decoded the first time
    they are read. Index it like a numpy array (``a[i]``, ``a[idx]``, ``a[mask]``,
    ``a[:, 0]``): only those rows are decoded. Anything else -- ``np.asarray(a)``,
    ``a >= 0``, ``a.mean()``, ``a.astype(...)`` -- decodes every row first, then acts on
    the whole array. What it returns is a read-only memory map or a copy, as with the
    memory-mapped array of a complete cache."""

    def __init__(self, rows: _Rows, part: str):
        self._rows, self._part = rows, part

    @property
    def _array(self) -> np.memmap:
        return getattr(self._rows, self._part)

    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    nbytes = property(lambda self: self._array.nbytes)

    def __len__(self) -> int:
        return len(self._array)

    def _rows_of(self, key) -> np.ndarray:
        first = key[0] if isinstance(key, tuple) and key else key
        if first is Ellipsis or (isinstance(key, tuple) and not key):
            return np.arange(len(self))
        return np.atleast_1d(np.arange(len(self))[first])

    def __getitem__(self, key):
        self._rows.ensure(self._rows_of(key))
        return self._array[key]

    def __array__(self, dtype=None, copy=None):
        self._rows.ensure(np.arange(len(self)))
        return np.array(self._array, dtype=dtype, copy=True) if copy else np.asarray(self._array, dtype=dtype)

    def __iter__(self):
        return iter(self[:])

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, LazyRows) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getattr__(self, name: str):  # ndarray methods and attributes, on the whole array
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(np.asarray(self), name)

    def __repr__(self) -> str:
        done = int(self._rows.filled.sum())
        return f"LazyRows({self._rows.what} {self._part}, shape={self.shape}, {done}/{len(self)} rows decoded)"


# ---------------------------------------------------------------- load_split


def _index(root: Path, info: dict, split: str, spec: DatasetSpec) -> _Index:
    if info["layout"] == TINY_IMAGENET:
        return _index_tiny_imagenet(root, split)
    if info["layout"] == IMAGE_FOLDERS:
        return _index_image_folders(root, split, spec)
    if info["layout"] == CIFAR_PICKLE:
        _, labels, files = _cifar_batches(root, split, spec)
        classes = list(spec.classes or [])
        return _Index(files, labels, classes, list(spec.class_names or classes))
    raise DataError(f"{spec.name!r} ({info['layout']} layout) has no load_split; use ensure_extracted({spec.name!r})")


def _build(entry: _Entry, spec: DatasetSpec, split: str, size: int, root: Path, info: dict) -> None:
    """Index the split and create the entry's files, rows unfilled (the index is written last)."""
    index = _index(root, info, split, spec)
    n = len(index.files)
    entry.dir.mkdir(parents=True, exist_ok=True)
    entry.remove()
    _create_sparse_npy(entry.p["images"], (n, 3, size, size), np.uint8)
    if index.boxes is not None:
        _create_sparse_npy(entry.p["boxes"], (n, 4), np.float32)
        save_npy(entry.p["srcboxes"], np.asarray(index.boxes, np.float32).reshape(-1, 4))
    save_npy(entry.p["labels"], np.asarray(index.labels, np.int64))
    _write_bytes(entry.p["filled"], bytes(n))
    meta = {"dataset": spec.name, "split": split, "image_size": size, "count": n,
            "source_sha256": info["sha256"], "source": info["source"], "archive": info["archive"],
            "classes": index.classes, "class_names": index.class_names, "files": index.files,
            "boxes": index.boxes is not None}  # fmt: skip
    _write_bytes(entry.p["meta"], json.dumps(meta).encode())


def _ensure_entry(entry: _Entry, spec: DatasetSpec, split: str, size: int, root: Path, info: dict) -> None:
    """Make sure the entry exists and is consistent: build it, or rebuild a corrupt one."""
    if entry.problem() is None:
        return
    waiting = (f"another process (pid {{pid}}) is building the decoded-array cache of {spec.name}/{split}; "
               f"waiting for it")
    with exclusive(entry.lock, waiting):
        problem = entry.problem()
        if problem is None:
            return
        if problem != "missing":
            print(f"warning: decoded-array cache {entry.dir / entry.key}.* is corrupt ({problem}): "
                  f"rebuilding it", file=sys.stderr, flush=True)
        _build(entry, spec, split, size, root, info)


def _decoder(entry: _Entry, meta: dict, spec: DatasetSpec, split: str, root: Path, info: dict, workers: int):
    size = int(meta["image_size"])
    if info["layout"] == CIFAR_PICKLE:
        return _PickleDecoder(root, split, spec, size)
    # an entry written completely by an older version has no source boxes, and needs none:
    # every row is decoded (its decoder is then never called); an incomplete one is rebuilt
    has_src = entry.has_boxes(meta) and entry.p["srcboxes"].exists()
    src = np.load(entry.p["srcboxes"]) if has_src else None
    return _FileDecoder(root, meta["files"], size, src, workers)


def _open(entry: _Entry, decoder: Callable[[], Callable], progress: bool) -> Split:
    info = entry.meta()
    rows = _Rows(entry, info, decoder(info), progress)
    labels = np.load(entry.p["labels"]).astype(np.int64)
    if rows.complete:  # every row decoded: plain memory maps, as a full decode always gave
        images, boxes = rows.images, rows.boxes
    else:
        images = LazyRows(rows, "images")
        boxes = LazyRows(rows, "boxes") if rows.boxes is not None else None
    info.pop("boxes", None)
    return Split(images=images, labels=labels, classes=info.pop("classes"), boxes=boxes,
                 files=info.pop("files"), class_names=info.pop("class_names"), meta=info)


def load_split(name: str, split: str, image_size: int | None = None, data_root: str | os.PathLike | None = None,
               progress: bool = True, workers: int | None = None) -> Split:  # fmt: skip
    """Images, labels (and boxes) of one split, each row decoded the first time it is read,
    then memory-mapped (see the module doc).

    image_size: side of the square cached images (default: the dataset's
    `default_image_size`, 64 for Tiny ImageNet, 32 for CIFAR-10).
    workers: decoding processes for large reads (default: available cores, at most 8).
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise ValueError(f"{name!r} has splits {spec.splits}, not {split!r}")
    size = int(image_size or spec.default_image_size)
    root = ensure_extracted(name, data_root, progress)
    info = extraction_info(root)
    entry = _Entry(f"{name}_{split}_{size}px_{info['sha256'][:16]}_v{CACHE_VERSION}")
    if entry.dir.is_dir():
        remove_stale_temps(entry.dir)  # left by a killed process
    _ensure_entry(entry, spec, split, size, root, info)
    workers = workers or _default_workers()
    return _open(entry, lambda meta: _decoder(entry, meta, spec, split, root, info, workers), progress)


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
