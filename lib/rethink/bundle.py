"""Bundles: the records a run of pieces added, in one file, to merge into another checkout's store.

A bundle is a ``.tar.gz`` of regular files::

    manifest.json                        what the bundle is (below); first member
    results/<experiment>/<key>.json      records, exactly as the store wrote them
    benchmarks/results/suite-*.json      the benchmark piece's file, if it ran

``manifest.json``: ``schema`` ("rethink-pieces-bundle/1"), ``profile``, ``budget_s`` (the per-piece
budget of the plan), ``complete`` (false while the run is going on or when it was killed: the
records in it are finished cells all the same), ``created``, ``wall_s``, ``device``, ``host``,
``commit`` and ``dirty`` (git, or $RETHINK_COMMIT / $RETHINK_DIRTY), ``pieces`` (per piece run:
id, title, status, wall_s, trained, stored) and ``files`` (per member: path, sha256, bytes,
kind: ``cell`` a cell of a piece run, ``upstream`` the record of an upstream network a piece
trained because the store had none, ``retrain`` a retrained-vs-stored comparison, ``piece-log``,
``benchmark``).

``merge`` validates everything before writing anything: a readable archive of regular files
with a manifest of this schema; every member listed with its checksum and every listed file
present; every path ``results/<experiment>/<key>.json`` of a known experiment (or the benchmark
file), never leaving those folders; every record's ``experiment`` and ``key`` equal to its path and
``key == config_key(config)``; provenance with profile, device, commit and wall time. A record
whose key is already in the store is skipped if it is the same (same config, same result apart
from wall-clock times), and is
a conflict if it differs (the bundle is refused, naming them, unless ``skip_conflicts``), except
an ``upstream`` record: the store's copy is kept (a retrained network differs a little).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import posixpath
import re
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths as _paths
from .results.store import config_key, device_description, git_commit

SCHEMA = "rethink-pieces-bundle/1"
KINDS = ("cell", "upstream", "retrain", "piece-log", "benchmark")
SIDE_EXPERIMENTS = ("retrains", "pieces")   # written by pieces besides the chapters' own
_RECORD_PATH = re.compile(r"^results/([a-z0-9_]+)/([0-9a-f]{16})\.json$")
_BENCH_PATH = re.compile(r"^benchmarks/results/suite-[a-z]+-[a-z0-9]+\.json$")


class BundleError(ValueError):
    """A bundle is unreadable, foreign or inconsistent (one line: the file, the problem, the fix)."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ writing


