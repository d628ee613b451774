"""The scale floors a profile's *parameters* decide, checked before anything runs.

Some preconditions of ``book/claims.yaml`` are fixed by what a profile asks for (seeds,
training sizes, schedules, how many source architectures, fine-tuning steps); others can
only be measured once the networks exist (a teacher's top-1, whether the pre-trained
detector has plateaued). ``planned_floors`` reads the first kind off the plan's cells, so
that ``plan`` says, before any GPU minute is spent, which verdicts the profile can reach
and which it leaves below a floor by design. The thresholds are claims.yaml's: nothing here
repeats them. Values already on record (the zoo's top-1 at this profile) are read from the
store; the rest are listed as measured at run time.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

MEASURED_AT_RUN_TIME = "measured when the pieces run"


def _by(nodes, experiment: str) -> list:
    return [n for n in nodes.values() if n.experiment == experiment and n.is_cell]


def _detection(cells, store=None) -> dict[str, Any]:
    if not cells:
        return {}
    source = next((c.config["source"] for c in cells if c.config.get("source")), None)
    rec = store.get("zoo", source) if store is not None and source else None
    sizes = sorted({c.config["train"]["size"] for c in cells})
    largest = sizes[-1]
    seeds: dict[tuple, set] = defaultdict(set)
    norms: dict[str, set] = defaultdict(set)
    schedules: dict[str, set] = defaultdict(set)
    for c in cells:
        cf = c.config
        seeds[(cf["train"]["size"], cf["schedule"], cf["init"])].add(cf["seed"])
        norms[cf["init"]].add(cf["norm"])
        if cf["train"]["size"] == largest:
            schedules[cf["init"]].add(cf["schedule"])
    every = sorted(set().union(*schedules.values()))
    compared = [every[0], every[-1]]
    return {"backbone_top1": 100 * rec["result"]["top1"] if rec else None, "train_scenes": largest,
            "has_10k": 10_000 in sizes, "smallest_scenes": sizes[0],
            "seeds": min(len(seeds[(largest, s, i)]) for s in compared for i in ("pretrained", "scratch")),
            "same_norm": norms["pretrained"] == norms["scratch"],
            "schedules": len(schedules["scratch"]),
            # a plateau can be seen only with two pre-trained schedules; whether it is, is measured
            "pretrained_plateau": None if len(schedules["pretrained"]) >= 2 else False}


def _noisy_student(cells) -> dict[str, Any]:
    from .experiments.noisy_student import pool_size

    if not cells:
        return {}
    by_role: dict[str, list] = defaultdict(list)
    for c in cells:
        by_role[c.role].append(c.config)
    students = [r for r in by_role if r.startswith("student_")]
    first = by_role.get("student_1", [None])[0]
    labels = first["labels"] if first else None
    compared = ["teacher", *students] + (["matched_control"] if "matched_control" in by_role else [])
    seeds = min(len({cf["seed"] for cf in by_role[r]}) for r in compared)
    ablation_seeds = [len({cf["seed"] for cf in v}) for r, v in by_role.items() if r.startswith("ablation:")]
    return {"seeds": seeds, "ablation_seeds": min([seeds] + ablation_seeds),
            "pool_ratio": pool_size(first) / labels if first and isinstance(labels, int) else None,
            "matched_control": "matched_control" in by_role, "iterations": len(students),
            "student_sizes": len({cf["arch"] for r in students for cf in by_role[r]})}


def _robustness(cells) -> dict[str, Any]:
    from .models import arch_family

    if not cells:
        return {}
    out: dict[str, Any] = {}
    teacher = [c for c in cells if c.config["role"] == "teacher"]
    out["seeds"] = len({c.seed for c in teacher})
    for c in cells:
        cf = c.config
        if cf["benchmark"] == "perturbations":
            out["p_sequences"] = 10 * cf["per_class"]
        elif cf["benchmark"] == "adversarial":
            out["fgsm_max_eps"] = max(cf["fgsm_epsilons"])
            out["pgd_eps16"] = 16 in cf["pgd_epsilons"]
    base = next((c for c in cells if c.config["role"] == "baseline"), None)
    if base and teacher:
        out["filter_other_family"] = arch_family(base.config["model"]["arch"]) != \
            arch_family(teacher[0].config["model"]["arch"])
    return out


def _transfer(cells, zoo_top1: dict[str, float]) -> dict[str, Any]:
    if not cells:
        return {}
    regimes: dict[str, list] = defaultdict(list)
    for c in cells:
        regimes[c.config["regime"]].append(c.config)
    fixed = [cf for cf in regimes["fixed"] if cf["source"]["variant"] == "baseline"]
    archs = sorted({cf["source"]["arch"] for cf in fixed})
    # the main grid's training size: the most common among fine-tuning runs (the size study varies it)
    unsized = [cf for cf in regimes["finetune"] if not cf.get("steps")]
    per_class = [cf["train_per_class"] for cf in unsized]
    main_size = max(set(per_class), key=per_class.count) if per_class else None
    main_ft = [cf for cf in unsized if cf["train_per_class"] == main_size]
    sized = [cf for cf in regimes["finetune"] + regimes["scratch"]
             if cf.get("steps") or cf["train_per_class"] != main_size]
    # full batches only (the conservative count); a 10-class target, as the fine-tuning targets are
    steps = [cf["epochs"] * (10 * cf["train_per_class"] // cf["batch_size"]) for cf in main_ft
             if cf.get("train_per_class")]
    variants = [cf for cf in regimes["fixed"] if cf["source"]["variant"] != "baseline"]
    top1 = [zoo_top1[a] for a in archs if a in zoo_top1]
    out = {"source_archs": len(archs), "random_init_control": bool(regimes["random"]),
           "finetune_steps": min(steps) if steps else None,
           "variant_seeds": min((len({cf["source"]["seed"] for cf in variants if cf["source"]["variant"] == v})
                                 for v in {cf["source"]["variant"] for cf in variants}), default=0),
           "sizes": len({cf["train_per_class"] for cf in sized}),
           "fixed_steps": bool(sized) and all(cf.get("steps") for cf in sized)
           and len({cf["steps"] for cf in sized}) == 1,
           "settings": len({(cf["source"]["arch"], cf["target"], cf["seed"]) for cf in main_ft}),
           "size_seeds": len({cf["seed"] for cf in sized})}
    if len(top1) == len(archs) and top1:
        out["best_top1"], out["top1_spread"] = max(top1), max(top1) - min(top1)
    return out


def _zoo_top1(nodes, store) -> dict[str, float]:
    """The stored top-1 (%) of each zoo baseline of seed 0 in the plan, where on record."""
    out = {}
    for n in _by(nodes, "zoo"):
        cf = n.config
        if cf.get("variant") != "baseline" or cf.get("seed") != 0 or store is None:
            continue
        rec = store.get("zoo", cf)
        if rec:
            out[cf["arch"]] = 100 * rec["result"]["top1"]
    return out


def planned_floors(nodes, store=None) -> dict[str, dict[str, Any]]:
    """Per claim id, the preconditions the plan's cells decide (None: measured at run time)."""
    from .verdicts import load_claims

    det = _detection(_by(nodes, "detection"), store)
    ns = _noisy_student(_by(nodes, "noisy_student"))
    rob = _robustness(_by(nodes, "robustness"))
    tr = _transfer(_by(nodes, "transfer"), _zoo_top1(nodes, store))
    out = {}
    for claim in load_claims()["claims"]:
        cid = claim["id"]
        if cid.startswith("he2019"):
            values = det
        elif cid in ("xie2020-imagenet-a", "xie2020-imagenet-c", "xie2020-imagenet-p", "xie2020-adversarial"):
            values = {**rob, "teacher_top1": None} if rob else {}
        elif cid.startswith("xie2020"):
            values = {**ns, "teacher_top1": None} if ns else {}
            if values and cid == "xie2020-noise-essential":
                values = {**values, "seeds": ns.get("ablation_seeds")}
        elif cid.startswith("kornblith2019"):
            values = {**tr, "seeds": tr.get("size_seeds")}
        else:
            continue
        if not values or not claim.get("preconditions"):
            continue
        out[cid] = {p["id"]: values.get(p["id"]) for p in claim.get("preconditions", [])}
    return out


