"""Chapter 5: is a Noisy Student more robust than its teacher? (Xie et al. 2020, sections 3-4)

Scores the networks of the Noisy Student chapter (teacher, students, supervised
baselines; the same profile's records, or ``models_profile``'s) on CIFAR-10 stand-ins
of the robustness benchmarks:

* ``corruptions`` (-C): CIFAR-10 test under the 19 corruptions x 5 severities with
  CIFAR-10-C's parameters; error per corruption and severity, and the clean error.
* ``perturbations`` (-P): perturbation sequences of CIFAR-10 test images; flip
  probability and top-5 distance per perturbation.
* ``natural`` (-A): Tiny ImageNet validation images of CIFAR-10 classes; the model's
  predictions, from which the chapter takes the natural-shift accuracy and the -A
  accuracy (the images the fixed baseline gets wrong).
* ``adversarial``: FGSM and PGD accuracy at several epsilons.

Each (model, benchmark) is one cell of the results store (experiment ``robustness``).
The *baseline* (the AlexNet of mCE, the ResNet-50 of ImageNet-A's filter) is a separate
network of the book, of another family than the scored ResNets (so that the -A filter does
not select what the scored family gets wrong by construction): airbench94 (Jordan 2024)
trained with its own recipe on all 50k labels, trained once and frozen; its training
record lives with the Noisy Student chapter's (``noisy_student.load_model``).
Corrupted images and sequences are generated once per (set, seed, device) and cached
under the user cache (never committed).

    python -m rethink.experiments.robustness --profile full [--list] [--piece 1/2] [--only corruptions]
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..data.registry import stats
from ..results.store import ResultsStore, config_key
from . import common, protocol
from . import noisy_student as ns
from .protocol import Cell

NAME = EXPERIMENT = "robustness"
STEM = "05_robustness"
# packages beyond the core runtime a machine needs for these cells ("a|b": either; "$VAR": a variable)
REQUIRES = ("imagecorruptions|$RETHINK_FROST_DIR",)
VERSION = 1
BENCHMARKS = ("corruptions", "perturbations", "natural", "adversarial")
MEAN, STD = stats(ns.LABELED)

DEFAULTS = dict(
    models_profile=None,        # whose Noisy Student records are scored (None: this profile)
    roles=["teacher", "student_1", "student_2", "student_3", "supervised_student_arch",
           "supervised_all", "ablation:no_noise"],
    baseline_arch="airbench94",  # another family than the scored ResNets (a CIFAR ResNet is allowed)
    baseline_labels="all",      # its labeled CIFAR-10 images ("all": 50k; fewer only for smoke runs)
    baseline_epochs=10,         # epochs over its labeled images (airbench94's recipe: 9.9)
    baseline_seed=0,
    benchmarks=list(BENCHMARKS),
    test_per_class=None,        # CIFAR-10 test images per class for clean and -C (None: all 1,000)
    corruptions=None,           # None: all 19 (15 benchmark + 4 held out)
    severities=[1, 2, 3, 4, 5],
    corruption_seed=0,
    perturbations=None,         # None: the 10 benchmark perturbations
    perturbation_per_class=200,  # sequences per class
    perturbation_seed=0,
    fgsm_epsilons=[0, 1, 2, 4, 8, 16],  # in 1/255 pixel steps
    pgd_epsilons=[2, 8, 16],    # 16: the paper's PGD figure
    pgd_steps=10,
    adversarial_per_class=100,
    batch_size=1024,
)
SCHEMA = {"models_profile": "str|None", "roles": "list[str]", "baseline_arch": "str",
          "baseline_labels": "int>0|choice:all", "baseline_epochs": "int>0", "baseline_seed": "int>=0",
          "benchmarks": "list[str]", "test_per_class": "int>0|None", "corruptions": "list[str]|None",
          "severities": "list[int>0]", "corruption_seed": "int>=0", "perturbations": "list[str]|None",
          "perturbation_per_class": "int>0", "perturbation_seed": "int>=0", "fgsm_epsilons": "list[float>=0]",
          "pgd_epsilons": "list[float>=0]", "pgd_steps": "int>0", "adversarial_per_class": "int>0",
          "batch_size": "int>0"}


@dataclass
class Model:
    role: str          # "baseline", "teacher", "student_3", "ablation:no_noise", ...
    seed: int
    config: dict       # the Noisy Student cell's config (``noisy_student.load_model``)


def resolve_params(params: dict) -> dict:
    from ..robustness.corruptions import ALL
    from ..robustness.perturbations import BENCHMARK_P

    unknown = sorted(set(params) - set(DEFAULTS) - {"profile", "data_root"})
    if unknown:
        raise ValueError(f"unknown robustness parameter(s) {unknown}; valid: {sorted(DEFAULTS)}")
    p = {**copy.deepcopy(DEFAULTS), **params}
    p["corruptions"] = list(p["corruptions"] or ALL)
    p["perturbations"] = list(p["perturbations"] or BENCHMARK_P)
    bad = [b for b in p["benchmarks"] if b not in BENCHMARKS]
    if bad:
        raise ValueError(f"unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")
    bad = [c for c in p["corruptions"] if c not in ALL]
    if bad:
        raise ValueError(f"unknown corruption(s) {bad}; choose from {list(ALL)}")
    from ..robustness.perturbations import PERTURBATIONS
    bad = [c for c in p["perturbations"] if c not in PERTURBATIONS]
    if bad:
        raise ValueError(f"unknown perturbation(s) {bad}; choose from {list(PERTURBATIONS)}")
    bad = [s for s in p["severities"] if s not in (1, 2, 3, 4, 5)]
    if bad:
        raise ValueError(f"severities must be in 1..5, got {bad}")
    return p


def baseline_config(p: dict, ns_params: dict, data_root=None) -> dict:
    """The fixed baseline: airbench94 with its recipe, or a CIFAR ResNet with the Noisy Student
    recipe without the noise, on all labels."""
    q = ns._params({k: v for k, v in ns_params.items() if k not in ("profile", "data_root")})
    q.update(randaugment=False, dropout=0.0, drop_path=0.0, basic_augment=True, label_smoothing=0.0,
             data_root=data_root)
    return ns.supervised_config(q, p["baseline_arch"], p["baseline_labels"], p["baseline_seed"],
                                p["baseline_epochs"])


def models(params: dict, ns_params: dict, data_root=None) -> list[Model]:
    """The baseline, then every Noisy Student cell of ``roles`` (each config once)."""
    p = resolve_params(params)
    chapter = ns.cells(ns_params, data_root=data_root)
    bad = sorted(set(p["roles"]) - {c.role for c in chapter})
    if bad:
        raise ValueError(f"role(s) {bad} are not cells of the Noisy Student chapter at these parameters; "
                         f"it has {sorted({c.role for c in chapter})}")
    out = [Model("baseline", p["baseline_seed"], baseline_config(p, ns_params, data_root))]
    out += [Model(c.role, c.seed, c.config) for c in chapter if c.role in p["roles"]]
    return common.unique(out, key=lambda m: config_key(m.config))


def cell_config(p: dict, benchmark: str, model: Model, data_root=None) -> dict:
    """The results-store config of one (benchmark, model) evaluation."""
    c = {"benchmark": benchmark, "role": model.role, "model": model.config}
    if benchmark == "corruptions":
        c.update(test_per_class=p["test_per_class"], corruptions=p["corruptions"],
                 severities=p["severities"], seed=p["corruption_seed"], params="cifar")
    elif benchmark == "perturbations":
        c.update(per_class=p["perturbation_per_class"], perturbations=p["perturbations"],
                 seed=p["perturbation_seed"])
    elif benchmark == "natural":
        c.update(split="val", mapping="TINY_TO_CIFAR")
    else:
        c.update(per_class=p["adversarial_per_class"], fgsm_epsilons=p["fgsm_epsilons"],
                 pgd_epsilons=p["pgd_epsilons"], pgd_steps=p["pgd_steps"])
    datasets = [ns.LABELED] + (["tiny-imagenet"] if benchmark == "natural" else [])
    return protocol.stamp(c, VERSION, datasets, data_root)


def cell_configs(params: dict, ns_params: dict, data_root=None) -> list[dict]:
    p = resolve_params(params)
    return [cell_config(p, b, m, data_root) for m in models(params, ns_params, data_root) for b in p["benchmarks"]]


def cells(params: dict, data_root=None, profile: str | None = None) -> list[Cell]:
    ns_params = ns_params_of(params, profile or "smoke")
    return [Cell(f"{c['benchmark']} {c['role']}", c["model"]["seed"], c, NAME)
            for c in cell_configs(params, ns_params, data_root)]


def ns_params_of(params: dict, profile: str) -> dict:
    from ..profiles import experiment_params

    return experiment_params(params.get("models_profile") or profile, ns.STEM)[0]


def upstream(config: dict) -> list[tuple[str, dict]]:
    return [(ns.NAME, config["model"])]


def cost(config: dict) -> float:
    """Estimated seconds of one evaluation (generation of corrupted sets not included: cached)."""
    from . import cost as _cost

    arch, b = config["model"]["arch"], config["benchmark"]
    flops = _cost.CIFAR_FLOPS_32.get(arch)
    if b == "corruptions":
        n = 10 * (config["test_per_class"] or 1000) * (1 + len(config["corruptions"]) * len(config["severities"]))
    elif b == "perturbations":
        n = 10 * config["per_class"] * 31 * len(config["perturbations"])
    elif b == "natural":
        n = 1100
    else:
        n = 10 * config["per_class"] * (len(config["fgsm_epsilons"]) * 2 + sum(
            config["pgd_steps"] * 2 + 1 for _ in config["pgd_epsilons"]))
    generate = 2.0 if b in ("corruptions", "perturbations") else 0.0   # the cached sets' generation, amortised
    return _cost.EVAL_STARTUP_S + generate + _cost.inference_seconds(arch, n, flops=flops) * (
        3 if b == "adversarial" else 1)


def train(config: dict, artifact_dir: Path, *, data_root=None, store=None, profile="unknown", progress=None,
          verbose: bool = False) -> dict:
    """The protocol's ``train``: one evaluation of one network (trained first if absent)."""
    device = common.training_device()
    model = ns.load_model(config["model"], data_root=data_root, store=store, profile=profile).to(device)
    return {**EVALUATORS[config["benchmark"]](model, config, device=device, data_root=data_root,
                                               batch_size=1024, progress=progress), "device": str(device)}


