"""The results store: keys, round trips, caching, provenance, atomicity, artifact dirs."""
from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

import pytest

from rethink.results import store as store_mod
from rethink.results.store import ResultsStore, config_key

CONFIG = {"arch": "resnet18", "seed": 0, "lr": 0.4, "epochs": 2, "variant": "baseline",
          "train_per_class": None, "nested": {"a": 1, "b": [1, 2]}}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """RETHINK_RESULTS and RETHINK_CACHE under tmp_path."""
    roots = {"results": tmp_path / "results", "cache": tmp_path / "cache"}
    monkeypatch.setenv("RETHINK_RESULTS", str(roots["results"]))
    monkeypatch.setenv("RETHINK_CACHE", str(roots["cache"]))
    return roots


@pytest.fixture
def store(env) -> ResultsStore:
    return ResultsStore()  # root from $RETHINK_RESULTS


def _result(config: dict, artifact_dir: Path) -> dict:
    return {"top1": 0.5, "curve": [0.1, 0.2], "arch": config["arch"]}


# --------------------------------------------------------------------------- keys

def test_config_key_ignores_dict_key_order():
    reordered = dict(reversed(list(CONFIG.items())))
    reordered["nested"] = {"b": [1, 2], "a": 1}
    assert list(reordered) != list(CONFIG)
    assert config_key(reordered) == config_key(CONFIG)
    assert len(config_key(CONFIG)) == 16 and int(config_key(CONFIG), 16) >= 0


@pytest.mark.parametrize("change", [
    {"arch": "resnet34"}, {"seed": 1}, {"lr": 0.41}, {"epochs": 3}, {"train_per_class": 10},
    {"nested": {"a": 2, "b": [1, 2]}}, {"nested": {"a": 1, "b": [2, 1]}}, {"extra": None},
])
def test_config_key_changes_with_any_value(change):
    assert config_key({**CONFIG, **change}) != config_key(CONFIG)


def test_store_root_follows_env(env, store):
    assert store.root == env["results"].resolve()
    assert store.path("zoo", CONFIG) == env["results"].resolve() / "zoo" / f"{config_key(CONFIG)}.json"


# --------------------------------------------------------------------------- put / get

def test_get_missing_is_none(store):
    assert store.get("zoo", CONFIG) is None


def test_put_get_round_trip(store):
    rec = store.put("zoo", CONFIG, {"top1": 0.25, "history": [{"epoch": 0}]}, {"profile": "smoke"})
    got = store.get("zoo", CONFIG)
    assert got == rec
    assert got["experiment"] == "zoo" and got["key"] == config_key(CONFIG)
    assert got["config"] == CONFIG and got["result"]["top1"] == 0.25
    assert got["provenance"] == {"profile": "smoke"}
    # same record whatever the key order of the request
    assert store.get("zoo", dict(reversed(list(CONFIG.items())))) == rec


def test_get_raises_when_stored_config_differs(store):
    store.put("zoo", CONFIG, {"top1": 0.1}, {})
    p = store.path("zoo", CONFIG)
    rec = json.loads(p.read_text())
    rec["config"]["seed"] = 99  # a record under the wrong key (a collision, or hand-edited)
    p.write_text(json.dumps(rec))
    with pytest.raises(RuntimeError, match="differs"):
        store.get("zoo", CONFIG)


def test_records_lists_one_experiment(store):
    assert store.records("zoo") == []
    configs = [{**CONFIG, "seed": s} for s in range(3)]
    for c in configs:
        store.put("zoo", c, {"seed": c["seed"]}, {})
    store.put("other", CONFIG, {"seed": -1}, {})
    recs = store.records("zoo")
    assert len(recs) == 3
    assert sorted(r["result"]["seed"] for r in recs) == [0, 1, 2]
    assert [r["key"] for r in recs] == sorted(config_key(c) for c in configs)  # sorted by file name
    assert [r["result"]["seed"] for r in store.records("other")] == [-1]


# --------------------------------------------------------------------------- run

def test_run_calls_fn_once_then_returns_cached(store):
    calls = []

    def fn(config, artifact_dir):
        calls.append((config, artifact_dir))
        return _result(config, artifact_dir)

    first = store.run("zoo", CONFIG, fn, profile="smoke", seeds=[0])
    second = store.run("zoo", CONFIG, fn, profile="smoke", seeds=[0])
    assert len(calls) == 1
    assert second == first
    assert first["result"] == {"top1": 0.5, "curve": [0.1, 0.2], "arch": "resnet18"}
    assert calls[0][0] == CONFIG and calls[0][1] == ResultsStore.artifact_dir("zoo", CONFIG)
    assert store.path("zoo", CONFIG).exists()


def test_run_recompute_calls_fn_again(store):
    calls = []

    def fn(config, d):
        calls.append(1)
        return {"n": len(calls)}

    store.run("zoo", CONFIG, fn, profile="smoke")
    rec = store.run("zoo", CONFIG, fn, profile="smoke", recompute=True)
    assert len(calls) == 2 and rec["result"] == {"n": 2}
    assert store.get("zoo", CONFIG)["result"] == {"n": 2}