def design_checks(nodes, store=None) -> dict[str, dict[str, list[dict]]]:
    """Per claim: 'below' (preconditions the parameters leave unmet) and 'measured' (those only
    a run can decide), each a list of rules.check_preconditions rows."""
    from .reports import rules
    from .verdicts import claims_by_id

    claims = claims_by_id()
    out = {}
    for cid, values in planned_floors(nodes, store).items():
        checks = rules.check_preconditions(claims[cid], values)
        out[cid] = {"below": [c for c in checks if not c["met"] and values.get(c["id"]) is not None],
                    "measured": [c for c in checks if values.get(c["id"]) is None]}
    return out


def design_lines(nodes, store=None) -> list[str]:
    """What ``plan`` prints about the floors."""
    checks = design_checks(nodes, store)
    if not checks:
        return []
    below = {cid: c["below"] for cid, c in checks.items() if c["below"]}
    measured = sorted({m["text"] for c in checks.values() for m in c["measured"]})
    lines = [f"scale floors the parameters decide: met for {len(checks) - len(below)} of the {len(checks)} "
             "claims of chapters 2-5 that have preconditions"]
    lines += [f"  below by design: {cid}: " + "; ".join(f"{c['text']} {c['shown']} (needs {c['required']})"
                                                         for c in rows) for cid, rows in sorted(below.items())]
    if measured:
        lines.append(f"  {MEASURED_AT_RUN_TIME}: " + ", ".join(measured))
    return lines
