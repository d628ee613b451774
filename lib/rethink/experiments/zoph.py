"""Chapter 6: rethinking pre-training and self-training (Zoph et al. 2020) on the detection stand-in.

Cells of the results store (experiment ``zoph``), each keyed by its config. The detector,
scenes and evaluation are chapter 2's (``rethink.experiments.detection``: FCOS on a zoo
ResNet-FPN, COCO AP on scenes of real Tiny ImageNet val instances); what this chapter adds:

* ``augment_strength``: Augment-S1..S4 (``rethink.detection.augment.DetectionAugment``:
  flip + crop; + AutoAugment policy v0; + large scale jitter; RandAugment + large jitter).
* ``init``: ``rand`` (Rand Init), ``imagenet`` (ImageNet Init: the chapter-1 zoo network),
  ``imagenet++`` (ImageNet++ Init: a Noisy Student of that zoo network on Tiny ImageNet with an
  unlabeled pool, cell kind ``imagenet++``), ``simclr`` (SimCLR on Tiny ImageNet train without
  labels, cell kind ``simclr``).
* ``data_fraction`` of the labeled training scenes (the first fraction x train_size: scene sets
  are prefix-stable).
* Self-training (cell kind ``student``): the supervised detector of the same init, strength,
  fraction and seed is the ``teacher``; it labels an unlabeled pool of scenes (another scene
  seed, train-split instances: never a labeled or a validation scene), boxes kept at score >=
  ``score_threshold``; each student step is ``batch_size`` labeled + ``pseudo_batch_size``
  pseudo-labeled scenes, the loss ``SelfTrainingLoss`` (the paper's normalisation, or the plain
  sum beside it). The student starts from the arm's init, not from its teacher.
* Joint training (``joint``): detection loss + Tiny ImageNet classification on the shared
  backbone (a linear head on its last stage), from Rand Init, with or without self-training.

    python -m rethink.experiments.zoph --profile full [--list] [--piece 1/4] [--only student]
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..results.store import ResultsStore, config_key
from ..train.callbacks import Callback
from . import common, protocol
from . import cost as _cost
from . import detection as det
from . import zoo as zoo_experiment
from .protocol import Cell, NetworkInfo

NAME = EXPERIMENT = "zoph"
STEM = "06_self_training"
VERSION = 1
INITS = ("rand", "imagenet", "imagenet++", "simclr")
STRENGTHS = ("S1", "S2", "S3", "S4")
LOSS_MODES = ("normalized", "sum")
PP_POOLS = ("tiny_imagenet_rest", "imagenette")
IMAGENETTE_TRAIN = 9469        # images of imagenette2-64 train (cost model only)
PSEUDO_STREAM = 7919           # seed offset of the pseudo-labeled batches' order
MEAN, STD = zoo_experiment.MEAN, zoo_experiment.STD

DEFAULTS = dict(
    # scenes: chapter 2's COCO stand-in
    image_size=96,
    num_classes=None,              # the first n of scenes.DEFAULT_CLASSES (None: all 20)
    mean_instances=4.0,
    scene_seed=0,
    train_size=2000,               # 100% of the labeled scenes
    data_fractions=[0.2, 0.5, 1.0],
    val_size=500,
    pool_size=5000,                # unlabeled scenes for self-training
    pool_seed_offset=1000,         # their scene seed: scene_seed + this (never a labeled scene)
    # detector (chapter 2's FCOS on a zoo ResNet-FPN)
    arch="resnet18",
    zoo_profile=None,              # whose zoo network is the ImageNet Init (None: this profile)
    zoo_seed=0,
    norm="bn",                     # both arms train BN, as chapter 2's main runs
    head_norm="gn",
    fpn_channels=128,
    steps=500,                     # optimizer steps of every detector, at every data fraction
    batch_size=32,
    lr=0.02,
    weight_decay=1e-4,
    warmup_steps=100,
    evals_per_run=4,
    # augmentation (Table 2)
    augment_strengths=["S1", "S2", "S3", "S4"],
    magnitude=10,                  # RandAugment's M for S4 (the paper: 10)
    num_ops=2,                     # RandAugment's N (unverified for the paper)
    inits=["rand", "imagenet", "imagenet++"],
    seeds=[0],                     # every cell
    main_seeds=[0, 1, 2],          # also at every compared point (all but the other strengths of Table 2)
    main_strengths=["S1", "S4"],   # Table 2's strengths whose cells the verdicts compare
    # self-training (Table 3)
    self_training=True,
    self_training_strength="S4",
    self_training_inits=["rand", "imagenet"],
    score_threshold=0.5,
    pseudo_batch_size=None,        # None: batch_size (half of each student batch pseudo-labeled)
    drop_empty_pseudo=True,        # leave out pool scenes where the teacher kept no box
    loss_mode="normalized",
    alpha=1.0,
    loss_momentum=0.9,
    sum_loss_seeds=[0],            # students with the plain summed loss beside (curves)
    # SimCLR init (Rand Init's architecture, Tiny ImageNet train without labels)
    simclr=True,
    simclr_epochs=10,
    simclr_batch_size=256,
    simclr_lr=0.5,
    simclr_temperature=0.5,
    probe_per_class=50,            # Tiny ImageNet train images per class of the linear probe
    probe_penalties=9,
    # ImageNet++ init: a Noisy Student of the zoo network
    pp_pools=["tiny_imagenet_rest", "imagenette"],
    pp_pool_size=None,             # None: every pool image
    pp_threshold=0.3,              # Xie et al.'s confidence filter
    pp_epochs=4,
    pp_unlabeled_ratio=1,
    pp_init="teacher",             # "teacher" (Xie et al.'s fast variant) or "scratch"
    pp_batch_size=256,
    pp_lr=0.1,
    pp_warmup_epochs=0.5,
    pp_randaugment_magnitude=9,
    pp_dropout=0.3,
    pp_drop_path=0.1,
    # joint training (an extra)
    joint_training=True,
    joint_weight=1.0,
    joint_batch_size=32,
)
SCHEMA = {
    "image_size": "int>=32", "num_classes": "int>0|None", "mean_instances": "float>0", "scene_seed": "int>=0",
    "train_size": "int>0", "data_fractions": "list[float>0]", "val_size": "int>0", "pool_size": "int>0",
    "pool_seed_offset": "int>0", "arch": "str", "zoo_profile": "str|None", "zoo_seed": "int>=0",
    "norm": "choice:bn,gn,frozen_bn", "head_norm": "choice:gn,bn,none", "fpn_channels": "int>0",
    "steps": "int>0", "batch_size": "int>0", "lr": "float>0", "weight_decay": "float>=0",
    "warmup_steps": "int>=0", "evals_per_run": "int>0", "augment_strengths": "list[str]",
    "magnitude": "float>=0", "num_ops": "int>0", "inits": "list[str]", "seeds": "list[int>=0]",
    "main_seeds": "list[int>=0]", "main_strengths": "list[str]", "self_training": "bool",
    "self_training_strength": "choice:S1,S2,S3,S4", "self_training_inits": "list[str]",
    "score_threshold": "float>=0", "pseudo_batch_size": "int>0|None", "drop_empty_pseudo": "bool",
    "loss_mode": "choice:normalized,sum", "alpha": "float>=0", "loss_momentum": "float>=0",
    "sum_loss_seeds": "list[int>=0]", "simclr": "bool", "simclr_epochs": "int>0", "simclr_batch_size": "int>0",
    "simclr_lr": "float>0", "simclr_temperature": "float>0", "probe_per_class": "int>0",
    "probe_penalties": "int>0", "pp_pools": "list[str]", "pp_pool_size": "int>0|None",
    "pp_threshold": "float>=0", "pp_epochs": "int>0", "pp_unlabeled_ratio": "int>0",
    "pp_init": "choice:teacher,scratch", "pp_batch_size": "int>0", "pp_lr": "float>0",
    "pp_warmup_epochs": "float>=0", "pp_randaugment_magnitude": "int>=0", "pp_dropout": "float>=0",
    "pp_drop_path": "float>=0", "joint_training": "bool", "joint_weight": "float>=0", "joint_batch_size": "int>0",
}


def resolve_params(params: dict) -> dict:
    """DEFAULTS overlaid with ``params``, names and values checked."""
    unknown = sorted(set(params) - set(DEFAULTS) - {"profile", "data_root"})
    if unknown:
        raise ValueError(f"unknown zoph parameter(s) {unknown}; valid: {sorted(DEFAULTS)}")
    p = {**copy.deepcopy(DEFAULTS), **{k: v for k, v in params.items() if k in DEFAULTS}}
    protocol.check_params({k: p[k] for k in DEFAULTS}, DEFAULTS, SCHEMA, where="zoph parameters")
    for key in ("inits", "self_training_inits"):
        bad = [i for i in p[key] if i not in INITS]
        if bad:
            raise ValueError(f"{key}: unknown init(s) {bad}; choose from {INITS}")
    for key in ("augment_strengths", "main_strengths"):
        bad = [s for s in p[key] if s not in STRENGTHS]
        if bad:
            raise ValueError(f"{key}: unknown strength(s) {bad}; choose from {STRENGTHS}")
    bad = [x for x in p["pp_pools"] if x not in PP_POOLS]
    if bad or not p["pp_pools"]:
        raise ValueError(f"pp_pools must be a non-empty subset of {PP_POOLS}, got {p['pp_pools']}")
    if any(not 0 < f <= 1 for f in p["data_fractions"]):
        raise ValueError(f"data_fractions must be in (0, 1], got {p['data_fractions']}")
    if min(labeled_size(p, f) for f in p["data_fractions"] + [1.0]) < p["batch_size"]:
        raise ValueError(f"the smallest data fraction ({min(p['data_fractions'])} x {p['train_size']} scenes) "
                         f"is less than one batch of {p['batch_size']}")
    if p["arch"] not in zoo_experiment.ARCHITECTURES:
        raise ValueError(f"unknown architecture {p['arch']!r}; choose from {sorted(zoo_experiment.ARCHITECTURES)}")
    return p


# ------------------------------------------------------------------ data specs


def labeled_size(p: dict, fraction: float) -> int:
    return max(1, round(fraction * p["train_size"]))


def scene_spec(p: dict, split: str, size: int, seed: int) -> dict:
    """Chapter 2's data spec (``detection.load_data`` reads it)."""
    return {"dataset": "scenes", "split": split, "size": size, "image_size": p["image_size"],
            "num_classes": p["num_classes"], "mean_instances": p["mean_instances"], "seed": seed}