def test_run_other_config_is_another_cell(store):
    calls = []

    def fn(config, d):
        calls.append(config["seed"])
        return {"seed": config["seed"]}

    store.run("zoo", CONFIG, fn, profile="smoke")
    rec = store.run("zoo", {**CONFIG, "seed": 1}, fn, profile="smoke")
    assert calls == [0, 1] and rec["result"] == {"seed": 1}


def test_provenance_fields(store, monkeypatch):
    monkeypatch.delenv("RETHINK_COMMIT", raising=False)
    rec = store.run("zoo", CONFIG, _result, profile="small", seeds=[3, 4])
    prov = rec["provenance"]
    for key in ("commit", "dirty", "profile", "device", "host", "versions", "seeds",
                "wall_time_s", "started", "finished"):
        assert key in prov, key
    assert prov["profile"] == "small"
    assert prov["seeds"] == [3, 4]
    assert isinstance(prov["commit"], str) and prov["commit"]
    assert prov["device"].startswith(("cpu:", "cuda:"))
    assert prov["versions"]["python"] == platform.python_version()
    import torch
    assert torch.__version__.startswith(prov["versions"]["torch"])  # metadata version: no "+cuXXX" tag
    assert prov["versions"].get("rethink")
    assert isinstance(prov["wall_time_s"], float) and 0 <= prov["wall_time_s"] < 60
    started = dt.datetime.fromisoformat(prov["started"])
    finished = dt.datetime.fromisoformat(prov["finished"])
    assert started.tzinfo is not None and started <= finished
    assert abs((dt.datetime.now(dt.timezone.utc) - finished).total_seconds()) < 60
    # stored as written
    assert store.get("zoo", CONFIG)["provenance"] == prov


def test_provenance_seeds_default_empty(store):
    assert store.run("zoo", CONFIG, _result, profile="smoke")["provenance"]["seeds"] == []


def test_wall_time_measures_fn(store, monkeypatch):
    ticks = iter([100.0, 107.5])
    monkeypatch.setattr(store_mod.time, "perf_counter", lambda: next(ticks))
    rec = store.run("zoo", CONFIG, _result, profile="smoke")
    assert rec["provenance"]["wall_time_s"] == 7.5


def test_rethink_commit_env_overrides_git(store, monkeypatch):
    monkeypatch.setenv("RETHINK_COMMIT", "abc123def")
    monkeypatch.setenv("RETHINK_DIRTY", "1")
    prov = store.run("zoo", CONFIG, _result, profile="smoke")["provenance"]
    assert prov["commit"] == "abc123def" and prov["dirty"] is True
    monkeypatch.delenv("RETHINK_DIRTY")
    assert store_mod.git_commit() == {"commit": "abc123def", "dirty": False}


# --------------------------------------------------------------------------- atomicity / resumability

def test_atomic_write_leaves_no_temp_file(store):
    store.run("zoo", CONFIG, _result, profile="smoke")
    files = sorted(p.name for p in (store.root / "zoo").iterdir())
    assert files == [f"{config_key(CONFIG)}.json"]


def test_atomic_write_text_failure_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    store_mod.atomic_write_text(target, "old\n")

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store_mod.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # temp file removed


def test_failing_fn_writes_nothing_and_rerun_retries(store):
    calls = []

    def flaky(config, d):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("crashed mid-training")
        return {"ok": True}

    with pytest.raises(RuntimeError, match="crashed"):
        store.run("zoo", CONFIG, flaky, profile="smoke")
    assert store.get("zoo", CONFIG) is None
    assert not store.path("zoo", CONFIG).exists()
    assert store.records("zoo") == []
    assert not (store.root / "zoo").exists() or not any((store.root / "zoo").iterdir())
    rec = store.run("zoo", CONFIG, flaky, profile="smoke")
    assert len(calls) == 2 and rec["result"] == {"ok": True}


def test_unserializable_result_writes_nothing(store):
    with pytest.raises(TypeError):
        store.run("zoo", CONFIG, lambda c, d: {"bad": object()}, profile="smoke")
    assert store.get("zoo", CONFIG) is None


# --------------------------------------------------------------------------- artifact dirs

def test_artifact_dir_under_cache_not_results(env):
    d = ResultsStore.artifact_dir("zoo", CONFIG)
    assert d.is_dir()
    assert d == env["cache"].resolve() / "artifacts" / "zoo" / config_key(CONFIG)
    assert not d.is_relative_to(env["results"].resolve())
    assert not d.is_relative_to(ResultsStore().root)
    assert ResultsStore.artifact_dir("zoo", {**CONFIG, "seed": 1}) != d


def test_run_passes_artifact_dir_and_files_stay_out_of_results(store, env):
    def fn(config, d):
        (d / "weights.pt").write_bytes(b"\0" * 10)
        return {"weights": "weights.pt"}

    store.run("zoo", CONFIG, fn, profile="smoke")
    assert (ResultsStore.artifact_dir("zoo", CONFIG) / "weights.pt").exists()
    assert [p.suffix for p in store.root.rglob("*") if p.is_file()] == [".json"]
