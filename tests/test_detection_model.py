"""Detector construction (norms, init), FCOS target assignment, flips, COCO AP, and a tiny training run."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rethink.detection.data import DetectionSet
from rethink.detection.evaluate import coco_detections, coco_evaluate, predict
from rethink.detection.model import NORMS, build_detector, group_count
from rethink.detection.augment import DetectionAugment
from rethink.detection.train import (detection_schedule, he2019_lr_factor, hflip_batch, spread_steps,
                                     step_lr_factor, train_detector)
from rethink.models.zoo import create_model

TINY = dict(fpn_channels=32)


def _coco_gt(ds: DetectionSet) -> dict:
    """COCO-format ground truth of a DetectionSet (category_id = label + 1)."""
    anns = []
    for image_id, boxes, labels in zip(ds.image_ids, ds.boxes, ds.labels):
        for b, c in zip(np.asarray(boxes, np.float64), labels):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": int(image_id), "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), float(w), float(h)], "area": float(w * h),
                         "iscrowd": 0})
    s = ds.image_size
    return {"images": [{"id": int(i), "width": s, "height": s} for i in ds.image_ids], "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(ds.class_names)]}


def _squares(n: int, size: int = 64, seed: int = 0) -> DetectionSet:
    """Coloured squares (red = class 0, blue = class 1) on noise, 1-2 per image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 80, (n, 3, size, size), dtype=np.uint8)
    boxes, labels = [], []
    for i in range(n):
        bs, ls = [], []
        for _ in range(rng.integers(1, 3)):
            side = int(rng.integers(size // 5, size // 2))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            c = int(rng.integers(0, 2))
            images[i, 0 if c == 0 else 2, y:y + side, x:x + side] = 230
            bs.append([x, y, x + side, y + side])
            ls.append(c)
        boxes.append(np.array(bs, np.float32))
        labels.append(np.array(ls, np.int64))
    return DetectionSet(images, boxes, labels, ["red", "blue"])


# ------------------------------------------------------------------ construction


@pytest.mark.parametrize("norm", ["frozen_bn", "bn", "gn"])
def test_norms_and_eval_output(norm):
    torch.manual_seed(0)
    model = build_detector("resnet10t", 3, image_size=128, norm=norm, **TINY)
    body = model.backbone.body
    bns = [m for m in body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norm == "frozen_bn":
        from torchvision.ops import FrozenBatchNorm2d
        assert not bns and any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
        assert all(not isinstance(m, FrozenBatchNorm2d) or not list(m.parameters(recurse=False))
                   for m in body.modules())  # no trainable BN parameters
        assert all(m.weight.eq(1).all() for m in body.modules() if isinstance(m, FrozenBatchNorm2d))
    elif norm == "bn":
        assert bns and all(m.weight.requires_grad for m in bns)
    else:
        gns = [m for m in body.modules() if isinstance(m, nn.GroupNorm)]
        assert not bns and gns and all(m.num_groups == group_count(m.num_channels) for m in gns)
    assert not any(isinstance(m, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm))
                   for m in model.backbone.fpn.modules())  # FPN: no norm
    assert model.strides == [4, 8, 16, 32, 64]
    model.eval()
    with torch.no_grad():
        out = model(list(torch.rand(2, 3, 128, 128)))
    assert len(out) == 2
    for d in out:
        assert set(d) == {"boxes", "scores", "labels"}
        assert d["boxes"].shape[1:] == (4,) and d["scores"].shape == d["labels"].shape == d["boxes"].shape[:1]


def test_syncbn_needs_distributed(tmp_path):
    import torch.distributed as dist
    assert "syncbn" in NORMS
    with pytest.raises(RuntimeError, match="torch.distributed"):
        build_detector("resnet10t", 3, image_size=128, norm="syncbn", **TINY)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = build_detector("resnet10t", 3, image_size=128, norm="syncbn", **TINY)
        assert any(isinstance(m, nn.SyncBatchNorm) for m in model.backbone.body.modules())
    finally:
        dist.destroy_process_group()


def test_head_norm_and_group_count():
    assert group_count(256) == 32 and group_count(48) == 24 and group_count(24) == 24
    model = build_detector("resnet10t", 3, image_size=128, head_norm="bn", **TINY)
    assert not any(isinstance(m, nn.GroupNorm) for m in model.head.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.head.modules()) == 8
    model = build_detector("resnet10t", 3, image_size=128, **TINY)
    assert sum(isinstance(m, nn.GroupNorm) for m in model.head.modules()) == 8


def _randomised_zoo(arch="resnet10t"):
    torch.manual_seed(1)
    zoo = create_model(arch, 200)
    with torch.no_grad():  # non-default statistics and affine, so copying is visible
        for m in zoo.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return zoo


@pytest.mark.parametrize("norm", ["frozen_bn", "gn"])
def test_pretrained_weights_are_copied(norm):
    zoo = _randomised_zoo()
    torch.manual_seed(2)
    scratch = build_detector("resnet10t", 3, image_size=128, norm=norm, **TINY)
    model = build_detector("resnet10t", 3, image_size=128, norm=norm, pretrained=zoo, **TINY)
    body, ref = model.backbone.body, zoo.state_dict()
    assert torch.equal(body.layer3[0].conv1.weight, ref["layer3.0.conv1.weight"])
    assert torch.equal(body.conv1[0].weight, ref["conv1.0.weight"])  # the adapted stem
    assert not torch.equal(scratch.backbone.body.layer3[0].conv1.weight, ref["layer3.0.conv1.weight"])
    bn = body.layer2[0].bn1
    assert torch.equal(bn.weight, ref["layer2.0.bn1.weight"]) and torch.equal(bn.bias, ref["layer2.0.bn1.bias"])
    if norm == "frozen_bn":
        assert torch.equal(bn.running_mean, ref["layer2.0.bn1.running_mean"])
    else:
        assert isinstance(bn, nn.GroupNorm)
    # a state dict works as well as the module
    from_dict = build_detector("resnet10t", 3, image_size=128, norm=norm, pretrained=zoo.state_dict(), **TINY)
    assert torch.equal(from_dict.backbone.body.layer4[0].conv2.weight, ref["layer4.0.conv2.weight"])


def test_pretrained_mismatch_lists_keys():
    zoo = create_model("resnet18", 10)
    with pytest.raises(ValueError, match=r"missing .*unexpected .*layer1\.1\."):
        build_detector("resnet10t", 3, image_size=128, pretrained=zoo, **TINY)
    state = _randomised_zoo().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(ValueError, match=r"shape mismatch \(1\): layer1\.0\.conv1\.weight"):
        build_detector("resnet10t", 3, image_size=128, pretrained=state, **TINY)


def test_retinanet_builds_and_trains_one_step():
    model = build_detector("resnet10t", 2, image_size=64, detector="retinanet", **TINY)
    model.train()
    losses = model(list(torch.rand(2, 3, 64, 64)), [{"boxes": torch.tensor([[8., 8., 40., 40.]]),
                                                    "labels": torch.tensor([1])}] * 2)
    assert set(losses) == {"classification", "bbox_regression"} and all(torch.isfinite(v) for v in losses.values())


# ------------------------------------------------------------------ FCOS target assignment


def _fcos_matches(model, boxes, size=128):
    """matched_idxs of torchvision FCOS.compute_loss for one image (head loss replaced by a probe)."""
    captured = {}

    def probe(targets, head_outputs, anchors, matched_idxs):
        captured.update(anchors=anchors[0], matched=matched_idxs[0])
        return {"zero": torch.zeros(())}

    model.head.compute_loss = probe
    model.train()
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.zeros(len(boxes), dtype=torch.int64)}
    with torch.no_grad():
        model([torch.zeros(3, size, size)], [target])
    return captured["anchors"], captured["matched"]


def _fcos_rule(boxes, strides, size=128, radius=1.5):
    """FCOS's rule re-derived: points (x, y) = stride x grid index (torchvision's anchor centres);
    foreground for box b iff within radius*stride of b's centre (centre sampling), strictly inside b,
    and max(l, t, r, b) in the level's range (4s, 8s) (first level from 0, last to inf); ties -> smallest box."""
    pts, lvl, match = [], [], []
    for k, s in enumerate(strides):
        n = size // s
        for i in range(n):
            for j in range(n):
                x, y = j * s, i * s
                lo = 0 if k == 0 else 4 * s
                hi = math.inf if k == len(strides) - 1 else 8 * s
                best, best_area = -1, math.inf
                for bi, (x0, y0, x1, y1) in enumerate(boxes):
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    d = (x - x0, y - y0, x1 - x, y1 - y)
                    ok = max(abs(x - cx), abs(y - cy)) < radius * s and min(d) > 0 and lo < max(d) < hi
                    area = (x1 - x0) * (y1 - y0)
                    if ok and area < best_area:
                        best, best_area = bi, area
                pts.append((x, y))
                lvl.append(k)
                match.append(best)
    return np.array(pts), np.array(lvl), np.array(match)


@pytest.fixture(scope="module")
def tiny_fcos():
    torch.manual_seed(0)
    return build_detector("resnet10t", 1, image_size=128, norm="frozen_bn", **TINY)


def _fg(points, levels, matched, box_index=0):
    return sorted((int(levels[i]), tuple(int(v) for v in points[i])) for i in np.flatnonzero(matched == box_index))


@pytest.mark.parametrize("boxes", [[[40, 40, 56, 56]], [[8, 8, 120, 120]], [[8, 8, 120, 120], [56, 56, 72, 72]],
                                   [[3, 70, 30, 125], [60, 5, 126, 40]]])
def test_fcos_assignment_matches_the_rule(tiny_fcos, boxes):
    anchors, matched = _fcos_matches(tiny_fcos, boxes)
    points, levels, expected = _fcos_rule(boxes, tiny_fcos.strides)
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2).numpy()
    np.testing.assert_array_equal(centres, points)  # same point order as torchvision's anchors
    np.testing.assert_array_equal(matched.numpy(), expected)


