"""rethink.benchmarks_page: the performance appendix's tables and chart, on constructed results."""
from __future__ import annotations

import json
import re

import pytest

from rethink import benchmarks_page as page

SUITE_DOC = {
    "schema": "rethink-benchmark-suite/1", "size": "full", "smoke": False, "device": "NVIDIA H200",
    "device_type": "cuda", "versions": {"torch": "2.11.0+cu130"}, "commit": "0123456789abcdef", "dirty": False,
    "date": "2026-12-01", "finished_at": "2026-12-01T10:00:00+00:00", "wall_s": 93.2, "budget_s": 120.0,
    "benchmarks": [
        {"name": "detection_throughput", "title": "Detector loop | against the reference", "status": "ok",
         "measures": "scenes per second", "ratio": 2.5, "wall_s": 21.3, "budget_s": 33.0, "planned_h200_s": 25,
         "sizes": {"arch": "resnet18", "image_size": 160, "batch_size": 64},
         "warmup_s": {"book": 3.2, "reference": 4.123456},
         "comparisons": [
             {"against": "torchvision reference-style loop, float32", "kind": "measured", "ours": 1500.0,
              "reference": 600.0, "units": "scenes/s", "ratio": 2.5, "comparable": True, "note": None,
              "short": "Detector loop vs reference"},
             {"against": "torchvision reference-style loop with --amp", "kind": "measured", "ours": 1500.0,
              "reference": 1000.0, "units": "scenes/s", "ratio": 1.5, "comparable": True, "note": None}],
         "details": {"chapter2_full_plan": {"cells": 33, "steps": 135000, "scenes": 8640000,
                                            "training_minutes_at_measured_rate": 96.0, "note": "training only"}},
         "notes": ["data: synthetic boxes on noise"], "skip_reason": None, "error": None},
        {"name": "cifar10_time_to_94", "title": "CIFAR-10 time to 94%", "status": "ok", "ratio": 0.81,
         "comparisons": [
             {"against": "airbench94 record (A100)", "kind": "published", "ours": 3.2, "reference": 2.59,
              "units": "s", "ratio": 0.81, "comparable": False, "note": "different GPUs", "source": "README"}],
         "sizes": {"widths": [64, 256, 256]}, "warmup_s": {"rethink": 2.0}, "notes": [], "skip_reason": None},
        {"name": "corruption_throughput", "title": "-C set", "status": "skipped", "ratio": None,
         "comparisons": [], "sizes": {}, "warmup_s": None, "notes": [],
         "skip_reason": "no reference rate: imagecorruptions not importable"},
        {"name": "logistic_lbfgs", "title": "L-BFGS", "status": "error", "ratio": None, "comparisons": [],
         "sizes": {"n": 10}, "notes": [], "error": "RuntimeError: boom", "skip_reason": "failed: RuntimeError: boom"},
    ],
}
LOGISTIC = {"device": "cpu (1 threads)", "n_train": 5000, "torch_s": 6.368, "sklearn_s": 5.243,
            "ratio_sklearn_over_torch": 0.82, "torch_C": 0.00031622776601683794, "same_penalty": True,
            "tol": 1e-06, "torch": "2.15.0"}
CORRUPTIONS = {"device": "cpu (2 threads)", "image": [3, 32, 32], "full_C_set_minutes_ours": 1.76,
               "full_C_set_minutes_reference": 25.4,
               "rows": [{"corruption": "fog", "ours_cifar_images_per_s": 41965.9, "speedup": 32.8},
                        {"corruption": "frost", "ours_cifar_images_per_s": 59756.2, "speedup": 281.9},
                        {"perturbation": "translate", "frames": 16, "frames_per_s": 2142368.4}]}
RANDAUG = {"device": "NVIDIA H100", "date": "2026-11-30",
           "batched": {"512": {"images_per_s": 17978.3, "sample_params_ms": 0.022},
                       "4096": {"images_per_s": 14676.5, "sample_params_ms": 0.141}},
           "speedup": {"512": 4.0, "4096": 3.3}}


def write(bench_dir, files: dict, scripts=()):
    (bench_dir / "results").mkdir(parents=True)
    for name, data in files.items():
        (bench_dir / "results" / name).write_text(json.dumps(data))
    for s in scripts:
        (bench_dir / f"{s}.py").write_text("")
    return bench_dir


def tables(md: str) -> list[list[str]]:
    """Blocks of consecutive table lines."""
    blocks, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    return blocks + ([cur] if cur else [])


def cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def assert_well_formed(md: str) -> None:
    blocks = tables(md)
    assert blocks
    for b in blocks:
        n = len(cells(b[0]))
        assert re.fullmatch(r"\|(---\|)+", b[1]) and len(cells(b[1])) == n, b[:2]
        for line in b[2:]:
            row = cells(line)
            assert len(row) == n, line
            assert all(row), f"blank cell in {line!r}"  # a missing value shows as a dash


@pytest.fixture
def rendered(tmp_path):
    bench = write(tmp_path / "benchmarks", {
        "suite-full-h200.json": SUITE_DOC, "logistic_lbfgs-cpu.json": LOGISTIC,
        "corruption_throughput-cpu.json": CORRUPTIONS, "randaugment_throughput-h100.json": RANDAUG,
        "broken-cpu.json": "{not json"}, scripts=("suite", "logistic_lbfgs", "zoo_throughput", "_report"))
    (bench / "results" / "broken-cpu.json").write_text("{not json")
    chart_dir = tmp_path / "book" / "executed"
    return page.benchmarks_markdown(bench, chart_dir), chart_dir