# ------------------------------------------------------------------ data


def test_subset(per_class: int | None, data_root=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 test images (uint8) and labels, class-balanced when ``per_class`` is set."""
    from ..data.cache import load_split, subset_per_class

    test = load_split("cifar10", "test", 32, data_root=data_root)
    labels = np.asarray(test.labels)
    idx = np.arange(len(labels)) if per_class is None else subset_per_class(labels, per_class, seed)
    return np.asarray(test.images[idx]), labels[idx]


def _generated_dir(kind: str, spec: dict, device: torch.device) -> Path:
    d = paths.cache_root() / "robustness" / f"{kind}-{config_key({**spec, 'device': device.type})}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(path: Path, make) -> np.ndarray:
    """np.load(path) (memory-mapped) or make(), saved atomically first."""
    from ..data.cache import save_npy

    if not path.exists():
        save_npy(path, make())
    return np.load(path, mmap_mode="r")


CHUNK = 1000  # images generated per call (the generator's stream is consumed chunk by chunk)


def corrupted_set(images: np.ndarray, name: str, severity: int, *, seed: int, device: torch.device,
                  spec: dict) -> np.ndarray:
    """``images`` under one corruption and severity (uint8, cached on disk)."""
    from ..robustness.corruptions import ALL, corrupt

    def make():
        g = torch.Generator(device=device)
        g.manual_seed(seed * 1000 + ALL.index(name) * 10 + severity)
        out = [corrupt(torch.as_tensor(images[i:i + CHUNK]).to(device), name, severity, generator=g).cpu()
               for i in range(0, len(images), CHUNK)]
        return torch.cat(out).numpy()

    return _cached(_generated_dir("corruptions", spec, device) / f"{name}-{severity}.npy", make)


def perturbed_set(images: np.ndarray, name: str, *, seed: int, device: torch.device, spec: dict) -> np.ndarray:
    """Perturbation sequences of ``images`` (uint8 N x T x 3 x H x W, cached on disk)."""
    from ..robustness.perturbations import PERTURBATIONS, sequences

    def make():
        g = torch.Generator(device=device)
        g.manual_seed(seed * 1000 + list(PERTURBATIONS).index(name))
        chunk = max(1, CHUNK // 10)
        out = [sequences(torch.as_tensor(images[i:i + chunk]).to(device), name, generator=g).cpu()
               for i in range(0, len(images), chunk)]
        return torch.cat(out).numpy()

    return _cached(_generated_dir("perturbations", spec, device) / f"{name}.npy", make)


# ------------------------------------------------------------------ evaluation


def _error(model, images, labels, device, batch_size) -> float:
    from ..models.inference import predict_logits

    logits = predict_logits(model, images, mean=MEAN, std=STD, device=device, batch_size=batch_size)
    return float((logits.argmax(1).numpy() != labels).mean())


def evaluate_corruptions(model, config: dict, *, device, data_root=None, batch_size=1024,
                         progress=None) -> dict:
    images, labels = test_subset(config["test_per_class"], data_root)
    spec = {"test_per_class": config["test_per_class"], "seed": config["seed"], "chunk": CHUNK}
    errors, t_gen = {}, 0.0
    todo = [(n, s) for n in config["corruptions"] for s in config["severities"]]
    bar = _bar(progress, len(todo), "corruptions")
    for name, sev in todo:
        t0 = time.perf_counter()
        x = corrupted_set(images, name, sev, seed=config["seed"], device=device, spec=spec)
        t_gen += time.perf_counter() - t0
        errors.setdefault(name, [None] * 5)[sev - 1] = _error(model, x, labels, device, batch_size)
        bar.update(1)
    bar.close()
    return {"clean_error": _error(model, images, labels, device, batch_size), "errors": errors,
            "images": int(len(labels)), "generation_or_load_s": round(t_gen, 2)}


def evaluate_perturbations(model, config: dict, *, device, data_root=None, batch_size=1024,
                           progress=None) -> dict:
    from ..robustness.perturbations import PERTURBATIONS
    from ..robustness.stability import flip_probability, predict_sequences, top5_distance

    images, _ = test_subset(config["per_class"], data_root)
    spec = {"per_class": config["per_class"], "seed": config["seed"], "chunk": CHUNK}
    fp, t5d = {}, {}
    bar = _bar(progress, len(config["perturbations"]), "perturbations")
    for name in config["perturbations"]:
        seqs = perturbed_set(images, name, seed=config["seed"], device=device, spec=spec)
        preds, ranks = predict_sequences(model, seqs, mean=MEAN, std=STD, batch_size=batch_size,
                                         device=device)
        noise = PERTURBATIONS[name].noise
        fp[name] = flip_probability(preds, noise=noise)
        t5d[name] = top5_distance(ranks, noise=noise)
        bar.update(1)
    bar.close()
    return {"flip_probability": fp, "top5_distance": t5d, "sequences": int(len(images))}


def evaluate_natural(model, config: dict, *, device, data_root=None, batch_size=1024, progress=None) -> dict:
    from ..models.inference import predict_logits
    from ..robustness.natural import natural_shift_set, present_classes, restricted_predictions

    nat = natural_shift_set(data_root, split=config["split"])
    logits = predict_logits(model, nat["images"], mean=MEAN, std=STD, device=device, batch_size=batch_size)
    pred = restricted_predictions(logits, present_classes())
    return {"predictions": pred.tolist(), "labels": nat["labels"].tolist(),
            "accuracy": float((pred == nat["labels"]).mean()), "images": int(len(pred))}


def evaluate_adversarial(model, config: dict, *, device, data_root=None, batch_size=1024,
                         progress=None) -> dict:
    from ..robustness.adversarial import attack_accuracy

    images, labels = test_subset(config["per_class"], data_root)
    bs = min(batch_size, 500)
    fgsm = attack_accuracy(model, images, labels, [e / 255 for e in config["fgsm_epsilons"]],
                           mean=MEAN, std=STD, attack="fgsm", device=device, batch_size=bs)
    pgd = attack_accuracy(model, images, labels, [e / 255 for e in config["pgd_epsilons"]],
                          mean=MEAN, std=STD, attack="pgd", steps=config["pgd_steps"], device=device,
                          batch_size=bs)
    return {"fgsm": {str(e): fgsm[e / 255] for e in config["fgsm_epsilons"]},
            "pgd": {str(e): pgd[e / 255] for e in config["pgd_epsilons"]}, "images": int(len(labels))}


EVALUATORS = {"corruptions": evaluate_corruptions, "perturbations": evaluate_perturbations,
              "natural": evaluate_natural, "adversarial": evaluate_adversarial}


def _bar(progress, total: int, desc: str):
    """A tqdm bar (progress=False: none; None: only on a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False,
                disable=progress is False or (progress is None and not sys.stderr.isatty()))


def run_robustness(params: dict, ns_params: dict | None = None, *, profile: str, models_profile: str | None = None,
                   store: ResultsStore | None = None, data_root=None, benchmarks: list[str] | None = None,
                   piece: str | None = None, progress=None, verbose: bool = False) -> list[dict]:
    """Evaluate (or fetch) every (model, benchmark) cell; returns the records in order.

    Models missing from the cache are trained first (``noisy_student.load_model``); one model
    stays loaded across its benchmarks.
    """
    store = store or ResultsStore()
    p = resolve_params(params)
    ns_params = ns_params if ns_params is not None else ns_params_of(params, profile)
    todo = cell_configs(params, ns_params, data_root)
    if benchmarks:
        todo = [c for c in todo if c["benchmark"] in benchmarks]
    if piece:
        todo = common.split_piece(todo, piece, same_group=lambda a, b: a["model"] == b["model"])
    device = common.training_device()
    loaded: dict[str, torch.nn.Module] = {}
    out = []
    for config in todo:
        def fn(cfg, _artifacts):
            key = config_key(cfg["model"])
            if key not in loaded:
                loaded.clear()
                loaded[key] = ns.load_model(cfg["model"], data_root=data_root, store=store,
                                            profile=models_profile or profile).to(device)
            return {**EVALUATORS[cfg["benchmark"]](loaded[key], cfg, device=device, data_root=data_root,
                                                   batch_size=p["batch_size"], progress=progress),
                    "device": str(device)}
        rec = store.run(EXPERIMENT, config, fn, profile=profile, seeds=[config["model"]["seed"]])
        out.append(rec)
        if verbose:
            print(f"{describe(config):<60} {rec['provenance']['wall_time_s']:7.1f}s", file=sys.stderr)
    return out


def describe(config: dict) -> str:
    m = config["model"]
    return f"{config['benchmark']:<13} {config['role']:<24} seed {m['seed']}  {m['arch']}"


def profile_params(profile: str, overrides: list[str] | None = None) -> tuple[dict, dict, str | None]:
    """(robustness params, the scored chapter's Noisy Student params, data_root) of a profile."""
    from ..profiles import experiment_params

    params, data_root = experiment_params(profile, STEM, overrides or [])
    return params, ns_params_of(params, profile), data_root


def main(argv=None) -> int:
    return protocol.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    from ..errors import cli
    cli(main)
