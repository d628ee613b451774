"""Decoding splits into cached arrays, on tiny fake datasets (the real one only when RETHINK_DATA has it)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from rethink.data import cache, registry
from rethink.data.cache import CorruptImageError, Split, load_split, subset_per_class
from rethink.data.loader import GPULoader  # (imports torch at collection, not in a test)

WNIDS = ["n01", "n02", "n03"]  # sorted wnids of the fake Tiny ImageNet (conftest.data_fake_tiny)


def _register(monkeypatch, name: str, archive: registry.Archive, **kw) -> str:
    spec = registry.DatasetSpec(
        name=name, title=name, num_classes=kw.pop("num_classes", 2), splits=kw.pop("splits", ("train",)),
        license="none", homepage="", default_image_size=kw.pop("default_image_size", 32),
        mirror=archive, canonical=None, **kw,
    )  # fmt: skip
    monkeypatch.setitem(registry.DATASETS, name, spec)
    return name


def test_fake_tiny_train_shapes_labels_boxes(data_fake_tiny):
    s = load_split(data_fake_tiny, "train", progress=False)
    assert s.images.shape == (12, 3, 64, 64) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert s.classes == WNIDS
    assert s.class_names == ["goldfish", "salamander, newt", "frog"]
    assert s.files[:2] == ["train/n01/images/n01_0.JPEG", "train/n01/images/n01_1.JPEG"]
    k = np.tile(np.arange(4), 3)
    assert s.boxes.dtype == np.float32
    np.testing.assert_array_equal(s.boxes, np.stack([k, 2 * k, 32 + k, 40 + 2 * k], 1))
    # colours survive decoding: class i is (80 i, 40, 200), up to JPEG error
    red = s.images[:, 0].reshape(12, -1).mean(1)
    np.testing.assert_allclose(red, 80 * s.labels, atol=4)
    assert s.meta["dataset"] == data_fake_tiny and s.meta["split"] == "train" and s.meta["image_size"] == 64
    assert len(s.meta["source_sha256"]) == 64 and len(s) == 12


def test_fake_tiny_val_resized_scales_boxes(data_fake_tiny):
    s = load_split(data_fake_tiny, "val", image_size=32, progress=False)
    assert s.images.shape == (6, 3, 32, 32)
    assert s.labels.tolist() == [0, 1, 2, 0, 1, 2]
    j = np.arange(6)
    np.testing.assert_allclose(s.boxes, np.stack([j, j, np.full(6, 60), np.full(6, 50)], 1) / 2)
    assert s.files[0] == "val/images/val_0.JPEG"


def test_second_call_reads_the_cache(data_fake_tiny, monkeypatch):
    monkeypatch.setattr(cache, "POOL_MIN_ROWS", 1)  # decode through the process pool
    first = load_split(data_fake_tiny, "train", progress=False, workers=2)
    images, boxes = np.array(first.images), np.array(first.boxes)  # reads every row: entry complete

    def no_decoding(*a, **kw):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "_decode", no_decoding)
    again = load_split(data_fake_tiny, "train", progress=False)
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    np.testing.assert_array_equal(again.images, images)
    np.testing.assert_array_equal(again.boxes, boxes)
    assert again.files == first.files and again.meta == first.meta
    other = load_split(data_fake_tiny, "train", image_size=16, progress=False, workers=1)
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another cache entry
        other.images[0]


def test_a_complete_entry_of_the_older_layout_is_read_as_is(data_fake_tiny, monkeypatch):
    """Entries written by the decode-everything version have no .filled and no .srcboxes file;
    complete, they are read without decoding (this once failed on the missing source boxes)."""
    first = load_split(data_fake_tiny, "train", progress=False, workers=1)
    images, boxes = np.array(first.images), np.array(first.boxes)
    arrays = next((p for p in (cache.paths.cache_root() / "arrays").glob("*.filled")))
    arrays.unlink()
    next((cache.paths.cache_root() / "arrays").glob("*.srcboxes.npy")).unlink()
    monkeypatch.setattr(cache, "_decode", lambda *a, **kw: pytest.fail("decoded again"))
    again = load_split(data_fake_tiny, "train", progress=False)
    np.testing.assert_array_equal(again.images, images)
    np.testing.assert_array_equal(again.boxes, boxes)


def test_unknown_split(data_fake_tiny):
    with pytest.raises(ValueError, match="test"):
        load_split(data_fake_tiny, "test")


def _bad_image_archive(data_env, data_make_tar, data_make_jpeg, digest: bool) -> tuple[Path, registry.Archive]:
    good = data_make_jpeg((10, 20, 30), (8, 8))
    files = {f"bad/train/a/{i}.jpg": good for i in range(5)}
    files["bad/train/b/broken.jpg"] = good[: len(good) // 2]  # truncated JPEG
    files["bad/train/b/ok.jpg"] = good
    path = data_make_tar(data_env / "bad.tar.gz", files)
    sha = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() if digest else None
    return path, registry.Archive("bad.tar.gz", sha, "bad", registry.IMAGE_FOLDERS)


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_names_its_file(data_env, data_make_tar, data_make_jpeg, monkeypatch, workers):
    monkeypatch.setattr(cache, "POOL_MIN_ROWS", 1)
    _, archive = _bad_image_archive(data_env, data_make_tar, data_make_jpeg, digest=True)
    name = _register(monkeypatch, "bad", archive)
    s = load_split(name, "train", progress=False, workers=workers)
    with pytest.raises(CorruptImageError, match=r"bad/train/b/broken\.jpg"):
        np.asarray(s.images)
    filled = s.images._rows.filled.tolist()
    assert not filled[5]
    if workers == 1:  # rows decoded before it are kept (a pool loses its task chunk)
        assert filled == [True] * 5 + [False] * 2
    np.testing.assert_array_equal(s.images[0], s.images[4])
    with pytest.raises(CorruptImageError, match=r"broken\.jpg"):  # and the broken one is never cached
        s.images[5]


def test_trust_on_first_use_needs_decodable_images(data_env, data_make_tar, data_make_jpeg, monkeypatch):
    path, archive = _bad_image_archive(data_env, data_make_tar, data_make_jpeg, digest=False)
    name = _register(monkeypatch, "bad", archive)
    with pytest.raises(CorruptImageError) as e:
        load_split(name, "train", progress=False)
    assert str(e.value).startswith(f"archive {path} does not hold decodable images (train/b/broken.jpg")
    assert "its digest was not recorded" in str(e.value)
    assert not (data_env / "bad.tar.gz.sha256").exists()


def test_image_folders_non_square_center_crop(data_env, data_make_tar, data_make_jpeg, monkeypatch):
    # a 96x48 image: left third blue, middle third green, right third red
    from PIL import Image

    arr = np.zeros((48, 96, 3), np.uint8)
    arr[:, :32, 2], arr[:, 32:64, 1], arr[:, 64:, 0] = 255, 255, 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    files = {"shapes/train/wide/x.png": buf.getvalue(), "shapes/train/square/y.jpg": data_make_jpeg((0, 0, 0))}
    data_make_tar(data_env / "shapes.tar.gz", files)
    name = _register(monkeypatch, "shapes", registry.Archive("shapes.tar.gz", None, "shapes", registry.IMAGE_FOLDERS))
    s = load_split(name, "train", image_size=24, progress=False)
    assert s.classes == ["square", "wide"] and s.boxes is None
    assert s.images.shape == (2, 3, 24, 24)
    wide = s.images[s.labels.tolist().index(1)]
    # short side 48 -> 24, width 96 -> 48, centre crop keeps columns 12..36: 4 blue, 16 green, 4 red
    assert wide[1, :, 6:18].min() > 200 and wide[0, :, 6:18].max() < 60
    assert wide[2, :, :3].min() > 200 and wide[0, :, -3:].min() > 200


def test_cifar_pickled_batches(data_env, data_make_tar, monkeypatch):
    rng = np.random.default_rng(0)
    classes = registry.CIFAR10_CLASSES
    files, raws = {}, {}
    for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        raw = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        raws[b] = raw
        d = {b"data": raw, b"labels": [1, 9, 3], b"filenames": [f"{b}_{k}.png".encode() for k in range(3)]}
        files[f"cifar-10-batches-py/{b}"] = pickle.dumps(d)
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in classes]})
    data_make_tar(data_env / "cifar-10-python.tar.gz", files)
    archive = registry.Archive("cifar-10-python.tar.gz", None, "cifar-10-batches-py", registry.CIFAR_PICKLE)
    name = _register(monkeypatch, "fake-cifar", archive, num_classes=10, splits=("train", "test"), classes=classes)

    s = load_split(name, "train", progress=False)
    assert s.images.shape == (15, 3, 32, 32) and s.labels.tolist() == [1, 9, 3] * 5
    np.testing.assert_array_equal(s.images[0], raws["data_batch_1"][0].reshape(3, 32, 32))
    assert s.classes == list(classes) and s.files[0] == "data_batch_1/data_batch_1_0.png"
    t = load_split(name, "test", image_size=16, progress=False)
    assert t.images.shape == (3, 3, 16, 16)


def test_coco_has_no_load_split(data_env, data_make_tar, monkeypatch):
    data_make_tar(data_env / "c.tar.gz", {"c/annotations/instances_train2017.json": b"{}"})
    name = _register(monkeypatch, "c", registry.Archive("c.tar.gz", None, "c", registry.COCO), splits=("train2017",))
    with pytest.raises(cache.DataError, match="ensure_extracted"):
        load_split(name, "train2017", progress=False)


def test_subset_per_class_is_balanced_and_deterministic():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    a = subset_per_class(labels, 5, seed=1)
    assert a.tolist() == sorted(a.tolist())
    assert np.bincount(labels[a]).tolist() == [5, 3, 5]  # class 1 has only 3
    assert subset_per_class(labels, 5, seed=1).tolist() == a.tolist()
    assert subset_per_class(labels, 5, seed=2).tolist() != a.tolist()
    split = Split(np.zeros((20, 3, 1, 1), np.uint8), labels, ["a", "b", "c"], None, [""] * 20, {})
    assert subset_per_class(split, 5, seed=1).tolist() == a.tolist()


def _real_archive() -> Path | None:
    root = os.environ.get("RETHINK_DATA")
    spec = registry.get_spec("tiny-imagenet")
    for a in spec.archives:
        if root and (Path(root) / a.filename).is_file():
            return Path(root) / a.filename
    return None


@pytest.mark.skipif(_real_archive() is None, reason="set RETHINK_DATA to a folder holding the Tiny ImageNet archive")
def test_real_tiny_imagenet_val():
    s = load_split("tiny-imagenet", "val", 64, progress=False)
    assert s.images.shape == (10_000, 3, 64, 64)
    assert len(s.classes) == 200 and s.classes == sorted(s.classes)
    assert np.bincount(s.labels, minlength=200).tolist() == [50] * 200
    b = s.boxes
    assert b.shape == (10_000, 4) and (b >= 0).all() and (b <= 64).all()
    assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()


# ---------------------------------------------------------------- rows decoded on first read


@pytest.fixture
def count_decodes(monkeypatch):
    """Count the images decoded (in-process: workers=1)."""
    calls = []
    real = cache._decode

    def counting(task):
        calls.append(task[0])
        return real(task)

    monkeypatch.setattr(cache, "_decode", counting)
    return calls


def test_only_the_rows_read_are_decoded(data_fake_tiny, count_decodes):
    s = load_split(data_fake_tiny, "train", image_size=32, progress=False, workers=1)
    assert count_decodes == [] and len(s) == 12 and s.images.shape == (12, 3, 32, 32)
    picked = subset_per_class(s, 1, seed=0)  # labels need no decoding
    assert count_decodes == []
    first = np.asarray(s.images[picked])
    assert len(count_decodes) == 3 and first.shape == (3, 3, 32, 32)
    s.images[picked]
    s.boxes[picked]  # boxes come with their rows
    assert len(count_decodes) == 3  # never twice
    again = load_split(data_fake_tiny, "train", image_size=32, progress=False, workers=1)
    np.testing.assert_array_equal(again.images[picked], first)  # another process's view: cached
    assert len(count_decodes) == 3
    full = np.asarray(again.images)  # a full read decodes the other 9, once
    assert len(count_decodes) == 12 and full.shape == (12, 3, 32, 32)
    assert isinstance(load_split(data_fake_tiny, "train", image_size=32, progress=False).images, np.memmap)
    assert len(count_decodes) == 12


def test_a_loader_over_a_subset_decodes_the_subset(data_fake_tiny, count_decodes):
    s = load_split(data_fake_tiny, "val", image_size=32, progress=False, workers=1)
    loader = GPULoader(s.images, s.labels, 2, device="cpu", indices=[1, 4], shuffle=False)
    assert len(count_decodes) == 2 and loader.num_samples == 2
    GPULoader(s.images, s.labels, 2, device="cpu", shuffle=False)  # the whole split
    assert len(count_decodes) == 6


def test_lazy_rows_index_like_the_full_array(data_fake_tiny):
    lazy = load_split(data_fake_tiny, "train", progress=False, workers=1)
    full = np.asarray(load_split(data_fake_tiny, "train", image_size=64, progress=False).images)
    lazy2 = load_split(data_fake_tiny, "val", progress=False, workers=1)
    mask = np.arange(12) % 5 == 0
    for key in (3, -1, slice(2, 9, 3), [7, 1], mask, (slice(None), 0), (4, 1, 2)):
        np.testing.assert_array_equal(lazy.images[key] if key is not mask else lazy.images[mask], full[key])
    assert "decoded" in repr(lazy2.images) and len(list(lazy2.boxes)) == 6
    with pytest.raises(IndexError):
        lazy2.images[6]


# ---------------------------------------------------------------- a corrupt or full cache


def _entry_files(kind: str) -> list[Path]:
    return sorted((Path(os.environ["RETHINK_CACHE"]) / "arrays").glob(f"*.{kind}"))


def test_truncated_cache_is_named_and_rebuilt(data_fake_tiny, capsys):
    first = np.array(load_split(data_fake_tiny, "val", progress=False, workers=1).images)  # a copy
    [images] = _entry_files("images.npy")
    size = images.stat().st_size
    with open(images, "r+b") as f:  # what a crash or a full disk can leave
        f.truncate(size // 2)
    s = load_split(data_fake_tiny, "val", progress=False, workers=1)
    err = capsys.readouterr().err
    assert f"warning: decoded-array cache {images.parent / images.name.removesuffix('.images.npy')}.* is corrupt (" in err
    assert f"{images.name} has {size // 2:,} bytes, its header says {size:,}): rebuilding it" in err
    np.testing.assert_array_equal(np.asarray(s.images), first)


def test_garbled_cache_index_is_rebuilt(data_fake_tiny, capsys):
    load_split(data_fake_tiny, "val", progress=False, workers=1)
    [meta] = _entry_files("json")
    meta.write_text('{"count": 6, "ima')
    s = load_split(data_fake_tiny, "val", progress=False, workers=1)
    assert f"{meta.name} is unreadable (JSONDecodeError)): rebuilding it" in capsys.readouterr().err
    assert len(s) == 6 and json.loads(meta.read_text())["count"] == 6


def test_full_disk_is_refused_before_decoding(data_fake_tiny, monkeypatch, count_decodes):
    import shutil
    from rethink import files

    s = load_split(data_fake_tiny, "train", progress=False, workers=1)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 1000))
    with pytest.raises(files.DiskFullError) as e:
        s.images[:3]
    arrays = Path(os.environ["RETHINK_CACHE"]) / "arrays"
    assert str(e.value) == (f"not enough disk space for the decoded images of {data_fake_tiny}/train at 64px: "
                            f"it needs 36.0 KB in {arrays}, which has 1000 B free: free space there, or set "
                            f"RETHINK_CACHE to a folder on a disk with room")
    assert count_decodes == []


def test_disk_full_while_writing_names_the_folder(data_fake_tiny, monkeypatch):
    import errno
    from rethink import files

    s = load_split(data_fake_tiny, "train", progress=False, workers=1)

    def full(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "pwrite", full)
    with pytest.raises(files.DiskFullError, match=r"^disk full: could not write the decoded images of "
                       r"fake-tiny/train at 64px \(.*images\.npy\); the disk holding .*arrays is full "
                       r"\([\d.]+ [KMGT]?B free\): free space there, or set RETHINK_CACHE to a folder on a disk with room$"):
        s.images[0]
    monkeypatch.undo()
    assert not s.images._rows.filled.any()  # nothing marked: the rows decode again next time


def test_stale_temp_files_are_removed_at_start(data_fake_tiny):
    from rethink import files

    load_split(data_fake_tiny, "val", progress=False, workers=1)
    arrays = Path(os.environ["RETHINK_CACHE"]) / "arrays"
    dead = arrays / f".x.images.npy.{files.host_tag()}-999999999.abc.tmp"  # no such pid
    mine = arrays / f".y.images.npy.{files.writer_tag()}.abc.tmp"  # a live writer: this process
    dead.write_bytes(b"x" * 1000)
    mine.write_bytes(b"x")
    load_split(data_fake_tiny, "val", progress=False, workers=1)
    assert not dead.exists() and mine.exists()


def test_lazy_rows_act_like_arrays_once_read_whole(data_fake_tiny):
    s = load_split(data_fake_tiny, "val", progress=False, workers=1)
    assert (s.boxes >= 0).all() and (s.boxes <= 64).all()
    assert s.boxes.astype(np.float64).dtype == np.float64 and s.images.mean() > 0
    assert s.images.flags.writeable is False
    assert np.array(s.images).shape == (6, 3, 64, 64)