def test_tables_are_well_formed_and_hold_no_raw_json(rendered):
    md, _ = rendered
    assert_well_formed(md)
    assert "{'" not in md and '{"' not in md and "0.00031622776601683794" not in md
    assert "| torch C | 0.000316 |" in md and "| tol | 1e-06 |" in md and "| same penalty | yes |" in md
    assert "| n train | 5,000 |" in md and "| image | 3 × 32 × 32 |" in md


def test_rows_of_different_shapes_get_their_own_tables(rendered):
    md, _ = rendered
    heads = [cells(b[0]) for b in tables(md)]
    assert ["corruption", "ours cifar images/s", "speedup"] in heads
    assert ["perturbation", "frames", "frames/s"] in heads
    assert ["batched", "images/s", "sample params (ms)"] in heads
    assert "| translate | 16 | 2,142,368 |" in md and "| speedup (512) | 4 |" in md


def test_suite_file_one_table_per_benchmark_with_device_and_date(rendered):
    md, _ = rendered
    suite = md[md.index("The benchmark piece"):md.index("L-BFGS logistic regression vs")]
    assert suite.count("#### ") == 4
    for section in suite.split("#### ")[1:]:
        assert "**Device:** NVIDIA H200" in section and "**date:** 2026-12-01" in section
    assert "Detector loop \\| against the reference" in suite  # a pipe in a title is escaped
    row = "| torchvision reference-style loop, float32 | measured | 1,500 | 600 | scenes/s | 2.5× | yes | – |"
    assert row in suite
    assert "| airbench94 record (A100) | published | 3.2 | 2.59 | s | 0.81× | no | different GPUs |" in suite
    assert "No ratio: no reference rate: imagecorruptions not importable" in suite
    assert "No ratio: failed: RuntimeError: boom" in suite
    assert "96 minutes of training" in suite and "reference 4.123 s" in suite
    assert "Sizes: arch resnet18; image size 160; batch size 64." in suite


def test_every_single_script_file_has_device_and_date(rendered):
    md, _ = rendered
    for name in ("logistic_lbfgs-cpu.json", "corruption_throughput-cpu.json", "randaugment_throughput-h100.json"):
        section = md[md.index(f"`{name}`"):]
        section = section[:section.find("\n### ")] if "\n### " in section else section
        assert "**Device:** " in section and "**date:** " in section, name
    assert "**date:** 2026-11-30" in md
    assert "unreadable" in md and "`broken-cpu.json`" in md


def test_chart_drawn_and_referenced_pending_listed(rendered):
    md, chart_dir = rendered
    svg = chart_dir / "benchmark_ratios.svg"
    assert svg.exists() and "<svg" in svg.read_text()
    assert "](executed/benchmark_ratios.svg)" in md
    text = svg.read_text()
    # suite comparisons (smoke excluded) and the single files' headline ratios, labelled
    assert "Detector loop vs reference" in text and "L-BFGS path vs scikit-learn" in text
    assert "RandAugment vs torchvision per image (batch 512)" in text
    assert "Pending (no results file yet): `benchmarks/zoo_throughput.py`." in md


def test_smoke_suites_are_labelled_and_not_charted(tmp_path):
    doc = {**SUITE_DOC, "smoke": True, "size": "smoke"}
    bench = write(tmp_path / "b", {"suite-smoke-cpu.json": doc}, scripts=("suite",))
    md = page.benchmarks_markdown(bench, tmp_path / "executed")
    assert "**Smoke run**" in md and not (tmp_path / "executed" / "benchmark_ratios.svg").exists()
    assert "benchmark_ratios.svg" not in md and "`benchmarks/suite.py`" in md  # smoke results do not count
    assert_well_formed(md)


def test_without_chart_dir_no_chart_and_chart_is_deterministic(tmp_path):
    bench = write(tmp_path / "b", {"logistic_lbfgs-cpu.json": LOGISTIC})
    md = page.benchmarks_markdown(bench)
    assert "svg" not in md
    a = page.draw_chart(page.file_ratios(LOGISTIC, bench / "results" / "logistic_lbfgs-cpu.json"),
                        tmp_path / "a.svg").read_text()
    b = page.draw_chart(page.file_ratios(LOGISTIC, bench / "results" / "logistic_lbfgs-cpu.json"),
                        tmp_path / "b.svg").read_text()
    assert a == b  # no date, fixed ids: a re-render does not churn the committed file


@pytest.mark.parametrize("v,text", [(None, "–"), (True, "yes"), (12000, "12,000"), (45578.1, "45,578"),
                                    (5.2434, "5.243"), (0.8928, "0.8928"), (0.00031622776601683794, "0.000316"),
                                    (1e-06, "1e-06"), (float("nan"), "–"), ([3, 32, 32], "3 × 32 × 32"),
                                    ({"a_s": 1.5}, "a (s) 1.5")])
def test_fmt(v, text):
    assert page.fmt(v) == text
