"""Chapter 3: Noisy Student (Xie et al. 2020) at CIFAR-10 scale.

Cells of the results store (experiment ``noisy_student``), each keyed by its config:

* ``supervised``: a network trained on labeled CIFAR-10 only (``labels`` images, class
  balanced, or all 50k) with the chapter's noise. The teacher of iteration 1 is the
  supervised cell of ``teacher_arch``; the baselines are the student architecture on
  the same labels and on all labels.
* ``student``: a noised student trained on labeled + pseudo-labeled images. Its config
  embeds its teacher's full config, so a chain teacher -> student 1 -> 2 -> 3 is a
  chain of keys, and an ablation is the same student with one knob changed.

Weights live in the user cache (``ResultsStore.artifact_dir``); a student whose
teacher's weights are missing retrains the teacher first (on a different machine the
retrained teacher can differ slightly from the one the stored record measured).

    python -m rethink.experiments.noisy_student --profile full [--piece 1/4] [--only teacher student_1]
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..models.cifar import capacity_rank, check_arch, create_cifar_model
from ..models.zoo import count_flops, count_parameters
from ..results.artifacts import load_weights, usable_weights
from ..results.store import ResultsStore, config_key
from ..train.callbacks import Checkpoint, ProgressBar
from ..train.loop import Recipe, Trainer
from . import common

EXPERIMENT = "noisy_student"
LABELED = "cifar10"
OUT_OF_DOMAIN = "tiny-imagenet"
POOLS = ("in_domain", "out_of_domain")
# CIFAR-10 train statistics (0..1 units), the usual values.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

# Ablations of the Noisy Student chapter: each changes the iteration-1 student.
ABLATIONS = {
    "no_noise": {"randaugment": False, "basic_augment": False, "dropout": 0.0, "drop_path": 0.0},
    "no_input_noise": {"randaugment": False},
    "no_model_noise": {"dropout": 0.0, "drop_path": 0.0},
    "hard_labels": {"soft": False},
    "in_domain_only": {"pools": ["in_domain"]},
    "out_of_domain_only": {"pools": ["out_of_domain"]},
    "no_filter_no_balance": {"threshold": 0.0, "balance": False},
    "equal_size_student": {"arch": "teacher"},
    "init_from_teacher": {"arch": "teacher", "init": "teacher"},
}

DEFAULTS = dict(
    labels=4000,                 # labeled CIFAR-10 images, class-balanced
    label_split_seed=0,          # which labeled subset (fixed across seeds and cells)
    in_domain_unlabeled=None,    # None: the rest of CIFAR-10 train; an int: a random subset
    out_of_domain_unlabeled=None,  # None: all Tiny ImageNet train at 32px; an int: a subset
    pools=["in_domain", "out_of_domain"],
    teacher_arch="resnet18_w32",
    student_archs=["resnet18_w64", "resnet18_w64", "resnet18_w64"],  # iterations 1, 2, 3
    seeds=[0, 1, 2],
    ablations=list(ABLATIONS),
    ablation_seeds=[0],
    supervised_all_labels=True,  # the all-labels upper bound (student architecture)
    # noise (teacher and students)
    randaugment=True, randaugment_ops=2, randaugment_magnitude=9,
    basic_augment=True,          # random crop (translate 4px) and flip
    dropout=0.5, drop_path=0.2,
    # pseudo-labels
    soft=True, threshold=0.3, balance=True, images_per_class=None,
    unlabeled_ratio=3,           # pseudo-labeled : labeled images per step
    unlabeled_weight=1.0,
    init="scratch",
    # recipe
    batch_size=128,              # labeled images per step
    teacher_epochs=100,          # epochs over the labeled set
    student_epochs=20,           # evaluation points and schedule granularity of a student
    student_steps=None,          # optimizer steps of a student; None: as many as its teacher took
    all_labels_epochs=30,
    lr=0.2, weight_decay=5e-4, warmup_epochs=2.0, label_smoothing=0.0,
)

NOISE_KEYS = ("randaugment", "randaugment_ops", "randaugment_magnitude", "basic_augment",
              "dropout", "drop_path")
PSEUDO_KEYS = ("soft", "threshold", "balance", "images_per_class", "unlabeled_ratio",
               "unlabeled_weight", "pools", "in_domain_unlabeled", "out_of_domain_unlabeled")
RECIPE_KEYS = ("batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing")


@dataclass
class Cell:
    role: str        # "teacher", "student_2", "supervised_all", "ablation:no_noise", ...
    seed: int
    config: dict

    @property
    def kind(self) -> str:
        return self.config["kind"]


def _params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULTS) - {"profile", "data_root"})
    if unknown:
        raise ValueError(f"unknown Noisy Student parameter(s) {unknown}; valid: {sorted(DEFAULTS)}")
    p = {**copy.deepcopy(DEFAULTS), **params}
    for a in [p["teacher_arch"], *p["student_archs"]]:
        check_arch(a)
    for i, a in enumerate(p["student_archs"]):
        prev = p["teacher_arch"] if i == 0 else p["student_archs"][i - 1]
        if capacity_rank(a) < capacity_rank(prev):
            raise ValueError(f"student {i + 1} ({a}) is smaller than its teacher ({prev}): "
                             "Noisy Student needs an equal-or-larger student")
    bad = [a for a in p["ablations"] if a not in ABLATIONS]
    if bad:
        raise ValueError(f"unknown ablation(s) {bad}; choose from {list(ABLATIONS)}")
    bad = [x for x in p["pools"] if x not in POOLS]
    if bad or not p["pools"]:
        raise ValueError(f"pools must be a non-empty subset of {list(POOLS)}, got {p['pools']}")
    return p


def supervised_config(p: dict, arch: str, labels: int | str, seed: int, epochs: int) -> dict:
    return {"kind": "supervised", "dataset": LABELED, "arch": arch, "labels": labels,
            "label_split_seed": p["label_split_seed"], "seed": seed, "epochs": epochs,
            **{k: p[k] for k in NOISE_KEYS + RECIPE_KEYS}}


def teacher_steps(teacher: dict) -> int:
    """Optimizer steps a teacher trained (a student's are recorded as its own 'steps')."""
    if teacher["kind"] == "student":
        return teacher["steps"]
    n = 50_000 if teacher["labels"] == "all" else teacher["labels"]
    return teacher["epochs"] * max(1, n // teacher["batch_size"])


def student_config(p: dict, teacher: dict, student_arch: str, iteration: int, seed: int,
                   **changes) -> dict:
    """A student of `teacher`; `changes` override knobs (arch='teacher': the teacher's size)."""
    config = {"kind": "student", "dataset": LABELED, "arch": student_arch, "iteration": iteration,
              "labels": teacher["labels"], "label_split_seed": p["label_split_seed"],
              "seed": seed, "epochs": p["student_epochs"], "init": p["init"],
              "steps": p["student_steps"] or teacher_steps(teacher),
              **{k: p[k] for k in NOISE_KEYS + PSEUDO_KEYS + RECIPE_KEYS}, "teacher": teacher}
    for k, v in changes.items():
        config[k] = teacher["arch"] if (k == "arch" and v == "teacher") else v
    if config["init"] == "teacher" and config["arch"] != teacher["arch"]:
        raise ValueError(f"init='teacher' needs the teacher's architecture ({teacher['arch']}), "
                         f"got {config['arch']}")
    return config


def cells(params: dict) -> list[Cell]:
    """Every cell of the chapter, dependencies first, without duplicates."""
    p = _params(params)
    first_student = p["student_archs"][0] if p["student_archs"] else p["teacher_arch"]
    out: list[Cell] = []
    for seed in p["seeds"]:
        teacher = supervised_config(p, p["teacher_arch"], p["labels"], seed, p["teacher_epochs"])
        out.append(Cell("teacher", seed, teacher))
        for i, arch in enumerate(p["student_archs"], start=1):
            student = student_config(p, teacher, arch, i, seed)
            out.append(Cell(f"student_{i}", seed, student))
            teacher = student
        out.append(Cell("supervised_student_arch", seed,
                        supervised_config(p, first_student, p["labels"], seed, p["teacher_epochs"])))
        if p["supervised_all_labels"]:
            out.append(Cell("supervised_all", seed,
                            supervised_config(p, first_student, "all", seed, p["all_labels_epochs"])))
    for seed in p["ablation_seeds"]:
        teacher = supervised_config(p, p["teacher_arch"], p["labels"], seed, p["teacher_epochs"])
        if seed not in p["seeds"]:
            out.append(Cell("teacher", seed, teacher))
        for name in p["ablations"]:
            out.append(Cell(f"ablation:{name}", seed,
                            student_config(p, teacher, first_student, 1, seed, **ABLATIONS[name])))
    return common.unique(out, key=lambda c: (c.role, config_key(c.config)))


# ------------------------------------------------------------------ data


def labeled_indices(train_labels: np.ndarray, labels: int | str, split_seed: int) -> np.ndarray:
    """Class-balanced labeled subset of CIFAR-10 train (all of it for labels='all')."""
    from ..data.cache import subset_per_class

    if labels == "all":
        return np.arange(len(train_labels))
    num_classes = len(np.unique(train_labels))
    if labels % num_classes:
        raise ValueError(f"labels={labels} is not a multiple of the {num_classes} classes")
    return np.asarray(subset_per_class(train_labels, labels // num_classes, seed=split_seed))


def unlabeled_pool(config: dict, data_root=None) -> dict:
    """Images of the unlabeled pool(s): uint8 N x 3 x 32 x 32, with source and hidden labels.

    in_domain: CIFAR-10 train minus the labeled subset (labels hidden, kept only to
    measure pseudo-label accuracy); out_of_domain: Tiny ImageNet train resized to 32px.
    """
    from ..data.cache import load_split

    images, source, hidden, origin = [], [], [], []
    rng = np.random.default_rng(config["label_split_seed"])
    if "in_domain" in config["pools"]:
        train = load_split(LABELED, "train", 32, data_root=data_root)
        rest = np.setdiff1d(np.arange(len(train)), labeled_indices(
            train.labels, config["labels"], config["label_split_seed"]))
        if config["in_domain_unlabeled"] is not None:
            rest = np.sort(rng.choice(rest, min(config["in_domain_unlabeled"], len(rest)), replace=False))
        images.append(np.asarray(train.images[rest]))
        source.append(np.zeros(len(rest), np.int8))
        hidden.append(np.asarray(train.labels[rest]))
        origin.append(rest)
    if "out_of_domain" in config["pools"]:
        ood = load_split(OUT_OF_DOMAIN, "train", 32, data_root=data_root)
        idx = np.arange(len(ood))
        if config["out_of_domain_unlabeled"] is not None:
            idx = np.sort(rng.choice(idx, min(config["out_of_domain_unlabeled"], len(idx)), replace=False))
        images.append(np.asarray(ood.images[idx]))
        source.append(np.ones(len(idx), np.int8))
        hidden.append(np.full(len(idx), -1, np.int64))  # no CIFAR-10 label
        origin.append(idx)
    return {"images": np.concatenate(images), "source": np.concatenate(source),
            "hidden_labels": np.concatenate(hidden), "origin": np.concatenate(origin)}


def noise_augment(config: dict):
    """Input noise: crop+flip (basic) and RandAugment, batched on the device."""
    from .. import augment

    parts = []
    if config["basic_augment"]:
        parts.append(augment.Augment(translate=4, flip=True))
    if config["randaugment"]:
        parts.append(augment.RandAugment(num_ops=config["randaugment_ops"],
                                         magnitude=config["randaugment_magnitude"]))
    if len(parts) > 1:
        return augment.Compose(parts)
    return parts[0] if parts else None


# ------------------------------------------------------------------ training


def _recipe(config: dict) -> Recipe:
    return Recipe(epochs=config["epochs"], lr=config["lr"], weight_decay=config["weight_decay"],
                  warmup_epochs=config["warmup_epochs"], label_smoothing=config["label_smoothing"],
                  seed=config["seed"])


def _network(config: dict) -> torch.nn.Module:
    return create_cifar_model(config["arch"], 10, dropout=config["dropout"],
                              drop_path=config["drop_path"])


def _model(config: dict) -> torch.nn.Module:
    """The cell's network with its seeded random init."""
    torch.manual_seed(config["seed"])
    return _network(config)


def _test_loader(device, data_root):
    from ..data.cache import load_split
    from ..data.loader import GPULoader

    test = load_split(LABELED, "test", 32, data_root=data_root)
    return GPULoader(test.images, test.labels, 1024, device=device, mean=MEAN, std=STD, shuffle=False)


def _labeled_loader(config: dict, device, data_root):
    from ..data.cache import load_split
    from ..data.loader import GPULoader

    train = load_split(LABELED, "train", 32, data_root=data_root)
    idx = labeled_indices(train.labels, config["labels"], config["label_split_seed"])
    bs = min(config["batch_size"], len(idx))
    return GPULoader(train.images, train.labels, bs, indices=idx, device=device, mean=MEAN,
                     std=STD, augment=noise_augment(config), shuffle=True, drop_last=True,
                     seed=config["seed"])


def _fit(model, train_loader, config, artifact_dir, device, data_root, *, loss_fn=None, desc="",
         progress=None, verbose=True) -> tuple[list[dict], torch.nn.Module]:
    trainer = Trainer(model, train_loader, _test_loader(device, data_root), _recipe(config),
                      device=device, loss_fn=loss_fn, verbose=verbose,
                      eval_every=max(1, math.ceil(config["epochs"] / 5)),  # about five points per curve
                      callbacks=[Checkpoint(artifact_dir), ProgressBar(progress, desc=desc)])
    return trainer.fit(), trainer.raw_model


def _summary(history: list[dict], model, config: dict, n_train: int) -> dict:
    last = history[-1]
    return {"top1": last["val_top1"], "top5": last["val_top5"],
            "diverged": bool(last.get("diverged", False)),
            "params": count_parameters(model), "flops": count_flops(model, 32),
            "train_images": int(n_train),
            "train_time_s": sum(h["epoch_time_s"] for h in history),
            "images_per_s": float(np.median([h["images_per_s"] for h in history])),
            "history": history, "weights": "weights.pt"}


def train_supervised(config: dict, artifact_dir: Path, *, data_root=None, verbose=True,
                     progress=None) -> dict:
    device = common.training_device()
    loader = _labeled_loader(config, device, data_root)
    model = _model(config)
    history, model = _fit(model, loader, config, artifact_dir, device, data_root, progress=progress,
                          verbose=verbose, desc=f"supervised {config['arch']} {config['labels']}")
    return _summary(history, model, config, loader.num_samples)


def pseudo_label_stats(pl, pool: dict, examples_per_class: int = 3) -> dict:
    """What entered the student's training set: sources, and accuracy where labels exist."""
    src = pool["source"][pl.indices]
    hidden = pool["hidden_labels"][pl.indices]
    in_dom = src == 0
    stats = dict(pl.stats)
    stats["from_out_of_domain"] = float((src == 1).mean()) if len(src) else 0.0
    stats["pool_sizes"] = {"in_domain": int((pool["source"] == 0).sum()),
                           "out_of_domain": int((pool["source"] == 1).sum())}
    stats["in_domain_accuracy"] = (float((pl.predicted[in_dom] == hidden[in_dom]).mean())
                                   if in_dom.any() else None)
    stats["mean_confidence"] = float(pl.confidence.mean()) if len(pl) else None
    # the most confident out-of-domain images of each class (Tiny ImageNet train indices)
    examples = []
    for c in range(pl.targets.shape[1]):
        rows = np.flatnonzero((pl.predicted == c) & (src == 1))
        rows = rows[np.argsort(-pl.confidence[rows], kind="stable")]
        picked = list(dict.fromkeys(pool["origin"][pl.indices[rows]].tolist()))[:examples_per_class]
        conf = {int(pool["origin"][pl.indices[r]]): float(pl.confidence[r]) for r in rows}
        examples += [{"index": int(i), "pseudo_label": c, "confidence": conf[i]} for i in picked]
    stats["out_of_domain_examples"] = examples
    return stats


def train_student(config: dict, artifact_dir: Path, *, data_root=None, verbose=True,
                  progress=None, store: ResultsStore | None = None, profile: str = "unknown") -> dict:
    from ..data.loader import GPULoader
    from ..selftrain import NoisyStudentLoss, StudentLoader, select_pseudo_labels, teacher_probabilities

    device = common.training_device()
    teacher = load_model(config["teacher"], data_root=data_root, store=store, profile=profile).to(device)
    pool = unlabeled_pool(config, data_root)
    probs = teacher_probabilities(teacher, pool["images"], mean=MEAN, std=STD, device=device)
    pl = select_pseudo_labels(probs, threshold=config["threshold"], balance=config["balance"],
                              images_per_class=config["images_per_class"], hard=not config["soft"],
                              seed=config["seed"])
    stats = pseudo_label_stats(pl, pool)
    labeled = _labeled_loader(config, device, data_root)
    # labels of the pseudo loader are row numbers into pl.targets (soft targets travel with them)
    pseudo = GPULoader(pool["images"][pl.indices], np.arange(len(pl)),
                       labeled.batch_size * config["unlabeled_ratio"], device=device, mean=MEAN,
                       std=STD, augment=noise_augment(config), shuffle=True, drop_last=True,
                       seed=config["seed"] + 7919)
    del pool
    # every student trains for config["steps"] steps whatever its pool size, so ablations
    # that shrink or grow the pseudo-labeled set are not also changes of training length
    loader = StudentLoader(labeled, pseudo, pl.targets,
                           steps_per_epoch=math.ceil(config["steps"] / config["epochs"]))
    model = _model(config)
    if config["init"] == "teacher":
        model.load_state_dict(teacher.state_dict())
    loss = NoisyStudentLoss(config["label_smoothing"], config["unlabeled_weight"])
    history, model = _fit(model, loader, config, artifact_dir, device, data_root, loss_fn=loss,
                          progress=progress, verbose=verbose,
                          desc=f"student {config['iteration']} {config['arch']}")
    result = _summary(history, model, config, labeled.num_samples + len(pl))
    result["pseudo_labels"] = stats
    return result


def load_model(config: dict, *, data_root=None, store: ResultsStore | None = None,
               profile: str = "unknown") -> torch.nn.Module:
    """The trained network of a cell (its weights from the cache; trained if absent).

    For the robustness chapter: ``load_model(record["config"])``.
    """
    store = store or ResultsStore()
    weights = store.artifact_dir(EXPERIMENT, config) / "weights.pt"
    if not usable_weights(weights, what="noisy-student weights"):  # missing, or corrupt (moved aside)
        fn = _trainer_fn(config, data_root=data_root, store=store, profile=profile)
        if store.get(EXPERIMENT, config) is None:
            store.run(EXPERIMENT, config, fn, profile=profile, seeds=[config["seed"]])
        else:
            print(f"weights of {config['kind']} {config['arch']} (seed {config['seed']}) not in the "
                  "cache: retraining (the results store keeps metrics, not weights)", file=sys.stderr)
            fn(config, store.artifact_dir(EXPERIMENT, config))
    model = _network(config)
    model.load_state_dict(load_weights(weights, what="noisy-student weights"))
    return model.eval()


def _trainer_fn(config: dict, *, store: ResultsStore, profile: str, **kwargs):
    if config["kind"] == "student":
        return partial(train_student, store=store, profile=profile, **kwargs)
    return partial(train_supervised, **kwargs)


def _chain(first: Cell, cell: Cell) -> bool:
    """A seed's teacher -> students -> baselines run (ablations are groups of their own)."""
    return (first.seed == cell.seed and not first.role.startswith("ablation:")
            and not cell.role.startswith("ablation:"))


def split_piece(todo: list[Cell], piece: str) -> list[Cell]:
    """'k/n': the k-th of n pieces, never splitting a seed's teacher -> student chain.

    A later student needs its teacher's weights; inside one piece they are still in the
    cache even on a machine that is handed back between pieces. Ablations (which need
    only the teacher, retrained in seconds if absent) are groups of their own.
    """
    return common.split_piece(todo, piece, same_group=_chain)


def run_noisy_student(params: dict, *, profile: str, store: ResultsStore | None = None,
                      data_root=None, only: list[str] | None = None, piece: str | None = None,
                      verbose: bool = True, progress=None) -> list[tuple[Cell, dict]]:
    """Train (or fetch) every cell; returns (cell, record) pairs in order.

    only: roles to keep (e.g. ``teacher student_1 ablation:no_noise``); piece: 'k/n'.
    """
    store = store or ResultsStore()
    todo = cells(params)
    if only:
        todo = [c for c in todo if c.role in only or c.role.split(":")[-1] in only]
    if piece:
        todo = split_piece(todo, piece)
    out = []
    for cell in todo:
        fn = _trainer_fn(cell.config, store=store, profile=profile, data_root=data_root,
                         verbose=verbose, progress=progress)
        out.append((cell, store.run(EXPERIMENT, cell.config, fn, profile=profile, seeds=[cell.seed])))
    return out


def main(argv=None) -> None:
    from ..profiles import experiment_params

    ap = common.experiment_parser("python -m rethink.experiments.noisy_student", __doc__,
                                  only_help="roles to run: teacher student_1 ... ablation:no_noise")
    ap.add_argument("--list", action="store_true", help="list the cells and whether they are done")
    args = ap.parse_args(argv)
    params, data_root = experiment_params(args.profile, "03_noisy_student", args.param)
    data_root = data_root or args.data_root
    if args.list:
        store = ResultsStore()
        for c in cells(params):
            done = store.get(EXPERIMENT, c.config) is not None
            print(f"{'done' if done else 'todo'}  {c.role:<28} seed {c.seed}  {c.config['arch']}")
        return
    for cell, rec in run_noisy_student(params, profile=args.profile, data_root=data_root,
                                       only=args.only, piece=args.piece):
        res = rec["result"]
        print(f"{cell.role:<28} seed {cell.seed}  {cell.config['arch']:<14} top-1 {res['top1']:.2%}  "
              f"{res['train_time_s']:7.1f}s")


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
