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
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..data.registry import stats
from ..models.cifar import capacity_rank, check_arch, create_cifar_model
from ..models.zoo import count_flops, count_parameters
from ..results.store import ResultsStore, config_key
from ..train.callbacks import Checkpoint, ProgressBar
from ..train.loop import Recipe, Trainer
from . import common, protocol
from . import cost as _cost
from .protocol import Cell, NetworkInfo

NAME = EXPERIMENT = "noisy_student"
STEM = "03_noisy_student"
# 2: RandAugment at a fixed magnitude (the paper's), stochastic depth by Huang et al.'s rule,
#    the no-noise ablation keeps crop and flip, matched supervised controls, a test subset
VERSION = 2
LABELED = "cifar10"
OUT_OF_DOMAIN = "tiny-imagenet"
POOLS = ("in_domain", "out_of_domain")
MEAN, STD = stats(LABELED)

# Ablations of the Noisy Student chapter: each changes the iteration-1 student. "Noise" is the
# paper's: RandAugment, dropout and stochastic depth; crop and flip are the standard data
# augmentation every network here gets, the teacher included, so no_noise keeps them.
ABLATIONS = {
    "no_noise": {"randaugment": False, "dropout": 0.0, "drop_path": 0.0},
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
    randaugment_random_magnitude=False,  # the paper: a fixed magnitude; True draws each in [0, M]
    basic_augment=True,          # random crop (translate 4px) and flip
    dropout=0.5, drop_path=0.2,  # drop_path: stochastic depth at the last block (Huang et al.'s linear rule)
    # pseudo-labels. The paper drops images below 0.3 confidence among 1,000 classes (300x
    # chance); among 10 classes 0.3 is 3x chance and passes most out-of-domain images, so the
    # book keeps 0.8, the value of the public CIFAR-10 reproduction (the chapter shows the pass rates)
    soft=True, threshold=0.8, balance=True, images_per_class=None,
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
    matched_controls=True,       # supervised networks of each student size trained on as many images
    test_per_class=None,         # CIFAR-10 test images per class every network is scored on (None: 1,000)
)
SCHEMA = {"labels": "int>0", "label_split_seed": "int>=0", "in_domain_unlabeled": "int>=0|None",
          "out_of_domain_unlabeled": "int>=0|None", "pools": "list[str]", "teacher_arch": "str",
          "student_archs": "list[str]", "seeds": "list[int>=0]", "ablations": "list[str]",
          "ablation_seeds": "list[int>=0]", "randaugment_ops": "int>=0", "randaugment_magnitude": "int>=0",
          "dropout": "float>=0", "drop_path": "float>=0", "threshold": "float>=0",
          "images_per_class": "int>0|None", "unlabeled_ratio": "int>0", "unlabeled_weight": "float>=0",
          "init": "choice:scratch,teacher", "batch_size": "int>0", "teacher_epochs": "int>0",
          "student_epochs": "int>0", "student_steps": "int>0|None", "all_labels_epochs": "int>0",
          "lr": "float>0", "weight_decay": "float>=0", "warmup_epochs": "float>=0",
          "label_smoothing": "float>=0", "test_per_class": "int>0|None"}

NOISE_KEYS = ("randaugment", "randaugment_ops", "randaugment_magnitude", "randaugment_random_magnitude",
              "basic_augment", "dropout", "drop_path")
PSEUDO_KEYS = ("soft", "threshold", "balance", "images_per_class", "unlabeled_ratio",
               "unlabeled_weight", "pools", "in_domain_unlabeled", "out_of_domain_unlabeled")
RECIPE_KEYS = ("batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing")


def resolve_params(params: dict) -> dict:
    """DEFAULTS overlaid with ``params``, names and sizes checked."""
    return _params(params)


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


def _stamp(config: dict, p: dict) -> dict:
    datasets = [LABELED] + ([OUT_OF_DOMAIN] if config["kind"] == "student" and "out_of_domain" in config["pools"]
                            else [])
    return protocol.stamp(config, VERSION, datasets, p.get("data_root"))


