"""Tables and figures the chapters render from results-store records.

Every table carries the profile and device it came from; figures say it in the title.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..stats import MeanStd, mean_std
from .common import devices_of, profiles_of, provenance_note  # noqa: F401  (the chapter imports them here)

# ImageNet top-1 of torchvision's published weights (IMAGENET1K_V1), from the
# torchvision model documentation: the outside reference for the rank check.
TORCHVISION_IMAGENET_TOP1 = {
    "resnet18": 69.758,
    "resnet34": 73.314,
    "resnet50": 76.130,
    "wide_resnet50": 78.468,
    "densenet121": 74.434,
    "mobilenetv2": 71.878,
    "mobilenetv3_small": 67.668,
    "efficientnet_b0": 77.692,
}


def _groups(records: list[dict]) -> dict[tuple, list[dict]]:
    g = defaultdict(list)
    for r in records:
        g[(r["config"]["arch"], r["config"]["variant"])].append(r)
    return g


def _top1(rs: list[dict]) -> MeanStd:
    """Top-1 (%) of one network's records, mean ± std over its seeds."""
    return mean_std([r["result"]["top1"] * 100 for r in rs])


def zoo_table(records: list[dict]):
    import pandas as pd

    rows = []
    for (arch, variant), rs in _groups(records).items():
        top1 = _top1(rs)
        top5 = mean_std([r["result"]["top5"] * 100 for r in rs])
        res = rs[0]["result"]
        rows.append({
            "architecture": arch, "variant": variant,
            "params (M)": round(res["params"] / 1e6, 2),
            "GFLOPs/img": round(res["flops"] / 1e9, 3),
            "top-1 (%)": top1.fmt(), "top-5 (%)": top5.fmt(), "seeds": len(rs),
            "train time (s)": round(float(np.mean([r["result"]["train_time_s"] for r in rs])), 1),
            "images/s": int(np.mean([r["result"]["images_per_s"] for r in rs])),
            "profile": rs[0]["provenance"]["profile"],
        })
    df = pd.DataFrame(rows).sort_values(["variant", "params (M)"], key=lambda s: s.map(
        lambda v: (v != "baseline") if isinstance(v, str) else v))
    return df.reset_index(drop=True)


