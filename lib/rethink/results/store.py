"""The results store: one JSON record per experiment cell, keyed by its full config.

Layout: <root>/<experiment>/<key>.json, key = first 16 hex digits of the SHA-256 of
the canonical JSON of the config. Records are small (metrics, curves, provenance),
written atomically, and committed to git so the book re-renders without retraining.
Weights and checkpoints never go here: see `artifact_dir` (under the user cache).

`run` holds a lock per cell (an flock under the cell's artifact dir), so a second
process asking for a cell being computed waits for the first and returns its record
instead of training it again; once the record is stored, the cell's resume
checkpoints are deleted (its final weights stay). An unreadable record stops `get`
with the file's name and the fix; `records` skips it with a warning.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .. import paths
from ..errors import RethinkError
from .artifacts import remove_resume_files
from ..files import atomic_write, exclusive, remove_stale_temps

PROFILE_RANK = {"smoke": 0, "small": 1, "full": 2, "paper": 3}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


class StoreError(RethinkError):
    """A record of the results store cannot be read."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file (named after its writer, see rethink.files) renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text), mode="w", fsync=True)


def read_record(path: Path) -> dict:
    """One record; an unreadable one raises StoreError naming the file and the fix."""
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError as e:
        problem = f"is not text ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        problem = (f"is not valid JSON (truncated or garbled: {e.msg.removesuffix(' at')} at line "
                   f"{e.lineno}, column {e.colno})")
    else:
        if isinstance(record, dict) and isinstance(record.get("config"), dict):
            return record
        problem = "is not a results record (no 'config' mapping)"
    raise StoreError(f"results record {path} {problem}: delete it to re-run its cell{_git_restore_hint(path)}")


def _git_restore_hint(path: Path) -> str:
    """', or restore ... git checkout' for a record inside the repository (committed ones are)."""
    try:
        rel = Path(path).resolve().relative_to(paths.REPO_ROOT)
    except ValueError:
        return ""
    return f", or restore the committed copy with `git checkout -- {rel}`"


def git_commit() -> dict:
    def _git(*args):
        return subprocess.run(["git", *args], cwd=paths.REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    if os.environ.get("RETHINK_COMMIT"):  # set when running from a copy without .git (e.g. a GPU box)
        return {"commit": os.environ["RETHINK_COMMIT"], "dirty": os.environ.get("RETHINK_DIRTY") == "1"}
    try:
        commit = _git("rev-parse", "HEAD") or "unknown"
        # outputs (executed pages, result records) do not make the code dirty
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".",
                          ":!book/executed", ":!results", ":!benchmarks/results"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = os.environ.get("RETHINK_COMMIT", "unknown"), None
    return {"commit": commit, "dirty": dirty}


def device_description() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    except ImportError:
        pass
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def library_versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    try:
        import torch
        out["torch_build"] = torch.__version__  # e.g. 2.15.0+cu132: the CUDA build too
    except ImportError:
        pass
    for name in ("torch", "torchvision", "timm", "numpy", "rethink"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            if name == "rethink":
                from .. import __version__
                out[name] = __version__
    return out


def provenance(profile: str, seeds: list[int] | None, wall_time_s: float, started: float) -> dict:
    return {
        **git_commit(),
        "profile": profile,
        "device": device_description(),
        "host": socket.gethostname(),
        "versions": library_versions(),
        "seeds": list(seeds or []),
        "wall_time_s": round(wall_time_s, 3),
        "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


class ResultsStore:
    """Cached, resumable experiment cells.

    >>> store = ResultsStore()
    >>> rec = store.run("zoo", config, train_fn, profile="smoke", seeds=[0])
    A second call with the same config returns the stored record without running.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else paths.results_root()
        self._cleaned: set[str] = set()

    def path(self, experiment: str, config: dict) -> Path:
        return self.root / experiment / f"{config_key(config)}.json"

    def get(self, experiment: str, config: dict) -> dict | None:
        p = self.path(experiment, config)
        if not p.exists():
            return None
        record = read_record(p)
        if canonical_json(record["config"]) != canonical_json(config):
            raise StoreError(f"results record {p} holds another config than the one requested (a key "
                             f"collision, or an edited record): delete it to re-run its cell")
        return record

    def put(self, experiment: str, config: dict, result: dict, prov: dict) -> dict:
        record = {"experiment": experiment, "key": config_key(config), "config": config,
                  "result": result, "provenance": prov}
        self._remove_stale_temps(experiment)
        atomic_write_text(self.path(experiment, config), json.dumps(record, indent=1, default=float) + "\n")
        return record

    def run(self, experiment: str, config: dict, fn: Callable[[dict, Path], dict], *,
            profile: str, seeds: list[int] | None = None, recompute: bool = False) -> dict:
        """Return the stored record for `config`, or run fn(config, artifact_dir) and store it.

        fn is responsible for its own checkpoints in artifact_dir (resume after a crash);
        they are deleted once the record is stored. One process at a time runs a cell:
        another one asking for it waits, then returns the record the first one stored.
        """
        if not recompute and (rec := self.get(experiment, config)) is not None:
            return rec
        artifact_dir = self.artifact_dir(experiment, config)
        waiting = f"another process (pid {{pid}}) is running cell {experiment}/{config_key(config)}; waiting for it"
        with exclusive(artifact_dir / ".lock", waiting):
            if not recompute and (rec := self.get(experiment, config)) is not None:
                return rec  # the other process finished it
            started = time.time()
            t0 = time.perf_counter()
            result = fn(config, artifact_dir)
            record = self.put(experiment, config, result,
                              provenance(profile, seeds, time.perf_counter() - t0, started))
            remove_resume_files(artifact_dir)
        return record

    def records(self, experiment: str) -> list[dict]:
        """Every readable record of `experiment`, sorted by key; an unreadable one is skipped
        with a warning on stderr naming it."""
        d = self.root / experiment
        out = []
        for p in sorted(d.glob("*.json")) if d.exists() else []:
            try:
                out.append(read_record(p))
            except StoreError as e:
                print(f"warning: skipping an unreadable record: {e}", file=sys.stderr, flush=True)
        return out

    def _remove_stale_temps(self, experiment: str) -> None:
        """Temps left in an experiment's folder by a killed writer (once per process)."""
        if experiment not in self._cleaned:
            self._cleaned.add(experiment)
            remove_stale_temps(self.root / experiment)

    @staticmethod
    def artifact_dir(experiment: str, config: dict) -> Path:
        """Checkpoints and weights for a cell: under the user cache, never committed."""
        d = paths.cache_root() / "artifacts" / experiment / config_key(config)
        d.mkdir(parents=True, exist_ok=True)
        return d
