"""Chapter 3's experiment: the cell layout, and end-to-end runs on fake CIFAR-10 / Tiny ImageNet."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rethink.data import registry
from rethink.experiments import noisy_student as ns
from rethink.results.store import ResultsStore

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(labels=20, in_domain_unlabeled=10, out_of_domain_unlabeled=12, teacher_arch="resnet10_w16",
            student_archs=["resnet10_w16"], seeds=[0], ablations=["hard_labels", "no_noise"],
            ablation_seeds=[0], supervised_all_labels=False, threshold=0.0, unlabeled_ratio=2,
            batch_size=4, teacher_epochs=2, student_epochs=1, warmup_epochs=0.5, randaugment_magnitude=5)


# ---------------------------------------------------------------- cell layout

def test_chain_configs_embed_their_teacher():
    cells = ns.cells({"student_archs": ["resnet18_w64", "resnet18_w64", "resnet26_w64"], "seeds": [0, 1],
                      "ablations": [], "ablation_seeds": []})
    roles = [(c.role, c.seed) for c in cells]
    per_seed = ["teacher", "student_1", "student_2", "student_3", "supervised_student_arch", "matched_control",
                "supervised_all"]
    assert roles == [(r, s) for s in (0, 1) for r in per_seed]
    by = {(c.role, c.seed): c.config for c in cells}
    assert by[("student_1", 0)]["teacher"] == by[("teacher", 0)]
    assert by[("student_3", 1)]["teacher"] == by[("student_2", 1)]
    assert by[("student_3", 0)]["arch"] == "resnet26_w64"
    assert by[("supervised_all", 0)]["labels"] == "all"
    assert by[("supervised_student_arch", 0)]["arch"] == "resnet18_w64"
    # the matched control: the first student's size, steps and images per step, labels only
    control, student = by[("matched_control", 0)], by[("student_1", 0)]
    assert control["kind"] == "supervised" and control["arch"] == student["arch"]
    assert control["steps"] == student["steps"]
    assert control["batch_size"] == student["batch_size"] * (1 + student["unlabeled_ratio"])
    assert all(c.config["version"] == ns.VERSION for c in cells)


def test_ablations_change_one_thing():
    cells = {c.role: c.config for c in ns.cells({"seeds": [0], "ablation_seeds": [0]})}
    base = cells["student_1"]
    for name, changes in ns.ABLATIONS.items():
        abl = cells[f"ablation:{name}"]
        diff = {k for k in base if base[k] != abl[k]} - {"data"}   # the datasets used follow the pools
        expected = {k for k, v in changes.items() if base[k] != (base["teacher"]["arch"] if v == "teacher" else v)}
        assert diff == expected, name
    assert cells["ablation:init_from_teacher"]["arch"] == cells["teacher"]["arch"]
    assert set(cells["ablation:in_domain_only"]["data"]) == {"cifar10"}
    assert set(base["data"]) == {"cifar10", "tiny-imagenet"}
    # no noise: the paper's noise off (RandAugment, dropout, stochastic depth); crop and flip kept
    quiet = cells["ablation:no_noise"]
    assert quiet["basic_augment"] is True and quiet["randaugment"] is False
    assert quiet["dropout"] == 0.0 and quiet["drop_path"] == 0.0
    assert base["randaugment_random_magnitude"] is False   # the paper's fixed magnitude


def test_ablation_seed_without_main_chain_trains_its_teacher():
    cells = ns.cells({"seeds": [0], "ablation_seeds": [5], "ablations": ["hard_labels"]})
    assert [(c.role, c.seed) for c in cells if c.seed == 5] == [("teacher", 5), ("ablation:hard_labels", 5)]


@pytest.mark.parametrize("params, match", [
    ({"student_archs": ["resnet10_w16"]}, "smaller than its teacher"),
    ({"ablations": ["no_such"]}, "unknown ablation"),
    ({"pools": ["jft"]}, "pools must be"),
    ({"teacher_arch": "resnet99"}, "unknown CIFAR architecture"),
    ({"lables": 4000}, "unknown Noisy Student parameter"),
])
def test_bad_parameters_are_named(params, match):
    with pytest.raises((ValueError, KeyError), match=match):
        ns.cells(params)


def test_labeled_subset_is_balanced_and_fixed():
    labels = np.repeat(np.arange(10), 50)
    a = ns.labeled_indices(labels, 40, 0)
    assert np.bincount(labels[a]).tolist() == [4] * 10
    assert np.array_equal(a, ns.labeled_indices(labels, 40, 0))
    assert not np.array_equal(a, ns.labeled_indices(labels, 40, 1))
    assert len(ns.labeled_indices(labels, "all", 0)) == 500
    with pytest.raises(ValueError, match="multiple"):
        ns.labeled_indices(labels, 45, 0)


# ---------------------------------------------------------------- end to end on fake data

@pytest.fixture
def fake_data(data_env, data_make_tar, data_fake_tiny, monkeypatch):
    """10-class fake CIFAR-10 (4 train, 2 test images per class, noise images) as 'cifar10',
    and the 3-class fake Tiny ImageNet as 'tiny-imagenet'."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    files = {}
    for c, name in enumerate(registry.CIFAR10_CLASSES):
        for split, n in (("train", 4), ("test", 2)):
            for k in range(n):
                buf = io.BytesIO()
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = 25 * c  # a class signal
                Image.fromarray(img).save(buf, "PNG")
                files[f"fake-cifar/{split}/{name}/{k:04d}.png"] = buf.getvalue()
    data_make_tar(data_env / "fake-cifar.tar.gz", files)
    cifar = registry.DatasetSpec(
        name="cifar10", title="fake CIFAR-10", num_classes=10, splits=("train", "test"), license="none",
        homepage="", default_image_size=32, canonical=None,
        mirror=registry.Archive("fake-cifar.tar.gz", None, "fake-cifar", registry.IMAGE_FOLDERS),
        classes=registry.CIFAR10_CLASSES, class_names=registry.CIFAR10_CLASSES)
    monkeypatch.setitem(registry.DATASETS, "cifar10", cifar)
    monkeypatch.setitem(registry.DATASETS, "tiny-imagenet", registry.DATASETS[data_fake_tiny])
    return data_env


