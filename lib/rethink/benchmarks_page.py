"""The performance appendix's measurements: benchmarks/results/*.json as Markdown tables and a chart.

``benchmarks_markdown(bench_dir, chart_dir)`` renders every results file under
``bench_dir/results``: the benchmark suite's files (``benchmarks/suite.py``, schema
``rethink-benchmark-suite/1``) as one table of comparisons per benchmark, the single scripts'
files as a table of their scalar results plus one table per list or mapping of rows (rows of
different shapes get different tables); every table is headed by its device and date. Numbers
are formatted for reading (thousands separators, four significant digits, small values in
scientific notation), never dumped as JSON. With ``chart_dir``, the speed-up ratios of all
non-smoke results are drawn as a horizontal bar chart, ``chart_dir/benchmark_ratios.svg``,
referenced from the page. Scripts in ``bench_dir`` with no results file are listed as pending.
"""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

SUITE_SCHEMA = "rethink-benchmark-suite/1"
CHART_NAME = "benchmark_ratios.svg"
_HEADER_KEYS = ("device", "date", "torch", "benchmark")

# The single scripts' results: section titles, and labels of a few words for the chart.
TITLES = {
    "augment_throughput": "Augmentation on the device vs torchvision per image",
    "coco_eval_time": "COCO evaluation: faster-coco-eval vs pycocotools",
    "corruption_throughput": "-C set generation vs imagecorruptions",
    "detection_throughput": "Detector training loop vs torchvision's reference loop",
    "fastai_vs_plain": "Training loops: plain PyTorch, the book's Trainer, fastai",
    "logistic_lbfgs": "L-BFGS logistic regression vs scikit-learn",
    "randaugment_throughput": "Batched RandAugment vs torchvision per image",
    "zoo_throughput": "The zoo's training throughput",
    "cifar10_time_to_94": "CIFAR-10 time to 94% (airbench94 recipe)",
}
CHART_LABELS = {
    "augment_throughput": "Augmentation vs torchvision per image",
    "coco_eval_time": "COCO eval: faster-coco-eval vs pycocotools",
    "corruption_throughput": "-C set vs imagecorruptions",
    "detection_throughput": "Detector loop vs torchvision reference",
    "logistic_lbfgs": "L-BFGS path vs scikit-learn",
    "randaugment_throughput": "RandAugment vs torchvision per image",
}


# ------------------------------------------------------------------ formatting