def test_fcos_assignment_hand_cases(tiny_fcos):
    # strides 4, 8, 16, 32, 64 -> size ranges P3 (0, 32), P4 (32, 64), P5 (64, 128), P6 (128, 256), P7 (256, inf)
    _, matched = _fcos_matches(tiny_fcos, [[40, 40, 56, 56]])  # 16 px box, centre (48, 48)
    points, levels, _ = _fcos_rule([[40, 40, 56, 56]], tiny_fcos.strides)
    m = matched.numpy()
    # P3 points within 1.5 x 4 = 6 px of the centre: x, y in {44, 48, 52}; nothing elsewhere
    assert _fg(points, levels, m) == [(0, (x, y)) for x in (44, 48, 52) for y in (44, 48, 52)]
    assert m[(levels == 0) & (points[:, 0] == 0) & (points[:, 1] == 0)] == -1  # outside the box: background
    # 112 px box centred at 64: P5 points {48, 64, 80}^2 except the centre (max distance 56 < 64);
    # the centre falls in P4's range (32, 64); no P3 (too far) and no P6/P7 (max distance < 128)
    _, matched = _fcos_matches(tiny_fcos, [[8, 8, 120, 120]])
    got = _fg(points, levels, matched.numpy())
    assert got == [(1, (64, 64))] + [(2, (x, y)) for x in (48, 64, 80) for y in (48, 64, 80) if (x, y) != (64, 64)]
    # a small box inside the big one takes its own P3 points; the P4 centre stays with the big box
    _, matched = _fcos_matches(tiny_fcos, [[8, 8, 120, 120], [56, 56, 72, 72]])
    m = matched.numpy()
    assert _fg(points, levels, m, 1) == [(0, (x, y)) for x in (60, 64, 68) for y in (60, 64, 68)]
    assert (1, (64, 64)) in _fg(points, levels, m, 0)


