"""benchmarks/suite.py: the smoke suite runs on a CPU and writes the documented JSON; one failing
benchmark is recorded and the others still run. No wall-time assertions."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "suite.py"
NAMES = ["detection_throughput", "cifar10_time_to_94", "randaugment_throughput", "logistic_lbfgs",
         "corruption_throughput"]
TOP_KEYS = {"schema", "size", "smoke", "device", "device_type", "gpu", "versions", "commit", "commit_source",
            "started_at", "finished_at", "date", "wall_s", "budget_s", "benchmarks"}
ENTRY_KEYS = {"name", "title", "status", "measures", "ours", "reference", "ratio", "ratio_against", "comparisons",
              "sizes", "warmup_s", "wall_s", "budget_s", "notes", "skip_reason", "error", "details"}
COMPARISON_KEYS = {"against", "kind", "ours", "reference", "units", "ratio", "comparable", "note", "source"}


def load_suite():
    spec = importlib.util.spec_from_file_location("benchmark_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up while it loads
    spec.loader.exec_module(mod)
    return mod


def check_entry(e: dict) -> None:
    assert ENTRY_KEYS <= set(e), ENTRY_KEYS - set(e)
    assert e["status"] in ("ok", "partial", "skipped", "error")
    has_ratio = isinstance(e["ratio"], (int, float)) and e["ratio"] > 0
    assert has_ratio or (isinstance(e["skip_reason"], str) and e["skip_reason"]), e["name"]
    for c in e["comparisons"]:
        assert COMPARISON_KEYS <= set(c)
        assert c["kind"] in ("measured", "published", "stored")
        assert c["ratio"] is None or c["ratio"] > 0
        assert c["ratio"] is not None or c["note"], "a comparison without a ratio says why"
    if has_ratio:
        assert e["ratio"] == next(c["ratio"] for c in e["comparisons"] if c["ratio"] is not None)
        assert e["ours"]["units"] == e["reference"]["units"] and e["reference"]["kind"] in ("measured", "published",
                                                                                            "stored")


def test_smoke_suite_writes_one_json_with_a_ratio_or_a_reason_per_benchmark(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "RETHINK_RESULTS": str(tmp_path / "results"), "RETHINK_CACHE": str(tmp_path / "cache"),
           "RETHINK_COMMIT": "0123abc", "PYTHONPATH": str(REPO / "lib")}
    r = subprocess.run([sys.executable, str(SUITE), "--size", "smoke", "--threads", "1", "--budget-s", "900",
                        "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    assert TOP_KEYS <= set(doc), TOP_KEYS - set(doc)
    assert doc["schema"] == "rethink-benchmark-suite/1" and doc["size"] == "smoke" and doc["smoke"] is True
    assert doc["device_type"] == "cpu" and doc["gpu"] is None
    assert doc["versions"]["torch"] and doc["versions"]["torchvision"]
    assert doc["commit"]  # git here; RETHINK_COMMIT where there is no git
    assert [e["name"] for e in doc["benchmarks"]] == NAMES
    for e in doc["benchmarks"]:
        check_entry(e)
        assert e["status"] != "error", (e["name"], e["error"], e.get("traceback"))
        assert e["sizes"] and e["measures"] and e["wall_s"] is not None
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 5 and all("SMOKE" in ln for ln in lines)
    # the published anchors are labelled as such and never claimed at smoke size
    cifar = doc["benchmarks"][1]
    published = [c for c in cifar["comparisons"] if c["kind"] == "published"]
    assert [c["reference"] for c in published] == [2.59, 3.83] and all(c["source"] for c in published)
    assert all(c["ratio"] is None for c in published)  # synthetic images never reach 94%
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN or infinity


def test_a_failing_benchmark_is_recorded_and_the_next_one_runs(tmp_path):
    suite = load_suite()

    def boom(ctx):
        raise RuntimeError("no such kernel")

    def fine(ctx):
        return {"measures": "nothing", "warmup_s": 0.0,
                "comparisons": [suite.comparison("a reference", "measured", 2.0, 4.0, "s", higher_is_faster=False)]}

    def nothing(ctx):
        return {"measures": "nothing", "comparisons": [
            suite.comparison("an anchor", "published", None, 2.59, "s", higher_is_faster=False, note="not reached")]}

    specs = [suite.Spec("boom", "fails", 1, boom, {"smoke": {"n": 1}}),
             suite.Spec("fine", "works", 1, fine, {"smoke": {"n": 2}}),
             suite.Spec("nothing", "no ratio", 1, nothing, {"smoke": {}})]
    out = tmp_path / "s.json"
    printed = []
    doc = suite.run_suite("smoke", out=out, specs=specs, device="cpu", log=lambda s, **k: printed.append(s))
    saved = json.loads(out.read_text())
    assert saved["benchmarks"] == json.loads(json.dumps(doc["benchmarks"]))
    boom_e, fine_e, nothing_e = saved["benchmarks"]
    assert boom_e["status"] == "error" and "no such kernel" in boom_e["error"] and boom_e["ratio"] is None
    assert boom_e["skip_reason"].startswith("failed:")
    assert fine_e["status"] == "ok" and fine_e["ratio"] == 2.0 and fine_e["ours"]["value"] == 2.0
    assert nothing_e["status"] == "skipped" and nothing_e["ratio"] is None and "not reached" in nothing_e["skip_reason"]
    for e in saved["benchmarks"]:
        check_entry(e)
    assert len(printed) == 3 and "error" in printed[0] and "2x" in printed[1]


def test_a_benchmark_past_its_hard_limit_is_interrupted(tmp_path, monkeypatch):
    suite = load_suite()
    monkeypatch.setattr(suite, "HARD_LIMIT", (0.0, 1.0))  # interrupt after 1 s

    def slow(ctx):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 30:
            time.sleep(0.05)
        return {}

    doc = suite.run_suite("smoke", specs=[suite.Spec("slow", "sleeps", 1, slow, {"smoke": {}})], device="cpu",
                          budget_s=1, log=lambda *a, **k: None)
    (e,) = doc["benchmarks"]
    assert e["status"] == "error" and "BudgetExceeded" in e["error"] and e["wall_s"] < 30


def test_comparison_ratio_is_a_speed_up():
    suite = load_suite()
    assert suite.comparison("r", "measured", 100.0, 50.0, "images/s", higher_is_faster=True)["ratio"] == 2.0
    assert suite.comparison("r", "measured", 1.0, 3.0, "s", higher_is_faster=False)["ratio"] == 3.0
    assert suite.comparison("r", "published", None, 3.0, "s", higher_is_faster=False)["ratio"] is None
    with pytest.raises(ValueError, match="unknown benchmark"):
        suite.run_suite("smoke", only=["nope"], device="cpu")


def test_corruptions_fall_back_to_the_stored_reference_and_say_so(monkeypatch):
    suite = load_suite()
    import corruption_throughput as bench

    def missing():
        raise ImportError("No module named 'imagecorruptions'")
    monkeypatch.setattr(bench, "_reference", missing)
    spec = next(s for s in suite.SPECS if s.name == "corruption_throughput")
    tiny = suite.Spec(spec.name, spec.title, 1, spec.run,
                      {"smoke": dict(images=4, reference_images=1, repeats=1, names=["contrast", "fog"])})
    (e,) = suite.run_suite("smoke", specs=[tiny], device="cpu", log=lambda *a, **k: None)["benchmarks"]
    check_entry(e)
    (c,) = e["comparisons"]
    assert c["kind"] == "stored" and e["reference"]["kind"] == "stored" and c["comparable"] is False
    assert "NOT measured in this run" in c["note"] and "corruption_throughput-cpu.json" in c["note"]
    assert [r["corruption"] for r in e["details"]["rows"]] == ["contrast", "fog"]

    monkeypatch.setattr(bench, "STORED_REFERENCE", Path("/nonexistent.json"))
    (e,) = suite.run_suite("smoke", specs=[tiny], device="cpu", log=lambda *a, **k: None)["benchmarks"]
    check_entry(e)
    assert e["status"] == "skipped" and "imagecorruptions not importable" in e["skip_reason"]


def test_scenes_file_round_trip(tmp_path):
    load_suite()  # puts benchmarks/ on sys.path
    import detection_throughput as det

    ds = det.synthetic_scenes(5, 32, mean_instances=3.0)
    back = det.load_scenes(det.save_scenes(ds, tmp_path / "s.npz"))
    assert (back.images == ds.images).all() and back.class_names == ds.class_names
    assert all((a == b).all() for a, b in zip(back.boxes, ds.boxes))
    assert all((a == b).all() for a, b in zip(back.labels, ds.labels))
    got, what = det.scenes(4, 32, scenes_file=tmp_path / "s.npz", allow_generate=False)
    assert len(got) == 4 and what == "synthetic boxes on noise from s.npz"
