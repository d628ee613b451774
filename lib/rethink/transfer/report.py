"""Tables, figures and verdicts of the transfer chapter, from the results store's records.

Accuracies are compared in log-odds, logit(p) = log(p / (1 - p)), as Kornblith et al.
do; correlations are Pearson's r over source models, with bootstrap intervals that
resample the models.
"""
from __future__ import annotations

import math

import numpy as np

from ..stats import log_odds, mean_std, pearson_ci

REGIME_TITLES = {"fixed": "fixed features (logistic regression)", "finetune": "fine-tuned",
                 "scratch": "from scratch (same architecture)"}
PAPER_R = {"fixed": 0.99, "finetune": 0.96, "scratch": 0.55}


def source_label(source: dict) -> str:
    """'resnet18', or 'resnet18/dropout' for a regularizer variant."""
    return source["arch"] if source["variant"] == "baseline" else f"{source['arch']}/{source['variant']}"


def _label(config: dict) -> tuple[str, str, str]:
    """(model label, architecture, variant) of a cell."""
    if "source" in config:
        s = config["source"]
        return source_label(s), s["arch"], s["variant"]
    return config["arch"], config["arch"], "baseline"


def runs_table(records: list[dict], zoo_records: list[dict]):
    """One row per (regime, model, target, training size, seed): the test score of the
    fixed-feature fit, or of the grid point with the best validation score (ties: the
    first in the grid) for fine-tuning and scratch. Columns include the source's
    Tiny ImageNet top-1 (for scratch: that of the architecture's baseline)."""
    import pandas as pd

    top1 = {}
    for r in zoo_records:
        top1.setdefault(source_label(r["config"]), r["result"]["top1"])
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        label, arch, variant = _label(c)
        rows.append({"regime": c["regime"], "model": label, "arch": arch, "variant": variant,
                     "target": c["target"], "train_per_class": c["train_per_class"], "seed": c["seed"],
                     "lr": c.get("lr"), "weight_decay": c.get("weight_decay"),
                     "source_top1": top1.get(label if c["regime"] != "scratch" else arch, math.nan),
                     "val_score": res["val_score"], "test_score": res["test_score"],
                     "metric": res["metric"], "history": res.get("history"),
                     "diverged": res.get("diverged", False), "key": r["key"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    keys = ["regime", "model", "target", "train_per_class", "seed"]
    df["train_per_class"] = df["train_per_class"].astype(object).where(df["train_per_class"].notna(), None)
    best = (df.assign(_order=range(len(df)))
              .sort_values(["val_score", "_order"], ascending=[False, True], kind="stable")
              .groupby(keys, dropna=False, sort=False).head(1)
              .sort_values("_order").drop(columns="_order"))
    return best.reset_index(drop=True)


def main_runs(df, train_per_class, targets=None, finetune_train_per_class=None):
    """The main study's rows: the chapter's training-set caps (fixed features; fine-tuning
    and scratch), the chosen targets."""
    trained_cap = finetune_train_per_class or train_per_class
    cap = np.where(df["regime"] == "fixed", train_per_class, trained_cap)
    sel = np.array([v == c for v, c in zip(df["train_per_class"], cap)], dtype=bool)
    if targets is not None:
        sel &= df["target"].isin(list(targets))
    return df[sel]


def model_scores(df, regime: str, baselines_only: bool = True):
    """models x targets table of mean test score over seeds (and the source top-1)."""
    d = df[df["regime"] == regime]
    if baselines_only:
        d = d[d["variant"] == "baseline"]
    table = d.pivot_table(index="model", columns="target", values="test_score", aggfunc="mean")
    top1 = d.groupby("model")["source_top1"].first()
    return table.assign(source_top1=top1).sort_values("source_top1")


def correlations(df, regimes=("fixed", "finetune", "scratch"), n_resamples: int = 10_000):
    """Pearson r of logit(source top-1) vs logit(transfer score) per regime and target,
    and for the mean log-odds over targets ('average'), with bootstrap 95% intervals."""
    import pandas as pd

    rows = []
    for regime in regimes:
        t = model_scores(df, regime)
        if t.empty:
            continue
        targets = [c for c in t.columns if c != "source_top1"]
        x = log_odds(t["source_top1"].to_numpy())
        columns = {tg: log_odds(t[tg].to_numpy()) for tg in targets}
        complete = t[targets].notna().all(axis=1).to_numpy()
        columns["average"] = np.where(complete, np.mean([log_odds(t[tg].fillna(0.5).to_numpy())
                                                         for tg in targets], axis=0), np.nan)
        for tg, y in columns.items():
            ok = ~np.isnan(y)
            if ok.sum() < 2:
                continue
            r, lo, hi = pearson_ci(x[ok], y[ok], n_resamples=n_resamples)
            rows.append({"regime": regime, "target": tg, "models": int(ok.sum()), "r": r,
                         "ci_low": lo, "ci_high": hi, "paper_r": PAPER_R[regime]})
    return pd.DataFrame(rows)


def _pct_axis(ax, axis: str, values):
    """Label a log-odds axis with accuracies in percent."""
    ticks = np.array([0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7,
                      0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99])
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = max(0.3, 0.1 * (hi - lo))
    keep = ticks[(log_odds(ticks) >= lo - pad) & (log_odds(ticks) <= hi + pad)]
    setter = ax.set_xticks if axis == "x" else ax.set_yticks
    setter(log_odds(keep), [f"{100 * v:g}" for v in keep])


def plot_scatter(df, corr, regimes=("fixed", "finetune", "scratch")):
    """Source top-1 vs transfer score in log-odds: one row per regime, one column per
    target plus the average; r and its interval in each panel."""
    import matplotlib.pyplot as plt

    regimes = [r for r in regimes if not df[df["regime"] == r].empty]
    tables = {r: model_scores(df, r) for r in regimes}
    targets = sorted({c for t in tables.values() for c in t.columns if c != "source_top1"})
    cols = targets + ["average"]
    fig, axes = plt.subplots(len(regimes), len(cols), figsize=(2.6 * len(cols), 2.5 * len(regimes)),
                             squeeze=False)
    for i, regime in enumerate(regimes):
        t = tables[regime]
        x = log_odds(t["source_top1"].to_numpy())
        for j, tg in enumerate(cols):
            ax = axes[i, j]
            if tg == "average":  # over this regime's targets
                own = [c for c in targets if c in t]
                y = np.mean([log_odds(t[c].to_numpy()) for c in own], axis=0)
            elif tg in t:
                y = log_odds(t[tg].to_numpy())
            else:
                ax.axis("off")
                continue
            ax.scatter(x, y, s=18)
            for xi, yi, name in zip(x, y, t.index):
                ax.annotate(name, (xi, yi), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
            if len(x) >= 2 and np.ptp(x) > 0:
                a, b = np.polyfit(x, y, 1)
                xs = np.linspace(x.min(), x.max(), 2)
                ax.plot(xs, a * xs + b, lw=0.8, color="grey")
            row = corr[(corr["regime"] == regime) & (corr["target"] == tg)]
            if not row.empty:
                r = row.iloc[0]
                ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                ax.set_title(f"{tg}\nr = {r['r']:.2f}{ci}", fontsize=8)
            else:
                ax.set_title(tg, fontsize=8)
            _pct_axis(ax, "x", x)
            if tg != "average":
                _pct_axis(ax, "y", y)
            else:
                ax.set_ylabel("mean log-odds", fontsize=7)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel(f"{regime}\ntransfer acc. (%)", fontsize=8)
            if i == len(regimes) - 1:
                ax.set_xlabel("Tiny ImageNet top-1 (%)", fontsize=8)
    fig.tight_layout()
    return fig


def regularizer_table(df, variant_arch: str):
    """Each regularizer variant of `variant_arch` against its baseline: Tiny ImageNet top-1,
    fixed-feature and fine-tuned scores per target (mean ± std over seeds), and the mean
    log-odds difference from the baseline over targets (paired by target and seed)."""
    import pandas as pd

    d = df[df["arch"] == variant_arch]
    d = d[d["regime"].isin(["fixed", "finetune"])]
    if d.empty:
        return pd.DataFrame()
    variants = ["baseline"] + sorted(v for v in d["variant"].unique() if v != "baseline")
    rows = []
    for regime in ("fixed", "finetune"):
        dr = d[d["regime"] == regime]
        base = dr[dr["variant"] == "baseline"].set_index(["target", "seed"])["test_score"]
        for v in variants:
            dv = dr[dr["variant"] == v]
            if dv.empty:
                continue
            row = {"regime": regime, "variant": v, "source_top1": 100 * dv["source_top1"].iloc[0]}
            for tg, g in dv.groupby("target"):
                row[tg] = mean_std(100 * g["test_score"]).fmt(1)
            s = dv.set_index(["target", "seed"])["test_score"]
            common = s.index.intersection(base.index)
            diffs = log_odds(s[common].to_numpy()) - log_odds(base[common].to_numpy())
            row["Δ log-odds vs baseline"] = float(np.mean(diffs)) if len(diffs) else math.nan
            row["targets worse"] = (f"{int((s[common].groupby(level=0).mean() < base[common].groupby(level=0).mean()).sum())}"
                                    f"/{len(set(t for t, _ in common))}")
            rows.append(row)
    return pd.DataFrame(rows)


def size_runs(df, target: str, model: str):
    """The size study's rows: the baseline of architecture `model` on `target`, every regime."""
    return df[(df["target"] == target) & (df["arch"] == model) & (df["variant"] == "baseline")]


def size_table(df, target: str, model: str):
    """Score per regime at each training size (mean ± std over seeds) and the
    fine-tune minus scratch gap, in points and in log-odds."""
    import pandas as pd

    d = size_runs(df, target, model)
    rows = []
    for n, g in d.groupby("train_per_class", dropna=True):
        row = {"train_per_class": n}
        means = {}
        for regime in ("fixed", "finetune", "scratch"):
            gr = g[g["regime"] == regime]
            if not gr.empty:
                row[regime] = mean_std(100 * gr["test_score"]).fmt(1)
                means[regime] = gr.set_index("seed")["test_score"]
        if "finetune" in means and "scratch" in means:
            common = means["finetune"].index.intersection(means["scratch"].index)
            ft, sc = means["finetune"][common].to_numpy(), means["scratch"][common].to_numpy()
            gap = mean_std(log_odds(ft) - log_odds(sc))
            row["gap (pts)"] = float(np.mean(100 * (ft - sc)))
            row["gap (log-odds)"] = gap.mean
            row["gap std (log-odds)"] = gap.std
            row["seeds"] = gap.n
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_to_reach(history: list[dict], score: float) -> int | None:
    """First epoch (1-based) whose validation score is >= score, or None."""
    for h in history:
        if h.get("val_score") is not None and h["val_score"] >= score - 1e-12:
            return h["epoch"] + 1
    return None


def convergence_table(df, target: str | None = None):
    """For each (model, target, size, seed) with both fine-tuning and scratch: the epochs
    scratch took to its final validation score, and the epochs fine-tuning took to reach it."""
    import pandas as pd

    d = df[df["regime"].isin(["finetune", "scratch"]) & (df["variant"] == "baseline")]
    if target:
        d = d[d["target"] == target]
    rows = []
    for (arch, tg, n, seed), g in d.groupby(["arch", "target", "train_per_class", "seed"], dropna=False):
        ft, sc = g[g["regime"] == "finetune"], g[g["regime"] == "scratch"]
        if ft.empty or sc.empty:
            continue
        sc_hist, ft_hist = sc.iloc[0]["history"], ft.iloc[0]["history"]
        goal = sc_hist[-1]["val_score"]
        rows.append({"arch": arch, "target": tg, "train_per_class": n, "seed": seed,
                     "scratch final val": 100 * goal, "scratch epochs": len(sc_hist),
                     "fine-tune epochs to reach it": epochs_to_reach(ft_hist, goal),
                     "fine-tune final val": 100 * ft_hist[-1]["val_score"]})
    return pd.DataFrame(rows)


def plot_learning_curves(df, target: str, model: str):
    """Validation score per epoch, fine-tuned vs scratch, one panel per training size."""
    import matplotlib.pyplot as plt

    d = size_runs(df, target, model)
    d = d[d["regime"].isin(["finetune", "scratch"])]
    sizes = sorted(n for n in d["train_per_class"].unique() if n is not None)
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(2.8 * max(1, len(sizes)), 2.6),
                             squeeze=False, sharey=True)
    for ax, n in zip(axes[0], sizes):
        for regime, color in (("finetune", "C0"), ("scratch", "C3")):
            for _, row in d[(d["train_per_class"] == n) & (d["regime"] == regime)].iterrows():
                h = row["history"]
                ax.plot([e["epoch"] + 1 for e in h], [100 * e["val_score"] for e in h], color=color,
                        alpha=0.8, label=regime if row["seed"] == d["seed"].min() else None)
        ax.set_title(f"{n} images / class", fontsize=9)
        ax.set_xlabel("epoch")
    axes[0, 0].set_ylabel(f"{target} val. acc. (%)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_size_study(df, target: str, model: str):
    """Mean test score over seeds against training images per class for the three
    regimes (log x axis)."""
    import matplotlib.pyplot as plt

    d = size_runs(df, target, model)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for regime, color in (("fixed", "C2"), ("finetune", "C0"), ("scratch", "C3")):
        means = 100 * d[d["regime"] == regime].groupby("train_per_class")["test_score"].mean()
        if means.empty:
            continue
        ax.plot(means.index.to_numpy(), means.to_numpy(), "o-", color=color, label=REGIME_TITLES[regime])
    ax.set_xscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel(f"{target} test acc. (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ verdicts


def correlation_verdict(r: float, lo: float) -> str:
    """reproduced: r >= 0.7 with the interval above 0; partly: r > 0 (or no interval:
    too few models); else not reproduced."""
    if not math.isnan(r) and r >= 0.7 and not math.isnan(lo) and lo > 0:
        return "reproduced"
    if not math.isnan(r) and r > 0:
        return "partly"
    return "not reproduced"


def scratch_verdict(r_scratch: float, r_finetune: float, models: int, min_models: int = 5) -> str:
    """The paper: scratch r (0.55) well below fine-tuning r (0.96). reproduced: at least
    0.2 below, over `min_models` architectures or more; partly: below (or too few
    architectures to say more); not reproduced: not below."""
    if math.isnan(r_scratch) or math.isnan(r_finetune):
        return "not reproduced"
    if r_scratch <= r_finetune - 0.2 and models >= min_models:
        return "reproduced"
    return "partly" if r_scratch < r_finetune else "not reproduced"


def regularizer_verdict(deltas: dict[str, float]) -> str:
    """deltas: variant -> mean fixed-feature log-odds difference from the baseline.
    reproduced: every variant below the baseline; partly: some; not reproduced: none."""
    worse = [v for v, d in deltas.items() if d < 0]
    if deltas and len(worse) == len(deltas):
        return "reproduced"
    return "partly" if worse else "not reproduced"


def fades_verdict(gaps: list[tuple[int, float]]) -> str:
    """gaps: (train size, fine-tune minus scratch, in log-odds) in size order.
    reproduced: the gap at the largest size is under half that at the smallest (which is
    positive) and still shrinking over the upper half of the sizes (largest <= middle);
    partly: smaller at the largest size than at the smallest; not reproduced: not smaller."""
    if len(gaps) < 2 or gaps[0][1] <= 0:
        return "not reproduced"
    first, middle, last = gaps[0][1], gaps[len(gaps) // 2][1], gaps[-1][1]
    if last < 0.5 * first and last <= middle:
        return "reproduced"
    return "partly" if last < first else "not reproduced"


def faster_settings(conv) -> tuple[int, int]:
    """(settings where fine-tuning reached scratch's final validation score in fewer epochs
    than scratch took, settings) of a convergence table."""
    faster = sum(1 for e, s in zip(conv["fine-tune epochs to reach it"], conv["scratch epochs"])
                 if e is not None and not (isinstance(e, float) and math.isnan(e)) and e < s)
    return faster, len(conv)


def convergence_verdict(conv) -> str:
    """reproduced: fine-tuning reaches scratch's final validation score in fewer epochs in
    every setting; partly: in most; not reproduced: otherwise."""
    if conv.empty:
        return "not reproduced"
    faster, total = faster_settings(conv)
    share = faster / total
    if share == 1:
        return "reproduced"
    return "partly" if share >= 0.5 else "not reproduced"


def leave_one_out(df, regimes=("fixed", "finetune", "scratch")):
    """r of the average log-odds with each source model left out in turn: how much one
    model (e.g. a barely trained one) carries the correlation."""
    import pandas as pd

    rows = []
    for regime in regimes:
        t = model_scores(df, regime)
        targets = [c for c in t.columns if c != "source_top1"]
        if len(t) < 4 or not targets:
            continue
        x = log_odds(t["source_top1"].to_numpy())
        y = np.mean([log_odds(t[c].to_numpy()) for c in targets], axis=0)
        for i, model in enumerate(t.index):
            keep = np.arange(len(t)) != i
            rows.append({"regime": regime, "left out": model,
                         "r without it": float(np.corrcoef(x[keep], y[keep])[0, 1])})
    return pd.DataFrame(rows)