# ------------------------------------------------------------------ flips and schedule


def test_hflip_batch_images_and_boxes():
    w = 10
    images = torch.arange(2 * 1 * 2 * w, dtype=torch.uint8).reshape(2, 1, 2, w)
    boxes = [torch.tensor([[1., 2., 4., 5.], [0., 0., 10., 3.]]), torch.tensor([[2., 1., 3., 2.]])]
    empty = torch.zeros(0, 4)
    out, ob = hflip_batch(images, boxes, torch.tensor([True, False]))
    assert torch.equal(out[0, 0, 0], images[0, 0, 0].flip(0)) and out[0, 0, 0, 0] == images[0, 0, 0, w - 1]
    assert torch.equal(out[1], images[1])
    assert torch.equal(ob[0], torch.tensor([[6., 2., 9., 5.], [0., 0., 10., 3.]]))  # x0' = W - x1, x1' = W - x0
    assert torch.equal(ob[1], boxes[1])
    assert torch.equal(images[0, 0, 0], torch.arange(w, dtype=torch.uint8))  # inputs untouched
    out2, ob2 = hflip_batch(out, ob, torch.tensor([True, False]))  # an involution
    assert torch.equal(out2, images) and all(torch.equal(a, b) for a, b in zip(ob2, boxes))
    _, oe = hflip_batch(images[:1], [empty], torch.tensor([True]))
    assert oe[0].shape == (0, 4)