def fmt(v) -> str:
    """A value for a table cell: numbers for reading, lists joined, mappings as `key value` pairs."""
    if v is None or (isinstance(v, (list, tuple, dict)) and not v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 0.01:
            return f"{v:.4g}"
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v) and len(v) <= 4:
            return " × ".join(str(x) for x in v)
        return ", ".join(fmt(x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{label(k)} {fmt(x)}" for k, x in v.items())
    return _cell(str(v))


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ").strip()


def label(key) -> str:
    """A JSON key as a column heading: `stock_loop_scenes_per_s` -> `stock loop scenes/s`."""
    k = str(key)
    for suffix, unit in (("_per_s", "/s"), ("_ms", " (ms)"), ("_s", " (s)")):
        if k.endswith(suffix):
            k = k[: -len(suffix)] + unit
            break
    return _cell(k.replace("_per_s_", "/s ").replace("_", " "))


def ratio_text(r: float | None) -> str:
    """A speed-up to three significant digits: 0.639×, 14×, 282×, 1,250×."""
    if r is None:
        return "–"
    return f"{r:.3g}×" if abs(r) < 1000 else f"{r:,.0f}×"


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; every row padded or cut to the header's width."""
    n = len(header)
    out = ["| " + " | ".join(_cell(str(h)) for h in header) + " |", "|" + "---|" * n]
    for r in rows:
        cells = [c if isinstance(c, str) else fmt(c) for c in list(r)[:n]] + ["–"] * (n - len(r))
        out.append("| " + " | ".join(c if c else "–" for c in cells) + " |")
    return "\n".join(out)


def _git_date(path: Path) -> str | None:
    try:
        r = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent,
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _byline(data: dict, path: Path) -> str:
    date = data.get("date") or data.get("finished_at", "")[:10] or None
    when = date or (f"{_git_date(path)} (committed)" if _git_date(path) else "date not recorded")
    parts = [f"**Device:** {_cell(str(data.get('device', 'not recorded')))}", f"**date:** {when}"]
    if data.get("torch") or data.get("versions", {}).get("torch"):
        parts.append(f"torch {data.get('torch') or data['versions']['torch']}")
    return " · ".join(parts)


# ------------------------------------------------------------------ the suite's files

def _is_suite(data) -> bool:
    return isinstance(data, dict) and data.get("schema") == SUITE_SCHEMA


def render_suite(data: dict, path: Path) -> str:
    out = []
    smoke = data.get("smoke")
    commit = (data.get("commit") or "not recorded")[:10]
    out.append(f"### The benchmark piece: `{path.name}`\n")
    out.append(_byline(data, path) + f" · commit `{commit}`" + (" (with local changes)" if data.get("dirty") else "")
               + f" · size `{data.get('size')}`: {fmt(data.get('wall_s'))} s of a "
               f"{fmt(data.get('budget_s'))} s budget\n")
    if smoke:
        out.append("**Smoke run**: tiny sizes on synthetic data; these numbers show only that the code runs, "
                   "they measure nothing.\n")
    out.append(f"Speed-up = the reference's time over ours (> 1: the book's code is faster). *measured*: in the "
               f"same run; *published*: a number from the cited source, not measured here; *stored*: measured "
               f"earlier, not in this run.\n")
    for e in data.get("benchmarks", []):
        out.append(f"#### {_cell(e.get('title') or e.get('name', '?'))}\n")
        bits = [f"`{e.get('name')}`", f"status **{e.get('status')}**"]
        if e.get("wall_s") is not None:
            bits.append(f"{fmt(e['wall_s'])} s (budget {fmt(e.get('budget_s'))} s"
                        + (f", planned {fmt(e['planned_h200_s'])} s" if e.get("planned_h200_s") else "") + ")")
        bits.append(_byline(data, path))
        out.append(" · ".join(bits) + "\n")
        if e.get("measures"):
            out.append(f"Measured: {_cell(e['measures'])}.\n")
        comps = e.get("comparisons") or []
        if comps:
            rows = []
            for c in comps:
                rows.append([_cell(c.get("against", "?")), c.get("kind", "?"), c.get("ours"), c.get("reference"),
                             _cell(c.get("units", "")), ratio_text(c.get("ratio")),
                             "yes" if c.get("comparable", True) else "no", _cell(c.get("note") or "")])
            out.append(table(["against", "kind", "ours", "reference", "units", "speed-up", "like for like",
                              "note"], rows) + "\n")
        if e.get("skip_reason"):
            out.append(f"No ratio: {_cell(e['skip_reason'])}\n")
        plan = (e.get("details") or {}).get("chapter2_full_plan") or {}
        if plan.get("training_minutes_at_measured_rate") is not None:
            out.append(f"Chapter 2's `full` plan: {fmt(plan['cells'])} detectors, {fmt(plan['steps'])} steps "
                       f"({fmt(plan['scenes'])} scenes): **{fmt(plan['training_minutes_at_measured_rate'])} minutes "
                       f"of training** at the book loop's measured rate ({_cell(plan.get('note', ''))}).\n")
        if e.get("sizes"):
            out.append("Sizes: " + "; ".join(f"{label(k)} {fmt(v)}" for k, v in e["sizes"].items()) + ".\n")
        if e.get("warmup_s") is not None:
            w = e["warmup_s"]
            out.append("Warm-up, excluded from the timings: "
                       + (fmt(w) + " s" if not isinstance(w, dict) else
                          ", ".join(f"{label(k)} {fmt(v)} s" for k, v in w.items())) + ".\n")
        for n in e.get("notes") or []:
            out.append(f"- {_cell(str(n))}")
        if e.get("notes"):
            out.append("")
    return "\n".join(out)


def suite_ratios(data: dict, path: Path) -> list[dict]:
    if data.get("smoke"):
        return []
    dev = _short_device(data.get("device", ""))
    return [{"label": c.get("short") or f"{e.get('name')}: {c['against']}", "ratio": c["ratio"],
             "kind": c.get("kind", "measured"), "device": dev, "comparable": c.get("comparable", True)}
            for e in data.get("benchmarks", []) for c in e.get("comparisons") or [] if c.get("ratio")]


# ------------------------------------------------------------------ single scripts' files

def _scalar(v) -> bool:
    return not isinstance(v, (dict, list)) or (isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v))


def _row_groups(rows: list[dict]) -> list[list[dict]]:
    """Consecutive rows with the same keys, so rows of different kinds never share a table."""
    groups: list[list[dict]] = []
    for r in rows:
        if groups and set(groups[-1][0]) == set(r):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def render_generic(data, path: Path) -> str:
    stem = path.stem.rsplit("-", 1)[0]
    out = [f"### {_cell(TITLES.get(stem, stem))}: `{path.name}`\n"]
    if not isinstance(data, dict):
        data = {"rows": data} if isinstance(data, list) else {"value": data}
    out.append(_byline(data, path) + "\n")
    scalars, tables = [], []
    for k, v in data.items():
        if k in _HEADER_KEYS:
            continue
        if _scalar(v):
            scalars.append([label(k), fmt(v)])
        elif isinstance(v, dict) and all(_scalar(x) for x in v.values()):
            scalars.extend([f"{label(k)} ({_cell(str(sub))})", fmt(x)] for sub, x in v.items())
        elif isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()):
            cols = list(dict.fromkeys(c for x in v.values() for c in x))
            tables.append((label(k), table([label(k)] + [label(c) for c in cols],
                                           [[_cell(str(sub))] + [x.get(c) for c in cols] for sub, x in v.items()])))
        elif isinstance(v, list) and all(isinstance(x, dict) for x in v):
            for group in _row_groups(v):
                cols = list(group[0])
                tables.append((label(k), table([label(c) for c in cols], [[r.get(c) for c in cols] for r in group])))
        else:
            scalars.append([label(k), fmt(v)])
    if scalars:
        out.append(table(["quantity", "value"], scalars) + "\n")
    for _, t in tables:
        out.append(t + "\n")
    return "\n".join(out)