def supervised_config(p: dict, arch: str, labels: int | str, seed: int, epochs: int, *,
                      batch_size: int | None = None, steps: int | None = None) -> dict:
    """A network trained on labels only; ``batch_size``/``steps`` set a control matched to a
    student (as many optimizer steps, as many images per step), else whole epochs."""
    config = {"kind": "supervised", "dataset": LABELED, "arch": arch, "labels": labels,
              "label_split_seed": p["label_split_seed"], "seed": seed, "epochs": epochs,
              **{k: p[k] for k in NOISE_KEYS + RECIPE_KEYS}, "test_per_class": p["test_per_class"]}
    if batch_size is not None:
        config.update(batch_size=batch_size, steps=steps)
    return _stamp(config, p)


def teacher_steps(teacher: dict) -> int:
    """Optimizer steps a teacher trained (a student's are recorded as its own 'steps')."""
    if teacher["kind"] == "student" or teacher.get("steps"):
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
              **{k: p[k] for k in NOISE_KEYS + PSEUDO_KEYS + RECIPE_KEYS}, "test_per_class": p["test_per_class"],
              "teacher": teacher}
    for k, v in changes.items():
        config[k] = teacher["arch"] if (k == "arch" and v == "teacher") else v
    if config["init"] == "teacher" and config["arch"] != teacher["arch"]:
        raise ValueError(f"init='teacher' needs the teacher's architecture ({teacher['arch']}), "
                         f"got {config['arch']}")
    return _stamp(config, p)


def matched_control(p: dict, student: dict) -> dict:
    """A supervised network of the student's size that takes as many optimizer steps on as
    many images per step (labeled only: batch_size x (1 + unlabeled_ratio)) as the student."""
    return supervised_config(p, student["arch"], student["labels"], student["seed"], student["epochs"],
                             batch_size=student["batch_size"] * (1 + student["unlabeled_ratio"]),
                             steps=student["steps"])


def cells(params: dict, data_root=None, profile: str | None = None) -> list[Cell]:
    """Every cell of the chapter, dependencies first, without duplicates."""
    p = {**_params(params), "data_root": data_root}
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
        if p["matched_controls"] and p["student_archs"]:
            first = next(c.config for c in out if c.role == "student_1" and c.seed == seed)
            out.append(Cell("matched_control", seed, matched_control(p, first)))
        if p["supervised_all_labels"]:
            out.append(Cell("supervised_all", seed,
                            supervised_config(p, first_student, "all", seed, p["all_labels_epochs"])))
    for seed in p["ablation_seeds"]:
        teacher = supervised_config(p, p["teacher_arch"], p["labels"], seed, p["teacher_epochs"])
        if seed not in p["seeds"]:
            out.append(Cell("teacher", seed, teacher))
        for name in p["ablations"]:
            student = student_config(p, teacher, first_student, 1, seed, **ABLATIONS[name])
            out.append(Cell(f"ablation:{name}", seed, student))
            if name == "equal_size_student" and p["matched_controls"] and student["arch"] != first_student:
                out.append(Cell("matched_control_teacher_size", seed, matched_control(p, student)))
    for c in out:
        c.experiment = NAME
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
                                         magnitude=config["randaugment_magnitude"],
                                         random_magnitude=config.get("randaugment_random_magnitude", True)))
    if len(parts) > 1:
        return augment.Compose(parts)
    return parts[0] if parts else None


# ------------------------------------------------------------------ training


def _recipe(config: dict) -> Recipe:
    return Recipe(epochs=config["epochs"], lr=config["lr"], weight_decay=config["weight_decay"],
                  warmup_epochs=config["warmup_epochs"], label_smoothing=config["label_smoothing"],
                  seed=config["seed"])


AIRBENCH = "airbench94"   # a network of another family for the robustness chapter's fixed baseline


def _network(config: dict) -> torch.nn.Module:
    if config["arch"] == AIRBENCH:
        from ..models.airbench import airbench94
        return airbench94(10)
    return create_cifar_model(config["arch"], 10, dropout=config["dropout"],
                              drop_path=config["drop_path"])