class StoreWatcher:
    """The store's files added or changed since the last look (JSON records only)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.seen = self._scan()

    def _scan(self) -> dict[str, tuple[int, int]]:
        if not self.root.exists():
            return {}
        out = {}
        for p in self.root.glob("*/*.json"):
            st = p.stat()
            out[p.relative_to(self.root).as_posix()] = (st.st_size, st.st_mtime_ns)
        return out

    def added(self) -> list[tuple[str, bytes]]:
        now = self._scan()
        new = [rel for rel, stat in sorted(now.items()) if self.seen.get(rel) != stat]
        self.seen = now
        return [(rel, (self.root / rel).read_bytes()) for rel in new]


class BundleWriter:
    """Collects files and (re)writes the bundle atomically after each change."""

    def __init__(self, path: Path, *, profile: str, budget_s: float):
        self.path = Path(path)
        self.files: dict[str, tuple[bytes, str]] = {}
        self.pieces: list[dict] = []
        self.started = time.monotonic()
        self.meta = {"schema": SCHEMA, "profile": profile, "budget_s": budget_s, "created": _now(),
                     "device": device_description(), "host": socket.gethostname(), **git_commit()}
        self.complete = False

    def add(self, rel: str, data: bytes, kind: str) -> None:
        assert kind in KINDS, kind
        self.files[rel] = (data, kind)

    def note_piece(self, row: dict) -> None:
        self.pieces.append({k: row.get(k) for k in ("id", "title", "status", "wall_s", "trained", "stored", "error")})

    def manifest(self) -> dict:
        return {**self.meta, "complete": self.complete, "wall_s": round(time.monotonic() - self.started, 3),
                "pieces": self.pieces,
                "files": [{"path": rel, "sha256": _sha(data), "bytes": len(data), "kind": kind}
                          for rel, (data, kind) in sorted(self.files.items())]}

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tf:
                members = [("manifest.json", json.dumps(self.manifest(), indent=1).encode())]
                members += [(rel, data) for rel, (data, _) in sorted(self.files.items())]
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                    tf.addfile(info, io.BytesIO(data))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def finish(self) -> None:
        self.complete = True
        self.write()

    def describe(self) -> str:
        kinds = [kind for _, kind in self.files.values()]
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in KINDS if kinds.count(k))
        return f"{len(kinds)} files: {counts}" if kinds else "no files"


# ------------------------------------------------------------------ reading and merging


@dataclass
class Bundle:
    path: Path
    manifest: dict
    files: dict[str, bytes]                               # member path -> bytes
    kinds: dict[str, str] = field(default_factory=dict)   # member path -> kind


def read_bundle(path: str | os.PathLike) -> Bundle:
    """The bundle at ``path``, checked as an archive (members, manifest, checksums)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise BundleError(f"{where}: no such file (give the path of a bundle written by "
                          "`python -m rethink.book piece`)")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tf:
            for m in tf.getmembers():
                name = m.name
                if not m.isfile():
                    raise BundleError(f"{where}: member {name!r} is not a regular file (links and folders are "
                                      "refused): not a bundle written by `rethink.book piece`")
                norm = posixpath.normpath(name)
                if name.startswith("/") or norm != name or norm.startswith("../") or norm == "..":
                    raise BundleError(f"{where}: member {name!r} is not a plain relative path inside the "
                                      "repository (absolute, '..' or not normalised): refused")
                if name in files:
                    raise BundleError(f"{where}: member {name!r} appears twice: refused")
                files[name] = tf.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{where}: not a readable .tar.gz bundle ({type(e).__name__}: {e}); the file is "
                          "truncated or corrupted: copy it again or re-run the piece") from None
    if "manifest.json" not in files:
        raise BundleError(f"{where}: no manifest.json: not a bundle written by `python -m rethink.book piece`")
    try:
        manifest = json.loads(files.pop("manifest.json"))
    except ValueError as e:
        raise BundleError(f"{where}: manifest.json is not JSON ({e}): the bundle is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{where}: manifest schema {got!r}, expected {SCHEMA!r}: not a bundle of this book "
                          "(or of another version: merge it with the code that wrote it)")
    for key in ("profile", "device", "commit", "files"):
        if key not in manifest:
            raise BundleError(f"{where}: manifest.json lacks {key!r}: the bundle is corrupted or foreign")
    listed = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not {"path", "sha256", "kind"} <= set(entry):
            raise BundleError(f"{where}: manifest.json has a malformed file entry {entry!r}")
        if entry["kind"] not in KINDS:
            raise BundleError(f"{where}: {entry['path']}: unknown kind {entry['kind']!r} (known: {', '.join(KINDS)})")
        listed[entry["path"]] = entry
    for name in files:
        if name not in listed:
            raise BundleError(f"{where}: member {name} is not in manifest.json: the bundle was altered; refused")
    for name, entry in listed.items():
        if name not in files:
            raise BundleError(f"{where}: {name} is listed in manifest.json but missing: the bundle is incomplete")
        if _sha(files[name]) != entry["sha256"]:
            raise BundleError(f"{where}: {name}: checksum differs from manifest.json: the file was altered or "
                              "corrupted; copy the bundle again or re-run the piece")
    return Bundle(path, manifest, files, {n: e["kind"] for n, e in listed.items()})


def known_experiments() -> set[str]:
    from .experiments import REGISTRY
    return set(REGISTRY) | set(SIDE_EXPERIMENTS)


def check_record(where: str, name: str, data: bytes, known: set[str]) -> dict:
    """A record member, parsed and checked against its path (raises BundleError)."""
    m = _RECORD_PATH.match(name)
    if not m:
        raise BundleError(f"{where}: {name}: not a results-store path results/<experiment>/<16 hex>.json: refused")
    exp, key = m.groups()
    if exp not in known:
        raise BundleError(f"{where}: {name}: unknown experiment {exp!r} (known: {', '.join(sorted(known))}): refused")
    try:
        rec = json.loads(data)
    except ValueError as e:
        raise BundleError(f"{where}: {name}: not JSON ({e})") from None
    if not isinstance(rec, dict) or not {"experiment", "key", "config", "result", "provenance"} <= set(rec):
        raise BundleError(f"{where}: {name}: not a results-store record (needs experiment, key, config, result, "
                          "provenance)")
    if rec["experiment"] != exp or rec["key"] != key:
        raise BundleError(f"{where}: {name}: the record says {rec['experiment']}/{rec['key']}, its path says "
                          f"{exp}/{key}: refused")
    if config_key(rec["config"]) != key:
        raise BundleError(f"{where}: {name}: key {key} is not config_key(config) = {config_key(rec['config'])}: "
                          "the record was edited or comes from other code; refused")
    prov = rec["provenance"]
    lacking = [k for k in ("profile", "device", "commit", "wall_time_s") if not isinstance(prov, dict) or k not in prov]
    if lacking:
        raise BundleError(f"{where}: {name}: provenance lacks {', '.join(lacking)}: refused")
    return rec