def pool_spec(p: dict) -> dict:
    """The unlabeled pool: train-split instances (never a validation instance) in scenes of another
    seed (never a labeled scene)."""
    return scene_spec(p, "train", p["pool_size"], p["scene_seed"] + p["pool_seed_offset"])


def pool_disjoint(labeled: dict, val: dict, pool: dict) -> bool:
    """The teacher trains on ``labeled`` only; the pool shares no scene with it (another scene seed)
    and no instance with validation (train-split instances); validation is the val split."""
    same_scenes = {k: v for k, v in labeled.items() if k not in ("size", "seed")} == \
        {k: v for k, v in pool.items() if k not in ("size", "seed")}
    return (same_scenes and pool["split"] == "train" and labeled["split"] == "train" and val["split"] == "val"
            and pool["seed"] != labeled["seed"])


# ------------------------------------------------------------------ cells


def zoo_source(p: dict, *, profile: str, data_root=None) -> dict:
    """The zoo record (baseline ``arch``, seed ``zoo_seed``) that is the ImageNet Init."""
    from ..profiles import experiment_params

    zp, _ = experiment_params(p["zoo_profile"] or profile, zoo_experiment.STEM)
    for config in zoo_experiment.cell_configs(zp, data_root):
        if config["arch"] == p["arch"] and config["variant"] == "baseline" and config["seed"] == p["zoo_seed"]:
            return config
    raise ValueError(f"the {p['zoo_profile'] or profile} zoo has no baseline {p['arch']} with seed {p['zoo_seed']}: "
                     "choose an arch of chapter 1's zoo (01_zoo archs) or add it there")


def _stamp(config: dict, data_root=None) -> dict:
    datasets = ["tiny-imagenet"]
    if config["kind"] == "imagenet++" and "imagenette" in config["pools"]:
        datasets.append("imagenette")
    return protocol.stamp(config, VERSION, datasets, data_root)