def train_airbench(config: dict, artifact_dir: Path, *, data_root=None, verbose=False) -> dict:
    """airbench94 (Jordan 2024) with its own recipe (``rethink.train.speedrun``) on the config's
    labels for ``epochs`` epochs: 94% on all 50k labels in about 10 epochs. Not resumable (it
    takes seconds on a GPU); evaluated without test-time augmentation, as every other network."""
    from ..data.cache import load_split
    from ..data.loader import GPULoader
    from ..models.airbench import whiten_init_
    from ..train.speedrun import SpeedrunRecipe, StepBudget, alternating_flip_base, speedrun_callbacks

    device = common.training_device()
    recipe = SpeedrunRecipe(epochs=config["epochs"], seed=config["seed"])
    train = load_split(LABELED, "train", 32, data_root=data_root)
    idx = labeled_indices(train.labels, config["labels"], config["label_split_seed"])
    images = torch.as_tensor(np.asarray(train.images[idx])).to(device)
    labels = torch.as_tensor(np.asarray(train.labels[idx]))
    model = _model(config).to(device)
    pick = torch.linspace(0, len(images) - 1, min(recipe.whiten_images, len(images))).round().long().to(device)
    whiten_init_(model, images.index_select(0, pick), eps=recipe.whiten_eps)
    base = alternating_flip_base(images, recipe.seed) if recipe.alternating_flip else images
    from .. import augment
    loader = StepBudget(GPULoader(base, labels, min(recipe.batch_size, len(idx)), device=device, mean=MEAN,
                                  std=STD, augment=augment.Augment(translate=recipe.translate, flip=not
                                                                   recipe.alternating_flip, padding_mode="reflect"),
                                  shuffle=True, drop_last=True, seed=recipe.seed), recipe.epochs)
    test = _test_loader(device, data_root, config.get("test_per_class"))
    trainer = Trainer(model, loader, test, recipe.trainer_recipe(), device=device, verbose=verbose,
                      callbacks=speedrun_callbacks(model, recipe))
    history = trainer.fit()
    torch.save(trainer.raw_model.state_dict(), Path(artifact_dir) / "weights.pt")
    return {**_summary(history, trainer.raw_model, config, len(idx)), "recipe": "airbench94"}


def _model(config: dict) -> torch.nn.Module:
    """The cell's network with its seeded random init."""
    torch.manual_seed(config["seed"])
    return _network(config)