def test_step_schedule():
    f = [step_lr_factor(s, 90, 10) for s in range(90)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[59] == 1.0
    assert f[60] == pytest.approx(0.1) and f[79] == pytest.approx(0.1) and f[80] == pytest.approx(0.01)


# He et al. 2019: x0.1 for the last 60k and the last 20k iterations of every schedule, their 1x being
# 90k: with base_steps B the drops are at T - round(2B/3) and T - round(2B/9). By hand, B = 90 (the
# paper's iterations / 1000) and B = 4 (the smoke profile's base_steps):
HE2019_DROPS = [  # (base_steps, total_steps, first drop, second drop)
    (90, 45, -15, 25),     # 0.5x: x0.1 from the start, x0.01 from 25
    (90, 90, 30, 70),      # 1x: 1/3 and 7/9
    (90, 180, 120, 160),   # 2x: 2/3 and 8/9 (Detectron's 2x: 120k and 160k of 180k)
    (90, 360, 300, 340),   # 4x: 5/6 and 17/18
    (90, 540, 480, 520),   # 6x
    (4, 4, 1, 3),          # round(8/3) = 3, round(8/9) = 1
    (4, 8, 5, 7),
    (4, 16, 13, 15),
]


@pytest.mark.parametrize("base, total, first, second", HE2019_DROPS)
def test_he2019_schedule_matches_the_hand_table(base, total, first, second):
    want = [1.0 if s < first else 0.1 if s < second else 0.1 * 0.1 for s in range(total)]
    got = [he2019_lr_factor(s, total, base) for s in range(total)]
    assert got == pytest.approx(want, rel=1e-12)
    schedule = detection_schedule("he2019", base_steps=base, warmup_steps=0)
    assert [schedule(s, total) for s in range(total)] == got


def test_he2019_warmup_and_fractions():
    assert he2019_lr_factor(0, 180, 90, warmup_steps=10) == pytest.approx(0.1)
    assert he2019_lr_factor(9, 180, 90, warmup_steps=10) == pytest.approx(1.0)
    fractions = detection_schedule("fractions", base_steps=90, warmup_steps=10)
    he = detection_schedule("he2019", base_steps=90, warmup_steps=10)
    assert [fractions(s, 180) for s in range(180)] == [he(s, 180) for s in range(180)]  # the same at 2x only
    assert fractions(30, 90) == 1.0 and he(30, 90) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown lr_schedule 'cosine'"):
        detection_schedule("cosine", base_steps=90, warmup_steps=0)


def test_spread_steps():
    assert spread_steps(200, 6) == [33, 66, 100, 133, 166, 200]
    assert spread_steps(5, 10) == [1, 2, 3, 4, 5]
    assert spread_steps(10, 1) == spread_steps(10, 0) == [10]


# ------------------------------------------------------------------ COCO evaluation


def _one_box_set():
    boxes = [np.array([[10, 10, 50, 50]], np.float32), np.array([[5, 20, 25, 60], [30, 30, 60, 62]], np.float32)]
    return DetectionSet(np.zeros((2, 3, 64, 64), np.uint8), boxes, [np.array([0]), np.array([1, 0])], ["a", "b"])


def _as_predictions(ds, shift=0.0):
    return [{"boxes": b + np.array([shift, 0, shift, 0], np.float32), "scores": np.ones(len(b)), "labels": l}
            for b, l in zip(ds.boxes, ds.labels)]


def test_coco_ground_truth_scores_100():
    ds = _one_box_set()
    gt = _coco_gt(ds)
    dets = coco_detections(_as_predictions(ds), ds.image_ids)
    assert dets[0] == {"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0], "score": 1.0}
    ap = coco_evaluate(gt, dets)
    assert ap["AP"] == pytest.approx(100) and ap["AP50"] == pytest.approx(100) and ap["AP75"] == pytest.approx(100)
    assert math.isnan(ap["APl"])  # no large ground truth: COCO's -1 -> NaN
    assert ap["APs"] == pytest.approx(100) and ap["APm"] == pytest.approx(100)  # 800 px^2 small, others medium
    scaled = coco_evaluate(gt, dets, area_scale=4.0)  # thresholds 64^2, 192^2: everything small
    assert scaled["APs"] == pytest.approx(100) and math.isnan(scaled["APm"])


def test_coco_shift_lowers_ap75_first_and_empty_is_zero():
    ds = DetectionSet(np.zeros((1, 3, 64, 64), np.uint8), [np.array([[10, 10, 50, 50]], np.float32)],
                      [np.array([0])], ["a"])
    gt = _coco_gt(ds)
    # 8 px shift of a 40 px box: IoU = 1280 / 1920 = 0.67: right at 0.50..0.65, wrong at 0.70..0.95
    ap = coco_evaluate(gt, coco_detections(_as_predictions(ds, shift=8), ds.image_ids))
    assert ap["AP50"] == pytest.approx(100) and ap["AP75"] == pytest.approx(0) and ap["AP"] == pytest.approx(40)
    empty = coco_evaluate(gt, coco_detections([{"boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                                                "labels": np.zeros(0, np.int64)}], ds.image_ids))
    assert empty["AP"] == 0 and empty["AP50"] == 0 and empty["APm"] == 0 and math.isnan(empty["APl"])


def test_faster_backend_matches_pycocotools():
    pytest.importorskip("faster_coco_eval")
    ds = _squares(20, size=96, seed=3)
    gt = _coco_gt(ds)
    rng = np.random.default_rng(0)
    preds = []
    for b, l in zip(ds.boxes, ds.labels):  # jittered true boxes, random scores, some wrong classes and extras
        jit = b + rng.normal(0, 4, b.shape).astype(np.float32)
        extra = rng.uniform(0, 60, (2, 2)).astype(np.float32)
        boxes = np.concatenate([jit, np.concatenate([extra, extra + 20], 1)])
        preds.append({"boxes": boxes, "scores": rng.uniform(0.1, 1, len(boxes)),
                      "labels": np.concatenate([np.where(rng.random(len(l)) < 0.2, 1 - l, l), [0, 1]])})
    dets = coco_detections(preds, ds.image_ids)
    a = coco_evaluate(gt, dets, area_scale=0.25)
    b = coco_evaluate(gt, dets, area_scale=0.25, backend="faster")
    assert 0 < a["AP"] < 100
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6, nan_ok=True), k


# ------------------------------------------------------------------ training


class _Stop(Exception):
    pass


class _StopAfter:
    order = 95  # after Checkpoint (80) has saved the epoch

    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, event, t):
        if event == "after_epoch" and t.epoch == self.epoch:
            raise _Stop


class _StubDetector(nn.Module):
    """A torchvision-detector look-alike in microseconds: training mode returns a loss dict, eval mode
    one box per image (a box and a score regressed from pooled conv features)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 5)

    def forward(self, images, targets=None):
        x = torch.stack(images)
        size = x.shape[-1]
        out = self.head(self.norm(self.conv(x)).relu().mean((2, 3)))
        box = out[:, :4].sigmoid() * size
        box = torch.cat([torch.minimum(box[:, :2], box[:, 2:]), torch.maximum(box[:, :2], box[:, 2:])], 1)
        if self.training:
            present = torch.tensor([float(len(t["boxes"]) > 0) for t in targets])
            first = torch.stack([t["boxes"][0] if len(t["boxes"]) else torch.zeros(4) for t in targets])
            return {"bbox_regression": (F.smooth_l1_loss(box, first, reduction="none").mean(1) * present).mean(),
                    "classification": F.binary_cross_entropy_with_logits(out[:, 4], present)}
        return [{"boxes": b[None], "scores": s.sigmoid()[None], "labels": torch.zeros(1, dtype=torch.int64)}
                for b, s in zip(box, out[:, 4])]



def _stub_run(train, val, *, steps=7, artifact_dir=None, callbacks=(), **kw):
    torch.manual_seed(0)
    model = _StubDetector()
    out = train_detector(model, train, val, _coco_gt(val), steps=steps, batch_size=4, lr=0.05, warmup_steps=2,
                         eval_points=3, device="cpu", seed=0, artifact_dir=artifact_dir, callbacks=callbacks, **kw)
    return out, model


def test_train_detector_runs_exactly_the_steps_asked_with_evaluations_spread(one_thread):
    train, val = _squares(10, size=32, seed=0), _squares(4, size=32, seed=1)
    out, _ = _stub_run(train, val, steps=7)  # 2 steps per epoch: epochs 0-2 full, epoch 3 one step
    h = out["history"]
    assert out["steps"] == out["total_steps"] == 7 and out["steps_per_epoch"] == 2 and out["epochs"] == 4
    assert out["eval_steps"] == [2, 4, 7] and out["lr_schedule"] == "he2019" and out["base_steps"] == 7
    # a record per epoch and per evaluation; those at evaluation steps hold the AP dict
    assert [(r["epoch"], r["step"]) for r in h] == [(0, 2), (1, 4), (2, 6), (3, 7)]
    assert [r["step"] for r in h if "val" in r] == [2, 4, 7] and "val" not in h[2]
    assert out["final"] == h[-1]["val"] and set(out["final"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert all({"loss_bbox_regression", "loss_classification", "eval_time_s"} <= set(r) for r in h if "val" in r)
    assert h[0]["train_loss"] == pytest.approx(h[0]["loss_bbox_regression"] + h[0]["loss_classification"])
    # lr_end: the lr of each record's last step (0-based 1, 3, 5, 6); 2 warmup steps (0.025, 0.05), then
    # He's drops for base_steps = steps = 7 at 7 - round(14/3) = 2 and 7 - round(14/9) = 5
    assert [r["lr_end"] for r in h] == pytest.approx([0.05, 0.005, 0.0005, 0.0005])
    assert not out["diverged"] and out["images_per_s"] > 0
    # an evaluation inside an epoch splits it: 3 steps per epoch, evaluations at 2, 4, 7
    out, _ = _stub_run(_squares(12, size=32, seed=0), val, steps=7)
    assert [(r["epoch"], r["step"], "val" in r) for r in out["history"]] == [
        (0, 2, True), (0, 3, False), (1, 4, True), (1, 6, False), (2, 7, True)]


def test_train_detector_resumes_exactly_with_box_aware_augmentation(tmp_path, one_thread):
    train, val = _squares(10, size=32, seed=0), _squares(4, size=32, seed=1)
    augment = DetectionAugment("S3", image_size=32)
    full, model_full = _stub_run(train, val, augment=augment)
    with pytest.raises(_Stop):
        _stub_run(train, val, augment=augment, artifact_dir=tmp_path, callbacks=[_StopAfter(1)])
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "weights.pt").exists()
    resumed, model_resumed = _stub_run(train, val, augment=augment, artifact_dir=tmp_path)
    assert (tmp_path / "weights.pt").exists()
    timing = {"epoch_time_s", "images_per_s", "eval_time_s"}

    def untimed(history):  # as JSON, so that NaN (no large boxes: APl) equals NaN
        return json.dumps([{k: v for k, v in r.items() if k not in timing} for r in history])
    assert untimed(full["history"]) == untimed(resumed["history"])
    for k, v in model_full.state_dict().items():
        assert torch.equal(v, model_resumed.state_dict()[k]), k
    # the augmentation is live: without it (or with the default flips) the run differs
    plain, _ = _stub_run(train, val, hflip=False)
    assert plain["history"][-1]["train_loss"] != full["history"][-1]["train_loss"]


def _warmup_then_constant(step, total_steps):
    return min(1.0, (step + 1) / 2)


def test_train_detector_learns(one_thread):
    train, val = _squares(16, seed=0), _squares(6, seed=1)
    torch.manual_seed(0)
    model = build_detector("resnet10t", 2, image_size=64, norm="gn", fpn_channels=32)
    out = train_detector(model, train, val, _coco_gt(val), steps=8, batch_size=4, lr=0.02,
                         lr_schedule=_warmup_then_constant, eval_points=1, device="cpu", seed=0)
    h = out["history"]
    assert [r["step"] for r in h] == [4, 8] and [r["step"] for r in h if "val" in r] == [8]
    assert h[-1]["train_loss"] < h[0]["train_loss"] * 0.9
    assert {"loss_classification", "loss_bbox_regression", "loss_bbox_ctrness"} <= set(h[0])
    assert set(out["final"]) >= {"AP", "AP50"} and out["lr_schedule"] == "_warmup_then_constant"


def test_predict_format():
    ds = _squares(3, seed=2)
    torch.manual_seed(0)
    model = build_detector("resnet10t", 2, image_size=64, fpn_channels=32, score_thresh=0.0)
    preds = predict(model, ds, batch_size=2, device="cpu", indices=[2, 0])
    assert len(preds) == 2 and model.training  # mode restored
    for p in preds:
        assert p["boxes"].shape[1] == 4 and p["boxes"].dtype == np.float32
        assert len(p["scores"]) == len(p["labels"]) > 0 and p["labels"].dtype == np.int64
        assert p["labels"].max() < 2