def untimed(obj):
    """A result without its wall-clock numbers (keys ending in ``_s``, or holding ``time`` or
    ``per_s``): what two runs of a deterministic cell share."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if not (k.endswith("_s") or "time" in k or "per_s" in k)}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def _same(a: dict, b: dict) -> bool:
    """The same cell with the same numbers (wall-clock times aside)."""
    return a.get("config") == b.get("config") and untimed(a.get("result")) == untimed(b.get("result"))


@dataclass
class MergeReport:
    added: list[tuple[str, str]] = field(default_factory=list)      # (path, description)
    same: list[str] = field(default_factory=list)                   # already in the store, same result
    kept: list[str] = field(default_factory=list)                   # upstream records: the store's copy kept
    conflicts: list[str] = field(default_factory=list)


def _describe(rec: dict) -> str:
    from . import experiments

    exp = rec["experiment"]
    try:
        if exp in experiments.REGISTRY:
            return re.sub(r"\s+", " ", experiments.get(exp).describe(rec["config"])).strip()
    except Exception:   # noqa: BLE001 - a description only
        pass
    c = rec["config"]
    if exp == "pieces":
        return f"piece {c.get('piece')} ({rec['result'].get('status')}, {rec['result'].get('wall_s', 0) / 60:.1f} min)"
    if exp == "retrains":
        return f"{c.get('experiment')}/{c.get('key')}: retrained {rec['result'].get('metric')} " \
               f"difference {rec['result'].get('difference')}"
    return ""


def merge(path: str | os.PathLike, *, store_root: Path | None = None, bench_dir: Path | None = None,
          skip_conflicts: bool = False, dry_run: bool = False) -> MergeReport:
    """Validate the bundle at ``path`` and copy its files into the store (``store_root``, default
    the results store) and ``bench_dir`` (default benchmarks/); nothing is written unless all is
    valid and, without ``skip_conflicts``, free of conflicts."""
    bundle = read_bundle(path)
    where = str(bundle.path)
    store_root = Path(store_root or _paths.results_root())
    bench_dir = Path(bench_dir or _paths.REPO_ROOT / "benchmarks")
    known = known_experiments()
    report = MergeReport()
    writes: list[tuple[Path, bytes]] = []
    for name, data in sorted(bundle.files.items()):
        kind = bundle.kinds[name]
        if kind == "benchmark":
            if not _BENCH_PATH.match(name):
                raise BundleError(f"{where}: {name}: a benchmark file must be benchmarks/results/suite-<size>-<device>"
                                  ".json: refused")
            try:
                doc = json.loads(data)
            except ValueError as e:
                raise BundleError(f"{where}: {name}: not JSON ({e})") from None
            if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("rethink-benchmark-suite/"):
                raise BundleError(f"{where}: {name}: not a benchmark-suite file (schema {doc.get('schema')!r})")
            target = bench_dir / "results" / Path(name).name
            if target.exists() and target.read_bytes() != data:
                report.conflicts.append(f"{name}: a different file of that name is already in {target.parent}")
                continue
            if target.exists():
                report.same.append(name)
                continue
            writes.append((target, data))
            report.added.append((name, f"benchmark suite on {doc.get('device')}"))
            continue
        rec = check_record(where, name, data, known)
        target = store_root / rec["experiment"] / f"{rec['key']}.json"
        if target.exists():
            try:
                old = json.loads(target.read_text())
            except ValueError:
                old = None
            if old is not None and _same(old, rec):
                report.same.append(name)
            elif kind == "upstream":
                report.kept.append(name)
            else:
                report.conflicts.append(f"{name}: the store has a different record with this key ({_describe(rec)})")
            continue
        writes.append((target, data))
        report.added.append((name, _describe(rec)))
    if report.conflicts and not skip_conflicts:
        raise BundleError(f"{where}: {len(report.conflicts)} record(s) differ from the store's: "
                          f"{'; '.join(report.conflicts[:3])}{' ...' if len(report.conflicts) > 3 else ''}; "
                          "nothing merged (--skip-conflicts keeps the store's and adds the rest)")
    if not dry_run:
        from .results.store import atomic_write_text

        for target, data in writes:
            atomic_write_text(target, data.decode())
    return report
