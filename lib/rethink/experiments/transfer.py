"""Chapter 4: do better ImageNet models transfer better? (Kornblith et al. 2019)

Sources are the zoo of chapter 1 (pre-trained on Tiny ImageNet, the ImageNet stand-in):
every architecture and regularizer variant, with its Tiny ImageNet top-1. Cells of the
results store (experiment ``transfer``), each keyed by its config:

* ``fixed``: L2-regularised multinomial logistic regression on the source's fixed
  penultimate features (L-BFGS, penalty chosen on validation, refit on train+val).
  Cheap, so repeated over several split seeds.
* ``finetune``: every layer of the source trained on the target, one cell per
  (learning rate, weight decay) of the grid; the report picks the best on validation.
* ``scratch``: the source's architecture from random init, same grid and length.
* ``random``: the fixed-feature regime on a random-init network of each architecture (the
  control that says how much of the fixed-feature correlation the architecture alone makes).
* the dataset-size study: the same three regimes for one source on one target
  subsampled to several sizes per class.

A source config is embedded in each cell's config, so a cell is tied to one zoo model.
Zoo weights live in the user cache; a missing one is retrained (zoo.load_pretrained).

    python -m rethink.experiments.transfer --profile full [--list] [--piece 1/3] [--only fixed]
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

from ..data.registry import stats
from ..models.zoo import create_model
from ..results.store import ResultsStore, config_key
from . import common, protocol
from . import zoo as zoo_experiment
from .protocol import Cell
from .zoo import source_label

NAME = EXPERIMENT = "transfer"
STEM = "04_transfer"
VERSION = 1
REGIMES = ("fixed", "finetune", "scratch", "random")
MEAN, STD = stats(zoo_experiment.DATASET)  # the sources' input normalisation
# the dataset archive each target is cut from (digits come with scikit-learn)
TARGET_DATA = {"cifar10": "cifar10", "imagenette": "imagenette", "clothing": "clothing",
               "coco128_crops": "coco128"}

DEFAULTS = dict(
    zoo_profile=None,          # whose zoo records are the sources (None: the chapter's profile)
    source_archs=None,         # zoo architectures used as sources (None: all of the zoo's)
    source_seeds=[0],          # zoo seeds used as sources
    variant_source_seeds=[],   # more zoo seeds of the variant study as fixed-feature sources
    source_variants=None,      # regularizer variants used as sources (None: every variant of the zoo)
    finetune_variants=True,    # fine-tune the variants too (no verdict uses them)
    random_control=True,       # fixed features of a random-init network of every architecture
    targets=["cifar10", "imagenette", "clothing", "coco128_crops", "digits"],
    train_per_class=None,      # cap on each target's training split (None: all)
    finetune_train_per_class=None,  # a lower cap for fine-tuning and scratch (None: train_per_class)
    eval_per_class=None,       # cap on validation and test (None: all)
    seeds=[0, 1, 2],           # fixed features: split seeds
    penalties=45,              # L2 grid: 45 log-spaced values in [1e-6, 1e5] (the paper's)
    penalty_patience=None,     # stop the path after this many weaker penalties without gain
    lbfgs_max_iter=1000,       # L-BFGS iterations per penalty (near-separable fits hit it)
    finetune_targets=None,     # None: every target
    finetune_seeds=[0],
    lrs=[0.01, 0.1],
    weight_decays=[5e-4],
    epochs=10,
    batch_size=128,
    warmup_epochs=0.0,
    size_target="cifar10",     # dataset-size study
    size_source=None,          # architecture (baseline variant); None: the zoo's variant_arch
    size_train_per_class=[],
    size_seeds=[0],
    size_regimes=["fixed", "finetune", "scratch"],
    size_steps=None,           # the size study's optimizer steps at every size (None: `epochs` epochs)
    size_lrs=None,             # the size study's learning rates (None: `lrs`)
    scratch_lrs=None,          # the scratch regime's learning rates outside the size study (None: `lrs`)
)
SCHEMA = {"zoo_profile": "str|None", "source_archs": "list[str]|None", "source_seeds": "list[int>=0]", "variant_source_seeds": "list[int>=0]",
          "source_variants": "list[str]|None", "finetune_variants": "bool",
          "targets": "list[str]", "train_per_class": "int>0|None", "finetune_train_per_class": "int>0|None",
          "eval_per_class": "int>0|None", "seeds": "list[int>=0]", "penalties": "int>0",
          "penalty_patience": "int>0|None", "lbfgs_max_iter": "int>0", "finetune_targets": "list[str]|None",
          "finetune_seeds": "list[int>=0]", "lrs": "list[float>0]", "weight_decays": "list[float>=0]",
          "epochs": "int>0", "batch_size": "int>0", "warmup_epochs": "float>=0", "size_target": "str",
          "size_source": "str|None", "size_train_per_class": "list[int>0]", "size_seeds": "list[int>=0]",
          "size_regimes": "list[str]", "size_steps": "int>0|None",
          "size_lrs": "list[float>0]|None", "scratch_lrs": "list[float>0]|None"}


def resolve_params(params: dict) -> dict:
    return _params(params)


def _params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS) - {"profile", "data_root"})
    if unknown:
        raise ValueError(f"unknown transfer parameter(s) {unknown}; valid: {sorted(DEFAULTS)}")
    from ..transfer.targets import TARGETS

    p = {**copy.deepcopy(DEFAULTS), **params}
    for key in ("lrs", "weight_decays", "size_lrs", "scratch_lrs"):  # YAML reads 5e-4 (no dot) as a string
        if p[key] is None:
            continue
        try:
            p[key] = [float(v) for v in p[key]]
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a list of numbers, got {p[key]!r}") from None
    p["finetune_targets"] = p["targets"] if p["finetune_targets"] is None else p["finetune_targets"]
    for key in ("targets", "finetune_targets"):
        bad = [t for t in p[key] if t not in TARGETS]
        if bad:
            raise ValueError(f"{key}: unknown target(s) {bad}; choose from {sorted(TARGETS)}")
    if p["size_train_per_class"] and p["size_target"] not in TARGETS:
        raise ValueError(f"size_target {p['size_target']!r} unknown; choose from {sorted(TARGETS)}")
    bad = [r for r in p["size_regimes"] if r not in REGIMES]
    if bad:
        raise ValueError(f"size_regimes: unknown regime(s) {bad}; choose from {list(REGIMES)}")
    return p


def cell_configs(params: dict, sources: list[dict], variant_arch: str | None = None,
                 data_root=None) -> list[dict]:
    """Every cell of the chapter for the given zoo source configs, without duplicates.

    Order: fixed features, then fine-tuning and scratch grouped by source, then the
    dataset-size study.
    """
    p = _params(params)
    variant_arch = variant_arch or zoo_experiment.DEFAULTS["variant_arch"]
    if p["source_variants"] is not None:
        sources = [s for s in sources if s["variant"] == "baseline" or s["variant"] in p["source_variants"]]
    extra = [s for s in sources if s["seed"] in p["variant_source_seeds"] and s["seed"] not in p["source_seeds"]
             and s["arch"] == variant_arch]
    if p["source_archs"] is not None:
        keep = set(p["source_archs"]) | {variant_arch}
        sources = [s for s in sources if s["arch"] in keep]
    sources = [s for s in sources if s["seed"] in p["source_seeds"]]
    if not sources:
        raise ValueError(f"no zoo source with seed in {p['source_seeds']}: run the zoo chapter first")
    data = {"train_per_class": p["train_per_class"], "eval_per_class": p["eval_per_class"]}
    trained_data = {**data, "train_per_class": p["finetune_train_per_class"] or p["train_per_class"]}
    grid = {"epochs": p["epochs"], "batch_size": p["batch_size"], "warmup_epochs": p["warmup_epochs"]}

    def stamped(config):
        target = TARGET_DATA.get(config["target"])
        return protocol.stamp(config, VERSION, [target] if target else [], data_root)

    def fixed(source, target, seed, data, regime="fixed"):
        init = {"source": source} if regime == "fixed" else {"arch": source["arch"]}
        return stamped({"regime": regime, **init, "target": target, "seed": seed,
                        "image_size": source["image_size"], "penalties": p["penalties"],
                        "penalty_patience": p["penalty_patience"], "lbfgs_max_iter": p["lbfgs_max_iter"], **data})

    def trained(regime, source, target, seed, lr, wd, data, steps=None):
        init = {"source": source} if regime == "finetune" else {"arch": source["arch"]}
        return stamped({"regime": regime, **init, "target": target, "seed": seed,
                        "image_size": source["image_size"], "lr": lr, "weight_decay": wd, **grid, **data,
                        **({"steps": steps} if steps else {})})

    def grid_cells(regime, source, target, seeds, data, steps=None, lrs=None):
        return [trained(regime, source, target, seed, lr, wd, data, steps)
                for seed in seeds for lr in (lrs or p["lrs"]) for wd in p["weight_decays"]]

    out = [fixed(s, t, seed, data) for s in sources + extra for t in p["targets"] for seed in p["seeds"]]
    if p["random_control"]:
        out += [fixed(s, t, seed, data, regime="random") for s in sources if s["variant"] == "baseline"
                for t in p["targets"] for seed in p["seeds"]]
    for s in sources:
        if s["variant"] != "baseline" and not p["finetune_variants"]:
            continue
        for t in p["finetune_targets"]:
            out += grid_cells("finetune", s, t, p["finetune_seeds"], trained_data)
    for s in sources:
        if s["variant"] == "baseline":  # scratch depends on the architecture only
            for t in p["finetune_targets"]:
                out += grid_cells("scratch", s, t, p["finetune_seeds"], trained_data, lrs=p["scratch_lrs"])
    if p["size_train_per_class"]:
        arch = p["size_source"] or variant_arch
        size_source = next((s for s in sources if s["arch"] == arch and s["variant"] == "baseline"), None)
        if size_source is None:
            raise ValueError(f"size_source {arch!r} is not among the zoo's baselines "
                             f"{sorted(s['arch'] for s in sources if s['variant'] == 'baseline')}")
        for n in p["size_train_per_class"]:
            d = {**data, "train_per_class": n}
            for regime in p["size_regimes"]:
                if regime == "fixed":
                    out += [fixed(size_source, p["size_target"], seed, d) for seed in p["size_seeds"]]
                else:
                    out += grid_cells(regime, size_source, p["size_target"], p["size_seeds"], d, p["size_steps"],
                                      p["size_lrs"])
    return common.unique(out, key=config_key)


# ------------------------------------------------------------------ running cells


def _target(config: dict, data_root):
    from ..transfer.targets import load_target
    return load_target(config["target"], config["image_size"], config["seed"], data_root=data_root,
                       train_per_class=config["train_per_class"], eval_per_class=config["eval_per_class"])


def _source_record(source: dict, zoo_store: ResultsStore, data_root=None, profile: str = "unknown") -> dict:
    """The zoo record of a source (its Tiny ImageNet top-1; its weights via load_pretrained),
    trained here first if chapter 1 has not (a piece is self-contained)."""
    from functools import partial

    return zoo_store.run(zoo_experiment.NAME, source, partial(zoo_experiment.train, data_root=data_root),
                         profile=profile, seeds=[source["seed"]])


def run_fixed(config: dict, artifact_dir: Path, *, zoo_store: ResultsStore, data_root=None) -> dict:
    """Regime (a): features of the frozen source (or, for the ``random`` control, of a
    random-init network of the source's architecture), logistic regression with L-BFGS."""
    from ..transfer.features import extract_features
    from ..transfer.logistic import fit_transfer, penalty_grid

    device = common.training_device()
    data = _target(config, data_root)
    if config["regime"] == "random":
        torch.manual_seed(config["seed"])
        model, source = create_model(config["arch"], 200), None
    else:
        source = _source_record(config["source"], zoo_store)
        model = zoo_experiment.load_pretrained(source, data_root=data_root)
    t0 = time.perf_counter()
    feats = [extract_features(model, images, mean=MEAN, std=STD, device=device)
             for images, _ in (data.train, data.val, data.test)]
    feature_time = time.perf_counter() - t0
    labels = [torch.as_tensor(y, device=device) for _, y in (data.train, data.val, data.test)]
    fit = fit_transfer(feats[0], labels[0], feats[1], labels[1], feats[2], labels[2], data.num_classes,
                       grid=penalty_grid(config["penalties"]), metric=data.metric,
                       patience=config["penalty_patience"], max_iter=config["lbfgs_max_iter"])
    return {"val_score": fit.val_score, "test_score": fit.test_score, "metric": data.metric,
            "l2": fit.l2, "C": fit.C, "val_scores": fit.val_scores,
            "feature_dim": int(feats[0].shape[1]), "sizes": data.sizes(),
            "source_top1": source["result"]["top1"] if source else None,
            "feature_time_s": feature_time, "fit_time_s": fit.fit_time_s}


def run_trained(config: dict, artifact_dir: Path, *, zoo_store: ResultsStore, data_root=None,
                progress=None) -> dict:
    """Regimes (b) fine-tune and (c) scratch: one grid point."""
    from ..transfer.finetune import new_head, train_on_target

    device = common.training_device()
    data = _target(config, data_root)
    if config["regime"] == "finetune":
        source = _source_record(config["source"], zoo_store)
        model = zoo_experiment.load_pretrained(source, data_root=data_root)
        label = source_label(config["source"])
    else:
        torch.manual_seed(config["seed"])
        model = create_model(config["arch"], data.num_classes)
        label = f"{config['arch']} (scratch)"
    model = new_head(model, data.num_classes, config["seed"])
    result = train_on_target(model, data, lr=config["lr"], weight_decay=config["weight_decay"],
                             epochs=config["epochs"], batch_size=config["batch_size"], seed=config["seed"],
                             mean=MEAN, std=STD, device=device, warmup_epochs=config["warmup_epochs"],
                             progress=progress, desc=f"{label} -> {config['target']}", steps=config.get("steps"))
    result.update(metric=data.metric, sizes=data.sizes())
    if config["regime"] == "finetune":
        result["source_top1"] = source["result"]["top1"]
    return result


def zoo_sources(zoo_params: dict, *, profile: str, data_root=None) -> tuple[list[dict], str]:
    """The zoo's cell configs and its variant architecture (nothing is trained here)."""
    variant_arch = zoo_params.get("variant_arch") or zoo_experiment.DEFAULTS["variant_arch"]
    return zoo_experiment.cell_configs(zoo_params, data_root), variant_arch


def zoo_params_of(params: dict, profile: str) -> tuple[dict, str]:
    from ..profiles import experiment_params

    zoo_profile = params.get("zoo_profile") or profile
    return experiment_params(zoo_profile, zoo_experiment.STEM)[0], zoo_profile


def cells(params: dict, data_root=None, profile: str | None = None) -> list[Cell]:
    zoo_params, _ = zoo_params_of(params, profile or "smoke")
    sources, variant_arch = zoo_sources(zoo_params, profile=profile, data_root=data_root)
    return [Cell(_role(c), c["seed"], c, NAME) for c in cell_configs(params, sources, variant_arch, data_root)]


def _role(config: dict) -> str:
    who = source_label(config["source"]) if "source" in config else config["arch"]
    return f"{config['regime']} {who}"


def train(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown", progress=None,
          verbose: bool = False) -> dict:
    """The protocol's ``train``: one fit or training run (its zoo source trained first if absent)."""
    store = store or ResultsStore()
    if "source" in config:
        _source_record(config["source"], store, data_root, profile)
    if config["regime"] in ("fixed", "random"):
        return run_fixed(config, artifact_dir, zoo_store=store, data_root=data_root)
    return run_trained(config, artifact_dir, zoo_store=store, data_root=data_root, progress=progress)


def upstream(config: dict) -> list[tuple[str, dict]]:
    return [(zoo_experiment.NAME, config["source"])] if "source" in config else []


def cost(config: dict) -> float:
    """Estimated seconds: feature extraction + L-BFGS (a few seconds) or a training run."""
    from . import cost as _cost

    arch = config["source"]["arch"] if "source" in config else config["arch"]
    n_train = 10 * (config["train_per_class"] or 5000)
    if config["regime"] in ("fixed", "random"):   # features of train+val+test, then the L-BFGS path
        return _cost.FIT_STARTUP_S + _cost.inference_seconds(arch, 2 * n_train, image_size=config["image_size"]) \
            + _cost.LBFGS_S
    steps = config.get("steps") or config["epochs"] * max(1, n_train // config["batch_size"])
    return _cost.training_seconds(arch, steps * config["batch_size"], image_size=config["image_size"])


def network(config: dict):
    raise NotImplementedError("transfer cells keep no network for later chapters")


def run_transfer(params: dict, *, profile: str, zoo_params: dict | None = None, zoo_profile: str | None = None,
                 store: ResultsStore | None = None, data_root=None, regimes: list[str] | None = None,
                 piece: str | None = None, progress=None, verbose: bool = False) -> list[dict]:
    """Run (or fetch) every cell; returns the records in order.

    regimes: keep only these ('fixed', 'finetune', 'scratch', 'random'); piece: 'k/n'; verbose: a
    line per cell on stderr as it finishes.
    """
    if zoo_params is None:
        zoo_params, zoo_profile = zoo_params_of(params, profile)
    sources, variant_arch = zoo_sources(zoo_params, profile=zoo_profile or profile, data_root=data_root)
    todo = [Cell(_role(c), c["seed"], c, NAME) for c in cell_configs(params, sources, variant_arch, data_root)]
    if regimes:
        todo = [c for c in todo if c.config["regime"] in regimes]
    if piece:
        todo = protocol.split_piece(todo, piece)
    pairs = protocol.run_cells(sys.modules[__name__], todo, profile=profile, store=store, data_root=data_root,
                               progress=progress, log=(lambda s: print(s, file=sys.stderr, flush=True))
                               if verbose else None)
    return [rec for _, rec in pairs]


def describe(config: dict) -> str:
    who = source_label(config["source"]) if "source" in config else f"{config['arch']} ({config['regime']})"
    extra = f" lr {config['lr']} wd {config['weight_decay']}" if "lr" in config else ""
    n = config["train_per_class"]
    return (f"{config['regime']:<8} {who:<28} -> {config['target']:<14} seed {config['seed']}"
            f"{extra}{f' {n}/class' if n else ''}")


def main(argv=None) -> int:
    return protocol.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