def _test_loader(device, data_root, per_class: int | None = None):
    """CIFAR-10 test (class-balanced subset of ``per_class`` per class when set: smoke runs)."""
    from ..data.cache import load_split, subset_per_class
    from ..data.loader import GPULoader

    test = load_split(LABELED, "test", 32, data_root=data_root)
    idx = None if per_class is None else np.asarray(subset_per_class(np.asarray(test.labels), per_class, 0))
    return GPULoader(test.images, test.labels, 1024, indices=idx, device=device, mean=MEAN, std=STD,
                     shuffle=False)


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
    trainer = Trainer(model, train_loader, _test_loader(device, data_root, config.get("test_per_class")),
                      _recipe(config),
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
    from ..selftrain.loader import Cycled

    device = common.training_device()
    loader = _labeled_loader(config, device, data_root)
    if config.get("steps"):   # a control matched to a student: its steps, its images per step
        loader = Cycled(loader, math.ceil(config["steps"] / config["epochs"]))
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
    labeled = _labeled_loader(config, device, data_root)
    pseudo_batch = labeled.batch_size * config["unlabeled_ratio"]
    threshold = config["threshold"]
    confidence = probs.max(1).values.numpy()
    if (confidence >= threshold).sum() < pseudo_batch:
        # a weak teacher passes less than one batch: lower the threshold to the confidence of the
        # pseudo_batch-th most confident image, and say so in the record (never silently)
        threshold = float(np.sort(confidence)[-min(pseudo_batch, len(confidence))])
        print(f"warning: the teacher passes {(confidence >= config['threshold']).sum()} images at confidence "
              f">= {config['threshold']}, under one batch of {pseudo_batch}: threshold lowered to {threshold:.3f} "
              "for this student (recorded)", file=sys.stderr)
    pl = select_pseudo_labels(probs, threshold=threshold, balance=config["balance"],
                              images_per_class=config["images_per_class"], hard=not config["soft"],
                              seed=config["seed"])
    stats = pseudo_label_stats(pl, pool)
    stats["threshold_used"] = threshold
    confident = confidence >= config["threshold"]   # the filter's pass rate per pool, at the set threshold
    stats["pass_rate"] = {pool_name: float(confident[pool["source"] == i].mean())
                          for i, pool_name in enumerate(POOLS) if (pool["source"] == i).any()}
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
    """The trained network of a cell in eval mode (its weights from the cache; trained if absent,
    a retrained one compared with its stored record). For the robustness chapter:
    ``load_model(record["config"])``."""
    from . import load_network

    return load_network(NAME, config, data_root=data_root, store=store, profile=profile)


def train(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown", progress=None,
          verbose: bool = False) -> dict:
    """The protocol's ``train``: a supervised network or a student (its teacher loaded first)."""
    return _trainer_fn(config, store=store or ResultsStore(), profile=profile, data_root=data_root,
                       verbose=verbose, progress=progress)(config, artifact_dir)


def network(config: dict) -> torch.nn.Module:
    return _network(config)


def network_info(config: dict) -> NetworkInfo:
    return NetworkInfo(LABELED, MEAN, STD, 10, 32)


def upstream(config: dict) -> list[tuple[str, dict]]:
    return [(NAME, config["teacher"])] if config["kind"] == "student" else []


def describe(config: dict) -> str:
    what = (f"student {config['iteration']}" if config["kind"] == "student"
            else "control" if config.get("steps") else "supervised")
    return f"{what:<11} {config['arch']:<13} {config['labels']} labels seed {config['seed']}"


def pool_size(config: dict, train_size: int = 50_000, ood_size: int = 80_000) -> int:
    n = 0
    if "in_domain" in config["pools"]:
        rest = train_size - (config["labels"] if config["labels"] != "all" else train_size)
        n += rest if config["in_domain_unlabeled"] is None else min(config["in_domain_unlabeled"], rest)
    if "out_of_domain" in config["pools"]:
        n += ood_size if config["out_of_domain_unlabeled"] is None else config["out_of_domain_unlabeled"]
    return n


def cost(config: dict) -> float:
    """Estimated seconds on the reference GPU (experiments.cost)."""
    test = 10 * (config.get("test_per_class") or 1000)
    evals = test * min(config["epochs"], 5)
    if config["kind"] == "student":
        images = config["steps"] * config["batch_size"] * (1 + config["unlabeled_ratio"])
        label = _cost.inference_seconds(config["teacher"]["arch"], pool_size(config),
                                        flops=_cost.CIFAR_FLOPS_32.get(config["teacher"]["arch"]))
        return label + _cost.training_seconds(config["arch"], images, image_size=32, eval_images=evals,
                                              flops=_cost.CIFAR_FLOPS_32.get(config["arch"]))
    n = 50_000 if config["labels"] == "all" else config["labels"]
    images = config["steps"] * config["batch_size"] if config.get("steps") else config["epochs"] * n
    return _cost.training_seconds(config["arch"], images, image_size=32, eval_images=evals,
                                  flops=_cost.CIFAR_FLOPS_32.get(config["arch"]))


def _trainer_fn(config: dict, *, store: ResultsStore, profile: str, **kwargs):
    if config["kind"] == "student":
        return partial(train_student, store=store, profile=profile, **kwargs)
    if config["arch"] == AIRBENCH:
        return partial(train_airbench, data_root=kwargs.get("data_root"), verbose=kwargs.get("verbose", False))
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
    todo = protocol.select(cells(params, data_root=data_root), only)
    if piece:
        todo = split_piece(todo, piece)
    return protocol.run_cells(sys.modules[__name__], todo, profile=profile, store=store, data_root=data_root,
                              progress=progress, verbose=verbose)


def main(argv=None) -> int:
    return protocol.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
