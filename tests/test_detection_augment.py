"""Box-aware batched detection augmentation (rethink.detection.augment) against torchvision v2.

References: torchvision.transforms.v2.functional on tv_tensors.BoundingBoxes (affine, rotate,
horizontal_flip, resize + crop, clamp_bounding_boxes, SanitizeBoundingBoxes) and on images
(the same warps with nearest / bilinear interpolation, equalize, autocontrast, posterize, ...);
for the box-only translate, a literal per-box re-implementation of the TF code.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF
from torchvision import tv_tensors
from torchvision.ops import box_iou

from rethink.detection.augment import (AUTOAUGMENT_V0, OPS, RANDAUGMENT_OPS, STRENGTHS, DetectionAugment,
                                       level_to_arg, op_params)

S = 64
NEAREST = TF.InterpolationMode.NEAREST


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def scenes(n: int = 6, size: int = S, seed: int = 0):
    """Smooth backgrounds (upsampled noise) with 1-3 bright rectangles; their boxes and labels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g) * 160 + 40
    images = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    boxes, labels = [], []
    for i in range(n):
        k = int(torch.randint(1, 4, (1,), generator=g))
        bs = []
        for _ in range(k):
            w, h = (int(v) for v in torch.randint(size // 6, size // 2, (2,), generator=g))
            x, y = (int(v) for v in torch.randint(0, size - max(w, h), (2,), generator=g))
            images[i, :, y:y + h, x:x + w] = torch.rand(3, 1, 1, generator=g) * 55 + 200
            bs.append([x, y, x + w, y + h])
        boxes.append(torch.tensor(bs, dtype=torch.float32))
        labels.append(torch.randint(0, 5, (k,), generator=g))
    return images.round().to(torch.uint8), boxes, labels


def bbox(b, size=S):
    return tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=(size, size))


def one_op(name, level, images, boxes, labels, negate=False, **kw):
    params = op_params(len(images), max(len(b) for b in boxes), name, level, negate=negate, **kw)
    return DetectionAugment("none").apply(images, boxes, labels, params, return_index=True)


def assert_images_close(a, b, max_diff=0, max_frac=0.0):
    d = (a.int() - b.int()).abs()
    assert int(d.max()) <= max(max_diff, 255 if max_frac else 0)
    assert float((d > max_diff).float().mean()) <= max_frac


# ------------------------------------------------------------------ geometry vs torchvision


GEOMETRIC_CASES = [  # (op, level, negate) -> torchvision call (image, boxes) with the same forward map
    ("TranslateX_BBox", 4, False), ("TranslateX_BBox", 10, True), ("TranslateY_BBox", 6, False),
    ("ShearX_BBox", 6, False), ("ShearY_BBox", 10, True), ("Rotate_BBox", 10, False), ("Rotate_BBox", 4, True),
]


def tv_geometric(name, arg, inpt):
    if name == "TranslateX_BBox":
        return TF.affine(inpt, angle=0.0, translate=[-arg, 0.0], scale=1.0, shear=[0.0, 0.0],
                         interpolation=NEAREST, fill=[128.0] * 3)
    if name == "TranslateY_BBox":
        return TF.affine(inpt, angle=0.0, translate=[0.0, -arg], scale=1.0, shear=[0.0, 0.0],
                         interpolation=NEAREST, fill=[128.0] * 3)
    if name == "ShearX_BBox":  # TF shear_x(level): x' = x - level y  <->  torchvision shear atan(level)
        return TF.affine(inpt, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=[math.degrees(math.atan(arg)), 0.0],
                         interpolation=NEAREST, fill=[128.0] * 3, center=[0.0, 0.0])
    if name == "ShearY_BBox":
        return TF.affine(inpt, angle=0.0, translate=[0.0, 0.0], scale=1.0, shear=[0.0, math.degrees(math.atan(arg))],
                         interpolation=NEAREST, fill=[128.0] * 3, center=[0.0, 0.0])
    if name == "Rotate_BBox":  # counter-clockwise, as tf.contrib.image.rotate
        return TF.rotate(inpt, angle=arg, interpolation=NEAREST, fill=[128.0] * 3)
    raise ValueError(name)


@pytest.mark.parametrize("name,level,negate", GEOMETRIC_CASES)
def test_geometric_op_matches_torchvision(name, level, negate):
    images, boxes, labels = scenes(4)
    out, ob, ol, idx = one_op(name, level, images, boxes, labels, negate=negate)
    arg = level_to_arg(name, level, S) * (-1 if negate else 1)
    for i in range(len(images)):
        ref_img = tv_geometric(name, arg, images[i])
        assert_images_close(out[i], ref_img, max_frac=0.01)  # nearest-neighbour ties / float rounding
        ref_b = TF.clamp_bounding_boxes(tv_geometric(name, arg, bbox(boxes[i])))
        ref_b, ref_l = v2.SanitizeBoundingBoxes()(ref_b, labels[i])
        torch.testing.assert_close(ob[i], ref_b.as_subclass(torch.Tensor), atol=1e-3, rtol=0)
        torch.testing.assert_close(ol[i], ref_l)


def test_horizontal_flip_matches_torchvision():
    images, boxes, labels = scenes(4)
    aug = DetectionAugment("S1", flip_prob=1.0, scale_range=(1.0, 1.0))
    out, ob, ol = aug(images, boxes, labels, torch.Generator().manual_seed(0))
    for i in range(len(images)):
        assert torch.equal(out[i], TF.horizontal_flip(images[i]))
        torch.testing.assert_close(ob[i], TF.horizontal_flip(bbox(boxes[i])).as_subclass(torch.Tensor))
        assert torch.equal(ol[i], labels[i])


@pytest.mark.parametrize("scale_u,offset_u,flip", [(0.05, (0.3, 0.8), False), (0.9, (0.3, 0.8), True),
                                                   (0.6, (0.0, 1.0), False)])
def test_scale_jitter_matches_torchvision_resize_and_crop(scale_u, offset_u, flip):
    """TF resize_and_crop_image = resize to round(r S) (bilinear, no antialiasing), crop at floor(u max_offset), pad."""
    images, boxes, labels = scenes(3)
    aug = DetectionAugment("S3", fill=0)
    params = aug.sample_params(3, 3, torch.Generator().manual_seed(0))
    params = dataclasses.replace(params, apply=torch.zeros_like(params.apply), flip=torch.full((3,), flip),
                                 scale_u=torch.full((3,), scale_u), offset_u=torch.tensor(offset_u).expand(3, 2))
    out, ob, ol = aug.apply(images, boxes, labels, params)
    r = 0.5 + 1.5 * scale_u
    scaled = round(r * S)
    oy, ox = (math.floor(max(scaled - S, 0) * u) for u in offset_u)
    for i in range(3):
        img, b = images[i], bbox(boxes[i])
        if flip:
            img, b = TF.horizontal_flip(img), TF.horizontal_flip(b)
        img = TF.resize(img, [scaled, scaled], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
        b = TF.resize(b, [scaled, scaled])
        img = TF.crop(img, oy, ox, S, S)  # zero-pads beyond the scaled image, as TF pads
        b = TF.clamp_bounding_boxes(TF.crop(b, oy, ox, S, S))
        b, lab = v2.SanitizeBoundingBoxes()(b, labels[i])
        assert_images_close(out[i], img, max_diff=1)
        torch.testing.assert_close(ob[i], b.as_subclass(torch.Tensor), atol=1e-3, rtol=0)
        torch.testing.assert_close(ol[i], lab)


# ------------------------------------------------------------------ pixel ops vs torchvision


PIXEL_CASES = [  # (op, level, torchvision reference of the TF op at that level, max level difference)
    ("Equalize", 10, lambda x, a: TF.equalize(x), 0),
    ("AutoContrast", 10, lambda x, a: TF.autocontrast(x), 1),
    ("Invert", 10, lambda x, a: TF.invert(x), 0),
    ("Posterize", 6, lambda x, a: TF.posterize(x, int(a)), 0),
    ("Solarize", 5, lambda x, a: TF.solarize(x, a), 0),
    ("Brightness", 2, lambda x, a: TF.adjust_brightness(x, a), 1),
    ("Brightness", 8, lambda x, a: TF.adjust_brightness(x, a), 1),
    ("Color", 2, lambda x, a: TF.adjust_saturation(x, a), 1),
    ("Color", 6, lambda x, a: TF.adjust_saturation(x, a), 1),
    ("Contrast", 3, lambda x, a: TF.adjust_contrast(x, a), 1),
    ("Contrast", 9, lambda x, a: TF.adjust_contrast(x, a), 1),
    ("Sharpness", 2, lambda x, a: TF.adjust_sharpness(x, a), 2),  # TF truncates the blur, torchvision rounds
    ("Sharpness", 8, lambda x, a: TF.adjust_sharpness(x, a), 2),
]


@pytest.mark.parametrize("name,level,ref,tol", PIXEL_CASES, ids=[f"{c[0]}-{c[1]}" for c in PIXEL_CASES])
def test_pixel_op_matches_torchvision(name, level, ref, tol):
    images, boxes, labels = scenes(4)
    images = (images.int() + torch.randint(-30, 30, images.shape, generator=torch.Generator().manual_seed(1))
              ).clamp(0, 255).to(torch.uint8)  # some texture for sharpness / equalize
    out, ob, _, _ = one_op(name, level, images, boxes, labels)
    arg = level_to_arg(name, level, S)
    for i in range(len(images)):
        assert_images_close(out[i], ref(images[i], arg), max_diff=tol)
        torch.testing.assert_close(ob[i], boxes[i])


def test_solarize_add_and_cutout_match_references():
    images, boxes, labels = scenes(3)
    out, *_ = one_op("SolarizeAdd", 10, images, boxes, labels)
    x = images.int()
    ref = torch.where(x < 128, (x + 110).clamp(0, 255), x)  # TF solarize_add(image, addition=110, threshold=128)
    assert torch.equal(out.int(), ref)
    cu = (0.1, 0.7)  # centre pixel (floor(0.1 S), floor(0.7 S)) = (6, 44); half-size int(0.8 x 100 x S / 640) = 8
    out, *_ = one_op("Cutout", 8, images, boxes, labels, cutout_u=cu)
    pad = int(level_to_arg("Cutout", 8, S))
    cy, cx = math.floor(cu[0] * S), math.floor(cu[1] * S)
    top, left = max(0, cy - pad), max(0, cx - pad)
    ref = TF.erase(images, top, left, min(S, cy + pad) - top, min(S, cx + pad) - left, torch.tensor(128, dtype=torch.uint8))
    assert pad == 8 and top == 0
    assert torch.equal(out, ref)


def tf_translate_only_bboxes(image, boxes, keys, chosen, pixels):
    """Literal per-box TF translate_y_only_bboxes: shuffled boxes, crop, translate_y the crop, paste back."""
    image = image.clone()
    _, h, w = image.shape
    for j in sorted(range(len(boxes)), key=lambda j: float(keys[j])):
        if not chosen[j]:
            continue
        x0, y0, x1, y1 = boxes[j].tolist()
        min_y, min_x = int(y0), int(x0)
        max_y, max_x = min(int(y1), h - 1), min(int(x1), w - 1)
        crop = image[:, min_y:max_y + 1, min_x:max_x + 1]
        crop = TF.affine(crop, angle=0.0, translate=[0, -pixels], scale=1.0, shear=[0.0, 0.0],
                         interpolation=NEAREST, fill=[128.0] * 3)  # tf translate(crop, [0, -pixels])
        image[:, min_y:max_y + 1, min_x:max_x + 1] = crop
    return image


@pytest.mark.parametrize("negate", [False, True])
def test_translate_y_only_bboxes_matches_literal_tf(negate):
    images, boxes, labels = scenes(6, seed=3)
    boxes[0] = torch.cat([boxes[0], torch.tensor([[10.0, 10.0, 40.0, 50.0], [20.0, 30.0, 60.0, 64.0]])])  # overlaps
    labels[0] = torch.cat([labels[0], torch.tensor([1, 2])])
    k = max(len(b) for b in boxes)
    g = torch.Generator().manual_seed(5)
    keys = torch.rand(len(images), k, generator=g)
    box_u = torch.rand(len(images), 1, k, generator=g)
    params = op_params(len(images), k, "TranslateY_Only_BBoxes", 6, negate=negate, box_key=keys, box_prob=0.6 / 3)
    params = dataclasses.replace(params, box_u=box_u)
    out, ob, ol = DetectionAugment("none").apply(images, boxes, labels, params)
    pixels = int(round(level_to_arg("TranslateY_Only_BBoxes", 6, S))) * (-1 if negate else 1)
    assert abs(pixels) == 7  # 0.6 x 120 x 64 / 640 = 7.2 -> 7
    n_chosen = 0
    for i in range(len(images)):
        chosen = box_u[i, 0, :len(boxes[i])] < 0.2
        n_chosen += int(chosen.sum())
        ref = tf_translate_only_bboxes(images[i], boxes[i], keys[i], chosen, pixels)
        assert torch.equal(out[i], ref)
        torch.testing.assert_close(ob[i], boxes[i])  # boxes unchanged
    assert n_chosen >= 2


# ------------------------------------------------------------------ sanitising


def test_boxes_leaving_the_canvas_are_dropped_with_their_labels():
    images, _, _ = scenes(2)
    boxes = [torch.tensor([[2.0, 10.0, 12.0, 30.0], [30.0, 10.0, 50.0, 30.0], [5.0, 40.0, 40.0, 60.0]])] * 2
    labels = [torch.tensor([7, 8, 9])] * 2
    # content moves left by 25 px: box 0 (x1 = 12) leaves; box 2 is clipped to x in [0, 15]
    out, ob, ol, idx = one_op("TranslateX_BBox", 10, images, boxes, labels)
    for i in range(2):
        assert idx[i].tolist() == [1, 2] and ol[i].tolist() == [8, 9]
        torch.testing.assert_close(ob[i], torch.tensor([[5.0, 10.0, 25.0, 30.0], [0.0, 40.0, 15.0, 60.0]]))


def test_degenerate_boxes_removed_as_torchvision_sanitize():
    images, _, _ = scenes(1)
    b = torch.tensor([[10.0, 10.0, 10.0, 20.0], [5.0, 5.0, 30.0, 5.5], [0.0, 0.0, 20.0, 20.0],
                      [50.0, 50.0, 70.0, 80.0], [60.0, 60.0, 63.5, 63.5], [63.2, 10.0, 66.0, 20.0]])
    lab = torch.arange(6)
    out, ob, ol = DetectionAugment("none").apply(images, [b], [lab], op_params(1, 6, "Identity", 0))
    ref_b, ref_l = v2.SanitizeBoundingBoxes()(TF.clamp_bounding_boxes(bbox(b)), lab)
    torch.testing.assert_close(ob[0], ref_b.as_subclass(torch.Tensor))
    assert ol[0].tolist() == ref_l.tolist() == [2, 3, 4]


def test_images_without_boxes():
    images, _, _ = scenes(3)
    boxes = [torch.zeros(0, 4)] * 3
    labels = [torch.zeros(0, dtype=torch.int64)] * 3
    out, ob, ol = DetectionAugment("S4")(images, boxes, labels, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and all(len(b) == 0 for b in ob) and all(len(l) == 0 for l in ol)


# ------------------------------------------------------------------ randomness, batching, devices


@pytest.mark.parametrize("strength", ["S1", "S2", "S3", "S4"])
def test_seed_reproduces_and_batched_equals_per_sample(strength):
    images, boxes, labels = scenes(8)
    aug = DetectionAugment(strength)
    a = aug(images, boxes, labels, torch.Generator().manual_seed(3))
    b = aug(images, boxes, labels, torch.Generator().manual_seed(3))
    c = aug(images, boxes, labels, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert not torch.equal(a[0], c[0])
    params = aug.sample_params(8, max(len(x) for x in boxes), torch.Generator().manual_seed(3))
    batched = aug.apply(images, boxes, labels, params)
    for i in range(8):
        single = aug.apply(images[i:i + 1], boxes[i:i + 1], labels[i:i + 1], params[i])
        assert_images_close(single[0][0], batched[0][i], max_diff=0)
        torch.testing.assert_close(single[1][0], batched[1][i])
        assert torch.equal(single[2][0], batched[2][i])


def test_float_images_match_uint8():
    images, boxes, labels = scenes(4)
    aug = DetectionAugment("S3")
    a = aug(images, boxes, labels, torch.Generator().manual_seed(0))
    b = aug(images.float() / 255, boxes, labels, torch.Generator().manual_seed(0))
    assert b[0].dtype == torch.float32
    assert_images_close(a[0], (b[0] * 255).round().to(torch.uint8), max_diff=0)
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def _distortion(strength, images, boxes, labels, seeds=(0, 1, 2)):
    """Mean |pixel change| (levels) and mean IoU of each box with its original (0 if dropped)."""
    changes, ious = [], []
    aug = DetectionAugment(strength)
    for seed in seeds:
        out, ob, _, idx = aug(images, boxes, labels, torch.Generator().manual_seed(seed), return_index=True)
        changes.append((out.float() - images.float()).abs().mean())
        for b0, b1, i in zip(boxes, ob, idx):
            iou = torch.zeros(len(b0))
            if len(i):
                iou[i] = box_iou(b1, b0[i]).diagonal()
            ious.append(iou)
    return float(torch.stack(changes).mean()), float(torch.cat(ious).mean())


def test_strength_ordering_by_measured_distortion():
    images, boxes, labels = scenes(24, seed=7)
    stats = {s: _distortion(s, images, boxes, labels) for s in ("none", "S1", "S2", "S3", "S4")}
    change = [stats[s][0] for s in ("none", "S1", "S2", "S3", "S4")]
    iou = [stats[s][1] for s in ("none", "S1", "S2", "S3", "S4")]
    assert change == sorted(change) and len(set(change)) == 5, stats
    assert iou == sorted(iou, reverse=True) and len(set(iou)) == 5, stats
    assert stats["none"] == (0.0, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    images, boxes, labels = scenes(8)
    for strength in ("S2", "S4"):
        aug = DetectionAugment(strength)
        params = aug.sample_params(8, max(len(b) for b in boxes), torch.Generator().manual_seed(0))
        cpu = aug.apply(images, boxes, labels, params)
        gpu = aug.apply(images.cuda(), [b.cuda() for b in boxes], [l.cuda() for l in labels], params)
        assert gpu[0].is_cuda and gpu[1][0].is_cuda
        assert_images_close(gpu[0].cpu(), cpu[0], max_diff=1, max_frac=0.01)
        for x, y in zip(cpu[1], gpu[1]):
            torch.testing.assert_close(y.cpu(), x, atol=1e-3, rtol=0)


# ------------------------------------------------------------------ policies and magnitudes


def test_policy_registry_and_magnitudes():
    assert [s.scale_range for s in STRENGTHS.values()] == [(1.0, 1.0), (0.8, 1.2), (0.8, 1.2), (0.5, 2.0), (0.5, 2.0)]
    assert [STRENGTHS[s].policy for s in ("S1", "S2", "S3", "S4")] == [None, "autoaugment_v0", "autoaugment_v0",
                                                                       "randaugment"]
    assert len(AUTOAUGMENT_V0) == 5 and all(len(s) == 2 for s in AUTOAUGMENT_V0)
    assert set(RANDAUGMENT_OPS) <= set(OPS) and len(RANDAUGMENT_OPS) == 16
    # TF's level_to_arg at the 640 px reference, then scaled to 160 px (x 1/4)
    assert level_to_arg("TranslateX_BBox", 10, 640) == 250 and level_to_arg("TranslateX_BBox", 4, 160) == 25
    assert level_to_arg("TranslateY_Only_BBoxes", 6, 640) == pytest.approx(72)
    assert level_to_arg("Cutout", 8, 640) == 80 and level_to_arg("Cutout", 8, 160) == 20
    assert level_to_arg("Rotate_BBox", 10, 160) == 30 and level_to_arg("ShearY_BBox", 2, 160) == pytest.approx(0.06)
    assert level_to_arg("Color", 6, 160) == pytest.approx(1.18)
    assert (level_to_arg("Posterize", 10, 160), level_to_arg("Solarize", 10, 160),
            level_to_arg("SolarizeAdd", 10, 160)) == (4, 256, 110)
