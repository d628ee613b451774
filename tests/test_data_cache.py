"""Decoding splits into cached arrays, on tiny fake datasets (the real one only when RETHINK_DATA has it)."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from rethink.data import cache, registry
from rethink.data.cache import CorruptImageError, Split, load_split, subset_per_class

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
    first = load_split(data_fake_tiny, "train", progress=False, workers=2)  # through the process pool

    def no_decoding(*a, **kw):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "_decode_files", no_decoding)
    again = load_split(data_fake_tiny, "train", progress=False)
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.boxes, first.boxes)
    assert again.files == first.files and again.meta == first.meta
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another cache entry
        load_split(data_fake_tiny, "train", image_size=16, progress=False)


def test_unknown_split(data_fake_tiny):
    with pytest.raises(ValueError, match="test"):
        load_split(data_fake_tiny, "test")


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_names_its_file(data_env, data_make_tar, data_make_jpeg, monkeypatch, workers):
    good = data_make_jpeg((10, 20, 30), (8, 8))
    files = {f"bad/train/a/{i}.jpg": good for i in range(5)}
    files["bad/train/b/broken.jpg"] = good[: len(good) // 2]  # truncated JPEG
    files["bad/train/b/ok.jpg"] = good
    data_make_tar(data_env / "bad.tar.gz", files)
    name = _register(monkeypatch, "bad", registry.Archive("bad.tar.gz", None, "bad", registry.IMAGE_FOLDERS))
    with pytest.raises(CorruptImageError, match=r"bad/train/b/broken\.jpg"):
        load_split(name, "train", progress=False, workers=workers)
    arrays = Path(os.environ["RETHINK_CACHE"]) / "arrays"
    assert not list(arrays.iterdir())  # no partial cache


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
