"""Re-key committed records when the config schema gains fields that do not change what ran.

    python -m rethink.results.migrate --dry-run      # what would change
    python -m rethink.results.migrate                # rewrite results/ in place

A migration is honest only where the training semantics did not change: it adds the fields
the code now puts in every config (``version``, ``data``) with the values that describe
what actually ran, and records the old key in the provenance (``migrated_from``). Records
of experiments whose semantics changed (their module's VERSION was bumped) are not
migrated: they are removed, and their cells run again.

Migration 1 (this book's records up to the protocol of issue 13): every record here was
made from the book's local dataset mirrors (the only copies the sessions that made them
had), so ``data`` names those archives.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .store import ResultsStore, atomic_write_text, config_key

# experiment -> the version its old records are (None: semantics changed, not migrated)
MIGRATE_1 = {"zoo": 1, "transfer": 1, "detection": None, "noisy_student": None, "robustness": None}
MIRRORS = {"tiny-imagenet": "tiny-imagenet-200-sub400.tar.gz", "cifar10": "cifar10-jpg.tar.gz",
           "imagenette": "imagenette2-64.tar.gz", "clothing": "clothing-small-64.tar.gz", "coco128": "coco128.tar.gz"}


def mirror_id(name: str) -> str:
    from ..data.registry import get_spec

    spec = get_spec(name)
    archive = spec.mirror
    if archive is None or archive.filename != MIRRORS[name]:
        raise ValueError(f"no mirror archive {MIRRORS[name]} registered for {name}")
    return f"{archive.filename}:{(archive.digest or 'unverified').split(':')[-1][:12]}"


def zoo_config(config: dict) -> dict:
    if "version" in config:
        return config
    return {**config, "version": 1, "data": {"tiny-imagenet": mirror_id("tiny-imagenet")}}


def transfer_config(config: dict) -> dict:
    if "version" in config:
        return config
    from ..experiments.transfer import TARGET_DATA

    out = dict(config)
    if "source" in out:
        out["source"] = zoo_config(out["source"])
    target = TARGET_DATA.get(out["target"])
    return {**out, "version": 1, "data": {target: mirror_id(target)} if target else {}}


CONVERT = {"zoo": zoo_config, "transfer": transfer_config}


def migrate(store: ResultsStore, *, dry_run: bool = False, log=print) -> dict:
    """Apply migration 1 to every record of the store; returns counts per experiment."""
    counts = {}
    for experiment, version in MIGRATE_1.items():
        d = store.root / experiment
        if not d.exists():
            continue
        moved = removed = kept = 0
        for path in sorted(d.glob("*.json")):
            record = json.loads(path.read_text())
            if "version" in record["config"]:
                kept += 1
                continue
            if version is None:
                removed += 1
                if not dry_run:
                    path.unlink()
                continue
            new = CONVERT[experiment](record["config"])
            key = config_key(new)
            prov = {**record.get("provenance", {}), "migrated_from": record["key"],
                    "migration": "rethink.results.migrate 1: version and data ids added"}
            moved += 1
            if not dry_run:
                out = {**record, "key": key, "config": new, "provenance": prov}
                atomic_write_text(d / f"{key}.json", json.dumps(out, indent=1, default=float) + "\n")
                if key != path.stem:
                    path.unlink()
        counts[experiment] = {"migrated": moved, "removed": removed, "already current": kept}
        log(f"{experiment}: {moved} migrated, {removed} removed (semantics changed), {kept} already current")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rethink.results.migrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--root", default=None, help="results store (default: $RETHINK_RESULTS or results/)")
    args = ap.parse_args(argv)
    migrate(ResultsStore(args.root), dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