def imagenet_pp_config(p: dict, teacher: dict, data_root=None) -> dict:
    """ImageNet++ Init: a Noisy Student of the zoo network (same architecture) on its labeled
    Tiny ImageNet images + a pseudo-labeled pool."""
    return _stamp({"kind": "imagenet++", "arch": teacher["arch"], "teacher": teacher,
                   "image_size": teacher["image_size"], "train_per_class": teacher["train_per_class"],
                   "val_per_class": teacher["val_per_class"], "pools": list(p["pp_pools"]),
                   "pool_size": p["pp_pool_size"], "threshold": p["pp_threshold"], "epochs": p["pp_epochs"],
                   "unlabeled_ratio": p["pp_unlabeled_ratio"], "init": p["pp_init"],
                   "batch_size": p["pp_batch_size"], "lr": p["pp_lr"], "weight_decay": teacher["weight_decay"],
                   "warmup_epochs": p["pp_warmup_epochs"], "randaugment_magnitude": p["pp_randaugment_magnitude"],
                   "dropout": p["pp_dropout"], "drop_path": p["pp_drop_path"], "seed": teacher["seed"]}, data_root)


def simclr_config(p: dict, zoo: dict, data_root=None) -> dict:
    """SimCLR Init: the zoo architecture trained with NT-Xent on the zoo's training images, labels unused."""
    return _stamp({"kind": "simclr", "arch": zoo["arch"], "image_size": zoo["image_size"],
                   "train_per_class": zoo["train_per_class"], "val_per_class": zoo["val_per_class"],
                   "epochs": p["simclr_epochs"], "batch_size": p["simclr_batch_size"], "lr": p["simclr_lr"],
                   "temperature": p["simclr_temperature"], "probe_per_class": p["probe_per_class"],
                   "probe_penalties": p["probe_penalties"], "seed": zoo["seed"]}, data_root)


def joint_spec(p: dict, zoo: dict) -> dict:
    """Joint training's classification task: Tiny ImageNet train at the zoo's resolution and subset."""
    return {"weight": p["joint_weight"], "batch_size": p["joint_batch_size"], "image_size": zoo["image_size"],
            "train_per_class": zoo["train_per_class"]}


def detector_config(p: dict, *, init: str, source: dict | None, strength: str, fraction: float, seed: int,
                    joint: dict | None = None, data_root=None) -> dict:
    """One supervised detector (fine-tuned from ``init``, or from random weights)."""
    config = {"kind": "detector", "init": init, "source": source, "augment_strength": strength,
              "magnitude": p["magnitude"], "num_ops": p["num_ops"], "data_fraction": fraction,
              "train": scene_spec(p, "train", labeled_size(p, fraction), p["scene_seed"]),
              "val": scene_spec(p, "val", p["val_size"], p["scene_seed"]),
              "arch": p["arch"], "norm": p["norm"], "head_norm": p["head_norm"], "fpn_channels": p["fpn_channels"],
              "steps": p["steps"], "batch_size": p["batch_size"], "lr": p["lr"], "weight_decay": p["weight_decay"],
              "warmup_steps": p["warmup_steps"], "lr_schedule": "fractions", "evals_per_run": p["evals_per_run"],
              "joint": joint, "seed": seed}
    return _stamp(config, data_root)


def student_config(p: dict, teacher: dict, *, loss_mode: str | None = None, joint: dict | None = None,
                   data_root=None) -> dict:
    """A self-training student of ``teacher``: the same arm (init, strength, fraction, seed), trained
    on labeled + pseudo-labeled scenes."""
    config = {k: v for k, v in teacher.items() if k not in ("version", "data")}
    config.update(kind="student", teacher=teacher,
                  pseudo_labels={"pool": pool_spec(p), "score_threshold": p["score_threshold"],
                                 "drop_empty": p["drop_empty_pseudo"]},
                  pseudo_batch_size=p["pseudo_batch_size"] or p["batch_size"],
                  loss={"mode": loss_mode or p["loss_mode"], "alpha": p["alpha"], "momentum": p["loss_momentum"]},
                  joint=joint)
    return _stamp(config, data_root)


def _pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def role(config: dict) -> str:
    kind = config["kind"]
    if kind in ("imagenet++", "simclr"):
        return f"pretrain {kind}"
    arm = f"{config['init']} {config['augment_strength']} {_pct(config['data_fraction'])}"
    if kind == "student":
        what = "joint-student" if config.get("joint") else (
            "student" if config["loss"]["mode"] == "normalized" else "student-sum")
        return f"{what} {arm}"
    return f"{'joint' if config.get('joint') else 'detector'} {arm}"


def cells(params: dict, data_root=None, profile: str | None = None) -> list[Cell]:
    """Every cell, upstream first; each supervised detector followed by its students."""
    p = resolve_params(params)
    zoo = zoo_source(p, profile=profile or "smoke", data_root=data_root)
    sources = {"rand": None, "imagenet": zoo}
    out: list[dict] = []
    needs = set(p["inits"]) | set(p["self_training_inits"]) | ({"simclr"} if p["simclr"] else set())
    if "imagenet++" in needs:
        sources["imagenet++"] = imagenet_pp_config(p, zoo, data_root)
        out.append(sources["imagenet++"])
    if "simclr" in needs:
        sources["simclr"] = simclr_config(p, zoo, data_root)
        out.append(sources["simclr"])

    def seeds(main: bool = True) -> list[int]:
        return common.unique(p["seeds"] + (p["main_seeds"] if main else []), key=lambda s: s)

    def detector(init, strength, fraction, seed, joint=False):
        return detector_config(p, init=init, source=sources[init], strength=strength, fraction=fraction,
                               seed=seed, joint=joint_spec(p, zoo) if joint else None, data_root=data_root)

    for strength in p["augment_strengths"]:                      # Table 2: 100% of the scenes
        for init in p["inits"]:
            for seed in seeds(strength in p["main_strengths"]):
                out.append(detector(init, strength, 1.0, seed))
    st = p["self_training_strength"]
    for fraction in sorted(set(p["data_fractions"]) | {1.0}):   # Table 3
        for init in p["self_training_inits"]:
            for seed in seeds():
                teacher = detector(init, st, fraction, seed)
                out.append(teacher)
                if p["self_training"]:
                    out.append(student_config(p, teacher, data_root=data_root))
    if p["self_training"]:
        for seed in p["sum_loss_seeds"]:
            out.append(student_config(p, detector("rand", st, 1.0, seed), loss_mode="sum", data_root=data_root))
    if p["simclr"]:
        for seed in seeds():
            out.append(detector("simclr", st, 1.0, seed))
    if p["joint_training"]:
        for seed in seeds():
            out.append(detector("rand", st, 1.0, seed, joint=True))
            if p["self_training"]:
                out.append(student_config(p, detector("rand", st, 1.0, seed), joint=joint_spec(p, zoo),
                                          data_root=data_root))
    out = common.unique(out, key=config_key)
    # each supervised detector immediately followed by its students (one resumable group)
    students = [c for c in out if c["kind"] == "student"]
    ordered: list[dict] = []
    for c in out:
        if c["kind"] == "student":
            continue
        ordered.append(c)
        ordered += [s for s in students if config_key(s["teacher"]) == config_key(c)]
    placed = {config_key(c) for c in ordered}
    ordered += [s for s in students if config_key(s) not in placed]   # a teacher outside the grid
    return [Cell(role(c), c.get("seed", 0), c, NAME) for c in ordered]


