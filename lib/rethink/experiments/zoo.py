"""Chapter 1: pre-train a model zoo on the ImageNet stand-in (Tiny ImageNet).

One consistent recipe for every architecture, as Kornblith et al. did, plus
regularizer variants of one architecture (label smoothing, dropout, no BN scale).
Each (architecture, variant, seed) is one cell of the results store: cached,
resumable, and the pre-training source of the later chapters.

    python -m rethink.experiments.zoo --profile full [--piece 1/4]
    torchrun --nproc_per_node 2 -m rethink.experiments.zoo --profile smoke
"""
from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..data.registry import stats
from ..models.zoo import ARCHITECTURES, count_flops, count_parameters, create_model
from ..results.artifacts import load_weights, usable_weights
from ..results.store import ResultsStore
from ..train.callbacks import Checkpoint, EMA, ProgressBar
from ..train.loop import Recipe, Trainer
from . import cost as _cost
from . import protocol
from .common import split_piece
from .protocol import Cell, NetworkInfo

NAME = EXPERIMENT = "zoo"
STEM = "01_zoo"
VERSION = 1
DATASET = "tiny-imagenet"
MEAN, STD = stats(DATASET)

# Regularizer variants (Kornblith et al. section 4.2): each changes one knob of the base recipe.
VARIANTS = {
    "baseline": {},
    "label_smoothing": {"label_smoothing": 0.1},
    "dropout": {"dropout": 0.5},
    "no_bn_scale": {"bn_scale": False},
}

DEFAULTS = dict(
    archs=list(ARCHITECTURES),
    variant_arch="resnet18",
    variants=["label_smoothing", "dropout", "no_bn_scale"],
    seeds=[0],
    variant_seeds=None,     # extra seeds for the variant study (variant_arch and its variants)
    image_size=64,
    train_per_class=None,   # None: every training image of the local copy (400/class)
    val_per_class=None,     # None: the whole validation split (50/class)
    epochs=16,
    batch_size=512,
    lr=0.4,
    weight_decay=5e-4,
    warmup_epochs=2.0,
    translate=4,
    ema_decay=None,
)
SCHEMA = {"archs": "list[str]", "variants": "list[str]", "seeds": "list[int>=0]",
          "variant_seeds": "list[int>=0]|None", "image_size": "int>=16", "train_per_class": "int>0|None",
          "val_per_class": "int>0|None", "epochs": "int>0", "batch_size": "int>0", "lr": "float>0",
          "weight_decay": "float>=0", "warmup_epochs": "float>=0", "translate": "int>=0",
          "ema_decay": "float>0|None"}


def source_label(config: dict) -> str:
    """'resnet18', or 'resnet18/dropout' for a regularizer variant (a zoo cell's name)."""
    return config["arch"] if config["variant"] == "baseline" else f"{config['arch']}/{config['variant']}"


