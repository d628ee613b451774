"""Chapter 6 (Zoph et al.): the protocol contract, the plan's budget, data isolation of the teacher,
pseudo-box selection and student batches on constructed examples, and a tiny self-training run."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rethink import experiments
from rethink.detection.data import DetectionSet
from rethink.experiments import protocol, zoph
from rethink.profiles import experiment_params
from rethink.results.store import ResultsStore, config_key

SHARED = Path(os.environ.get("RETHINK_DATA", "/nonexistent"))
needs_tiny = pytest.mark.skipif(not (SHARED / "tiny-imagenet-200-sub400.tar.gz").exists(),
                                reason="needs tiny-imagenet-200-sub400.tar.gz in $RETHINK_DATA")


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def profile_cells(profile: str = "smoke", **overrides):
    params, _ = experiment_params(profile, zoph.STEM, overrides)
    return params, zoph.cells(params, profile=profile)


# ------------------------------------------------------------------ the protocol


def test_defaults_satisfy_the_schema_and_the_module_is_registered():
    assert set(zoph.SCHEMA) == set(zoph.DEFAULTS)
    protocol.check_params(dict(zoph.DEFAULTS), zoph.DEFAULTS, zoph.SCHEMA, where="DEFAULTS")
    assert experiments.get("zoph") is zoph and experiments.for_stem(zoph.STEM) is zoph
    assert (Path(__file__).parents[1] / "notebooks" / f"{zoph.STEM}.md").exists()


def test_smoke_cells_follow_the_protocol():
    _, cells = profile_cells()
    assert cells and all(isinstance(c, protocol.Cell) and c.experiment == zoph.NAME for c in cells)
    assert all(c.config["version"] == zoph.VERSION and "tiny-imagenet" in c.config["data"] for c in cells)
    assert len({c.key for c in cells}) == len(cells)
    assert {c.config["kind"] for c in cells} == {"imagenet++", "simclr", "detector", "student"}
    assert {c.role.split(" ")[0] for c in cells} == {"pretrain", "detector", "student", "student-sum", "joint",
                                                     "joint-student"}
    for c in cells:
        assert isinstance(zoph.describe(c.config), str) and zoph.cost(c.config) > 0
        for name, upstream in zoph.upstream(c.config):
            assert name in experiments.REGISTRY and isinstance(upstream, dict)
        assert zoph.network_info(c.config).classes in (20, 200)
    pp = next(c for c in cells if c.config["kind"] == "imagenet++")
    assert "imagenette" in pp.config["data"] and pp.config["teacher"]["arch"] == pp.config["arch"]


def test_each_student_follows_its_teacher_and_keeps_the_teacher_s_arm():
    _, cells = profile_cells()
    index = {c.key: i for i, c in enumerate(cells)}
    students = [c for c in cells if c.config["kind"] == "student"]
    assert len(students) == 6   # 2 fractions x 2 inits, a plain-sum student and a joint student
    for s in students:
        t = s.config["teacher"]
        assert t["kind"] == "detector" and not t["joint"] and index[config_key(t)] < index[s.key]
        for k in ("init", "source", "augment_strength", "data_fraction", "seed", "train", "val", "steps"):
            assert s.config[k] == t[k], k
        assert s.config["pseudo_batch_size"] == s.config["batch_size"]   # half of each batch pseudo-labeled
    assert {s.config["loss"]["mode"] for s in students} == {"normalized", "sum"}


def test_pieces_keep_students_with_their_teachers_and_cover_every_cell():
    _, cells = profile_cells()
    for n in (2, 3, 5):
        pieces = [zoph.split_piece(cells, f"{k}/{n}") for k in range(1, n + 1)]
        assert [c.key for piece in pieces for c in piece] == [c.key for c in cells]
        for piece in pieces:
            keys = {c.key for c in piece}
            assert all(config_key(c.config["teacher"]) in keys for c in piece if c.config["kind"] == "student")
    with pytest.raises(ValueError):
        zoph.split_piece(cells, "3/2")


def test_full_profile_fits_the_book_s_plan():
    """full: every piece of --piece k/4 within 5 minutes, the chapter within 15, by the cost model."""
    _, cells = profile_cells("full")
    total = sum(zoph.cost(c.config) for c in cells)
    assert total <= 15 * 60, f"{total / 60:.1f} min"
    for k in range(1, 5):
        assert sum(zoph.cost(c.config) for c in zoph.split_piece(cells, f"{k}/4")) <= 5 * 60
    seeds = {}
    for c in cells:
        if c.config["kind"] == "detector" and c.config["augment_strength"] in ("S1", "S4"):
            seeds.setdefault((c.config["init"], c.config["augment_strength"], c.config["data_fraction"],
                              bool(c.config["joint"])), set()).add(c.config["seed"])
    assert all(len(s) >= 3 for s in seeds.values()), seeds     # three seeds at every compared point


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="unknown zoph parameter"):
        zoph.resolve_params({"epochs": 3})
    with pytest.raises(ValueError, match="init"):
        zoph.resolve_params({"inits": ["rand", "jft"]})
    with pytest.raises(ValueError, match="strength"):
        zoph.resolve_params({"augment_strengths": ["S5"]})
    with pytest.raises(ValueError, match="less than one batch"):
        zoph.resolve_params({"train_size": 40, "data_fractions": [0.1, 1.0], "batch_size": 8})
    with pytest.raises(protocol.ParameterError, match="score_threshold"):
        zoph.resolve_params({"score_threshold": -1.0})


# ------------------------------------------------------------------ the teacher's data


def test_the_teacher_never_sees_validation_or_pool_scenes():
    params, cells = profile_cells()
    p = zoph.resolve_params(params)
    pool = zoph.pool_spec(p)
    for c in cells:
        if c.config["kind"] not in ("detector", "student"):
            continue
        train, val = c.config["train"], c.config["val"]
        assert train["split"] == "train" and train["seed"] == p["scene_seed"] and val["split"] == "val"
        if c.config["kind"] == "student":
            assert c.config["pseudo_labels"]["pool"] == pool
            t = c.config["teacher"]
            assert t["train"] == train and t["train"] != pool and t["val"] == val      # the teacher's only data
            assert zoph.pool_disjoint(t["train"], val, c.config["pseudo_labels"]["pool"])
    labeled = zoph.scene_spec(p, "train", p["train_size"], p["scene_seed"])
    val = zoph.scene_spec(p, "val", p["val_size"], p["scene_seed"])
    assert zoph.pool_disjoint(labeled, val, pool)
    assert not zoph.pool_disjoint(labeled, val, {**pool, "seed": labeled["seed"]})        # the labeled scenes
    assert not zoph.pool_disjoint(labeled, val, {**val, "seed": pool["seed"]})           # validation instances
    assert not zoph.pool_disjoint(labeled, val, {**pool, "image_size": 32})


@needs_tiny
def test_pool_scenes_share_no_scene_with_the_labeled_set_and_no_instance_with_validation():
    from rethink.detection.scenes import generate_scenes

    kw = dict(image_size=64, data_root=SHARED)
    labeled = generate_scenes(24, split="train", seed=0, **kw)
    pool = generate_scenes(24, split="train", seed=0 + zoph.DEFAULTS["pool_seed_offset"], **kw)
    val = generate_scenes(12, split="val", seed=0, **kw)
    lab = {im.tobytes() for im in np.asarray(labeled.images)}
    assert not any(im.tobytes() in lab for im in np.asarray(pool.images))
    sources = lambda ds: {i for s in ds.meta["source_val_indices"] for i in s}  # noqa: E731
    assert not sources(pool) & sources(val) and not sources(labeled) & sources(val)


# ------------------------------------------------------------------ pseudo-boxes and student batches


def _pool(n=3, size=32, fill=200):
    images = np.full((n, 3, size, size), fill, np.uint8)
    boxes = [np.array([[1, 1, 10, 10]], np.float32), np.array([[2, 2, 12, 12], [15, 15, 30, 30]], np.float32),
             np.zeros((0, 4), np.float32)][:n]
    labels = [np.array([0]), np.array([1, 2]), np.zeros(0, np.int64)][:n]
    return DetectionSet(images, boxes, labels, ["a", "b", "c"])


DETS = [{"boxes": np.array([[1, 1, 10, 10], [0, 0, 5, 5]], np.float32), "scores": np.array([0.9, 0.3], np.float32),
         "labels": np.array([0, 1])},
        {"boxes": np.array([[2, 2, 12, 12]], np.float32), "scores": np.array([0.4], np.float32),
         "labels": np.array([1])},
        {"boxes": np.array([[3, 3, 9, 9]], np.float32), "scores": np.array([0.6], np.float32),
         "labels": np.array([2])}]


def test_pseudo_labels_keep_boxes_at_the_threshold_and_drop_empty_scenes():
    ds, st = zoph.select_pseudo(_pool(), DETS, 0.5, drop_empty=True, min_images=2)
    assert len(ds) == 2 and list(st["indices"]) == [0, 2] and not st["empty_kept"]
    assert ds.boxes[0].tolist() == [[1, 1, 10, 10]] and ds.labels[1].tolist() == [2]
    assert st["scenes_with_boxes"] == 2 and st["boxes_per_scene"] == pytest.approx(2 / 3)
    ds, st = zoph.select_pseudo(_pool(), DETS, 0.5, drop_empty=True, min_images=3)   # too few: keep the empty one
    assert len(ds) == 3 and st["empty_kept"] and len(ds.boxes[1]) == 0
    ds, _ = zoph.select_pseudo(_pool(), DETS, 0.3, drop_empty=False, min_images=1)
    assert [len(b) for b in ds.boxes] == [2, 1, 1]


def test_pseudo_box_quality_against_the_hidden_ground_truth():
    q = zoph.pseudo_box_quality(_pool(), DETS, 0.3)
    # kept: image 0 two boxes (one right, one wrong class/place), image 1 one right, image 2 one (no truth)
    assert q["kept_boxes"] == 4 and q["true_boxes"] == 3
    assert q["precision"] == pytest.approx(2 / 4) and q["recall"] == pytest.approx(2 / 3)


def test_student_batches_are_half_labeled_half_pseudo_labeled():
    from rethink.detection.train import DetectionBatches

    labeled = DetectionSet(np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(3, 1).repeat(8, 2).repeat(8, 3),
                           [np.array([[0, 0, 4, 4]], np.float32)] * 6, [np.array([0])] * 6, ["a"])
    pseudo = _pool(3, size=8)
    batches = zoph.StudentBatches(DetectionBatches(labeled, 2, "cpu", seed=0),
                                  DetectionBatches(pseudo, 2, "cpu", seed=7))
    assert len(batches) == 3 and batches.batch_size == 4 and batches.n_human == 2
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        out = list(batches)
        assert len(out) == 3
        seen = []
        for images, boxes, labels in out:
            assert images.shape[0] == len(boxes) == len(labels) == 4
            assert (images[:2] < 6).all() and (images[2:] == 200).all()     # labeled first, then pseudo-labeled
            seen += images[:2, 0, 0, 0].tolist()
        assert sorted(seen) == list(range(6))                               # one pass over the labeled scenes
    batches.set_epoch(1)
    again = [b[0] for b in batches]
    assert all(torch.equal(a, b) for a, b in zip(again, [b[0] for b in out]))   # (seed, epoch) decides


class _Recorder(torch.nn.Module):
    """A stand-in detector: its 'loss' is the mean of the images it was given."""

    def forward(self, images, targets):
        return {"loss": torch.stack(images).mean()}


def test_student_loss_splits_the_batch_into_its_labeled_and_pseudo_labeled_parts():
    images = torch.cat([torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.full((3, 3, 4, 4), 255, dtype=torch.uint8)])
    boxes, labels = [torch.zeros(0, 4)] * 5, [torch.zeros(0, dtype=torch.int64)] * 5
    terms = zoph.StudentLoss(2)(_Recorder(), (images, boxes, labels))
    assert float(terms["human"]) == 0.0 and float(terms["pseudo"]) == pytest.approx(1.0)
    extra = zoph.StudentLoss(2, extra=lambda m, b: {"imagenet_classification": torch.tensor(0.5)})
    assert set(extra(_Recorder(), (images, boxes, labels))) == {"human", "pseudo", "imagenet_classification"}


class _T:
    """What SelfTrainingCallback reads of the Trainer."""

    def __init__(self, terms):
        self.loss_terms, self.loss, self.history, self.step, self.device = terms, None, [], 0, torch.device("cpu")


def test_self_training_callback_back_propagates_the_normalised_loss(tmp_path):
    from rethink.selftrain.detection import SelfTrainingLoss

    lh = torch.tensor(2.0, requires_grad=True)
    t = _T({"human": lh, "pseudo": torch.tensor(1.0), "imagenet_classification": torch.tensor(0.25)})
    cb = zoph.SelfTrainingCallback(SelfTrainingLoss(alpha=1.0, momentum=0.9), tmp_path)
    cb.after_loss(t)
    # first step: ratio = 2 / 1, L = (2 + 2 * 1) / 2 = 2, plus the joint term
    assert float(t.loss.detach()) == pytest.approx(2.25)
    t.loss.backward()
    assert float(lh.grad) == pytest.approx(0.5)
    t.history.append({"step": 1})
    t.step = 1
    cb.after_epoch(t)
    assert t.history[-1]["loss_optimized"] == pytest.approx(2.0) and t.history[-1]["loss_ratio"] == pytest.approx(2.0)
    resumed = zoph.SelfTrainingCallback(SelfTrainingLoss(alpha=1.0, momentum=0.9), tmp_path)
    resumed.before_epoch(t)
    assert float(resumed.loss.mean_human) == 2.0 and resumed.loss.steps == 1
    plain = _T({"human": torch.tensor(2.0), "pseudo": torch.tensor(1.0)})
    zoph.SelfTrainingCallback(SelfTrainingLoss(alpha=1.0, mode="sum")).after_loss(plain)
    assert float(plain.loss) == pytest.approx(3.0)


def test_joint_model_and_classification_batches():
    params, cells = profile_cells()
    config = next(c.config for c in cells if c.config["kind"] == "detector" and c.config["joint"])
    model = zoph.build_model(config)
    assert isinstance(model, zoph.JointModel)
    x = torch.randn(2, 3, 32, 32)
    assert model.classify(x).shape == (2, 200)
    cb = zoph.JointBatches(torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8), torch.arange(10), 4, seed=0)

    class T:
        batch, step = ("images", "boxes", "labels"), 3
    t = T()
    cb.before_batch(t)
    assert t.batch[:3] == ("images", "boxes", "labels") and t.batch[3].shape == (4, 3, 32, 32)
    assert t.batch[3].dtype == torch.float32 and t.batch[4].shape == (4,)
    t2 = T()
    cb.before_batch(t2)
    assert torch.equal(t.batch[4], t2.batch[4])    # drawn from (seed, step)


def test_augmentation_distortion_orders_the_strengths():
    g = np.random.default_rng(0)
    images = g.integers(0, 255, (16, 3, 64, 64), dtype=np.uint8)
    boxes = [np.array([[8, 8, 40, 40], [30, 20, 60, 50]], np.float32)] * 16
    ds = DetectionSet(images, boxes, [np.array([0, 1])] * 16, ["a", "b"])
    d = zoph.augmentation_distortion(ds, ("S1", "S4"))
    assert d["S4"]["pixel_change"] > d["S1"]["pixel_change"] and d["S4"]["box_iou"] < d["S1"]["box_iou"]


# ------------------------------------------------------------------ end to end


@needs_tiny
def test_a_tiny_self_training_cell_runs_end_to_end(tmp_path, monkeypatch):
    def artifact_dir(experiment, config):
        return tmp_path / "artifacts" / experiment / config_key(config)
    monkeypatch.setattr(ResultsStore, "artifact_dir", staticmethod(artifact_dir))
    params, cells = profile_cells()
    student = next(c for c in cells if c.config["kind"] == "student" and c.config["init"] == "rand"
                   and c.config["data_fraction"] == 0.5)
    store = ResultsStore(tmp_path / "results")
    # only the student: the teacher is trained first by load_network (and stored)
    [(_, rec)] = protocol.run_cells(zoph, [student], profile="smoke", store=store, data_root=SHARED)
    assert store.get(zoph.NAME, student.config["teacher"]) is not None
    res = rec["result"]
    assert res["steps"] == student.config["steps"] and set(res["final"]) >= {"AP", "AP50", "AP75"}
    h = res["history"][-1]
    assert {"loss_human", "loss_pseudo", "loss_optimized", "loss_ratio"} <= set(h)
    pl = res["pseudo_labels"]
    assert pl["pool_scenes"] == student.config["pseudo_labels"]["pool"]["size"] and pl["scenes_used"] >= 4
    assert res["label_time_s"] > 0 and "teacher_pool_AP" in pl