def upstream(config: dict) -> list[tuple[str, dict]]:
    kind = config["kind"]
    if kind == "imagenet++":
        return [(zoo_experiment.NAME, config["teacher"])]
    if kind == "simclr":
        return []
    out = []
    if config.get("source"):
        out.append((zoo_experiment.NAME if config["init"] == "imagenet" else NAME, config["source"]))
    if kind == "student":
        out.append((NAME, config["teacher"]))
    return out


def describe(config: dict) -> str:
    kind = config["kind"]
    if kind == "imagenet++":
        return (f"ImageNet++ Init: Noisy Student of zoo {config['arch']} ({config['epochs']} epochs, "
                f"pools {'+'.join(config['pools'])})")
    if kind == "simclr":
        return f"SimCLR Init: {config['arch']} {config['epochs']} epochs, {config['image_size']}px"
    what = role(config).split(" ")[0]
    return (f"{what:<13} {config['init']:<10} {config['augment_strength']} {_pct(config['data_fraction']):>4} "
            f"({config['train']['size']} scenes) seed {config['seed']}, {config['steps']} steps")


def _scale(config: dict) -> float:
    """Detector seconds per image relative to resnet18-FPN at 160px (chapter 2's cost rule)."""
    return (config["train"]["image_size"] / 160) ** 2 * (
        _cost.seconds_per_image(config["arch"]) / _cost.seconds_per_image("resnet18"))


def pool_images(config: dict, tiny_per_class: int = 400) -> int:
    """Images of an ImageNet++ cell's unlabeled pool (the local mirror's 400 train images per class)."""
    n = 0
    if "tiny_imagenet_rest" in config["pools"] and config["train_per_class"] is not None:
        n += 200 * max(0, tiny_per_class - config["train_per_class"])
    if "imagenette" in config["pools"]:
        n += IMAGENETTE_TRAIN
    return n if config["pool_size"] is None else min(n, config["pool_size"])


def cost(config: dict) -> float:
    """Estimated seconds on the reference GPU: detectors at chapter 2's assumed throughput
    (``detection.DETECTION_IMAGES_PER_S_160``, scaled by canvas area and backbone), pre-training
    cells from the zoo's measured per-image costs (``experiments.cost``)."""
    kind = config["kind"]
    if kind in ("detector", "student"):
        per = _scale(config) / det.DETECTION_IMAGES_PER_S_160
        images = config["steps"] * (config["batch_size"] + (config["pseudo_batch_size"] if kind == "student" else 0))
        seconds = _cost.STARTUP_S + images * per + config["evals_per_run"] * config["val"]["size"] * per / 3
        if kind == "student":
            seconds += config["pseudo_labels"]["pool"]["size"] * per / 3       # the teacher labels the pool
        if config.get("joint"):
            j = config["joint"]
            seconds += config["steps"] * j["batch_size"] * _cost.seconds_per_image(config["arch"], j["image_size"])
        return seconds
    labeled = 200 * (config["train_per_class"] or 400)
    val = 200 * (config["val_per_class"] or 50)
    if kind == "imagenet++":
        steps = config["epochs"] * (labeled // config["batch_size"])
        images = steps * config["batch_size"] * (1 + config["unlabeled_ratio"])
        return (_cost.training_seconds(config["arch"], images, image_size=config["image_size"],
                                       eval_images=config["epochs"] * val)
                + _cost.inference_seconds(config["arch"], pool_images(config) + val, image_size=config["image_size"]))
    if kind == "simclr":
        probe = 2 * (200 * config["probe_per_class"] + val)      # random-init and trained probes
        return (_cost.training_seconds(config["arch"], 2 * config["epochs"] * labeled, image_size=config["image_size"])
                + _cost.inference_seconds(config["arch"], probe, image_size=config["image_size"]) + 10.0)
    raise ValueError(f"unknown cell kind {kind!r}")


def split_piece(todo: list[Cell], piece: str) -> list[Cell]:
    """'k/n': the k-th of n contiguous pieces balanced by estimated cost, never separating a teacher
    from its students (a student needs its teacher's weights, in the cache within one piece)."""
    k, n = (int(v) for v in piece.split("/"))
    if not 1 <= k <= n:
        raise ValueError(f"--piece {piece!r}: expected k/n with 1 <= k <= n")
    groups: list[list[Cell]] = []
    for c in todo:
        if groups and c.config["kind"] == "student" and config_key(c.config["teacher"]) == groups[-1][0].key:
            groups[-1].append(c)
        else:
            groups.append([c])
    costs = [sum(cost(c.config) for c in g) for g in groups]
    total, start, out = sum(costs) or 1.0, 0.0, []
    for g, c in zip(groups, costs):
        if min(n - 1, int((start + c / 2) / total * n)) == k - 1:   # the group's cost midpoint
            out += g
        start += c
    return out


# ------------------------------------------------------------------ networks


class JointModel(nn.Module):
    """A detector and a Tiny ImageNet classifier (a linear head on the last backbone stage) that share
    the backbone; called like the detector."""

    def __init__(self, detector: nn.Module, num_classes: int = 200):
        super().__init__()
        self.detector = detector
        self.classifier = nn.Linear(detector.backbone.body.feature_info.channels()[-1], num_classes)

    def forward(self, images, targets=None):
        return self.detector(images, targets)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.detector.backbone.body(x)[-1].float().mean((2, 3)))