def _run(tmp_path, name, params=TINY):
    store = ResultsStore(tmp_path / name)
    return store, ns.run_noisy_student(params, profile="smoke", store=store, verbose=False, progress=False)


def test_end_to_end_cached_and_deterministic(fake_data, tmp_path, monkeypatch):
    store, pairs = _run(tmp_path, "a")
    roles = [c.role for c, _ in pairs]
    assert roles == ["teacher", "student_1", "supervised_student_arch", "matched_control",
                     "ablation:hard_labels", "ablation:no_noise"]
    student = next(r for c, r in pairs if c.role == "student_1")["result"]
    st = student["pseudo_labels"]
    assert st["pool_sizes"] == {"in_domain": 10, "out_of_domain": 12}
    assert st["kept_after_filter"] == 22 and sum(st["per_class_final"]) == st["total"]
    assert st["pass_rate"] == {"in_domain": 1.0, "out_of_domain": 1.0}   # threshold 0: everything passes
    control = next(r for c, r in pairs if c.role == "matched_control")["result"]
    assert sum(1 for _ in control["history"]) == 1
    assert 0 <= st["in_domain_accuracy"] <= 1
    assert student["train_images"] == 20 + st["total"]
    assert all(e["pseudo_label"] in range(10) for e in st["out_of_domain_examples"])

    # cached: a second call trains nothing
    monkeypatch.setattr(ns, "train_supervised", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(ns, "train_student", lambda *a, **k: pytest.fail("retrained"))
    assert [r["key"] for _, r in ns.run_noisy_student(TINY, profile="smoke", store=store)] == \
        [r["key"] for _, r in pairs]
    monkeypatch.undo()


def test_same_seed_same_numbers(fake_data, tmp_path, monkeypatch):
    params = {**TINY, "ablations": []}
    _, first = _run(tmp_path, "a", params)
    monkeypatch.setenv("RETHINK_CACHE", str(tmp_path / "other-cache"))  # no shared checkpoints
    _, second = _run(tmp_path, "b", params)
    for (c1, r1), (c2, r2) in zip(first, second):
        assert r1["key"] == r2["key"]
        h1 = [e["train_loss"] for e in r1["result"]["history"]]
        h2 = [e["train_loss"] for e in r2["result"]["history"]]
        assert h1 == h2, c1.role
        assert r1["result"]["top1"] == r2["result"]["top1"]


def test_missing_teacher_weights_are_retrained(fake_data, tmp_path):
    store, pairs = _run(tmp_path, "a", {**TINY, "ablations": []})
    teacher = next(r for c, r in pairs if c.role == "teacher")
    weights = store.artifact_dir(ns.EXPERIMENT, teacher["config"]) / "weights.pt"
    for f in weights.parent.iterdir():
        f.unlink()
    model = ns.load_model(teacher["config"], store=store)
    assert weights.exists()
    assert not model.training
    record = json.loads(store.path(ns.EXPERIMENT, teacher["config"]).read_text())
    assert record["key"] == teacher["key"]


def test_pieces_keep_chains_whole_and_cover_everything():
    todo = ns.cells({"seeds": [0, 1, 2], "ablation_seeds": [0]})
    for n in (1, 3, 4, 5):
        pieces = [ns.split_piece(todo, f"{k}/{n}") for k in range(1, n + 1)]
        assert [c for p in pieces for c in p] == todo
        for p in pieces:
            for cell in p:
                if cell.role.startswith("student_"):
                    assert any(c.role == "teacher" and c.seed == cell.seed for c in p)
    with pytest.raises(ValueError, match="k/n"):
        ns.split_piece(todo, "5/4")


def test_a_teacher_passing_less_than_a_batch_lowers_the_threshold_and_says_so(fake_data, tmp_path, capsys):
    params = {**TINY, "ablations": [], "threshold": 1.0}          # no softmax reaches 1.0
    _, pairs = _run(tmp_path, "a", params)
    st = next(r for c, r in pairs if c.role == "student_1")["result"]["pseudo_labels"]
    assert st["threshold_used"] < 1.0 and st["total"] >= TINY["batch_size"] * TINY["unlabeled_ratio"]
    assert st["pass_rate"] == {"in_domain": 0.0, "out_of_domain": 0.0}   # at the threshold that was set
    assert "threshold lowered to" in capsys.readouterr().err
