"""Chapter 2: does detection from scratch catch up with pre-training? (He et al. 2019)

Cells of the results store (experiment ``detection``), each keyed by its config: one
detector trained on the COCO stand-in (scenes of real Tiny ImageNet validation instances,
``rethink.detection.scenes``) or on COCO-format data from disk, with

* ``init``: ``scratch`` (random init) or ``pretrained`` (the backbone of a zoo network of
  chapter 1, pre-trained on Tiny ImageNet train: it has seen the classes, not these images);
* ``norm``: the backbone's normalisation (frozen BN, BN, GroupNorm, SyncBN);
* ``train_size`` scenes and a ``schedule`` (the book's 1x, 2x, ... in optimizer steps; the
  learning rate dropped for the last (2/3)·1x and (2/9)·1x steps of every schedule, He et al.'s
  "last 60k and last 20k iterations" with their 1x = 90k).

Each run evaluates on the fixed validation scenes at several points (the learning curves
of the paper's Figure 1) and at its end (COCO AP, AP50, AP75, small/medium/large).

    python -m rethink.experiments.detection --profile full [--list] [--piece 1/4]
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from ..results.store import ResultsStore, config_key
from . import common, protocol
from . import zoo as zoo_experiment
from .protocol import Cell

NAME = EXPERIMENT = "detection"
STEM = "02_detection"
# packages beyond the core runtime a machine needs for these cells ("a|b": either; "$VAR": a variable)
REQUIRES = ("pycocotools|faster_coco_eval",)
VERSION = 2   # 2: exactly `steps` optimizer steps, He et al.'s lr drops (the last 2/3 and 2/9 of 1x)
INITS = ("scratch", "pretrained")
# Detector training throughput on the reference GPU (images/s, resnet18-FPN FCOS at 160px):
# NOT measured yet -- an assumption the benchmark piece replaces (it runs first for that reason).
DETECTION_IMAGES_PER_S_160 = 1500.0   # benchmarks/suite.py's estimate from the detector's MACs

DEFAULTS = dict(
    dataset="scenes",             # "scenes" (the COCO stand-in) or a COCO-format dataset ("coco128")
    image_size=160,
    num_classes=None,             # scenes: the first n of scenes.DEFAULT_CLASSES (None: all of them)
    mean_instances=4.0,
    scene_seed=0,
    train_sizes=[1000, 3500, 10000, 35000],
    val_size=1000,
    arch="resnet18",
    zoo_profile=None,             # whose zoo record is the pre-trained backbone (None: this profile)
    zoo_seed=0,
    # (init, backbone norm) pairs. He et al. use one normalisation in both arms (GN or SyncBN);
    # the zoo networks are BN networks, so both arms train BN (at 16+ scenes per batch, BN works)
    runs=[["pretrained", "bn"], ["scratch", "bn"]],
    head_norm="gn",
    schedules=[1, 2, 4],          # multiples of base_steps
    schedules_per_init=None,      # {init: [schedules]}: an arm run at fewer of them (None: every arm at all)
    base_steps=3000,              # the book's 1x, in optimizer steps
    seeds=[0],
    main_seeds=[0, 1],            # extra seeds for the cells the verdicts rest on (largest schedule)
    norm_study=None,              # {"size": 3500, "schedule": 2, "norms": ["bn", "gn"]}: BN vs GN from scratch
    fpn_channels=128,
    batch_size=32,
    lr=0.02,
    weight_decay=1e-4,
    warmup_steps=200,
    evals_per_run=6,              # validation points along each run (learning curves)
)
SCHEMA = {"image_size": "int>=32", "num_classes": "int>0|None", "mean_instances": "float>0",
          "scene_seed": "int>=0", "train_sizes": "list[int>0]", "val_size": "int>0", "arch": "str",
          "zoo_profile": "str|None", "zoo_seed": "int>=0", "runs": "list[list[str]]", "head_norm": "str",
          "schedules": "list[int>0]", "schedules_per_init": "any", "base_steps": "int>0",
          "seeds": "list[int>=0]", "main_seeds": "list[int>=0]",
          "norm_study": "any", "fpn_channels": "int>0", "batch_size": "int>0", "lr": "float>0",
          "weight_decay": "float>=0", "warmup_steps": "int>=0", "evals_per_run": "int>0"}


def resolve_params(params: dict) -> dict:
    from ..detection.model import NORMS

    unknown = sorted(set(params) - set(DEFAULTS) - {"profile", "data_root"})
    if unknown:
        raise ValueError(f"unknown detection parameter(s) {unknown}; valid: {sorted(DEFAULTS)}")
    p = {**copy.deepcopy(DEFAULTS), **params}
    for init, norm in p["runs"]:
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if p["schedules_per_init"] is not None and not isinstance(p["schedules_per_init"], dict):
        raise ValueError(f"schedules_per_init must be a mapping {{init: [schedules]}} or None, "
                         f"got {p['schedules_per_init']!r}")
    for init, schedules in (p["schedules_per_init"] or {}).items():
        if init not in INITS:
            raise ValueError(f"schedules_per_init: init must be one of {INITS}, got {init!r}")
        if not schedules or set(schedules) - set(p["schedules"]):
            raise ValueError(f"schedules_per_init[{init!r}] = {schedules!r}: give a non-empty subset of "
                             f"schedules {p['schedules']}")
    if p["norm_study"]:
        bad = [n for n in p["norm_study"]["norms"] if n not in NORMS]
        if bad:
            raise ValueError(f"norm_study norms {bad}: choose from {NORMS}")
    if p["arch"] not in zoo_experiment.ARCHITECTURES:
        raise ValueError(f"unknown architecture {p['arch']!r}; choose from {sorted(zoo_experiment.ARCHITECTURES)}")
    return p


def data_spec(p: dict, split: str, size: int) -> dict:
    """What defines a training or validation set (part of every cell's key)."""
    if p["dataset"] == "scenes":
        return {"dataset": "scenes", "split": split, "size": size, "image_size": p["image_size"],
                "num_classes": p["num_classes"], "mean_instances": p["mean_instances"], "seed": p["scene_seed"]}
    return {"dataset": p["dataset"], "split": split, "size": size, "image_size": p["image_size"]}


def cell_config(p: dict, *, init: str, norm: str, size: int, schedule: int, seed: int,
                source: dict | None, data_root=None) -> dict:
    datasets = ["tiny-imagenet"] if p["dataset"] == "scenes" else [p["dataset"]]
    return protocol.stamp({
        "kind": "detector", "train": data_spec(p, "train", size), "val": data_spec(p, "val", p["val_size"]),
        "arch": p["arch"], "init": init, "norm": norm, "head_norm": p["head_norm"],
        "source": source if init == "pretrained" else None,
        "schedule": schedule, "steps": schedule * p["base_steps"], "base_steps": p["base_steps"],
        "lr_schedule": "he2019", "seed": seed,
        **{k: p[k] for k in ("fpn_channels", "batch_size", "lr", "weight_decay", "warmup_steps",
                             "evals_per_run")}}, VERSION, datasets, data_root)


def cell_configs(params: dict, source: dict | None, data_root=None) -> list[dict]:
    """Main grid (sizes x runs x schedules x seeds), extra seeds at the longest schedule, norm study."""
    p = resolve_params(params)
    if any(init == "pretrained" for init, _ in p["runs"]) and source is None:
        raise ValueError("pretrained runs need a zoo source: run chapter 1 (the zoo) first")
    out = []
    longest = max(p["schedules"])
    for size in p["train_sizes"]:
        for init, norm in p["runs"]:
            for schedule in (p["schedules_per_init"] or {}).get(init, p["schedules"]):
                seeds = p["seeds"] + (p["main_seeds"] if schedule == longest else [])
                for seed in common.unique(seeds, key=lambda s: s):
                    out.append(cell_config(p, init=init, norm=norm, size=size, schedule=schedule, seed=seed,
                                           source=source, data_root=data_root))
    if p["norm_study"]:
        ns = p["norm_study"]
        for norm in ns["norms"]:
            for seed in p["seeds"]:
                out.append(cell_config(p, init="scratch", norm=norm, size=ns["size"], schedule=ns["schedule"],
                                       seed=seed, source=source, data_root=data_root))
    return common.unique(out, key=config_key)


def cells(params: dict, data_root=None, profile: str | None = None) -> list[Cell]:
    p = resolve_params(params)
    source = zoo_source(p, profile=profile or "smoke", data_root=data_root)
    return [Cell(f"{c['init']} {c['norm']} {c['train']['size']} {c['schedule']}x", c["seed"], c, NAME)
            for c in cell_configs(params, source, data_root)]


def upstream(config: dict) -> list[tuple[str, dict]]:
    return [(zoo_experiment.NAME, config["source"])] if config.get("source") else []


def cost(config: dict) -> float:
    """Estimated seconds: training images at the assumed throughput, scaled by canvas area and
    backbone (the zoo's per-image cost relative to ResNet-18), plus evaluations."""
    from . import cost as _cost

    scale = (config["train"]["image_size"] / 160) ** 2 * (
        _cost.seconds_per_image(config["arch"]) / _cost.seconds_per_image("resnet18"))
    train = config["steps"] * config["batch_size"] / DETECTION_IMAGES_PER_S_160 * scale
    evals = config["evals_per_run"] * config["val"]["size"] / (3 * DETECTION_IMAGES_PER_S_160) * scale
    return _cost.STARTUP_S + train + evals


# ------------------------------------------------------------------ data and training


def load_data(spec: dict, data_root=None):
    """The DetectionSet of a data spec (generated scenes, cached; or COCO-format data)."""
    if spec["dataset"] == "scenes":
        from ..detection.scenes import DEFAULT_CLASSES, generate_scenes

        classes = DEFAULT_CLASSES[:spec["num_classes"]] if spec["num_classes"] else None
        return generate_scenes(spec["size"], split=spec["split"], image_size=spec["image_size"], classes=classes,
                               mean_instances=spec["mean_instances"], seed=spec["seed"], data_root=data_root)
    from ..detection.coco import load_coco_format

    ds = load_coco_format(spec["dataset"], image_size=spec["image_size"], data_root=data_root)
    # COCO128 has no split: the first images train, the last `size` validate
    return ds.subset(spec["size"]) if spec["split"] == "train" else ds.slice(-spec["size"])


def zoo_source(p: dict, *, profile: str, data_root=None) -> dict | None:
    """The zoo record (baseline variant of ``arch``, seed ``zoo_seed``) used as pre-trained backbone."""
    from ..profiles import experiment_params

    if not any(init == "pretrained" for init, _ in p["runs"]):
        return None
    zp, _ = experiment_params(p["zoo_profile"] or profile, "01_zoo")
    for config in zoo_experiment.cell_configs(zp, data_root):
        if config["arch"] == p["arch"] and config["variant"] == "baseline" and config["seed"] == p["zoo_seed"]:
            return config
    raise ValueError(f"the {p['zoo_profile'] or profile} zoo has no baseline {p['arch']} with seed {p['zoo_seed']}: "
                     "choose an arch of chapter 1's zoo (01_zoo archs) or add it there")


def train(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown", progress=None,
          verbose: bool = False) -> dict:
    """The protocol's ``train``: one detector (its zoo backbone trained first if absent)."""
    return train_cell(config, artifact_dir, data_root=data_root, progress=progress, profile=profile, store=store)


def train_cell(config: dict, artifact_dir: Path, *, data_root=None, progress=None, profile="unknown",
               store=None) -> dict:
    from ..detection.coco import to_coco
    from ..detection.model import build_detector
    from ..detection.train import train_detector

    device = common.training_device()
    train, val = load_data(config["train"], data_root), load_data(config["val"], data_root)
    pretrained = None
    if config["init"] == "pretrained":   # trained here if chapter 1 has not (or its weights are gone)
        from . import load_network
        pretrained = load_network(zoo_experiment.NAME, config["source"], data_root=data_root, store=store,
                                  profile=profile)
    torch.manual_seed(config["seed"])
    model = build_detector(config["arch"], train.num_classes, image_size=train.image_size, norm=config["norm"],
                           head_norm=config["head_norm"], pretrained=pretrained,
                           fpn_channels=config["fpn_channels"])
    area_scale = (train.image_size / 640) ** 2  # COCO's size thresholds scaled to the canvas
    out = train_detector(model, train, val, to_coco(val), steps=config["steps"], batch_size=config["batch_size"],
                         lr=config["lr"], base_steps=config["base_steps"], lr_schedule=config["lr_schedule"],
                         weight_decay=config["weight_decay"], warmup_steps=config["warmup_steps"],
                         eval_points=config["evals_per_run"], device=device, seed=config["seed"],
                         artifact_dir=artifact_dir, progress=progress, area_scale=area_scale)
    out.update(train_images=len(train), area_scale=area_scale,
               instances_per_image=sum(len(b) for b in train.boxes) / len(train))
    return out


def run_detection(params: dict, *, profile: str, store: ResultsStore | None = None, data_root=None,
                  piece: str | None = None, only=None, progress=None, verbose: bool = False) -> list[dict]:
    """Train (or fetch) every cell; returns the records in order."""
    todo = protocol.select(cells(params, data_root=data_root, profile=profile), only)
    if piece:
        todo = protocol.split_piece(todo, piece)
    pairs = protocol.run_cells(sys.modules[__name__], todo, profile=profile, store=store, data_root=data_root,
                               progress=progress, log=(lambda s: print(s, file=sys.stderr)) if verbose else None)
    return [rec for _, rec in pairs]


def describe(config: dict) -> str:
    return (f"{config['train']['size']:>6} {config['train']['dataset']:<8} {config['init']:<10} "
            f"{config['norm']:<9} {config['schedule']}x seed {config['seed']}")


def main(argv=None) -> int:
    return protocol.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
