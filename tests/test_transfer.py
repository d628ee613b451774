"""Chapter 4 (transfer): target splits, features, fine-tuning, cell expansion, an end-to-end
run on fake data, and the report's grid selection and verdict rules."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rethink.data import registry
from rethink.experiments import transfer as tr
from rethink.experiments import zoo as zoo_experiment
from rethink.stats import log_odds
from rethink.reports import transfer as report
from rethink.transfer.targets import TargetData, digits_images, load_target, stratified_split

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- splits

def test_stratified_split_is_a_seeded_partition_with_class_fractions():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    a = stratified_split(labels, (0.6, 0.2, 0.2), seed=3)
    b = stratified_split(labels, (0.6, 0.2, 0.2), seed=3)
    c = stratified_split(labels, (0.6, 0.2, 0.2), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # same seed, same split
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))  # another seed, another split
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(len(labels)))  # a partition
    for cls, n in enumerate([10, 20, 30, 41]):
        counts = [int((labels[part] == cls).sum()) for part in a]
        assert counts[0] == math.floor(0.6 * n) and counts[1] == math.floor(0.8 * n) - math.floor(0.6 * n)
        assert sum(counts) == n


def test_digits_are_dark_on_light_rgb_at_the_asked_size():
    images, labels = digits_images(24)
    assert images.shape == (1797, 3, 24, 24) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0], images[:, 2])  # grey
    assert np.median(images) > 200  # mostly paper
    assert np.bincount(labels).tolist() == np.bincount(
        __import__("sklearn.datasets", fromlist=["load_digits"]).load_digits().target).tolist()


def test_load_target_digits_splits_are_fixed_by_seed_and_capped():
    d0, d0b, d1 = (load_target("digits", 16, s) for s in (0, 0, 1))
    assert d0.sizes() == d0b.sizes() and np.array_equal(d0.test[0], d0b.test[0])
    assert not np.array_equal(d0.test[1], d1.test[1]) or not np.array_equal(d0.test[0], d1.test[0])
    assert sum(d0.sizes().values()) == 1797 and d0.metric == "top1" and d0.num_classes == 10
    capped = load_target("digits", 16, 0, train_per_class=5, eval_per_class=3)
    assert capped.sizes() == {"train": 50, "val": 30, "test": 30}
    assert np.bincount(capped.train[1]).tolist() == [5] * 10


def test_unknown_target_is_named_with_the_choices():
    with pytest.raises(KeyError, match="svhn") as e:
        load_target("svhn", 32)
    assert "digits" in str(e.value) and "coco128_crops" in str(e.value)


SHARED = Path(os.environ.get("RETHINK_DATA", "/nonexistent"))


@pytest.mark.skipif(not (SHARED / "coco128.tar.gz").exists(), reason="needs coco128.tar.gz in $RETHINK_DATA")
def test_coco_crops_keep_frequent_classes_and_split_every_class(tmp_path, monkeypatch):
    monkeypatch.setenv("RETHINK_CACHE", str(tmp_path / "cache"))
    from rethink.transfer.targets import coco_object_crops

    images, labels, classes = coco_object_crops(32, data_root=SHARED, min_count=12)
    assert images.shape[1:] == (3, 32, 32) and len(images) == len(labels)
    assert np.bincount(labels).min() >= 12 and "person" in classes
    d = load_target("coco128_crops", 32, 0, data_root=SHARED)
    assert d.metric == "mean_per_class"
    for split in (d.train, d.val, d.test):  # every class is in every split
        assert set(np.unique(split[1])) == set(range(len(classes)))


# --------------------------------------------------------------------------- features, fine-tuning

def _tiny_model(num_classes=3):
    from rethink.models.zoo import create_model
    torch.manual_seed(0)
    return create_model("resnet10t", num_classes)


def test_features_are_the_eval_mode_penultimate_layer():
    from rethink.augment import normalize
    from rethink.transfer.features import extract_features

    model = _tiny_model().train()
    images = np.random.default_rng(0).integers(0, 256, (10, 3, 16, 16), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    feats = extract_features(model, images, mean=mean, std=std, batch_size=4)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        x = normalize(torch.from_numpy(images), mean, std)
        ref = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (10, model.num_features)
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)


def _toy_target(n_per_class=6, size=16, classes=2):
    """Classes are solid colours: class c has red = 60 + 120 c."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.repeat(np.arange(classes), n)
        images = np.zeros((len(labels), 3, size, size), np.uint8)
        images[:, 0] = (60 + 120 * labels)[:, None, None]
        images[:, 1:] = rng.integers(0, 40, (len(labels), 2, size, size))
        return images, labels.astype(np.int64)
    return TargetData("toy", [str(c) for c in range(classes)], "top1", split(n_per_class), split(3), split(3))


