"""Chapter 2: does detection from scratch catch up with pre-training? (He et al. 2019)

Cells of the results store (experiment ``detection``), each keyed by its config: one
detector trained on the COCO stand-in (scenes of real Tiny ImageNet validation instances,
``rethink.detection.scenes``) or on COCO-format data from disk, with

* ``init``: ``scratch`` (random init) or ``pretrained`` (the backbone of a zoo network of
  chapter 1, pre-trained on Tiny ImageNet train: it has seen the classes, not these images);
* ``norm``: the backbone's normalisation (frozen BN, BN, GroupNorm, SyncBN);
* ``train_size`` scenes and a ``schedule`` (the book's 1x, 2x, ... in optimizer steps, the
  learning rate dropped at 2/3 and 8/9 of each, as He et al.'s schedules).

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
from . import common
from . import zoo as zoo_experiment

EXPERIMENT = "detection"
INITS = ("scratch", "pretrained")

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
    runs=[["pretrained", "frozen_bn"], ["scratch", "gn"]],   # (init, backbone norm) pairs
    head_norm="gn",
    schedules=[1, 2, 4],          # multiples of base_steps
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
                source: dict | None) -> dict:
    return {"kind": "detector", "train": data_spec(p, "train", size), "val": data_spec(p, "val", p["val_size"]),
            "arch": p["arch"], "init": init, "norm": norm, "head_norm": p["head_norm"],
            "source": source if init == "pretrained" else None,
            "schedule": schedule, "steps": schedule * p["base_steps"], "seed": seed,
            **{k: p[k] for k in ("fpn_channels", "batch_size", "lr", "weight_decay", "warmup_steps",
                                 "evals_per_run")}}


def cell_configs(params: dict, source: dict | None) -> list[dict]:
    """Main grid (sizes x runs x schedules x seeds), extra seeds at the longest schedule, norm study."""
    p = resolve_params(params)
    if any(init == "pretrained" for init, _ in p["runs"]) and source is None:
        raise ValueError("pretrained runs need a zoo source: run chapter 1 (the zoo) first")
    out = []
    longest = max(p["schedules"])
    for size in p["train_sizes"]:
        for init, norm in p["runs"]:
            for schedule in p["schedules"]:
                seeds = p["seeds"] + (p["main_seeds"] if schedule == longest else [])
                for seed in common.unique(seeds, key=lambda s: s):
                    out.append(cell_config(p, init=init, norm=norm, size=size, schedule=schedule, seed=seed,
                                           source=source))
    if p["norm_study"]:
        ns = p["norm_study"]
        for norm in ns["norms"]:
            for seed in p["seeds"]:
                out.append(cell_config(p, init="scratch", norm=norm, size=ns["size"], schedule=ns["schedule"],
                                       seed=seed, source=source))
    return common.unique(out, key=config_key)


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
    for config in zoo_experiment.cell_configs(zp):
        if config["arch"] == p["arch"] and config["variant"] == "baseline" and config["seed"] == p["zoo_seed"]:
            return config
    raise ValueError(f"the {p['zoo_profile'] or profile} zoo has no baseline {p['arch']} with seed {p['zoo_seed']}: "
                     "choose an arch of chapter 1's zoo (01_zoo archs) or add it there")


def train_cell(config: dict, artifact_dir: Path, *, data_root=None, progress=None, profile="unknown") -> dict:
    from ..detection.coco import to_coco
    from ..detection.model import build_detector
    from ..detection.train import train_detector

    device = common.training_device()
    train, val = load_data(config["train"], data_root), load_data(config["val"], data_root)
    pretrained = None
    if config["init"] == "pretrained":
        from functools import partial

        fn = partial(zoo_experiment.train_cell, data_root=data_root, verbose=False)
        record = ResultsStore().run(zoo_experiment.EXPERIMENT, config["source"], fn, profile=profile,
                                    seeds=[config["source"]["seed"]])  # trains it if chapter 1 has not
        pretrained = zoo_experiment.load_pretrained(record, data_root=data_root)
    torch.manual_seed(config["seed"])
    model = build_detector(config["arch"], train.num_classes, image_size=train.image_size, norm=config["norm"],
                           head_norm=config["head_norm"], pretrained=pretrained,
                           fpn_channels=config["fpn_channels"])
    steps = config["steps"]
    epochs = max(1, round(steps * config["batch_size"] / len(train)))
    area_scale = (train.image_size / 640) ** 2  # COCO's size thresholds scaled to the canvas
    out = train_detector(model, train, val, to_coco(val), epochs=epochs, batch_size=config["batch_size"],
                         lr=config["lr"], weight_decay=config["weight_decay"], warmup_steps=config["warmup_steps"],
                         eval_every=max(1, epochs // config["evals_per_run"]), device=device, seed=config["seed"],
                         artifact_dir=artifact_dir, progress=progress, area_scale=area_scale)
    out.update(epochs=epochs, train_images=len(train), area_scale=area_scale,
               instances_per_image=sum(len(b) for b in train.boxes) / len(train))
    return out


def run_detection(params: dict, *, profile: str, store: ResultsStore | None = None, data_root=None,
                  piece: str | None = None, progress=None, verbose: bool = False) -> list[dict]:
    """Train (or fetch) every cell; returns the records in order."""
    store = store or ResultsStore()
    p = resolve_params(params)
    source = zoo_source(p, profile=profile, data_root=data_root)
    todo = cell_configs(params, source)
    if piece:
        todo = common.split_piece(todo, piece)
    out = []
    for config in todo:
        rec = store.run(EXPERIMENT, config,
                        lambda c, d: train_cell(c, d, data_root=data_root, progress=progress, profile=profile),
                        profile=profile, seeds=[config["seed"]])
        out.append(rec)
        if verbose:
            ap = rec["result"]["final"]
            print(f"{describe(config):<58} AP {ap['AP']:5.1f}  AP50 {ap['AP50']:5.1f}  "
                  f"{rec['provenance']['wall_time_s']:7.1f}s", file=sys.stderr)
    return out


def describe(config: dict) -> str:
    return (f"{config['train']['size']:>6} {config['train']['dataset']:<8} {config['init']:<10} "
            f"{config['norm']:<9} {config['schedule']}x seed {config['seed']}")


def main(argv=None) -> None:
    from ..profiles import experiment_params

    ap = common.experiment_parser("python -m rethink.experiments.detection", __doc__, only_help="(unused)")
    ap.add_argument("--list", action="store_true", help="list the cells and whether they are done")
    args = ap.parse_args(argv)
    params, data_root = experiment_params(args.profile, "02_detection", args.param)
    data_root = data_root or args.data_root
    if args.list:
        store = ResultsStore()
        p = resolve_params(params)
        for c in cell_configs(params, zoo_source(p, profile=args.profile)):
            print(f"{'done' if store.get(EXPERIMENT, c) else 'todo'}  {describe(c)}")
        return
    records = run_detection(params, profile=args.profile, data_root=data_root, piece=args.piece, verbose=True)
    wall = sum(r["provenance"]["wall_time_s"] for r in records)
    print(f"{len(records)} cells, {wall / 60:.1f} min of compute in the store")


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