def num_scene_classes(spec: dict) -> int:
    from ..detection.scenes import DEFAULT_CLASSES

    return spec["num_classes"] or len(DEFAULT_CLASSES)


def build_model(config: dict, pretrained: nn.Module | None = None) -> nn.Module:
    from ..detection.model import build_detector

    model = build_detector(config["arch"], num_scene_classes(config["train"]), image_size=config["train"]["image_size"],
                           norm=config["norm"], head_norm=config["head_norm"], pretrained=pretrained,
                           fpn_channels=config["fpn_channels"])
    return JointModel(model) if config.get("joint") else model


def network(config: dict) -> nn.Module:
    from ..models.zoo import create_model

    if config["kind"] == "imagenet++":
        return create_model(config["arch"], 200, dropout=config["dropout"], drop_path=config["drop_path"])
    if config["kind"] == "simclr":
        return create_model(config["arch"], 200)
    return build_model(config)


def network_info(config: dict) -> NetworkInfo:
    if config["kind"] in ("imagenet++", "simclr"):
        return NetworkInfo("tiny-imagenet", MEAN, STD, 200, config["image_size"])
    return NetworkInfo("scenes", MEAN, STD, num_scene_classes(config["train"]), config["train"]["image_size"])


# ------------------------------------------------------------------ self-training pieces


class StudentBatches:
    """Student batches: ``batch_size`` labeled scenes then ``pseudo_batch_size`` pseudo-labeled ones,
    as one (images, boxes, labels) batch (the first ``n_human`` are labeled). An epoch is one pass
    over the labeled loader; the pseudo-labeled loader is cycled (``selftrain.loader.cycled``), so
    every draw is a function of (seed, epoch)."""

    def __init__(self, human, pseudo):
        self.human, self.pseudo = human, pseudo
        self.n_human = human.batch_size
        self.batch_size = human.batch_size + pseudo.batch_size
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.human)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        from ..selftrain.loader import cycled

        n = len(self)
        for (xh, bh, lh), (xp, bp, lp) in zip(cycled(self.human, self.epoch, n), cycled(self.pseudo, self.epoch, n)):
            yield torch.cat([xh, xp]), list(bh) + list(bp), list(lh) + list(lp)


class StudentLoss:
    """The student's loss hook: the detector's loss on the labeled part (``human``: L_h) and on the
    pseudo-labeled part (``pseudo``: L_p), separate forward passes; ``SelfTrainingCallback``
    combines them. Any further batch elements are left to ``extra``."""

    def __init__(self, n_human: int, extra=None):
        self.n_human, self.extra = n_human, extra

    def __call__(self, model, batch) -> dict:
        from ..detection.train import detection_loss

        images, boxes, labels = batch[:3]
        k = self.n_human
        lh = detection_loss(model, (images[:k], boxes[:k], labels[:k]))
        lp = detection_loss(model, (images[k:], boxes[k:], labels[k:]))
        terms = {"human": sum(lh.values()), "pseudo": sum(lp.values())}
        if self.extra is not None:
            terms.update(self.extra(model, batch))
        return terms


class SelfTrainingCallback(Callback):
    """Back-propagates ``SelfTrainingLoss(L_h, L_p)`` (+ any other terms) instead of the plain sum the
    Trainer records (its ``loss_human`` / ``loss_pseudo`` stay the raw losses: the curves); adds the
    optimised loss and the ratio mean L_h / mean L_p to each record; keeps the moving averages across
    a resumed run (saved beside the Checkpoint's file, restored once the Checkpoint has restored the step)."""
    order = 79   # before Checkpoint (80) at each epoch's end, so its history has the added keys

    def __init__(self, loss, directory: Path | None = None):
        self.loss = loss
        self.path = Path(directory) / "selftrain_loss.pt" if directory is not None else None
        self.restored = False
        self._reset()

    def _reset(self):
        self.sum, self.ratio_sum, self.n = 0.0, 0.0, 0

    def before_epoch(self, t):
        if not self.restored and self.path is not None and self.path.exists():
            state = torch.load(self.path, map_location=t.device, weights_only=True)
            if state["step"] == t.step:
                self.loss.load_state_dict(state["loss"])
        self.restored = True

    def after_loss(self, t):
        terms = t.loss_terms
        combined = self.loss(terms["human"], terms["pseudo"])
        rest = [v.float() for k, v in terms.items() if k not in ("human", "pseudo")]
        t.loss = combined + sum(rest) if rest else combined
        self.sum += combined.detach()
        ratio = self.loss.ratio
        self.ratio_sum += ratio if ratio is not None else 1.0
        self.n += 1

    def _patch(self, t):
        if self.n and t.history and "loss_optimized" not in t.history[-1]:
            t.history[-1]["loss_optimized"] = float(self.sum / self.n)
            t.history[-1]["loss_ratio"] = float(self.ratio_sum / self.n)
            self._reset()

    def after_evaluate(self, t):
        self._patch(t)

    def after_epoch(self, t):
        self._patch(t)
        if self.path is not None:
            from ..train.callbacks import atomic_torch_save
            atomic_torch_save({"step": t.step, "loss": self.loss.state_dict()}, self.path)


def joint_generator(seed: int, step: int) -> torch.Generator:
    ss = np.random.SeedSequence([int(seed), int(step)], spawn_key=(2,))   # apart from the batch hook's stream
    return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0]))


class JointBatches(Callback):
    """Joint training: appends a Tiny ImageNet classification batch (x normalised, y) to every
    detection batch, drawn from (seed, step) (so a resumed run draws the same), flipped and
    translated (the zoo's augmentation)."""
    order = 1

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
        from ..augment import Augment

        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
        self.augment = Augment(translate=4, flip=True)

    def before_batch(self, t):
        from ..augment import normalize

        g = joint_generator(self.seed, t.step)
        idx = torch.randint(len(self.labels), (self.batch_size,), generator=g)
        x = self.augment(self.images.index_select(0, idx.to(self.images.device)), g)
        t.batch = (*t.batch[:3], normalize(x, MEAN, STD), self.labels.index_select(0, idx.to(self.labels.device)))


def joint_loss(weight: float):
    """The extra loss term of joint training: weight x cross-entropy of the classifier head."""
    def extra(model, batch):
        x, y = batch[3], batch[4]
        return {"imagenet_classification": weight * F.cross_entropy(model.classify(x).float(), y)}
    return extra


