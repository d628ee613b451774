"""The Tiny ImageNet scene stand-in for COCO, and COCO-format conversion (real data only when
RETHINK_DATA has the archives)."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from rethink import paths
from rethink.data.registry import get_spec
from rethink.detection import scenes
from rethink.detection.coco import from_coco, letterbox_bbox, load_coco_format, to_coco
from rethink.detection.data import DetectionSet
from rethink.detection.scenes import (
    box_area, clip_box, crop_box, expand_box, feather_mask, flip_box, generate_scenes, paste_instance,
    place, scale_box, scene_statistics, translate_box,
)  # fmt: skip


def _has(name: str) -> bool:
    root = paths.data_root()
    return any((root / a.filename).exists() for a in get_spec(name).archives)


needs_tiny = pytest.mark.skipif(not _has("tiny-imagenet"), reason="Tiny ImageNet archive not in RETHINK_DATA")
needs_coco128 = pytest.mark.skipif(not _has("coco128"), reason="coco128.tar.gz not in RETHINK_DATA")
SMALL = dict(image_size=96, cache=False)  # fast settings for real-data tests


# ---------------------------------------------------------------- box functions


def test_box_functions_on_hand_examples():
    b = np.array([10.0, 20.0, 30.0, 60.0])
    np.testing.assert_allclose(crop_box(b, [5, 10, 50, 64]), [5, 10, 25, 50])
    np.testing.assert_allclose(scale_box(b, 2, 0.5), [20, 10, 60, 30])
    np.testing.assert_allclose(flip_box(b, 64), [34, 20, 54, 60])
    np.testing.assert_allclose(flip_box(flip_box(b, 64), 64), b)
    np.testing.assert_allclose(translate_box(b, -15, 3), [-5, 23, 15, 63])
    np.testing.assert_allclose(clip_box([-5, 23, 15, 70], 64, 64), [0, 23, 15, 64])
    assert box_area(b) == 800 and box_area([5, 5, 3, 9]) == 0  # empty boxes have no area
    # margin 0.5 of (20 x 40) -> 10 and 20 px each side, clipped to the 64 x 64 image
    np.testing.assert_allclose(expand_box(b, 0.5, 64, 64), [0, 0, 40, 64])
    np.testing.assert_allclose(flip_box(np.array([[0, 0, 1, 1], [2, 0, 4, 1]]), 4), [[3, 0, 4, 1], [0, 0, 2, 1]])


def test_place_maps_the_box_through_crop_scale_flip_and_shift():
    box = np.array([16.0, 8.0, 48.0, 40.0])  # 32 x 32 in a 64 x 64 source
    p = place(box, 64, 64, margin=0.25, side=64, flip=False, cx=100, cy=50)
    np.testing.assert_allclose(p.crop, [8, 0, 56, 48])  # 8 px margin, cut at the top
    assert (p.out_w, p.out_h) == (96, 96)  # x2
    np.testing.assert_allclose(p.box, [68, 18, 132, 82])  # centre (100, 50)
    # flipped: the box sits 16 px from the crop's right edge instead of its left
    q = place([8.0, 8.0, 40.0, 40.0], 64, 64, margin=0.25, side=32, flip=True, cx=0, cy=0)
    np.testing.assert_allclose(q.crop, [0, 0, 48, 48])
    np.testing.assert_allclose(q.box - [q.x, q.y, q.x, q.y], [8, 8, 40, 40])  # 48 - 40 = 8
    np.testing.assert_allclose(q.box, [-16, -16, 16, 16])


def test_feather_mask_is_opaque_inside_and_soft_at_edges():
    a = feather_mask(40, 60, 0.15)
    assert a.shape == (40, 60) and a[20, 30] == 1 and a[0, 0] < 0.01 and a[0, 30] < 0.05
    assert np.all(np.diff(a[20, :30]) >= 0)  # rises towards the middle
    assert np.all(feather_mask(10, 10, 0.0) == 1)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("where", ["inside", "left", "bottom-right"])
def test_annotated_box_covers_exactly_the_pasted_object(flip, where):
    """A red box region in a dark source, pasted on a blue canvas: the red pixels' extent is
    the annotated (clipped) box, within 1 px, through crop, scale, flip, shift and border cut."""
    src = np.full((64, 64, 3), 30, np.uint8)
    box = np.array([12.0, 20.0, 44.0, 40.0])
    src[20:40, 12:44] = (255, 0, 0)
    S = 160
    for side, (cx, cy) in [(40, (80, 70)), (73, (77.3, 91.6))] if where == "inside" else \
            [(60, (5, 70))] if where == "left" else [(55, (150, 157))]:  # fmt: skip
        canvas = np.zeros((S, S, 3), np.float32)
        canvas[..., 2] = 255
        got = paste_instance(canvas, src, box, margin=0.3, side=side, flip=flip, cx=cx, cy=cy, feather=0.15)
        red = (canvas[..., 0] > 127) & (canvas[..., 2] < 128)
        ys, xs = np.nonzero(red)
        extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
        np.testing.assert_allclose(extent, got, atol=1.0)
        if where != "inside":
            assert np.any(got == 0) or np.any(got == S)  # the box was cut by the border


# ---------------------------------------------------------------- the generated sets


@needs_tiny
def test_determinism_and_prefix_stability():
    a = generate_scenes(24, split="train", seed=3, **SMALL)
    b = generate_scenes(24, split="train", seed=3, **SMALL)
    head = generate_scenes(9, split="train", seed=3, **SMALL)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.images[:9], head.images)
    for x, y in zip(a.boxes[:9], head.boxes):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.labels[:9], head.labels):
        np.testing.assert_array_equal(x, y)
    other = generate_scenes(9, split="train", seed=4, **SMALL)
    assert not np.array_equal(other.images, head.images)
    assert a.images.shape == (24, 3, 96, 96) and a.images.dtype == np.uint8
    assert a.class_names[0] == "goose" and a.num_classes == len(scenes.DEFAULT_CLASSES) == 20


@needs_tiny
def test_disk_cache_serves_smaller_sets_and_extends_to_larger(tmp_path):
    kw = dict(split="val", seed=1, image_size=64, cache_dir=tmp_path)
    mid = generate_scenes(12, **kw)
    assert len(list(tmp_path.glob("*.images.npy"))) == 1 and not list(tmp_path.glob(".*tmp"))
    small = generate_scenes(5, **kw)
    assert small.meta["cached_from"].endswith("_n12.json") and len(small) == 5
    np.testing.assert_array_equal(small.images, mid.images[:5])
    big = generate_scenes(20, **kw)  # generates 8 new scenes after the cached 12
    assert big.meta["stats"]["generated"] == 8
    fresh = generate_scenes(20, split="val", seed=1, image_size=64, cache=False)
    np.testing.assert_array_equal(big.images, fresh.images)
    for x, y in zip(big.boxes, fresh.boxes):
        np.testing.assert_allclose(x, y)
    assert big.meta["source_val_indices"] == fresh.meta["source_val_indices"]
    other = generate_scenes(5, split="val", seed=1, image_size=64, cache_dir=tmp_path, clutter=0)
    assert "cached_from" in other.meta and other.meta["cached_from"] != small.meta["cached_from"]


@needs_tiny
def test_val_scenes_use_no_instance_of_train_scenes():
    from rethink.data.cache import load_split

    val = load_split("tiny-imagenet", "val", 64, progress=False)
    for w in scenes.DEFAULT_CLASSES:
        tr, va = scenes.instance_split(val.files, val.labels, val.classes.index(w))
        assert not set(tr) & set(va) and len(tr) == 40 and len(va) == 10
    used = {}
    for split in ("train", "val"):
        ds = generate_scenes(150, split=split, **SMALL)
        used[split] = {i for s in ds.meta["source_val_indices"] for i in s}
        # sources are val images of the scene's classes, and the labels match the source's class
        for s, lab in zip(ds.meta["source_val_indices"], ds.labels):
            assert [scenes.DEFAULT_CLASSES[k] for k in lab] == [val.classes[val.labels[i]] for i in s]
    assert used["train"] and used["val"] and not used["train"] & used["val"]


@needs_tiny
def test_mean_instances_and_boxes_inside_the_canvas():
    ds = generate_scenes(300, split="train", image_size=128, cache=False)
    counts = np.array([len(b) for b in ds.boxes])
    assert abs(counts.mean() - 4.0) < 0.3 and counts.min() >= 1 and counts.max() <= 8
    allb = np.concatenate(ds.boxes)
    assert np.all(allb >= 0) and np.all(allb <= 128) and np.all(allb[:, 2:] > allb[:, :2])
    labels = np.concatenate(ds.labels)
    assert labels.min() >= 0 and labels.max() < ds.num_classes
    side = np.sqrt(box_area(allb)) / 128
    assert side.max() <= 0.6 + 1e-3 and np.median(side) > 0.15  # clipped boxes can only shrink
    crowded = generate_scenes(500, split="train", mean_instances=6.0, max_instances=12, image_size=64, cache=False)
    assert abs(np.mean([len(b) for b in crowded.boxes]) - 6.0) < 0.3
    st = scene_statistics(ds)
    assert st["instances"] == counts.sum() and sum(st["instances_per_image"]["histogram"]) == 300
    assert abs(sum(st["sizes_absolute"][k] for k in ("small", "medium", "large")) - 1) < 1e-9
    assert sum(st["per_class"].values()) == counts.sum()


def test_scene_statistics_on_hand_example():
    ds = DetectionSet(np.zeros((2, 3, 640, 640), np.uint8),
                      [np.array([[0, 0, 10, 10], [0, 0, 50, 50]], np.float32), np.array([[0, 0, 100, 100]], np.float32)],
                      [np.array([0, 1]), np.array([1])], ["a", "b"])  # fmt: skip
    st = scene_statistics(ds)
    assert st["instances_per_image"]["mean"] == 1.5 and st["instances_per_image"]["histogram"] == [0, 1, 1]
    assert st["sizes_absolute"]["small"] == pytest.approx(1 / 3) and st["sizes_absolute"]["large"] == pytest.approx(1 / 3)
    assert st["sizes_scaled"] == st["sizes_absolute"]  # at 640 px the two agree
    assert st["per_class"] == {"a": 1, "b": 2}


def test_poisson_rate_gives_the_capped_mean():
    rng = np.random.default_rng(0)
    lam = scenes.poisson_rate(4.0, 8)
    k = np.minimum(8, 1 + rng.poisson(lam, 200_000))
    assert abs(k.mean() - 4.0) < 0.02 and lam > 3.0


# ---------------------------------------------------------------- COCO format


def _toy_set() -> DetectionSet:
    rng = np.random.default_rng(0)
    boxes, labels = [], []
    for k in [3, 0, 5, 1]:
        xy = rng.uniform(0, 60, (k, 2))
        wh = rng.uniform(4, 30, (k, 2))
        boxes.append(np.concatenate([xy, xy + wh], 1).astype(np.float32))
        labels.append(rng.integers(0, 3, k))
    return DetectionSet(rng.integers(0, 255, (4, 3, 96, 96), dtype=np.uint8), boxes, labels, ["cat", "dog", "van"])


def _coco(gt: dict):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        c = COCO()
        c.dataset = gt
        c.createIndex()
    return c


def test_to_coco_loads_in_pycocotools_and_round_trips():
    ds = _toy_set()
    gt = to_coco(ds)
    c = _coco(gt)
    assert len(c.getImgIds()) == 4 and len(c.getAnnIds()) == 9 and sorted(c.getCatIds()) == [1, 2, 3]
    ids = [a["id"] for a in gt["annotations"]]
    assert ids == list(range(1, 10))
    a = gt["annotations"][0]
    b = ds.boxes[0][0]
    assert a["bbox"] == pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]]) and a["iscrowd"] == 0
    assert a["area"] == pytest.approx((b[2] - b[0]) * (b[3] - b[1])) and a["category_id"] == ds.labels[0][0] + 1
    back = from_coco(gt, ds.images)
    assert back.class_names == ds.class_names and back.image_ids == ds.image_ids
    for x, y in zip(back.boxes, ds.boxes):
        np.testing.assert_allclose(x, y, atol=1e-4)
    for x, y in zip(back.labels, ds.labels):
        np.testing.assert_array_equal(x, y)


def test_ground_truth_as_detections_scores_ap_1():
    from pycocotools.cocoeval import COCOeval

    ds = _toy_set()
    gt = to_coco(ds)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]]  # fmt: skip
    c = _coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(c, c.loadRes(dets), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    assert e.stats[0] == pytest.approx(1.0) and e.stats[1] == pytest.approx(1.0)


def test_letterbox_bbox_maps_corners():
    # 640 x 480 -> 160: scale 1/4, 120 px tall, 20 px top padding
    np.testing.assert_allclose(letterbox_bbox([0, 0, 640, 480], 640, 480, 160), [0, 20, 160, 120])
    np.testing.assert_allclose(letterbox_bbox([100, 40, 200, 80], 640, 480, 160), [25, 30, 50, 20])


@needs_coco128
def test_coco128_loads_with_boxes_inside_the_canvas():
    ds = load_coco_format("coco128", image_size=160)
    assert len(ds) == 128 and ds.images.shape == (128, 3, 160, 160) and ds.num_classes == 80
    assert ds.class_names[0] == "person" and ds.meta["coco_category_ids"][-1] == 90
    allb = np.concatenate(ds.boxes)
    assert len(allb) + ds.meta["crowd_left_out"] == 939
    assert np.all(allb >= 0) and np.all(allb <= 160) and np.all(allb[:, 2:] > allb[:, :2])
    gt = to_coco(ds)
    assert len(_coco(gt).getAnnIds()) == len(allb)