def resolve_params(params: dict) -> dict:
    """DEFAULTS overlaid with ``params`` (other notebooks' keys ignored), names checked."""
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
    unknown = [a for a in p["archs"] + [p["variant_arch"]] if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"unknown architecture(s) {unknown}; choose from {sorted(ARCHITECTURES)}")
    bad = [v for v in p["variants"] if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {sorted(VARIANTS)}")
    return p


def cell_configs(params: dict, data_root=None) -> list[dict]:
    """Expand notebook/profile parameters into one config per trained model."""
    p = resolve_params(params)
    cells = [(a, "baseline") for a in p["archs"]]
    if p["variants"] and p["variant_arch"] not in p["archs"]:
        cells.append((p["variant_arch"], "baseline"))  # the variants' reference
    cells += [(p["variant_arch"], v) for v in p["variants"] if v != "baseline"]
    base = {k: p[k] for k in ("image_size", "train_per_class", "val_per_class", "epochs",
                              "batch_size", "lr", "weight_decay", "warmup_epochs", "translate",
                              "ema_decay")}
    runs = [(seed, arch, variant) for seed in p["seeds"] for arch, variant in cells]
    # The variant study compares changes of a point or two: give it more seeds.
    variant_cells = [(p["variant_arch"], "baseline")] + [c for c in cells if c[1] != "baseline"]
    runs += [(seed, arch, variant) for seed in (p["variant_seeds"] or []) if seed not in p["seeds"]
             for arch, variant in variant_cells]
    configs = []
    for seed, arch, variant in runs:
        knobs = {"label_smoothing": 0.0, "dropout": 0.0, "bn_scale": True, **VARIANTS[variant]}
        configs.append(protocol.stamp({"dataset": DATASET, "arch": arch, "variant": variant, "seed": seed,
                                       **base, **knobs}, VERSION, [DATASET], data_root))
    return configs


def cells(params: dict, data_root=None, profile: str | None = None) -> list[Cell]:
    return [Cell(source_label(c), c["seed"], c, NAME) for c in cell_configs(params, data_root)]


def describe(config: dict) -> str:
    return f"{source_label(config):<28} seed {config['seed']}  {config['image_size']}px {config['epochs']} epochs"


def upstream(config: dict) -> list[tuple[str, dict]]:
    return []


def train_images(config: dict) -> int:
    """Training images per epoch (the local copy: 400 per class; the canonical zip: 500)."""
    return 200 * (config["train_per_class"] or 400)


def cost(config: dict) -> float:
    val = 200 * (config["val_per_class"] or 50)
    return _cost.training_seconds(config["arch"], config["epochs"] * train_images(config),
                                  image_size=config["image_size"], eval_images=config["epochs"] * val)


def network(config: dict, num_classes: int = 200) -> torch.nn.Module:
    return create_model(config["arch"], num_classes, dropout=config["dropout"], bn_scale=config["bn_scale"])


def network_info(config: dict) -> NetworkInfo:
    return NetworkInfo(DATASET, MEAN, STD, 200, config["image_size"])


def _subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray | None:
    if per_class is None:
        return None
    from ..data.cache import subset_per_class
    return np.asarray(subset_per_class(labels, per_class, seed))


def make_loaders(config: dict, device: torch.device, data_root=None):
    from ..augment import Augment
    from ..data.cache import load_split
    from ..data.loader import GPULoader

    size = config["image_size"]
    train = load_split(DATASET, "train", size, data_root=data_root)
    val = load_split(DATASET, "val", size, data_root=data_root)
    train_idx = _subset(train.labels, config["train_per_class"], seed=0)
    val_idx = _subset(val.labels, config["val_per_class"], seed=0)
    common = dict(device=device, mean=MEAN, std=STD)
    train_loader = GPULoader(train.images, train.labels, config["batch_size"], indices=train_idx,
                             shuffle=True, drop_last=True, seed=config["seed"],
                             augment=Augment(translate=config["translate"], flip=True), **common)
    val_loader = GPULoader(val.images, val.labels, 1024, indices=val_idx, shuffle=False, **common)
    return train_loader, val_loader, len(train.classes)


def train_cell(config: dict, artifact_dir: Path, *, data_root=None, distributed=None,
               verbose: bool = True, progress: bool | None = None, store=None, profile=None) -> dict:
    """Train one zoo model; checkpoints in artifact_dir make it resumable."""
    device = distributed.device if distributed else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_loader, val_loader, num_classes = make_loaders(config, device, data_root)
    if distributed:
        train_loader = distributed.shard(train_loader)
    torch.manual_seed(config["seed"])
    model = create_model(config["arch"], num_classes, dropout=config["dropout"],
                         bn_scale=config["bn_scale"])
    n_params = count_parameters(model)
    flops = count_flops(model, config["image_size"])
    recipe = Recipe(epochs=config["epochs"], lr=config["lr"], weight_decay=config["weight_decay"],
                    warmup_epochs=config["warmup_epochs"], label_smoothing=config["label_smoothing"],
                    seed=config["seed"])
    callbacks = [Checkpoint(artifact_dir), ProgressBar(progress, desc=f"{config['arch']}/{config['variant']}")]
    if config.get("ema_decay"):
        callbacks.append(EMA(config["ema_decay"]))
    trainer = Trainer(model, train_loader, val_loader, recipe, device=device, callbacks=callbacks,
                      distributed=distributed, verbose=verbose)
    history = trainer.fit()
    last = history[-1]
    train_time = sum(h["epoch_time_s"] for h in history)
    return {
        "top1": last["val_top1"], "top5": last["val_top5"],
        "diverged": bool(last.get("diverged", False)),
        "params": n_params, "flops": flops, "num_classes": num_classes,
        "train_time_s": train_time,
        "images_per_s": float(np.median([h["images_per_s"] for h in history])),
        "train_images": train_loader.num_samples if hasattr(train_loader, "num_samples") else None,
        "val_images": val_loader.num_samples,
        "history": history,
        "weights": "weights.pt",
    }


def train(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile=None, progress=None,
          verbose: bool = False) -> dict:
    """The protocol's ``train``: one zoo network (resumable from its checkpoints)."""
    return train_cell(config, artifact_dir, data_root=data_root, verbose=verbose, progress=progress)


def run_zoo(params: dict, *, profile: str, store: ResultsStore | None = None, data_root=None,
            only: list[str] | None = None, piece: str | None = None, verbose: bool = True,
            distributed=None) -> list[dict]:
    """Train (or fetch from the store) every cell; returns the records in order.

    only: architectures or arch/variant names to keep; piece: 'k/n', the k-th of n
    contiguous pieces of the cell list (see split_piece).
    """
    store = store or ResultsStore()
    configs = cell_configs(params, data_root)
    if piece:
        configs = split_piece(configs, piece)
    records = []
    for config in configs:
        if only and config["arch"] not in only and f"{config['arch']}/{config['variant']}" not in only:
            continue
        fn = partial(train_cell, data_root=data_root, distributed=distributed, verbose=verbose)
        if distributed and not distributed.is_main:
            rec = store.get(EXPERIMENT, config)
            if rec is None:
                fn(config, store.artifact_dir(EXPERIMENT, config))
            distributed.barrier()
            records.append(store.get(EXPERIMENT, config))
            continue
        rec = store.run(EXPERIMENT, config, fn, profile=profile, seeds=[config["seed"]])
        if distributed:
            distributed.barrier()
        records.append(rec)
    return records


def load_pretrained(record: dict, *, data_root=None) -> torch.nn.Module:
    """The trained network of a zoo record (weights from the user cache; retrained if absent,
    and the retrained network's top-1 recorded beside the stored one)."""
    store = ResultsStore()
    config = record["config"]
    weights = store.artifact_dir(EXPERIMENT, config) / record["result"]["weights"]
    if not usable_weights(weights, what="zoo weights"):  # missing, or corrupt (moved aside)
        print(f"weights of {config['arch']}/{config['variant']} not in the cache: retraining "
              "(the results store keeps metrics, not weights)", flush=True)   # news, not an error: stdout
        result = train_cell(config, store.artifact_dir(EXPERIMENT, config), data_root=data_root)
        if result is not None and store.get(EXPERIMENT, config) is not None:
            from . import record_retrain
            record_retrain(store, EXPERIMENT, config, store.get(EXPERIMENT, config), result,
                           record.get("provenance", {}).get("profile", "unknown"))
    from ..data.registry import get_spec
    num_classes = record["result"].get("num_classes") or get_spec(config["dataset"]).num_classes
    model = network(config, num_classes)
    model.load_state_dict(load_weights(weights, what="zoo weights"))
    model.info = network_info(config)
    return model


def main(argv=None) -> int:
    from ..profiles import experiment_params
    from ..train.distributed import Distributed

    if os.environ.get("WORLD_SIZE") is None and "--sync-bn" not in (argv or sys.argv[1:]):
        return protocol.main(sys.modules[__name__], argv)   # the shared command line (--list, ...)
    ap = protocol.parser(sys.modules[__name__])
    ap.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under torchrun")
    args = ap.parse_args(argv)
    params, data_root = experiment_params(args.profile, STEM, args.param)
    params["data_root"] = data_root
    distributed = Distributed.from_env(sync_bn=args.sync_bn)
    records = run_zoo(params, profile=args.profile, data_root=params.get("data_root") or args.data_root,
                      only=args.only, piece=args.piece, distributed=distributed)
    if distributed is None or distributed.is_main:
        for r in records:
            c, res = r["config"], r["result"]
            print(f"{c['arch']:>18} {c['variant']:>16} seed {c['seed']}  top-1 {res['top1']:.2%}  "
                  f"{res['params'] / 1e6:5.1f}M params  {res['train_time_s']:6.1f}s")
    if distributed:
        distributed.close()
    return 0


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