def with_extra(base, extra):
    def hook(model, batch):
        terms = dict(base(model, batch[:3]))
        terms.update(extra(model, batch))
        return terms
    return hook


def select_pseudo(pool, detections, score_threshold: float, drop_empty: bool, min_images: int):
    """The pseudo-labeled set: pool scenes with the teacher's boxes at score >= score_threshold.

    drop_empty leaves out scenes without a kept box; if fewer than ``min_images`` (one pseudo
    batch) would remain, the empty scenes are kept after all (recorded as ``empty_kept``).
    Returns (DetectionSet, stats)."""
    from ..detection.data import DetectionSet
    from ..selftrain.detection import pseudo_box_set

    full = pseudo_box_set(pool.images, detections, pool.class_names, score_threshold)
    counts = np.array([len(b) for b in full.boxes])
    keep = np.flatnonzero(counts > 0) if drop_empty else np.arange(len(full))
    empty_kept = False
    if len(keep) < min_images:
        keep, empty_kept = np.arange(len(full)), True
    ds = DetectionSet(full.images[keep], [full.boxes[i] for i in keep], [full.labels[i] for i in keep],
                      full.class_names, [full.image_ids[i] for i in keep], dict(full.meta))
    return ds, {"pool_scenes": len(full), "scenes_with_boxes": int((counts > 0).sum()), "scenes_used": len(ds),
                "empty_kept": empty_kept, "boxes_per_scene": float(counts.mean()) if len(counts) else 0.0,
                "score_threshold": float(score_threshold), "indices": keep}


def pseudo_box_quality(pool, detections, score_threshold: float, iou: float = 0.5) -> dict:
    """Precision and recall of the kept pseudo-boxes against the pool's hidden ground truth (same
    class, IoU >= iou, each true box matched once, most confident first)."""
    from torchvision.ops import box_iou

    tp = n_pred = n_true = 0
    for d, gb, gl in zip(detections, pool.boxes, pool.labels):
        s = np.asarray(d["scores"])
        keep = np.flatnonzero(s >= score_threshold)
        keep = keep[np.argsort(-s[keep], kind="stable")]
        pb, pl = np.asarray(d["boxes"])[keep], np.asarray(d["labels"])[keep]
        n_pred, n_true = n_pred + len(pb), n_true + len(gb)
        if not len(pb) or not len(gb):
            continue
        m = box_iou(torch.as_tensor(pb, dtype=torch.float32), torch.as_tensor(np.asarray(gb), dtype=torch.float32))
        used = np.zeros(len(gb), bool)
        for i in range(len(pb)):
            ok = (m[i].numpy() >= iou) & (np.asarray(gl) == pl[i]) & ~used
            if ok.any():
                used[np.flatnonzero(ok)[np.argmax(m[i].numpy()[ok])]] = True
                tp += 1
    return {"precision": tp / n_pred if n_pred else None, "recall": tp / n_true if n_true else None,
            "kept_boxes": int(n_pred), "true_boxes": int(n_true), "iou": iou}


# ------------------------------------------------------------------ training


def _source_network(config: dict, *, data_root, store, profile):
    from . import load_network

    if not config.get("source"):
        return None
    experiment = zoo_experiment.NAME if config["init"] == "imagenet" else NAME
    return load_network(experiment, config["source"], data_root=data_root, store=store, profile=profile)


def _joint_parts(config: dict, device, data_root):
    from ..data.cache import load_split

    j = config["joint"]
    split = load_split("tiny-imagenet", "train", j["image_size"], data_root=data_root)
    idx = zoo_experiment._subset(split.labels, j["train_per_class"], seed=0)
    images, labels = np.asarray(split.images), np.asarray(split.labels)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    cb = JointBatches(torch.as_tensor(np.ascontiguousarray(images)).to(device),
                      torch.as_tensor(labels).long().to(device), j["batch_size"], config["seed"])
    return cb, joint_loss(j["weight"])


def train_detector_cell(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown",
                        progress=None) -> dict:
    """A supervised detector, joint-trained or not, or a self-training student."""
    from ..detection.augment import DetectionAugment
    from ..detection.coco import to_coco
    from ..detection.train import DetectionBatches, detection_loss, train_detector
    from ..selftrain.detection import SelfTrainingLoss

    device = common.training_device()
    train, val = det.load_data(config["train"], data_root), det.load_data(config["val"], data_root)
    extra_result, callbacks, batches, hook = {}, [], None, None
    if config["kind"] == "student":
        extra_result, pseudo = label_pool(config, device, data_root=data_root, store=store, profile=profile)
        batches = StudentBatches(DetectionBatches(train, config["batch_size"], device, config["seed"]),
                                 DetectionBatches(pseudo, config["pseudo_batch_size"], device,
                                                  config["seed"] + PSEUDO_STREAM))
        loss = SelfTrainingLoss(config["loss"]["alpha"], config["loss"]["mode"], config["loss"]["momentum"])
        callbacks.append(SelfTrainingCallback(loss, artifact_dir))
    pretrained = _source_network(config, data_root=data_root, store=store, profile=profile)
    torch.manual_seed(config["seed"])
    model = build_model(config, pretrained)
    extra = None
    if config.get("joint"):
        cb, extra = _joint_parts(config, device, data_root)
        callbacks.append(cb)
    if config["kind"] == "student":
        hook = StudentLoss(config["batch_size"], extra)
    elif extra is not None:
        hook = with_extra(detection_loss, extra)
    S = train.image_size
    out = train_detector(model, train, val, to_coco(val), steps=config["steps"], batch_size=config["batch_size"],
                         lr=config["lr"], lr_schedule=config["lr_schedule"], weight_decay=config["weight_decay"],
                         warmup_steps=config["warmup_steps"], eval_points=config["evals_per_run"],
                         augment=DetectionAugment(config["augment_strength"], S, magnitude=config["magnitude"],
                                                  num_ops=config["num_ops"]),
                         device=device, seed=config["seed"], artifact_dir=artifact_dir, progress=progress,
                         area_scale=(S / 640) ** 2, batches=batches, compute_loss=hook, callbacks=callbacks)
    out.update(train_images=len(train), **extra_result)
    return out