def test_train_on_target_is_deterministic_and_records_each_epoch():
    from rethink.transfer.finetune import new_head, train_on_target

    runs = []
    for _ in range(2):
        model = new_head(_tiny_model(5), 2, seed=0)
        runs.append(train_on_target(model, _toy_target(), lr=0.05, weight_decay=5e-4, epochs=3,
                                    batch_size=4, seed=0, mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu"))
    a, b = runs
    assert model.get_classifier().out_features == 2
    assert [h["epoch"] for h in a["history"]] == [0, 1, 2]
    assert all(0 <= h["val_score"] <= 1 for h in a["history"])
    assert a["history"] == b["history"] and a["test_score"] == b["test_score"]
    assert a["steps"] == 3 * (12 // 4)


# --------------------------------------------------------------------------- cells

def _sources(archs=("resnet10t", "resnet18"), variants=("dropout",), seeds=(0,)):
    return zoo_experiment.cell_configs({"archs": list(archs), "variant_arch": "resnet10t",
                                        "variants": list(variants), "seeds": list(seeds), "image_size": 32})


def test_cells_cover_the_three_regimes_and_the_size_study():
    params = {"targets": ["digits", "clothing"], "finetune_targets": ["digits"], "seeds": [0, 1],
              "lrs": [0.01, 0.1], "weight_decays": [1e-4], "size_target": "digits",
              "size_train_per_class": [5, 10], "size_seeds": [0], "train_per_class": 20,
              "finetune_train_per_class": 8}
    cells = tr.cell_configs(params, _sources(), "resnet10t")
    by = lambda regime, n=None: [c for c in cells if c["regime"] == regime  # noqa: E731
                                 and (n is None or c["train_per_class"] == n)]
    assert len(by("fixed", 20)) == 3 * 2 * 2  # sources x targets x seeds
    assert len(by("finetune", 8)) == 3 * 1 * 2  # sources x finetune targets x lr grid
    assert len(by("scratch", 8)) == 2 * 1 * 2  # architectures (baselines) x targets x grid
    assert {c["arch"] for c in by("scratch")} == {"resnet10t", "resnet18"}
    for n in (5, 10):  # the size study: the variant architecture's baseline on the size target
        assert len(by("fixed", n)) == 1 and len(by("finetune", n)) == 2 and len(by("scratch", n)) == 2
        assert all(c["source"]["arch"] == "resnet10t" and c["source"]["variant"] == "baseline"
                   for c in by("finetune", n))
    assert len({tr.config_key(c) for c in cells}) == len(cells)
    assert all(c["image_size"] == 32 for c in cells)
    # the random-init control: fixed features of every baseline architecture, same targets and seeds
    assert len(by("random", 20)) == 2 * 2 * 2 and all("source" not in c for c in by("random"))


def test_the_size_study_can_train_a_fixed_number_of_steps():
    cells = tr.cell_configs({"targets": ["digits"], "size_train_per_class": [5, 50], "size_steps": 400},
                            _sources(), "resnet10t")
    sized = [c for c in cells if c["train_per_class"] in (5, 50) and c["regime"] in ("finetune", "scratch")]
    assert sized and all(c["steps"] == 400 for c in sized)
    assert all("steps" not in c for c in cells if c not in sized)


def test_the_scratch_regime_and_the_size_study_can_run_fewer_learning_rates():
    base = {"targets": ["digits"], "lrs": [0.01, 0.1], "size_train_per_class": [5, 50], "size_steps": 400}
    every = tr.cell_configs(base, _sources(), "resnet10t")
    cut = tr.cell_configs({**base, "scratch_lrs": [0.1], "size_lrs": [0.1]}, _sources(), "resnet10t")
    lrs = lambda cells, regime, sized: sorted({c["lr"] for c in cells if c["regime"] == regime  # noqa: E731
                                              and (c["train_per_class"] in (5, 50)) == sized})
    assert lrs(cut, "finetune", False) == [0.01, 0.1]          # fine-tuning keeps the grid
    assert lrs(cut, "scratch", False) == [0.1]
    assert lrs(cut, "finetune", True) == lrs(cut, "scratch", True) == [0.1]
    assert lrs(every, "scratch", False) == lrs(every, "scratch", True) == [0.01, 0.1]
    # the cells kept are the same cells (same keys): records of the full grid stay valid
    assert {tr.config_key(c) for c in cut} < {tr.config_key(c) for c in every}
    with pytest.raises(ValueError, match="size_lrs"):
        tr.cell_configs({**base, "size_lrs": ["fast"]}, _sources(), "resnet10t")


def test_cells_validate_their_parameters():
    with pytest.raises(ValueError, match="svhn"):
        tr.cell_configs({"targets": ["svhn"]}, _sources())
    with pytest.raises(ValueError, match="learning_rate"):
        tr.cell_configs({"learning_rate": 0.1}, _sources())
    with pytest.raises(ValueError, match="lrs"):
        tr.cell_configs({"lrs": ["fast"]}, _sources())
    with pytest.raises(ValueError, match="vgg"):
        tr.cell_configs({"size_train_per_class": [5], "size_source": "vgg"}, _sources())
    cells = tr.cell_configs({"weight_decays": ["5e-4"], "targets": ["digits"]}, _sources())
    assert {c["weight_decay"] for c in cells if "weight_decay" in c} == {5e-4}  # YAML's 5e-4 string


def test_only_the_chosen_source_seeds_are_sources():
    cells = tr.cell_configs({"targets": ["digits"], "source_seeds": [1]}, _sources(seeds=(0, 1)))
    assert {c["source"]["seed"] for c in cells if "source" in c} == {1}
    with pytest.raises(ValueError, match="seed"):
        tr.cell_configs({"source_seeds": [7]}, _sources())


# --------------------------------------------------------------------------- end to end

@pytest.fixture
def fake_zoo(data_fake_tiny, tmp_path, monkeypatch):
    fake = registry.DATASETS[data_fake_tiny]
    monkeypatch.setitem(registry.DATASETS, zoo_experiment.DATASET, dataclasses.replace(fake, name=zoo_experiment.DATASET))
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return dict(archs=["resnet10t"], variants=["no_bn_scale"], variant_arch="resnet10t", image_size=16,
                epochs=1, batch_size=8, train_per_class=None, val_per_class=None, seeds=[0])


E2E = dict(targets=["digits"], train_per_class=3, eval_per_class=2, seeds=[0], penalties=3,
           lrs=[0.05], epochs=1, batch_size=8, size_target="digits", size_train_per_class=[2],
           size_seeds=[0])


def test_end_to_end_cached_and_reported(fake_zoo, tmp_path):
    from rethink.results.store import ResultsStore

    records = tr.run_transfer(E2E, profile="smoke", zoo_params=fake_zoo)
    regimes = [r["config"]["regime"] for r in records]
    assert regimes.count("fixed") == 2 + 1 and regimes.count("finetune") == 2 + 1
    assert regimes.count("scratch") == 1 + 1 and regimes.count("random") == 1
    fixed = next(r["result"] for r in records if r["config"]["regime"] == "fixed")
    assert 0 <= fixed["test_score"] <= 1 and len(fixed["val_scores"]) == 3 and fixed["feature_dim"] > 0
    assert fixed["sizes"] == {"train": 30, "val": 20, "test": 20}
    # a second run fetches every cell from the store
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "transfer").glob("*.json")}
    again = tr.run_transfer(E2E, profile="smoke", zoo_params=fake_zoo)
    assert [r["key"] for r in again] == [r["key"] for r in records]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    store = ResultsStore()
    runs = report.runs_table(store.records("transfer"), store.records("zoo"))
    assert set(runs["regime"]) == {"fixed", "finetune", "scratch", "random"}
    assert runs["source_top1"].notna().all()
    random = [r for r in records if r["config"]["regime"] == "random"]
    assert len(random) == 1 and random[0]["result"]["source_top1"] is None   # random-init features


def test_pieces_partition_the_cells():
    cells = tr.cell_configs({"targets": ["digits", "clothing"], "seeds": [0, 1]}, _sources())
    pieces = [tr.common.split_piece(cells, f"{k}/3") for k in (1, 2, 3)]
    assert sum(pieces, []) == cells and all(pieces)


# --------------------------------------------------------------------------- report

def _record(regime, model, target, seed, val, test, top1, lr=None, n=10, variant="baseline"):
    source = {"arch": model, "variant": variant, "seed": 0}
    config = {"regime": regime, "target": target, "seed": seed, "train_per_class": n}
    config.update({"arch": model} if regime == "scratch" else {"source": source})
    if lr is not None:
        config.update(lr=lr, weight_decay=1e-4)
    history = [{"epoch": e, "train_loss": 1.0, "val_score": val * (e + 1) / 3} for e in range(3)]
    return {"key": f"{regime}{model}{target}{seed}{lr}{n}{variant}", "config": config,
            "result": {"val_score": val, "test_score": test, "metric": "top1", "history": history}}


def _zoo(model, top1, variant="baseline"):
    return {"config": {"arch": model, "variant": variant, "seed": 0}, "result": {"top1": top1}}


def test_runs_table_keeps_the_best_validation_grid_point():
    records = [_record("finetune", "a", "t", 0, 0.5, 0.40, 0.3, lr=0.1),
               _record("finetune", "a", "t", 0, 0.7, 0.60, 0.3, lr=0.01),
               _record("finetune", "a", "t", 0, 0.7, 0.99, 0.3, lr=0.001)]  # tie: the first wins
    runs = report.runs_table(records, [_zoo("a", 0.3)])
    assert len(runs) == 1 and runs.iloc[0]["lr"] == 0.01 and runs.iloc[0]["test_score"] == 0.60
    assert runs.iloc[0]["source_top1"] == 0.3


def test_correlations_are_pearson_of_log_odds_and_average_over_targets():
    from scipy.stats import pearsonr

    top1 = {"a": 0.2, "b": 0.3, "c": 0.45, "d": 0.5, "e": 0.55, "f": 0.6}
    acc = {"t1": [0.50, 0.62, 0.61, 0.80, 0.79, 0.85], "t2": [0.30, 0.28, 0.50, 0.52, 0.6, 0.58]}
    records = [_record("fixed", m, t, 0, 0.5, acc[t][i], top1[m]) for t in acc for i, m in enumerate(top1)]
    runs = report.runs_table(records, [_zoo(m, v) for m, v in top1.items()])
    corr = report.correlations(runs, regimes=("fixed",), n_resamples=500).set_index("target")
    x = log_odds(list(top1.values()))
    for t in acc:
        assert corr.loc[t, "r"] == pytest.approx(pearsonr(x, log_odds(acc[t])).statistic)
    avg = (log_odds(acc["t1"]) + log_odds(acc["t2"])) / 2
    assert corr.loc["average", "r"] == pytest.approx(pearsonr(x, avg).statistic)
    assert corr.loc["average", "ci_low"] <= corr.loc["average", "r"] <= corr.loc["average", "ci_high"]
    from rethink.reports.rules import fisher_interval
    assert (corr.loc["average", "ci_low"], corr.loc["average", "ci_high"]) == pytest.approx(
        fisher_interval(corr.loc["average", "r"], 6))


def test_regularizer_table_pairs_variants_with_the_baseline():
    records = [_record("fixed", "a", t, s, 0.5, acc, 0.3, variant=v)
               for t, s, v, acc in [("t", 0, "baseline", 0.6), ("t", 1, "baseline", 0.7),
                                    ("t", 0, "dropout", 0.5), ("t", 1, "dropout", 0.6)]]
    table = report.regularizer_table(report.runs_table(records, [_zoo("a", 0.3), _zoo("a", 0.35, "dropout")]), "a")
    row = table[table["variant"] == "dropout"].iloc[0]
    expected = np.mean([log_odds(0.5) - log_odds(0.6), log_odds(0.6) - log_odds(0.7)])
    assert row["Δ log-odds vs baseline"] == pytest.approx(expected) and row["targets worse"] == "1/1"
    assert row["source_top1"] == pytest.approx(35)


def test_size_table_and_convergence():
    records = [_record("finetune", "a", "t", 0, 0.6, 0.60, 0.3, lr=0.1, n=10),
               _record("scratch", "a", "t", 0, 0.3, 0.30, 0.3, lr=0.1, n=10),
               _record("finetune", "a", "t", 0, 0.8, 0.80, 0.3, lr=0.1, n=100),
               _record("scratch", "a", "t", 0, 0.75, 0.75, 0.3, lr=0.1, n=100)]
    runs = report.runs_table(records, [_zoo("a", 0.3)])
    size = report.size_table(runs, "t", "a").set_index("train_per_class")
    assert size.loc[10, "gap (pts)"] == pytest.approx(30) and size.loc[100, "gap (pts)"] == pytest.approx(5)
    conv = report.convergence_table(runs)
    # fine-tune val curve = val * (e+1)/3: reaches scratch's final 0.3 at epoch 2 (0.4), 0.75 at epoch 3
    assert conv.set_index("train_per_class")["fine-tune epochs to reach it"].to_dict() == {10: 2, 100: 3}


def test_leave_one_out_drops_each_model_once():
    top1 = {"a": 0.2, "b": 0.3, "c": 0.45, "d": 0.5}
    acc = [0.50, 0.62, 0.61, 0.80]
    records = [_record("fixed", m, "t", 0, 0.5, acc[i], top1[m]) for i, m in enumerate(top1)]
    loo = report.leave_one_out(report.runs_table(records, [_zoo(m, v) for m, v in top1.items()]), ("fixed",))
    assert sorted(loo["left out"]) == ["a", "b", "c", "d"]
    x, y = log_odds([0.2, 0.3, 0.45]), log_odds([0.50, 0.62, 0.61])  # without d
    assert loo.set_index("left out").loc["d", "r without it"] == pytest.approx(np.corrcoef(x, y)[0, 1])