def render_cifar(data: dict, path: Path) -> str:
    """cifar10_time_to_94's report: one row per loop, the ratios, the anchors (no per-epoch histories)."""
    out = [f"### {TITLES['cifar10_time_to_94']}: `{path.name}`\n", _byline(data, path) + "\n"]
    out.append(f"Data: {_cell(str(data.get('data')))}; target {fmt(data.get('target'))}; "
               f"compiled: {fmt(bool(data.get('compile')))}; warm-up (excluded): {fmt(data.get('warmup_s'))} s.\n")
    rows = []
    for loop, s in (data.get("summary") or {}).items():
        mean = lambda k: (s.get(k) or {}).get("mean")  # noqa: E731
        rows.append([loop, s.get("runs"), s.get("reached_target"), mean("time_to_target_s"),
                     mean("run_with_final_eval_s"), mean("final_acc"), mean("images_per_s")])
    if rows:
        out.append(table(["loop", "runs", "reached target", "time to target (s)", "whole recipe + final TTA (s)",
                          "final accuracy", "images/s"], rows) + "\n")
    ratios = data.get("ratio_rethink_to_plain") or {}
    if ratios:
        out.append(table(["rethink / plain", "ratio"], [[label(k), v] for k, v in ratios.items()]) + "\n")
    va = data.get("vs_anchor") or {}
    if va:
        anchor = (data.get("anchor") or {}).get("airbench94", {})
        out.append(table(["loop", "ours (s)", f"anchor (s, {anchor.get('gpu', '?')})", "ours / anchor", "note"],
                         [[loop, v.get("ours_seconds"), anchor.get("seconds"), v.get("ratio"), _cell(v.get("note", ""))]
                          for loop, v in va.items()]) + "\n")
    return "\n".join(out)


def file_ratios(data, path: Path) -> list[dict]:
    """Headline speed-ups of a single script's file (> 1: the book's choice is faster)."""
    if not isinstance(data, dict):
        return []
    stem, _, dev = path.stem.rpartition("-")
    stem = stem or path.stem
    dev = _short_device(data.get("device") or dev)
    title = CHART_LABELS.get(stem, TITLES.get(stem, stem))
    out = []
    for key in ("ratio", "ratio_sklearn_over_torch", "full_C_set_ratio"):
        if isinstance(data.get(key), (int, float)):
            out.append({"label": title, "ratio": float(data[key]), "kind": "measured", "device": dev})
            break
    else:
        sp = data.get("speedup")
        if isinstance(sp, (int, float)):
            out.append({"label": title, "ratio": float(sp), "kind": "measured", "device": dev})
        elif isinstance(sp, dict):
            out.extend({"label": f"{title} (batch {k})", "ratio": float(v), "kind": "measured", "device": dev}
                       for k, v in sp.items() if isinstance(v, (int, float)))
        elif data.get("full_C_set_minutes_reference") and data.get("full_C_set_minutes_ours"):
            out.append({"label": title, "ratio": data["full_C_set_minutes_reference"] / data["full_C_set_minutes_ours"],
                        "kind": "measured", "device": dev})
    return [r for r in out if r["ratio"] > 0]


def _short_device(name: str) -> str:
    n = str(name)
    for gpu in ("H200", "H100", "A100", "L4", "T4", "V100"):
        if gpu.lower() in n.lower():
            return gpu
    return "CPU" if n.lower().startswith("cpu") else (n[:16] or "?")


# ------------------------------------------------------------------ the chart