def label_pool(config: dict, device, *, data_root=None, store=None, profile="unknown"):
    """The teacher (trained first if its weights are absent) labels the pool: (stats, pseudo set)."""
    from ..detection.coco import to_coco
    from ..detection.evaluate import coco_detections, coco_evaluate, predict
    from . import load_network

    teacher = load_network(NAME, config["teacher"], data_root=data_root, store=store, profile=profile).to(device)
    pool = det.load_data(config["pseudo_labels"]["pool"], data_root)
    threshold = config["pseudo_labels"]["score_threshold"]
    teacher.score_thresh = min(teacher.score_thresh, threshold)   # FCOS pre-filters at 0.2
    t0 = time.perf_counter()
    detections = predict(teacher, pool, device=device)
    label_time = time.perf_counter() - t0
    pseudo, stats = select_pseudo(pool, detections, threshold, config["pseudo_labels"]["drop_empty"],
                                  config["pseudo_batch_size"])
    stats.pop("indices")
    stats.update(pseudo_box_quality(pool, detections, threshold))
    # the teacher's AP on the pool (hidden ground truth: a measurement, never a training signal)
    stats["teacher_pool_AP"] = coco_evaluate(to_coco(pool), coco_detections(detections, pool.image_ids),
                                             area_scale=(pool.image_size / 640) ** 2)["AP"]
    del teacher
    return {"pseudo_labels": stats, "label_time_s": label_time}, pseudo


def _tiny(config: dict, data_root):
    from ..data.cache import load_split

    size = config["image_size"]
    train = load_split("tiny-imagenet", "train", size, data_root=data_root)
    val = load_split("tiny-imagenet", "val", size, data_root=data_root)
    labeled = zoo_experiment._subset(train.labels, config["train_per_class"], seed=0)
    labeled = np.arange(len(train)) if labeled is None else labeled
    val_idx = zoo_experiment._subset(val.labels, config["val_per_class"], seed=0)
    val_idx = np.arange(len(val)) if val_idx is None else val_idx
    return train, val, labeled, val_idx


def imagenet_pp_pool(config: dict, train, labeled: np.ndarray, data_root=None) -> dict:
    """The ImageNet++ student's unlabeled pool: Tiny ImageNet train images the teacher did not train
    on, and Imagenette train (10 ImageNet classes outside Tiny ImageNet's 200); never Tiny ImageNet
    val (the detection scenes' instances). Returns images and their source."""
    from ..data.cache import load_split

    parts, source = [], []
    if "tiny_imagenet_rest" in config["pools"]:
        rest = np.setdiff1d(np.arange(len(train)), labeled)
        parts.append(np.asarray(train.images[rest]))
        source += ["tiny_imagenet_rest"] * len(rest)
    if "imagenette" in config["pools"]:
        nette = load_split("imagenette", "train", config["image_size"], data_root=data_root)
        parts.append(np.asarray(nette.images))
        source += ["imagenette"] * len(nette)
    images = np.concatenate(parts) if parts else np.zeros((0, 3, config["image_size"], config["image_size"]), np.uint8)
    source = np.asarray(source)
    if config["pool_size"] is not None and len(images) > config["pool_size"]:
        pick = np.sort(np.random.default_rng(config["seed"]).choice(len(images), config["pool_size"], replace=False))
        images, source = images[pick], source[pick]
    return {"images": images, "source": source}


def train_imagenet_pp(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown",
                      progress=None, verbose=False) -> dict:
    """ImageNet++ Init: the zoo network (teacher, un-noised) soft-labels the pool; a noised student
    of the same architecture (RandAugment, dropout, stochastic depth) trains on the teacher's labeled
    images + the pseudo-labeled pool (Xie et al.'s recipe, ``rethink.selftrain``)."""
    from .. import augment
    from ..data.loader import GPULoader
    from ..selftrain import NoisyStudentLoss, StudentLoader, select_pseudo_labels, teacher_probabilities
    from ..train.callbacks import Checkpoint, ProgressBar
    from ..train.loop import Recipe, Trainer, evaluate
    from . import load_network

    device = common.training_device()
    teacher = load_network(zoo_experiment.NAME, config["teacher"], data_root=data_root, store=store,
                           profile=profile).to(device)
    train, val, labeled_idx, val_idx = _tiny(config, data_root)
    pool = imagenet_pp_pool(config, train, labeled_idx, data_root)
    probs = teacher_probabilities(teacher, pool["images"], mean=MEAN, std=STD, device=device)
    bs = min(config["batch_size"], len(labeled_idx))
    need = bs * config["unlabeled_ratio"]
    if len(pool["images"]) < need:
        raise ValueError(f"the ImageNet++ pool has {len(pool['images'])} images, fewer than one pseudo-labeled "
                         f"batch of {need} (pp_pools, pp_pool_size, pp_batch_size)")
    pl = select_pseudo_labels(probs, threshold=config["threshold"], balance=False, seed=config["seed"])
    threshold_used = config["threshold"]
    if len(pl) < need:   # a weak teacher: its `need` most confident images (recorded)
        threshold_used = float(probs.max(1).values.sort(descending=True).values[need - 1])
        pl = select_pseudo_labels(probs, threshold=threshold_used, balance=False, seed=config["seed"])
    noise = augment.Compose([augment.Augment(translate=4, flip=True),
                             augment.RandAugment(num_ops=2, magnitude=config["randaugment_magnitude"],
                                                 random_magnitude=False)])
    common_kw = dict(device=device, mean=MEAN, std=STD, shuffle=True, drop_last=True)
    labeled = GPULoader(train.images, train.labels, bs, indices=labeled_idx, augment=noise, seed=config["seed"],
                        **common_kw)
    pseudo = GPULoader(pool["images"][pl.indices], np.arange(len(pl)), bs * config["unlabeled_ratio"],
                       augment=noise, seed=config["seed"] + PSEUDO_STREAM, **common_kw)
    loader = StudentLoader(labeled, pseudo, pl.targets, steps_per_epoch=len(labeled))
    val_loader = GPULoader(val.images, val.labels, 1024, indices=val_idx, device=device, mean=MEAN, std=STD,
                           shuffle=False)
    teacher_top1 = evaluate(teacher, val_loader, device)["top1"]
    torch.manual_seed(config["seed"])
    model = network(config)
    if config["init"] == "teacher":
        model.load_state_dict(teacher.state_dict())
    del teacher
    recipe = Recipe(epochs=config["epochs"], lr=config["lr"], weight_decay=config["weight_decay"],
                    warmup_epochs=config["warmup_epochs"], seed=config["seed"])
    trainer = Trainer(model, loader, val_loader, recipe, device=device, loss_fn=NoisyStudentLoss(), verbose=verbose,
                      callbacks=[Checkpoint(artifact_dir), ProgressBar(progress, desc="imagenet++ student")])
    history = trainer.fit()
    src = pool["source"][pl.indices]
    return {"top1": history[-1]["val_top1"], "top5": history[-1]["val_top5"], "teacher_top1": teacher_top1,
            "diverged": bool(history[-1].get("diverged", False)), "history": history,
            "train_time_s": sum(h["epoch_time_s"] for h in history), "labeled_images": int(len(labeled_idx)),
            "pool_images": {s: int((pool["source"] == s).sum()) for s in config["pools"]},
            "pseudo_labeled": {s: int((src == s).sum()) for s in config["pools"]},
            "mean_confidence": float(pl.confidence.mean()) if len(pl) else None,
            "threshold_used": threshold_used, "weights": "weights.pt"}


