"""The results store: keys, round trips, caching, provenance, atomicity, artifact dirs."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

import pytest
import torch  # noqa: F401  (provenance imports it: pay the import at collection, not in a test)

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
    with pytest.raises(store_mod.StoreError, match=f"^results record {p} holds another config than the "
                       f"one requested .*: delete it to re-run its cell$"):
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
    assert isinstance(prov["wall_time_s"], float) and prov["wall_time_s"] >= 0
    started = dt.datetime.fromisoformat(prov["started"])
    finished = dt.datetime.fromisoformat(prov["finished"])
    assert started.tzinfo is not None and finished.tzinfo is not None and started <= finished
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


# --------------------------------------------------------------------------- unreadable records

def _truncated_record(store) -> Path:
    store.put("zoo", CONFIG, {"top1": 0.1}, {})
    p = store.path("zoo", CONFIG)
    p.write_text(p.read_text()[:40])  # what a crash or a bad merge can leave
    return p


def test_get_of_a_truncated_record_names_the_file_and_the_fix(store):
    p = _truncated_record(store)
    with pytest.raises(store_mod.StoreError) as e:
        store.get("zoo", CONFIG)
    assert str(e.value) == (f"results record {p} is not valid JSON (truncated or garbled: Unterminated "
                            f"string starting at line 3, column 9): delete it to re-run its cell")


def test_a_committed_record_s_fix_includes_git_checkout(monkeypatch, tmp_path):
    monkeypatch.setattr(store_mod.paths, "REPO_ROOT", tmp_path)
    p = tmp_path / "results" / "zoo" / "0123456789abcdef.json"
    p.parent.mkdir(parents=True)
    p.write_text('{"config": {')
    with pytest.raises(store_mod.StoreError, match=r": delete it to re-run its cell, or restore the committed "
                       r"copy with `git checkout -- results/zoo/0123456789abcdef\.json`$"):
        store_mod.read_record(p)


@pytest.mark.parametrize("content, problem", [(b"\xff\xfe", "is not text"), (b"[1, 2]\n", "is not a results record")])
def test_other_unreadable_records(store, content, problem):
    p = store.path("zoo", CONFIG)
    p.parent.mkdir(parents=True)
    p.write_bytes(content)
    with pytest.raises(store_mod.StoreError, match=f"^results record {p} {problem}"):
        store.get("zoo", CONFIG)


def test_records_skips_an_unreadable_record_with_a_warning(store, capsys):
    bad = _truncated_record(store)
    store.put("zoo", {**CONFIG, "seed": 1}, {"top1": 0.2}, {})
    recs = store.records("zoo")
    assert [r["result"]["top1"] for r in recs] == [0.2]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: skipping an unreadable record: results record {bad} "
                                               f"is not valid JSON")


# --------------------------------------------------------------------------- finished cells, stale temps

def test_a_stored_cell_deletes_its_checkpoints_and_keeps_its_weights(store):
    def fn(config, d):
        for name in ("checkpoint.pt", "checkpoint.pt.corrupt", "weights.pt"):
            (d / name).write_bytes(b"x")
        return {"ok": True}

    store.run("zoo", CONFIG, fn, profile="smoke")
    d = ResultsStore.artifact_dir("zoo", CONFIG)
    assert sorted(p.name for p in d.iterdir()) == [".lock", "weights.pt"]


def test_a_failed_cell_keeps_its_checkpoint_for_the_resume(store):
    def crash(config, d):
        (d / "checkpoint.pt").write_bytes(b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.run("zoo", CONFIG, crash, profile="smoke")
    assert (ResultsStore.artifact_dir("zoo", CONFIG) / "checkpoint.pt").exists()


def test_a_killed_writer_s_temp_record_is_removed(store):
    from rethink import files

    folder = store.root / "zoo"
    folder.mkdir(parents=True)
    stale = folder / f".{config_key(CONFIG)}.json.{files.host_tag()}-999999999.k3j2.tmp"
    stale.write_text("{")
    store.run("zoo", CONFIG, _result, profile="smoke")
    assert sorted(p.name for p in folder.iterdir()) == [f"{config_key(CONFIG)}.json"]


def test_temp_records_are_ignored_by_git():
    import shutil
    import subprocess
    from rethink import files

    root = store_mod.paths.REPO_ROOT
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    names = [f"results/zoo/.0123456789abcdef.json.{files.writer_tag()}.x1y2.tmp",
             f"data/.tiny.zip.{files.writer_tag()}.ab.part", "cache/extracted/.tmp-a.zip.abc123-1.xy/f"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=root, capture_output=True, text=True)
    assert out.stdout.split() == names


# --------------------------------------------------------------------------- one process per cell

def _slow_cell(store_root, marks, started, release):
    """Run in a child process: the cell's fn records its call, then waits to be released."""
    import sys

    sys.stderr = open(Path(marks) / f"stderr-{os.getpid()}", "w", buffering=1)

    def fn(config, d):
        with open(Path(marks) / "calls", "a") as f:
            f.write(f"{os.getpid()}\n")
        started.set()
        release.wait(20)
        return {"by": os.getpid()}

    rec = ResultsStore(store_root).run("zoo", CONFIG, fn, profile="smoke")
    (Path(marks) / f"record-{os.getpid()}").write_text(json.dumps(rec["result"]))


def test_two_runs_of_one_cell_train_it_once(store, tmp_path):
    import multiprocessing as mp
    import time

    ctx = mp.get_context("fork")
    started, release = ctx.Event(), ctx.Event()
    marks = tmp_path / "marks"
    marks.mkdir()
    first = ctx.Process(target=_slow_cell, args=(store.root, marks, started, release))
    first.start()
    assert started.wait(20)
    second = ctx.Process(target=_slow_cell, args=(store.root, marks, started, release))
    second.start()
    waiting = marks / f"stderr-{second.pid}"
    for _ in range(6000):  # until the second says it waits (a generous bound, not a time assert)
        if waiting.exists() and "waiting" in waiting.read_text():
            break
        time.sleep(0.01)
    release.set()
    first.join(20)
    second.join(20)
    assert first.exitcode == 0 and second.exitcode == 0
    assert (marks / "calls").read_text().split() == [str(first.pid)]  # trained once
    for p in (first, second):
        assert json.loads((marks / f"record-{p.pid}").read_text()) == {"by": first.pid}
    assert waiting.read_text() == (f"another process (pid {first.pid}) is running cell zoo/"
                                   f"{config_key(CONFIG)}; waiting for it\n")