def plot_accuracy_vs_capacity(records: list[dict]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    base = sorted(((arch, rs) for (arch, variant), rs in _groups(records).items() if variant == "baseline"),
                  key=lambda item: _top1(item[1]).mean)
    for i, (arch, rs) in enumerate(base):
        top1 = _top1(rs)
        for ax, key, scale in ((axes[0], "params", 1e6), (axes[1], "flops", 1e9)):
            x = rs[0]["result"][key] / scale
            ax.errorbar(x, top1.mean, yerr=top1.std if top1.n > 1 else None, fmt="o")
            # alternate the label side by accuracy rank so that neighbours do not overlap
            ax.annotate(arch, (x, top1.mean), fontsize=9, xytext=(6, -10 if i % 2 else 6),
                        textcoords="offset points")
    axes[0].set(xscale="log", xlabel="parameters (M)", ylabel="Tiny ImageNet top-1 (%)")
    axes[1].set(xscale="log", xlabel="GFLOPs per image")
    fig.suptitle(f"Zoo accuracy against capacity (profile: {profiles_of(records)})")
    fig.tight_layout()
    return fig


def plot_training_curves(records: list[dict]):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (arch, variant), rs in _groups(records).items():
        h = rs[0]["result"]["history"]
        epochs = [e["epoch"] + 1 for e in h]
        label = arch if variant == "baseline" else f"{arch} ({variant})"
        style = "-" if variant == "baseline" else "--"
        axes[0].plot(epochs, [e["train_loss"] for e in h], style, label=label)
        axes[1].plot(epochs, [100 * e.get("val_top1", np.nan) for e in h], style, label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation top-1 (%)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Training curves, seed {records[0]['config']['seed']} (profile: {profiles_of(records)})")
    fig.tight_layout()
    return fig


def imagenet_rank_check(records: list[dict]):
    """Spearman rank correlation between stand-in top-1 and published ImageNet top-1."""
    import pandas as pd
    from scipy.stats import spearmanr

    rows = []
    for (arch, variant), rs in _groups(records).items():
        if variant == "baseline" and arch in TORCHVISION_IMAGENET_TOP1:
            rows.append({"architecture": arch,
                         "ImageNet top-1 (torchvision, %)": TORCHVISION_IMAGENET_TOP1[arch],
                         "stand-in top-1 (%)": round(_top1(rs).mean, 2),
                         "profile": rs[0]["provenance"]["profile"]})
    df = pd.DataFrame(rows)
    if len(df) >= 3:
        rho, p = spearmanr(df["ImageNet top-1 (torchvision, %)"], df["stand-in top-1 (%)"])
        print(f"Spearman rho = {rho:.2f} (p = {p:.2f}, n = {len(df)} architectures)")
    else:
        print(f"only {len(df)} architectures with a torchvision reference at this profile: no rank correlation")
    return df


def variant_table(records: list[dict]):
    import pandas as pd

    groups = _groups(records)
    variant_archs = {a for (a, v) in groups if v != "baseline"}
    rows = []
    for arch in sorted(variant_archs):
        base = groups.get((arch, "baseline"))
        base_top1 = _top1(base) if base else None
        for (a, v), rs in groups.items():
            if a != arch:
                continue
            t = _top1(rs)
            rows.append({"architecture": a, "variant": v, "top-1 (%)": t.fmt(),
                         "change vs baseline (points)": None if base_top1 is None or v == "baseline"
                         else round(t.mean - base_top1.mean, 2),
                         "profile": rs[0]["provenance"]["profile"]})
    return pd.DataFrame(rows)


def zoo_findings(records: list[dict], num_classes: int = 200):
    """What the zoo's numbers say, as Markdown sentences computed from the records."""
    from IPython.display import Markdown

    groups = _groups(records)
    base = {a: _top1(rs).mean for (a, v), rs in groups.items() if v == "baseline"}
    if not base:
        return Markdown("No baseline networks at this profile.")
    chance = 100 / num_classes
    median = float(np.median(list(base.values())))
    failed = sorted(a for a, t in base.items() if t < 0.5 * median)
    trained = {a: t for a, t in base.items() if a not in failed}
    lines = []
    if trained:
        best, worst = max(trained, key=trained.get), min(trained, key=trained.get)
        lines.append(f"- Top-1 of the networks that trained spans **{trained[worst]:.1f}%** "
                     f"(`{worst}`) to **{trained[best]:.1f}%** (`{best}`), chance being {chance:.1f}%: "
                     f"a spread of {trained[best] - trained[worst]:.1f} points for the transfer "
                     "chapter's correlations to work with.")
    for a in failed:
        lines.append(f"- `{a}` reached only {base[a]:.1f}%, under half the zoo's median "
                     f"({median:.1f}%): it did not train well under the shared recipe. This is kept as a "
                     "result, not tuned away: one recipe for all is Kornblith et al.'s protocol, "
                     "and architectures designed for other optimisers (ConvNeXt uses AdamW) pay "
                     "for it.")
    params = {a: groups[(a, "baseline")][0]["result"]["params"] for a in trained}
    if len(trained) >= 3:
        from scipy.stats import spearmanr
        rho = spearmanr([params[a] for a in trained], [trained[a] for a in trained])[0]
        lines.append(f"- Rank correlation of parameters and top-1 over those networks: "
                     f"Spearman rho = {rho:.2f}.")
    ref = {a: TORCHVISION_IMAGENET_TOP1[a] for a in trained if a in TORCHVISION_IMAGENET_TOP1}
    if len(ref) >= 3:
        from scipy.stats import spearmanr
        rho, pval = spearmanr([ref[a] for a in ref], [trained[a] for a in ref])
        agrees = "agrees with" if pval < 0.05 and rho > 0 else "does not significantly agree with"
        lines.append(f"- The stand-in's ranking of the {len(ref)} architectures with a torchvision reference "
                     f"{agrees} ImageNet's: Spearman rho = {rho:.2f} (p = {pval:.2f}). "
                     + ("A negative check: Tiny ImageNet at this size does not rank networks as ImageNet does, "
                        "so 'better on the stand-in' is not 'better on ImageNet'." if agrees.startswith("does not")
                        else ""))
    from .rules import paired
    for arch in sorted({a for (a, v) in groups if v != "baseline"}):
        if (arch, "baseline") not in groups:
            continue
        base = {r["config"]["seed"]: 100 * r["result"]["top1"] for r in groups[(arch, "baseline")]}
        for (a, v), rs in sorted(groups.items()):
            if a == arch and v != "baseline":
                d = paired({r["config"]["seed"]: 100 * r["result"]["top1"] for r in rs}, base)
                verdict = {1: "**raises** top-1", -1: "**lowers** top-1", 0: "does not change top-1 detectably",
                           None: f"cannot be judged on {d.n} seed(s)"}[d.sign]
                lines.append(f"- `{a}` with `{v}` {verdict}: {d.fmt()} points against its baseline "
                             "(variant minus baseline paired by seed, 95% t interval).")
    single = sorted(a for (a, v), rs in groups.items() if len(rs) == 1)
    if single:
        lines.append(f"- {len(single)} of the {len(groups)} networks have one seed at this profile: "
                     "differences of a point or two between them are within seed noise (the "
                     "seed-to-seed spread of the variant study above shows its size).")
    return Markdown("\n".join(lines))