def train_simclr(config: dict, artifact_dir: Path, *, data_root=None, verbose=False) -> dict:
    """SimCLR Init: NT-Xent on the zoo's training images (labels unused); linear-probe top-1 on Tiny
    ImageNet val of the trained network and, as its floor, of the same network at random init."""
    from ..data.cache import subset_per_class
    from ..models.zoo import create_model
    from ..selfsup.simclr import SimCLRAugment, linear_probe, pretrain_simclr
    from ..transfer.logistic import penalty_grid

    device = common.training_device()
    train, val, labeled_idx, val_idx = _tiny(config, data_root)
    images = np.asarray(train.images[labeled_idx])
    probe_idx = np.asarray(subset_per_class(np.asarray(train.labels), config["probe_per_class"], seed=0))
    probe_train = (np.asarray(train.images[probe_idx]), np.asarray(train.labels[probe_idx]))
    probe_test = (np.asarray(val.images[val_idx]), np.asarray(val.labels[val_idx]))
    grid = penalty_grid(config["probe_penalties"], 1e-3, 1e5)
    torch.manual_seed(config["seed"])
    net = create_model(config["arch"], 200)
    random_probe = linear_probe(net, probe_train, probe_test, grid=grid, mean=MEAN, std=STD, device=device,
                                seed=config["seed"])
    bs = min(config["batch_size"], len(images))
    net, hist = pretrain_simclr(net, images, epochs=config["epochs"], batch_size=bs, lr=config["lr"],
                                temperature=config["temperature"], device=device, seed=config["seed"],
                                augment=SimCLRAugment(config["image_size"]), mean=MEAN, std=STD, verbose=verbose)
    probe = linear_probe(net, probe_train, probe_test, grid=grid, mean=MEAN, std=STD, device=device,
                         seed=config["seed"])
    from ..train.callbacks import atomic_torch_save
    atomic_torch_save(net.state_dict(), Path(artifact_dir) / "weights.pt")
    loss = hist["loss"]
    return {"probe_top1": probe["test_top1"], "random_probe_top1": random_probe["test_top1"],
            "probe_l2": probe["l2"], "loss_first": loss[0] if loss else None, "loss_last": loss[-1] if loss else None,
            "loss": loss[:: max(1, len(loss) // 200)], "steps": hist["steps"], "train_time_s": hist["train_time_s"],
            "images_per_s": hist["images_per_s"], "train_images": int(len(images)), "weights": "weights.pt"}


def train(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown", progress=None,
          verbose: bool = False) -> dict:
    """The protocol's ``train``: a pre-training cell, a detector or a student (upstream trained first if absent)."""
    store = store or ResultsStore()
    kind = config["kind"]
    if kind == "imagenet++":
        return train_imagenet_pp(config, artifact_dir, data_root=data_root, store=store, profile=profile,
                                 progress=progress, verbose=verbose)
    if kind == "simclr":
        return train_simclr(config, artifact_dir, data_root=data_root, verbose=verbose)
    return train_detector_cell(config, artifact_dir, data_root=data_root, store=store, profile=profile,
                               progress=progress)


def run_zoph(params: dict, *, profile: str, store: ResultsStore | None = None, data_root=None,
             only=None, piece: str | None = None, progress=None, verbose: bool = False) -> list[tuple[Cell, dict]]:
    """Train (or fetch) every cell; (cell, record) pairs in order."""
    todo = protocol.select(cells(params, data_root=data_root, profile=profile), only)
    if piece:
        todo = split_piece(todo, piece)
    return protocol.run_cells(sys.modules[__name__], todo, profile=profile, store=store, data_root=data_root,
                              progress=progress, log=(lambda s: print(s, file=sys.stderr)) if verbose else None)


# ------------------------------------------------------------------ measured distortion


def augmentation_distortion(ds, strengths=("S1", "S2", "S3", "S4"), *, magnitude: float = 10, num_ops: int = 2,
                            seeds=(0, 1, 2), n: int = 64) -> dict:
    """How strongly each strength changes the scenes: mean |pixel change| (0..255 levels) and mean IoU
    of each box with its original (0 if dropped), over the first ``n`` scenes of ``ds``, on the CPU."""
    from torchvision.ops import box_iou

    from ..detection.augment import DetectionAugment

    k = min(n, len(ds))
    images = torch.from_numpy(np.array(ds.images[:k]))
    boxes = [torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4)) for b in ds.boxes[:k]]
    labels = [torch.as_tensor(np.asarray(lab, np.int64)) for lab in ds.labels[:k]]
    out = {}
    for s in strengths:
        aug = DetectionAugment(s, ds.image_size, magnitude=magnitude, num_ops=num_ops)
        change, ious = [], []
        for seed in seeds:
            x, ob, _, idx = aug(images, boxes, labels, torch.Generator().manual_seed(seed), return_index=True)
            change.append(float((x.float() - images.float()).abs().mean()))
            for b0, b1, i in zip(boxes, ob, idx):
                iou = torch.zeros(len(b0))
                if len(i):
                    iou[i] = box_iou(b1, b0[i]).diagonal()
                ious.append(iou)
        out[s] = {"pixel_change": float(np.mean(change)),
                  "box_iou": float(torch.cat(ious).mean()) if ious else float("nan")}
    return out


def main(argv=None) -> int:
    return protocol.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
