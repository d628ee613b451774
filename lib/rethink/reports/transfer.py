"""Tables, figures and verdicts of the transfer chapter, from the results store's records.

Accuracies are compared in log-odds, logit(p) = log(p / (1 - p)), as Kornblith et al.
do; correlations are Pearson's r over source models with Fisher-z intervals (a bootstrap
over models is shown beside them, never deciding a verdict).
"""
from __future__ import annotations

import math

import numpy as np

from ..experiments.zoo import source_label
from ..stats import log_odds, mean_std, pearson_ci
from . import rules
from .rules import fisher_interval

REGIME_TITLES = {"fixed": "fixed features (logistic regression)", "finetune": "fine-tuned",
                 "scratch": "from scratch (same architecture)",
                 "random": "fixed features of a random-init network (control)"}
PAPER_R = {"fixed": 0.99, "finetune": 0.96, "scratch": 0.55}


def _label(config: dict) -> tuple[str, str, str]:
    """(model label, architecture, variant) of a cell."""
    if "source" in config:
        s = config["source"]
        return source_label(s), s["arch"], s["variant"]
    return config["arch"], config["arch"], "baseline"


def runs_table(records: list[dict], zoo_records: list[dict]):
    """One row per (regime, model, source seed, target, training size, seed): the test score
    of the fixed-feature fit, or of the grid point with the best validation score (ties:
    the first in the grid) for fine-tuning and scratch. ``source_top1`` is the source's
    Tiny ImageNet top-1 (for scratch and random-init features: the mean over seeds of the
    architecture's baseline)."""
    import pandas as pd

    by_seed, by_arch = {}, {}
    for r in zoo_records:
        label = source_label(r["config"])
        by_seed[(label, r["config"]["seed"])] = r["result"]["top1"]
        by_arch.setdefault(label, []).append(r["result"]["top1"])
    rows = []
    for r in records:
        c, res = r["config"], r["result"]
        label, arch, variant = _label(c)
        source_seed = c["source"]["seed"] if "source" in c else None
        top1 = (by_seed.get((label, source_seed), math.nan) if source_seed is not None
                else float(np.mean(by_arch[arch])) if arch in by_arch else math.nan)
        rows.append({"regime": c["regime"], "model": label, "arch": arch, "variant": variant,
                     "source_seed": source_seed, "target": c["target"],
                     "train_per_class": c["train_per_class"], "seed": c["seed"],
                     "lr": c.get("lr"), "weight_decay": c.get("weight_decay"), "source_top1": top1,
                     "val_score": res["val_score"], "test_score": res["test_score"],
                     "metric": res["metric"], "history": res.get("history"), "steps": res.get("steps"),
                     "diverged": res.get("diverged", False), "key": r["key"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    keys = ["regime", "model", "source_seed", "target", "train_per_class", "seed"]
    for col in ("train_per_class", "source_seed"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
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
    top1 = d.groupby("model")["source_top1"].mean()
    return table.assign(source_top1=top1).sort_values("source_top1")


def average_log_odds(t) -> np.ndarray:
    """Per model (row of ``model_scores``), the mean log-odds over its targets (nan if one is missing)."""
    targets = [c for c in t.columns if c != "source_top1"]
    complete = t[targets].notna().all(axis=1).to_numpy()
    return np.where(complete, np.mean([log_odds(t[tg].fillna(0.5).to_numpy()) for tg in targets], axis=0),
                    np.nan)


def correlations(df, regimes=("fixed", "finetune", "scratch", "random"), n_resamples: int = 10_000):
    """Pearson r of logit(source top-1) vs logit(transfer score) per regime and target, and
    for the mean log-odds over targets ('average'), with the 95% Fisher-z interval (what the
    verdicts use) and a percentile bootstrap over models (rows in a fixed order, fixed seed:
    shown, never deciding)."""
    import pandas as pd

    rows = []
    for regime in regimes:
        t = model_scores(df, regime)
        if t.empty:
            continue
        t = t.sort_index()
        targets = [c for c in t.columns if c != "source_top1"]
        x = log_odds(t["source_top1"].to_numpy())
        columns = {tg: log_odds(t[tg].to_numpy()) for tg in targets}
        columns["average"] = average_log_odds(t)
        for tg, y in columns.items():
            ok = ~np.isnan(y) & ~np.isnan(x)
            if ok.sum() < 2:
                continue
            r, blo, bhi = pearson_ci(x[ok], y[ok], n_resamples=n_resamples)
            lo, hi = fisher_interval(r, int(ok.sum()))
            rows.append({"regime": regime, "target": tg, "models": int(ok.sum()), "r": r,
                         "ci_low": lo, "ci_high": hi, "boot_low": blo, "boot_high": bhi,
                         "paper_r": PAPER_R.get(regime, math.nan)})
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


def top1_seed_noise(zoo_records) -> float:
    """Pooled seed-to-seed standard deviation of source top-1, in log-odds, over the zoo
    networks trained with several seeds (nan if none): the x error bar of the scatter plots."""
    by = {}
    for r in zoo_records:
        by.setdefault(source_label(r["config"]), []).append(float(log_odds(r["result"]["top1"])))
    groups = [v for v in by.values() if len(v) > 1]
    if not groups:
        return math.nan
    ss = sum(((np.asarray(v) - np.mean(v)) ** 2).sum() for v in groups)
    return float(math.sqrt(ss / sum(len(v) - 1 for v in groups)))


def _grid(n: int, ncol: int, width: float, height: float):
    """A figure of n panels, ncol per row, the unused ones switched off."""
    import matplotlib.pyplot as plt

    ncol = min(ncol, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def _panel(ax, x, y, names, row, xerr):
    ax.errorbar(x, y, xerr=None if math.isnan(xerr) else xerr, fmt="o", ms=4, elinewidth=0.8, capsize=2)
    for i, (xi, yi, name) in enumerate(sorted(zip(x, y, names), key=lambda t: t[1])):
        ax.annotate(name, (xi, yi), fontsize=8, alpha=0.8, xytext=(4, -9 if i % 2 else 4),
                    textcoords="offset points")
    if len(x) >= 2 and np.ptp(x) > 0:
        a, b = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 2)
        ax.plot(xs, a * xs + b, lw=0.8, color="grey")
    if row is not None:
        ci = "" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
        return f"r = {row['r']:.2f}{ci}"
    return ""


def plot_scatter(df, corr, regimes=("fixed", "random", "finetune", "scratch"), zoo_records=()):
    """Source top-1 against the mean log-odds transfer accuracy over targets, one panel per
    regime (the correlations the verdicts use), with r and its Fisher-z interval; x error bars:
    the zoo's pooled seed standard deviation of top-1 (``top1_seed_noise``)."""
    regimes = [r for r in regimes if not df[df["regime"] == r].empty]
    xerr = top1_seed_noise(zoo_records)
    fig, axes = _grid(len(regimes), 2, 6.2, 4.2)
    for ax, regime in zip(axes.flat, regimes):
        t = model_scores(df, regime)
        x, y = log_odds(t["source_top1"].to_numpy()), average_log_odds(t)
        row = corr[(corr["regime"] == regime) & (corr["target"] == "average")]
        title = _panel(ax, x, y, t.index, row.iloc[0] if not row.empty else None, xerr)
        ax.set_title(f"{REGIME_TITLES[regime]}\n{title}")
        _pct_axis(ax, "x", x)
        ax.set_xlabel("Tiny ImageNet top-1 (%)")
        ax.set_ylabel("mean log-odds over targets")
    fig.tight_layout()
    return fig


def plot_scatter_targets(df, corr, regime: str = "fixed", zoo_records=()):
    """The same for each target of one regime, three panels per row."""
    t = model_scores(df, regime)
    targets = [c for c in t.columns if c != "source_top1"]
    if not targets:
        return None
    xerr = top1_seed_noise(zoo_records)
    fig, axes = _grid(len(targets), 3, 4.3, 3.6)
    x = log_odds(t["source_top1"].to_numpy())
    for ax, tg in zip(axes.flat, targets):
        y = log_odds(t[tg].to_numpy())
        row = corr[(corr["regime"] == regime) & (corr["target"] == tg)]
        ax.set_title(f"{tg}: {_panel(ax, x, y, t.index, row.iloc[0] if not row.empty else None, xerr)}")
        _pct_axis(ax, "x", x)
        _pct_axis(ax, "y", y)
        ax.set_xlabel("Tiny ImageNet top-1 (%)")
        ax.set_ylabel("transfer accuracy (%)")
    fig.suptitle(REGIME_TITLES[regime])
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


# ------------------------------------------------------------------ verdicts

CHAPTER = "04_transfer"
CLAIMS = ("kornblith2019-fixed-features-correlate", "kornblith2019-finetune-correlate",
          "kornblith2019-scratch-architecture-weak", "kornblith2019-regularizers-hurt-features",
          "kornblith2019-fine-grained-little-gain", "kornblith2019-pretraining-speeds-convergence",
          "kornblith2019-benefit-fades-with-size")
STRONG_R = 0.5   # "not reproduced": the interval excludes a correlation this strong


def _r_of(t) -> tuple[float, float, float, int, np.ndarray, np.ndarray]:
    """r, Fisher interval and n of logit(top-1) against the average log-odds of a model table."""
    x, y = log_odds(t["source_top1"].to_numpy()), average_log_odds(t)
    ok = ~np.isnan(x) & ~np.isnan(y)
    r = float(np.corrcoef(x[ok], y[ok])[0, 1]) if ok.sum() >= 3 and np.ptp(x[ok]) > 0 else math.nan
    lo, hi = fisher_interval(r, int(ok.sum()))
    return r, lo, hi, int(ok.sum()), x, y


def _fmt_r(r, lo, hi, n) -> str:
    return f"r = {r:.2f} [{lo:.2f}, {hi:.2f}] over {n} models" if not math.isnan(lo) else \
        f"r = {r:.2f} over {n} models (no interval)"


def _correlation_rule(r, lo, hi) -> tuple[str, str]:
    if not math.isnan(lo) and lo > 0:
        return rules.REPRODUCED, ""
    if not math.isnan(hi) and hi < STRONG_R:
        return rules.NOT_REPRODUCED, f"the interval [{lo:.2f}, {hi:.2f}] excludes r >= {STRONG_R}"
    return rules.INCONCLUSIVE, f"{rules.WITHIN_NOISE}: r = {r:.2f}, 95% interval [{lo:.2f}, {hi:.2f}]"


def source_floor(main, zoo_records) -> dict:
    """Source-side preconditions: how many baseline architectures, the best top-1, the spread."""
    t = model_scores(main, "fixed")
    top1 = 100 * t["source_top1"].dropna()
    return {"source_archs": int(len(t)), "best_top1": float(top1.max()) if len(top1) else None,
            "top1_spread": float(top1.max() - top1.min()) if len(top1) else None}


def _trained_steps(main, regime) -> int | None:
    steps = main[main["regime"] == regime]["steps"].dropna()
    return int(steps.min()) if len(steps) else None


def scratch_plateau(main) -> dict | None:
    """Did the scratch runs stop improving? Final validation score minus the score at 2/3 of
    the run, over (model, target, seed) settings: plateaued unless the 95% interval is above 0."""
    rises = []
    for h in main[main["regime"] == "scratch"]["history"]:
        vals = [e["val_score"] for e in (h or []) if e.get("val_score") is not None]
        if len(vals) >= 3:
            rises.append(100 * (vals[-1] - vals[int(2 * len(vals) / 3) - 1]))
    d = rules.diff(rises)
    if not d.decided:
        return None
    return {"value": d.sign != 1, "note": f"scratch validation score, last third of the run: {d.fmt()} pts"}


def verdicts(runs, zoo_records, *, variant_arch: str, size_target: str, size_model: str,
             size_sizes=(), main=None, claims: dict | None = None) -> list[dict]:
    """One verdict per Kornblith et al. claim.

    runs: ``runs_table`` of every cell; main: its main-study rows (``main_runs``; default:
    all of runs); the size study is ``size_model`` on ``size_target`` at ``size_sizes``
    images per class."""
    from ..verdicts import claims_by_id

    by_id = claims_by_id(claims)
    out = []
    main = runs if main is None else main
    if main.empty:
        return [rules.not_tested(c, "no transfer cells at this profile") for c in CLAIMS]
    floor = source_floor(main, zoo_records)
    ft_steps = _trained_steps(main, "finetune")
    plateau = scratch_plateau(main)

    fixed, random = model_scores(main, "fixed"), model_scores(main, "random")
    r, lo, hi, n, x, y = _r_of(fixed)
    gain_r = gain_lo = gain_hi = math.nan
    control = not random.empty and set(fixed.index) <= set(random.index)
    if control:
        y_rand = average_log_odds(random.reindex(fixed.index))
        g = y - y_rand
        ok = ~np.isnan(g)
        if ok.sum() >= 3:
            gain_r = float(np.corrcoef(x[ok], g[ok])[0, 1])
            gain_lo, gain_hi = fisher_interval(gain_r, int(ok.sum()))

    def fixed_rule():
        outcome, why = _correlation_rule(r, lo, hi)
        if outcome == rules.REPRODUCED and not (not math.isnan(gain_lo) and gain_lo > 0):
            return rules.PARTLY, (f"top-1 predicts fixed-feature accuracy, but not the gain over random-init "
                                  f"features (r = {gain_r:.2f} [{gain_lo:.2f}, {gain_hi:.2f}]): the "
                                  "architecture alone may make the correlation")
        return outcome, why

    out.append(rules.decide(
        by_id["kornblith2019-fixed-features-correlate"], {**floor, "random_init_control": control}, fixed_rule,
        ours=f"r = {r:.2f} [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else f"r = {r:.2f}",
        rule=("reproduced if the 95% Fisher-z interval of r (logit source top-1 against mean log-odds transfer "
              "accuracy) lies above 0 and so does that of r with the gain over each architecture's random-init "
              f"features; partly if only the first; not reproduced if the interval excludes r >= {STRONG_R}."),
        detail=f"{_fmt_r(r, lo, hi, n)}; against the gain over random-init features: r = {gain_r:.2f} "
               f"[{gain_lo:.2f}, {gain_hi:.2f}].",
        stats={"r": r, "low": lo, "high": hi, "n": n, "gain_r": gain_r, "gain_low": gain_lo, "gain_high": gain_hi}))

    ft = model_scores(main, "finetune")
    r_ft, lo_ft, hi_ft, n_ft, x_ft, y_ft = _r_of(ft) if not ft.empty else (math.nan,) * 4 + (None, None)
    out.append(rules.decide(
        by_id["kornblith2019-finetune-correlate"], {**floor, "finetune_steps": ft_steps},
        lambda: _correlation_rule(r_ft, lo_ft, hi_ft),
        ours=f"r = {r_ft:.2f} [{lo_ft:.2f}, {hi_ft:.2f}]" if not math.isnan(lo_ft) else f"r = {r_ft:.2f}",
        rule=("reproduced if the 95% Fisher-z interval of r lies above 0; not reproduced if it excludes "
              f"r >= {STRONG_R}."),
        detail=_fmt_r(r_ft, lo_ft, hi_ft, n_ft), stats={"r": r_ft, "low": lo_ft, "high": hi_ft, "n": n_ft}))

    sc = model_scores(main, "scratch")
    z = p = r_sc = r_pair = math.nan
    if not sc.empty and not ft.empty:
        both = sorted(set(sc.index) & set(ft.index))
        xs = log_odds(ft.loc[both, "source_top1"].to_numpy())
        a, b = average_log_odds(ft.loc[both]), average_log_odds(sc.loc[both])
        ok = ~np.isnan(a) & ~np.isnan(b)
        if ok.sum() >= 4:
            r_ft_b = float(np.corrcoef(xs[ok], a[ok])[0, 1])
            r_sc = float(np.corrcoef(xs[ok], b[ok])[0, 1])
            r_pair = float(np.corrcoef(a[ok], b[ok])[0, 1])
            z, p = rules.correlated_correlations(r_ft_b, r_sc, r_pair, int(ok.sum()))

    def scratch_rule():
        if math.isnan(p):
            return rules.INCONCLUSIVE, "too few architectures with both fine-tuned and scratch runs"
        if p < 0.05:
            return (rules.REPRODUCED, "") if z > 0 else (
                rules.NOT_REPRODUCED, f"scratch accuracy correlates more with top-1 than fine-tuned (z = {z:.2f})")
        return rules.INCONCLUSIVE, f"{rules.WITHIN_NOISE}: z = {z:.2f}, p = {p:.2f}"

    out.append(rules.decide(
        by_id["kornblith2019-scratch-architecture-weak"],
        {**floor, "finetune_steps": ft_steps, "scratch_plateau": plateau}, scratch_rule,
        ours=f"scratch r = {r_sc:.2f} vs fine-tuned r = {r_ft:.2f}",
        rule=("reproduced if r with scratch accuracy is below r with fine-tuned accuracy by Meng, Rosenthal & "
              "Rubin's test for correlations sharing a variable (two-sided p < 0.05); not reproduced if "
              "significantly above."),
        detail=f"z = {z:.2f}, p = {p:.3f}; r(fine-tuned, scratch) over architectures = {r_pair:.2f}.",
        stats={"z": z, "p": p, "r_scratch": r_sc, "r_finetune": r_ft}))

    out.append(_regularizer_verdict(main, zoo_records, variant_arch, by_id))
    out.append(rules.not_tested("kornblith2019-fine-grained-little-gain",
                                "none of the book's targets is fine-grained (the paper's: Stanford Cars, FGVC "
                                "Aircraft)"))

    conv = convergence_table(main)
    d = rules.diff([])
    if not conv.empty:
        fr = []
        for e, s in zip(conv["fine-tune epochs to reach it"], conv["scratch epochs"]):
            reached = e is not None and not (isinstance(e, float) and math.isnan(e))
            fr.append((s - (e if reached else s + 1)) / s)
        d = rules.diff(fr)

    def convergence():
        if d.sign == 1:
            return rules.REPRODUCED, ""
        if d.sign == -1:
            return rules.NOT_REPRODUCED, f"fine-tuning is slower to reach scratch's final score ({d.fmt(2)})"
        return rules.undecided(d, "steps saved by fine-tuning, as a fraction of the run,")

    out.append(rules.decide(
        by_id["kornblith2019-pretraining-speeds-convergence"],
        {"best_top1": floor["best_top1"], "finetune_steps": ft_steps, "scratch_plateau": plateau,
         "settings": d.n}, convergence,
        ours=f"fine-tuning saves {100 * d.mean:.0f}% of the run" if d.n else "—",
        rule=("reproduced if fine-tuning reaches the scratch network's final validation score sooner, as a "
              "fraction of the run, over (target, seed) settings (95% t interval above 0; a run that never "
              "reaches it counts as one epoch longer than its run); not reproduced if later."),
        detail=f"steps saved: {d.fmt(2)} of the run over {d.n} settings.", stats={"saved": d}))

    out.append(_fades_verdict(runs, size_target, size_model, size_sizes, floor, by_id))
    return out


def _regularizer_verdict(main, zoo_records, variant_arch, by_id) -> dict:
    claim = by_id["kornblith2019-regularizers-hurt-features"]
    zoo = {}
    for r in zoo_records:
        if r["config"]["arch"] == variant_arch:
            zoo.setdefault(r["config"]["variant"], {})[r["config"]["seed"]] = 100 * r["result"]["top1"]
    base_top1 = zoo.get("baseline", {})
    d = main[(main["arch"] == variant_arch) & (main["regime"] == "fixed")]
    per_seed = (d.groupby(["variant", "source_seed", "target"])["test_score"].mean()
                .groupby(level=[0, 1]).apply(lambda s: float(np.mean(log_odds(s.to_numpy())))))
    base = per_seed.get("baseline") if "baseline" in per_seed.index.get_level_values(0) else None
    premise, effects = {}, {}
    for v, seeds in zoo.items():
        if v == "baseline":
            continue
        premise[v] = rules.paired(seeds, base_top1)
        if base is not None and v in per_seed.index.get_level_values(0):
            mine = per_seed[v]
            effects[v] = rules.paired(dict(mine.items()), dict(base.items()))
    helped = [v for v, dv in premise.items() if dv.sign == 1]
    variant_seeds = min((len(s) for s in zoo.values()), default=0)

    def rule():
        hurt = [v for v in helped if v in effects and effects[v].sign == -1]
        if len(hurt) == len(helped):
            return rules.REPRODUCED, ""
        if hurt:
            return rules.PARTLY, f"{', '.join(hurt)} hurt{'s' if len(hurt) == 1 else ''} the features; " \
                f"{', '.join(v for v in helped if v not in hurt)} not"
        if any(effects.get(v) is not None and effects[v].sign == 1 for v in helped):
            return rules.NOT_REPRODUCED, "the variants that raise top-1 also transfer better as fixed features"
        return rules.INCONCLUSIVE, f"{rules.WITHIN_NOISE}: " + "; ".join(
            f"{v} {effects[v].fmt()}" for v in helped if v in effects)

    return rules.decide(
        claim, {"best_top1": max(base_top1.values(), default=None), "variant_seeds": variant_seeds,
                "premise_variants": {"value": len(helped), "note": "; ".join(
                    f"{v}: top-1 {dv.fmt()} pts" for v, dv in premise.items())}}, rule,
        ours="; ".join(f"{v} {e.mean:+.2f}" for v, e in effects.items()) + " log-odds" if effects else "—",
        rule=("only variants that raise source top-1 above the baseline's (95% t interval over source seeds: the "
              "claim's premise) are judged; reproduced if every such variant's fixed-feature log-odds, averaged "
              "over targets and paired by source seed, is below the baseline's (95% t interval below 0); partly "
              "if some are; not reproduced if they transfer better."),
        detail="top-1 change: " + "; ".join(f"{v} {dv.fmt()} pts" for v, dv in premise.items())
               + ". Fixed-feature log-odds change: " + "; ".join(f"{v} {e.fmt(3)}" for v, e in effects.items()),
        stats={"premise": premise, "effects": effects})


def _fades_verdict(runs, size_target, size_model, size_sizes, floor, by_id) -> dict:
    d = size_runs(runs, size_target, size_model)
    d = d[d["regime"].isin(["finetune", "scratch"]) & d["train_per_class"].isin(list(size_sizes))]
    sizes = sorted(n for n in d["train_per_class"].unique() if n is not None)
    slopes = []
    seeds = sorted(set(d["seed"]))
    for s in seeds:
        pts = []
        for n in sizes:
            ft = d[(d["seed"] == s) & (d["train_per_class"] == n) & (d["regime"] == "finetune")]["test_score"]
            sc = d[(d["seed"] == s) & (d["train_per_class"] == n) & (d["regime"] == "scratch")]["test_score"]
            if len(ft) and len(sc):
                pts.append((math.log(n), float(log_odds(ft.iloc[0]) - log_odds(sc.iloc[0]))))
        if len(pts) >= 3:
            slopes.append(rules.slope(*zip(*pts)))
    sl = rules.diff(slopes)
    steps = d["steps"].dropna()
    fixed = {"value": bool(len(steps)) and steps.nunique() == 1,
             "note": f"steps per run: {sorted(set(int(v) for v in steps))}" if len(steps) else "no steps recorded"}

    def rule():
        if sl.sign == -1:
            return rules.REPRODUCED, ""
        if sl.sign == 1:
            return rules.NOT_REPRODUCED, f"the gap grows with the training size (slope {sl.fmt(3)})"
        return rules.undecided(sl, "slope of the gap against log(size)")

    return rules.decide(
        by_id["kornblith2019-benefit-fades-with-size"],
        {"best_top1": floor["best_top1"], "fixed_steps": fixed, "sizes": len(sizes), "seeds": len(slopes)}, rule,
        ours=f"slope {sl.mean:+.3f} log-odds per log(size)" if sl.n else "—",
        rule=("reproduced if the fine-tune minus scratch gap (log-odds) falls with log(training size): 95% t "
              "interval over seeds of the per-seed least-squares slope below 0; not reproduced if above."),
        detail=f"{size_model} on {size_target} at {', '.join(str(n) for n in sizes)} images per class: "
               f"slope {sl.fmt(3)}.", stats={"slope": sl})