def draw_chart(ratios: list[dict], path: Path) -> Path:
    """Horizontal bars of speed-ups (log scale, a line at 1), one per ratio; an SVG with text as text
    (or a 200-dpi PNG if `path` ends in .png)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    colors = {"measured": "#2b6cb0", "stored": "#a0aec0", "published": "#dd6b20"}
    rs = list(reversed(ratios))
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "rethink-benchmarks",
                                "font.size": 8}):
        fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.26 * len(rs)))
        y = range(len(rs))
        vals = [r["ratio"] for r in rs]
        # bars from 1 to the ratio: right of the line faster than the reference, left slower
        ax.barh(list(y), [v - 1 for v in vals], left=1, color=[colors.get(r["kind"], "#718096") for r in rs],
                edgecolor="none", height=0.6)
        for i, r in enumerate(rs):
            v = r["ratio"]
            if not r.get("comparable", True):
                ax.barh([i], [v - 1], left=1, color="none", edgecolor="white", hatch="///", height=0.6,
                        linewidth=0)
            ax.text(max(v, 1.0) * 1.06, i, f"{v:.3g}×", va="center", ha="left", fontsize=7)
        ax.set_yticks(list(y), [f"{r['label']} [{r['device']}]" for r in rs])
        ax.set_xscale("log")
        lo, hi = min(vals + [1.0]) / 1.5, max(vals + [1.0]) * 2.5
        ax.set_xlim(lo, hi)
        ticks = [t for t in (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if lo <= t <= hi]
        ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("speed-up of the book's code: reference time / ours (log scale)")
        kinds = sorted({r["kind"] for r in rs})
        names = {"measured": "measured in one run", "stored": "reference stored from an earlier run",
                 "published": "published anchor"}
        handles = [plt.Rectangle((0, 0), 1, 1, color=colors.get(k, "#718096")) for k in kinds]
        labels = [names.get(k, k) for k in kinds]
        if not all(r.get("comparable", True) for r in rs):
            handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="#718096", edgecolor="white", hatch="///"))
            labels.append("hatched: not like for like (another GPU, or unequal accuracy)")
        ax.legend(handles=handles, labels=labels, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=7,
                  frameon=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":  # 2x for high-density screens
            fig.savefig(path, format="png", dpi=200, bbox_inches="tight")
        else:
            fig.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
        plt.close(fig)
    return path


# ------------------------------------------------------------------ the page

def _load(path: Path):
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as e:
        return None, str(e)


def benchmarks_markdown(bench_dir: Path, chart_dir: Path | None = None, *, chart_ref: str | None = None) -> str:
    """The measurements page for bench_dir/results/*.json; scripts without results listed as pending.

    chart_dir: where to save the speed-up chart (skipped when None or when no ratio exists).
    chart_ref: how the page refers to it; default `<chart_dir's name>/benchmark_ratios.svg`,
    because MyST resolves an included file's images against the *including* page
    (book/appendix_performance.md includes executed/benchmarks.md).
    """
    bench_dir = Path(bench_dir)
    res_dir = bench_dir / "results"
    paths = sorted(res_dir.glob("*.json")) if res_dir.exists() else []
    scripts = sorted(p.stem for p in bench_dir.glob("[!_]*.py")) if bench_dir.exists() else []
    loaded = [(p, *_load(p)) for p in paths]
    # the suite's files first: they are the newest measurements, in one run
    loaded.sort(key=lambda t: (not _is_suite(t[1]), t[0].name))
    sections, ratios, covered = [], [], set()
    for p, data, err in loaded:
        if err is not None:
            sections.append(f"### `{p.name}`\n\nunreadable: {_cell(err)}\n")
            continue
        if _is_suite(data):
            sections.append(render_suite(data, p))
            ratios += suite_ratios(data, p)
            if not data.get("smoke"):  # a smoke run measured nothing: its scripts stay pending
                covered |= {e.get("name") for e in data.get("benchmarks", [])} | {p.stem}
            continue
        if isinstance(data, dict) and data.get("benchmark") == "cifar10_time_to_94":
            sections.append(render_cifar(data, p))
        else:
            sections.append(render_generic(data, p))
            ratios += file_ratios(data, p)
        covered.add(p.stem)
    out = []
    if ratios and chart_dir is not None:
        draw_chart(ratios, Path(chart_dir) / CHART_NAME)
        ref = chart_ref or f"{Path(chart_dir).name}/{CHART_NAME}"
        out.append("### Speed-ups at a glance\n")
        out.append(f"![Speed-up of each of the book's components over its reference, log scale]({ref})\n")
        out.append("Each bar is one comparison from the files below (device in brackets; above 1: the book's "
                   "code is faster); smoke runs are left out. Blue: both sides measured in the same run; grey: the "
                   "reference taken from an earlier stored run; orange: a published number (from another GPU); "
                   "hatched: not like for like.\n")
    out += sections
    pending = [s for s in scripts if not any(c.startswith(s) for c in covered)]
    if pending:
        out.append("Pending (no results file yet): " + ", ".join(f"`benchmarks/{s}.py`" for s in pending) + ".\n")
    if not paths and not pending:
        out.append("No benchmarks yet.\n")
    return "\n".join(out) + "\n"
