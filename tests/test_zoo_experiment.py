"""Chapter 1's experiment: config expansion, pieces, and an end-to-end run on a fake Tiny ImageNet."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from rethink.data import registry
from rethink.experiments import zoo
from rethink.experiments.zoo import DATASET, cell_configs, run_zoo, split_piece
from rethink.results.store import ResultsStore

CPU = torch.device("cpu")
FAKE_CLASSES = 3  # conftest.data_fake_tiny: 3 classes, 4 train images each, 6 val images

E2E = dict(archs=["resnet10t"], variants=["label_smoothing"], variant_arch="resnet10t", image_size=32,
           epochs=2, batch_size=8, train_per_class=None, val_per_class=None, seeds=[0])


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- cell_configs

def test_cell_configs_order_and_knobs():
    configs = cell_configs({"archs": ["resnet18", "resnet10t"], "variant_arch": "resnet34",
                            "variants": ["label_smoothing", "dropout", "no_bn_scale"], "seeds": [0, 1]})
    cells = [(c["seed"], c["arch"], c["variant"]) for c in configs]
    # resnet34 is not in archs: it still gets the baseline its variants are compared with
    per_seed = [("resnet18", "baseline"), ("resnet10t", "baseline"), ("resnet34", "baseline"),
                ("resnet34", "label_smoothing"), ("resnet34", "dropout"), ("resnet34", "no_bn_scale")]
    assert cells == [(s, a, v) for s in (0, 1) for a, v in per_seed]
    knobs = {c["variant"]: (c["label_smoothing"], c["dropout"], c["bn_scale"]) for c in configs}
    assert knobs == {"baseline": (0.0, 0.0, True), "label_smoothing": (0.1, 0.0, True),
                     "dropout": (0.0, 0.5, True), "no_bn_scale": (0.0, 0.0, False)}
    assert all(c["dataset"] == DATASET == "tiny-imagenet" for c in configs)


def test_cell_configs_defaults_and_base_recipe():
    configs = cell_configs({})
    assert [c["arch"] for c in configs if c["variant"] == "baseline"] == list(zoo.ARCHITECTURES)
    assert [(c["arch"], c["variant"]) for c in configs if c["variant"] != "baseline"] == [
        ("resnet18", "label_smoothing"), ("resnet18", "dropout"), ("resnet18", "no_bn_scale")]
    c = cell_configs({"epochs": 3, "lr": 0.1, "batch_size": 16, "image_size": 32})[0]
    assert (c["epochs"], c["lr"], c["batch_size"], c["image_size"]) == (3, 0.1, 16, 32)
    expected = {"dataset", "arch", "variant", "seed", "image_size", "train_per_class", "val_per_class",
                "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "translate", "ema_decay",
                "label_smoothing", "dropout", "bn_scale", "version", "data"}
    assert set(c) == expected
    assert c["version"] == zoo.VERSION and set(c["data"]) == {"tiny-imagenet"}


def test_cell_configs_ignores_other_notebook_parameters():
    assert cell_configs({"profile": "smoke", "data_root": "/x"}) == cell_configs({})


def test_variant_seeds_add_seeds_to_the_variant_study_only():
    configs = cell_configs({"archs": ["resnet10t", "resnet18"], "variant_arch": "resnet18",
                            "variants": ["dropout"], "seeds": [0], "variant_seeds": [0, 1, 2]})
    assert [(c["seed"], c["arch"], c["variant"]) for c in configs] == [
        (0, "resnet10t", "baseline"), (0, "resnet18", "baseline"), (0, "resnet18", "dropout"),
        (1, "resnet18", "baseline"), (1, "resnet18", "dropout"),
        (2, "resnet18", "baseline"), (2, "resnet18", "dropout")]
    assert configs[4]["dropout"] == 0.5 and configs[3]["dropout"] == 0.0
    assert cell_configs({"variant_seeds": None}) == cell_configs({"variant_seeds": []}) == cell_configs({})


def test_baseline_in_variants_is_not_duplicated():
    configs = cell_configs({"archs": ["resnet18"], "variant_arch": "resnet18",
                            "variants": ["baseline", "dropout"]})
    assert [(c["arch"], c["variant"]) for c in configs] == [("resnet18", "baseline"), ("resnet18", "dropout")]


@pytest.mark.parametrize("params", [{"archs": ["resnet18", "vgg77"]}, {"variant_arch": "vgg77"}])
def test_cell_configs_rejects_unknown_arch(params):
    with pytest.raises(ValueError, match="vgg77") as e:
        cell_configs(params)
    assert "resnet10t" in str(e.value) and "wide_resnet50" in str(e.value)  # the valid choices


def test_cell_configs_rejects_unknown_variant():
    with pytest.raises(ValueError, match="mixup") as e:
        cell_configs({"variants": ["dropout", "mixup"]})
    for v in zoo.VARIANTS:
        assert v in str(e.value)


# --------------------------------------------------------------------------- split_piece

def test_split_piece_partitions():
    configs = cell_configs({"archs": ["resnet18", "resnet34", "resnet10t"], "variant_arch": "resnet18",
                            "variants": ["dropout", "no_bn_scale"]})
    assert len(configs) == 5
    first, second = split_piece(configs, "1/2"), split_piece(configs, "2/2")
    assert first + second == configs  # contiguous, in order, nothing lost or repeated
    assert {len(first), len(second)} == {2, 3}
    assert split_piece(configs, "1/1") == configs
    thirds = [split_piece(configs, f"{k}/3") for k in (1, 2, 3)]
    assert sum(thirds, []) == configs and all(thirds)


@pytest.mark.parametrize("piece", ["3/2", "0/2", "-1/2"])
def test_split_piece_rejects_out_of_range(piece):
    with pytest.raises(ValueError, match=piece):
        split_piece(cell_configs({}), piece)


# --------------------------------------------------------------------------- end to end on fake data

@pytest.fixture
def fake_tiny(data_fake_tiny, tmp_path, monkeypatch):
    """The 3-class fake archive registered under the name the experiment uses ('tiny-imagenet'),
    with RETHINK_DATA / RETHINK_CACHE (from data_env) and RETHINK_RESULTS under tmp_path."""
    fake = registry.DATASETS[data_fake_tiny]
    monkeypatch.setitem(registry.DATASETS, DATASET, dataclasses.replace(fake, name=DATASET))
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def _trained_template(tmp_path_factory):
    """Where the one real training run of this module is kept (results store + artifacts)."""
    return tmp_path_factory.mktemp("zoo_trained")


@pytest.fixture
def trained(fake_tiny, _trained_template):
    """run_zoo at the smoke profile on the fake data: two resnet10t cells, 2 epochs each.

    Trains once per module; later tests get copies of that run's results store and weights
    in their own tmp dirs (the configs do not depend on the fake archive's bytes)."""
    t = _trained_template
    if not (t / "records.json").exists():
        records = run_zoo(E2E, profile="smoke", verbose=False)
        shutil.copytree(fake_tiny / "results", t / "results")
        shutil.copytree(fake_tiny / "cache" / "artifacts", t / "artifacts")
        (t / "records.json").write_text(json.dumps(records))
        return records
    shutil.copytree(t / "results", fake_tiny / "results")
    shutil.copytree(t / "artifacts", fake_tiny / "cache" / "artifacts")
    return json.loads((t / "records.json").read_text())


def test_run_zoo_end_to_end(trained, fake_tiny):
    assert [(r["config"]["arch"], r["config"]["variant"]) for r in trained] == [
        ("resnet10t", "baseline"), ("resnet10t", "label_smoothing")]
    assert [r["config"]["label_smoothing"] for r in trained] == [0.0, 0.1]
    for rec in trained:
        res, prov = rec["result"], rec["provenance"]
        assert len(res["history"]) == 2 and [h["epoch"] for h in res["history"]] == [0, 1]
        assert 0.0 <= res["top1"] <= 1.0 and 0.0 <= res["top5"] <= 1.0
        assert res["top1"] == res["history"][-1]["val_top1"]
        assert res["top5"] == 1.0  # only 3 classes: the top 5 always holds the label
        assert res["val_images"] == 6 and res["diverged"] is False
        assert res["params"] > 0 and res["flops"] > 0
        assert prov["profile"] == "smoke" and prov["seeds"] == [0]
        assert all(np.isfinite(h["train_loss"]) for h in res["history"])
        weights = ResultsStore.artifact_dir("zoo", rec["config"]) / res["weights"]
        assert weights.is_file() and weights.is_relative_to(fake_tiny / "cache")
    # stored in the results store under $RETHINK_RESULTS, one JSON per cell
    stored = sorted((fake_tiny / "results" / "zoo").glob("*.json"))
    assert len(stored) == 2
    assert {json.loads(p.read_text())["key"] for p in stored} == {r["key"] for r in trained}


def test_second_run_zoo_reads_the_store(trained, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("trained again")

    monkeypatch.setattr(zoo, "train_cell", no_training)
    again = run_zoo(E2E, profile="smoke", verbose=False)
    assert [r["key"] for r in again] == [r["key"] for r in trained]
    assert [r["result"]["top1"] for r in again] == [r["result"]["top1"] for r in trained]
    assert [r["provenance"] for r in again] == [r["provenance"] for r in trained]
    # `only` filters cells (arch/variant form)
    only = run_zoo(E2E, profile="smoke", verbose=False, only=["resnet10t/label_smoothing"])
    assert [r["key"] for r in only] == [trained[1]["key"]]
    # `piece` selects cells by position
    assert [r["key"] for r in run_zoo(E2E, profile="smoke", verbose=False, piece="1/2")] == [trained[0]["key"]]
    assert [r["key"] for r in run_zoo(E2E, profile="smoke", verbose=False, piece="2/2")] == [trained[1]["key"]]


def _eval_top1(model, config) -> float:
    from rethink.train.loop import evaluate
    _, val_loader, _ = zoo.make_loaders(config, CPU)
    return evaluate(model, val_loader, CPU)["top1"]


def test_saved_weights_reproduce_the_recorded_top1(trained):
    """What load_pretrained should do, done by hand with the right number of classes."""
    for rec in trained:
        config = rec["config"]
        state = torch.load(ResultsStore.artifact_dir("zoo", config) / rec["result"]["weights"],
                           map_location="cpu", weights_only=True)
        model = zoo.create_model(config["arch"], FAKE_CLASSES, dropout=config["dropout"],
                                 bn_scale=config["bn_scale"])
        model.load_state_dict(state)
        assert _eval_top1(model, config) == rec["result"]["top1"]


def test_load_pretrained_matches_saved_weights_and_top1(trained):
    rec = trained[0]
    model = zoo.load_pretrained(rec)
    state = torch.load(ResultsStore.artifact_dir("zoo", rec["config"]) / rec["result"]["weights"],
                       map_location="cpu", weights_only=True)
    got = model.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert _eval_top1(model, rec["config"]) == rec["result"]["top1"]


def test_load_pretrained_uses_the_cache_without_retraining(trained, monkeypatch):
    """Weights come from the user cache; nothing is retrained when they are there."""
    monkeypatch.setattr(zoo, "train_cell", lambda *a, **kw: pytest.fail("retrained"))
    for rec in trained:
        model = zoo.load_pretrained(rec)
        state = torch.load(ResultsStore.artifact_dir("zoo", rec["config"]) / rec["result"]["weights"],
                           map_location="cpu", weights_only=True)
        got = model.state_dict()
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
        assert _eval_top1(model, rec["config"]) == rec["result"]["top1"]


def test_load_pretrained_retrains_when_weights_are_missing(trained, monkeypatch):
    rec = trained[1]
    weights = ResultsStore.artifact_dir("zoo", rec["config"]) / rec["result"]["weights"]
    saved = weights.read_bytes()
    weights.unlink()
    calls = []

    def fake_train_cell(config, artifact_dir, **kw):
        calls.append((config, artifact_dir))
        (artifact_dir / "weights.pt").write_bytes(saved)

    monkeypatch.setattr(zoo, "train_cell", fake_train_cell)
    model = zoo.load_pretrained(rec)
    assert calls == [(rec["config"], weights.parent)]
    assert _eval_top1(model, rec["config"]) == rec["result"]["top1"]


def test_cli_smoke_on_fake_data(fake_tiny, capsys):
    zoo.main(["--profile", "smoke", "-p", "archs=[resnet10t]", "-p", "variants=[]", "-p", "epochs=1",
              "-p", "batch_size=4", "-p", "image_size=16"])
    out = capsys.readouterr().out
    assert "[1/1] resnet10t" in out and "top-1" in out
    zoo.main(["--profile", "smoke", "--list", "-p", "archs=[resnet10t]", "-p", "variants=[]", "-p", "epochs=1",
              "-p", "batch_size=4", "-p", "image_size=16"])
    listed = capsys.readouterr().out
    assert listed.startswith("done  resnet10t") and "still to run: ~0.0 min" in listed
    recs = ResultsStore().records("zoo")
    assert len(recs) == 1 and recs[0]["provenance"]["profile"] == "smoke"
    c = recs[0]["config"]
    assert (c["arch"], c["epochs"], c["image_size"], c["train_per_class"]) == ("resnet10t", 1, 16, 2)
    assert recs[0]["result"]["val_images"] == 2 * FAKE_CLASSES  # smoke: val_per_class 2
