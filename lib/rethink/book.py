"""The book runner: execute the MyST notebooks at a profile, promote them, build the HTML.

    python -m rethink.book run --profile smoke [--notebooks 01_zoo ...] [-p key=value ...]
    python -m rethink.book build
    python -m rethink.book all --profile smoke        # run, then build

``run``
    1. validates the profile and overrides against every notebook's ``parameters``
       cell (rethink.profiles) before anything executes;
    2. converts ``notebooks/<stem>.md`` (MyST, jupytext) to .ipynb, injects the
       parameters (always including ``profile``) and executes it with papermill,
       kernel ``python3``, working directory = the repository root, with
       ``lib/`` prepended to PYTHONPATH (a fallback if rethink is not pip-installed);
    3. writes the executed notebook to ``build/executed/<profile>/<stem>.ipynb`` with
       ``metadata.rethink = {profile, commit, dirty, executed_at, device, parameters,
       wall_time_s}`` and a provenance note under its title;
    4. promotes it to ``book/executed/<stem>.ipynb`` (committed to git) if its profile
       ranks at least as high as the one already there (``PROFILE_RANK``), or always
       with ``--force-promote``, and updates ``book/executed/manifest.json``.
    Aggregate pages (front matter ``rethink_aggregate: true``, e.g. the verdict table)
    are re-run after every selection and always promoted: they are rebuilt from the
    results store, whose records carry their own profiles.
    A failing cell makes the run exit non-zero, naming the notebook and the cell; the
    other notebooks still run, and nothing failing is promoted.

``build``
    regenerates the status pages (book/executed/status.md from the manifest,
    book/executed/benchmarks.md from benchmarks/results/*.json) and runs
    ``jupyter-book build --all -W`` (warnings are errors) into ``_build/html``.
    Chapters whose executed notebook is missing are left out of a filtered copy of
    ``_toc.yml`` (listed as such), so the book builds before everything has been run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import profiles as _profiles
from .paths import REPO_ROOT
from .results.store import PROFILE_RANK, atomic_write_text, device_description, git_commit

BOOK_DIR = REPO_ROOT / "book"
BUILD_DIR = REPO_ROOT / "build"
KERNEL = "python3"
PROVENANCE_TAG = "rethink-provenance"


# --------------------------------------------------------------------------- helpers

def detect_profile() -> str:
    """``full`` if torch sees a GPU, else ``smoke``."""
    try:
        import torch
        return "full" if torch.cuda.is_available() else "smoke"
    except ImportError:
        return "smoke"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_aggregate(md_path: Path) -> bool:
    import jupytext
    return bool(jupytext.read(md_path).metadata.get("rethink_aggregate"))


def notebook_profile(path: Path) -> str | None:
    """The profile recorded in an executed notebook's metadata (None if absent/unreadable)."""
    import nbformat
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return None
    return (nb.metadata.get("rethink") or {}).get("profile")


def provenance_markdown(meta: dict, aggregate: bool = False) -> str:
    prof, dev = meta["profile"], meta["device"]
    commit = (meta.get("commit") or "unknown")[:10] + (" (with uncommitted changes)" if meta.get("dirty") else "")
    where = f"with the `{prof}` profile on `{dev}`, commit `{commit}`, {meta['executed_at']}"
    if aggregate:
        return ("```{note}\nThis page was rebuilt from the results store " + where +
                ". Each row states the profile its numbers come from.\n```")
    if prof in ("full", "paper"):
        return ("```{admonition} GPU\n:class: warning\n"
                f"This page was rendered {where}, from results-store records whose own "
                "provenance (training device, commit, seeds, wall time) is stated beside each "
                "table. Re-running the training at this profile needs "
                + ("one GPU" if prof == "full" else "several GPUs")
                + "; the `small` profile runs on a laptop CPU in minutes (see "
                "[How to reproduce](../reproduce.md)).\n```")
    return ("```{note}\nThis page was executed " + where + ". The `" + prof + "` profile runs "
            "tiny configurations that test the pipeline: its numbers say nothing about the "
            "claims. See [How to reproduce](../reproduce.md) for the `full` profile.\n```")


def _insert_provenance(nb, meta: dict, aggregate: bool) -> None:
    import nbformat
    nb.cells = [c for c in nb.cells if PROVENANCE_TAG not in c.get("metadata", {}).get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(provenance_markdown(meta, aggregate))
    cell.metadata["tags"] = [PROVENANCE_TAG]
    at = 0
    for i, c in enumerate(nb.cells):
        if c.cell_type == "markdown" and any(line.startswith("# ") for line in c.source.splitlines()):
            at = i + 1
            break
    nb.cells.insert(at, cell)


def coalesce_streams(nb) -> None:
    """Merge consecutive stdout/stderr outputs and apply carriage returns (progress bars),
    keeping what a terminal would finally show: smaller committed notebooks, cleaner pages."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for out in cell.get("outputs", []):
            if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                    and merged[-1].name == out.name):
                merged[-1].text += out.text
            else:
                merged.append(out)
        for out in merged:
            if out.output_type == "stream" and "\r" in out.text:
                out.text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1]
                                     for line in out.text.replace("\r\n", "\n").split("\n"))
        cell.outputs = merged


# --------------------------------------------------------------------------- run

@dataclass
class Outcome:
    stem: str
    ok: bool
    executed: Path | None = None
    promoted: bool = False
    message: str = ""
    wall_time_s: float = 0.0


@dataclass
class RunReport:
    profile: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def execute_notebook(stem: str, md_path: Path, parameters: dict, *, profile: str,
                     build_dir: Path | None = None, cwd: Path = REPO_ROOT) -> Outcome:
    """Convert, parameterise and execute one notebook into build_dir/executed/<profile>/<stem>.ipynb."""
    import jupytext
    import nbformat
    import papermill as pm

    build_dir = Path(build_dir or BUILD_DIR)
    out_dir = build_dir / "executed" / profile
    src_dir = build_dir / "source"
    out_dir.mkdir(parents=True, exist_ok=True)
    src_dir.mkdir(parents=True, exist_ok=True)
    src, out = src_dir / f"{stem}.ipynb", out_dir / f"{stem}.ipynb"
    nb = jupytext.read(md_path)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    jupytext.write(nb, src, fmt="ipynb")

    lib = str(REPO_ROOT / "lib")
    pp = os.environ.get("PYTHONPATH", "")
    if lib not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = lib + (os.pathsep + pp if pp else "")
    os.environ.setdefault("RETHINK_PROFILE", profile)

    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name=KERNEL,
                            cwd=str(cwd), progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as e:
        first = next((line for line in (e.source or "").splitlines() if line.strip()), "")
        shown = md_path.relative_to(REPO_ROOT) if md_path.is_relative_to(REPO_ROOT) else md_path
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        where = f"In[{e.exec_count}] of the executed notebook"
        if e.source in code:
            k = code.index(e.source) + 1
            lines = md_path.read_text().splitlines()
            fences = [i for i, text in enumerate(lines) if text.startswith("```{code-cell}")]
            start = fences[k - 1] if len(fences) >= k else 0
            line = next((i for i, text in enumerate(lines[start:], start + 1)
                         if first and text.strip() == first.strip()), None)
            where = f"code cell {k}" + (f" (line {line})" if line else "") + f", {where}"
        msg = (f"notebook {stem} ({shown}) failed in {where}, starting {first!r}: "
               f"{e.ename}: {e.evalue}\n  partial output: {out}")
        return Outcome(stem, False, out, message=msg, wall_time_s=time.perf_counter() - t0)
    wall = time.perf_counter() - t0

    executed = nbformat.read(out, as_version=4)
    meta = {**git_commit(), "profile": profile, "executed_at": _now(), "device": device_description(),
            "parameters": parameters, "wall_time_s": round(wall, 1), "source": f"notebooks/{md_path.name}"}
    executed.metadata["rethink"] = meta
    executed.metadata.pop("rethink_aggregate", None)
    coalesce_streams(executed)
    aggregate = is_aggregate(md_path)
    for c in executed.cells:   # the parameters are in the metadata and the injected cell
        tags = c.metadata.setdefault("tags", [])
        if "parameters" in tags or ("injected-parameters" in tags and aggregate):
            tags.append("remove-cell" if aggregate else "hide-input")
    _insert_provenance(executed, meta, aggregate)
    nbformat.write(executed, out)
    return Outcome(stem, True, out, message=f"executed in {wall:.1f}s", wall_time_s=wall)


def promote(executed: Path, book_dir: Path | None = None, *, force: bool = False,
            aggregate: bool = False) -> tuple[bool, str]:
    """Copy an executed notebook to book_dir/executed/ if its profile ranks >= the one there."""
    book_dir = Path(book_dir or BOOK_DIR)
    dest_dir = book_dir / "executed"
    dest = dest_dir / executed.name
    new = notebook_profile(executed)
    if new not in PROFILE_RANK:
        return False, f"not promoted: {executed} has no rethink profile metadata"
    old = notebook_profile(dest) if dest.exists() else None
    if dest.exists() and not (force or aggregate):
        if PROFILE_RANK[new] < PROFILE_RANK.get(old, -1):
            return False, (f"not promoted: book has {executed.stem} at profile {old!r}, "
                           f"which ranks above {new!r} (use --force-promote)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".ipynb.tmp")
    shutil.copyfile(executed, tmp)
    os.replace(tmp, dest)
    update_manifest(book_dir)
    return True, f"promoted to {dest} (profile {new}" + (f", replacing {old}" if old else "") + ")"


def update_manifest(book_dir: Path | None = None) -> dict:
    """book/executed/manifest.json: stem -> the provenance of the promoted notebook."""
    import nbformat
    dest_dir = Path(book_dir or BOOK_DIR) / "executed"
    manifest = {}
    for p in sorted(dest_dir.glob("*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        meta = dict(nb.metadata.get("rethink") or {})
        meta.pop("parameters", None)
        title = next((line[2:].strip() for c in nb.cells if c.cell_type == "markdown"
                      for line in c.source.splitlines() if line.startswith("# ")), p.stem)
        manifest[p.stem] = {"title": title, **meta}
    atomic_write_text(dest_dir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def run(profile: str, notebooks: list[str] | None = None, overrides: list[str] | None = None, *,
        force_promote: bool = False, promote_results: bool = True, book_dir: Path | None = None,
        build_dir: Path | None = None, notebooks_dir: Path | None = None,
        profiles_dir: Path | None = None, log=print) -> RunReport:
    """Validate everything, then execute (and promote) the selected notebooks in stem order."""
    nbs = _profiles.notebook_paths(notebooks_dir)
    selected = list(notebooks) if notebooks else list(nbs)
    aggregates = [s for s, p in nbs.items() if is_aggregate(p)]
    selected += [s for s in aggregates if s not in selected]
    plan = _profiles.resolve(profile, selected, _profiles.parse_overrides(overrides),
                             notebooks_dir=notebooks_dir, profiles_dir=profiles_dir)
    order = sorted(selected, key=lambda s: (s in aggregates, s))
    report = RunReport(profile)
    for stem in order:
        log(f"[{stem}] executing at profile {profile} with {plan.parameters[stem]}", flush=True)
        o = execute_notebook(stem, plan.paths[stem], plan.parameters[stem], profile=profile,
                             build_dir=build_dir)
        if o.ok and promote_results:
            o.promoted, why = promote(o.executed, book_dir, force=force_promote,
                                      aggregate=stem in aggregates)
            o.message += "; " + why
        log(f"[{stem}] {'ok' if o.ok else 'FAILED'}: {o.message}", flush=True)
        report.outcomes.append(o)
    return report


# --------------------------------------------------------------------------- build

def status_markdown(manifest: dict) -> str:
    if not manifest:
        return ("No chapter has been executed yet: run `make book` (or "
                "`python -m rethink.book run --profile smoke`) first.\n")
    lines = ["| page | profile | rendered on | executed | commit |", "|---|---|---|---|---|"]
    for stem, m in sorted(manifest.items()):
        lines.append(f"| {m.get('title', stem)} | `{m.get('profile', '?')}` | {m.get('device', '?')} | "
                     f"{m.get('executed_at', '?')} | `{(m.get('commit') or '?')[:10]}` |")
    lines.append("\nA page re-rendered from the results store runs no training: where its "
                 "networks were trained (device, commit, seeds, wall time) is stated on the page, "
                 "beside the tables those records fill.")
    return "\n".join(lines) + "\n"


def benchmarks_markdown(bench_dir: Path, chart_dir: Path | None = None) -> str:
    """Tables of benchmarks/results/*.json (and, with chart_dir, its speed-up chart); see rethink.benchmarks_page."""
    from .benchmarks_page import benchmarks_markdown as render
    return render(Path(bench_dir), chart_dir)


def write_status_pages(book_dir: Path = BOOK_DIR, bench_dir: Path = REPO_ROOT / "benchmarks") -> None:
    dest = Path(book_dir) / "executed"
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((dest / "manifest.json").read_text()) if (dest / "manifest.json").exists() else {}
    atomic_write_text(dest / "status.md", status_markdown(manifest))
    atomic_write_text(dest / "benchmarks.md", benchmarks_markdown(Path(bench_dir), dest))


def _toc_file_exists(root: Path, entry: str) -> bool:
    p = root / entry
    return p.exists() or any(p.with_suffix(s).exists() for s in (".md", ".ipynb", ".rst"))


def filtered_toc(root: Path) -> tuple[dict, list[str]]:
    """_toc.yml without entries whose file is missing; also returns the missing entries."""
    import yaml
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    missing: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("parts", "chapters", "sections"):
                if key in node:
                    kept = []
                    for child in node[key]:
                        if isinstance(child, dict) and "file" in child and not _toc_file_exists(root, child["file"]):
                            missing.append(child["file"])
                            continue
                        walk(child)
                        kept.append(child)
                    node[key] = kept
            if "parts" in node:
                node["parts"] = [p for p in node["parts"] if p.get("chapters")]
    walk(toc)
    return toc, missing


def build(root: Path = REPO_ROOT, output: Path | None = None, *, book_dir: Path | None = None,
          bench_dir: Path | None = None, log=print) -> int:
    """jupyter-book build <root> -W --all into <output>/_build/html; returns the exit status."""
    import yaml
    root = Path(root)
    write_status_pages(book_dir or root / "book", bench_dir or root / "benchmarks")
    cmd = [_jupyter_book(), "build", str(root), "--all", "-W", "--keep-going"]
    if output:
        cmd += ["--path-output", str(output)]
    toc, missing = filtered_toc(root)
    if missing:
        log("not executed yet, left out of this build: " + ", ".join(missing), flush=True)
        tmp_toc = root / "build" / "_toc.filtered.yml"
        tmp_toc.parent.mkdir(parents=True, exist_ok=True)
        tmp_toc.write_text(yaml.safe_dump(toc, sort_keys=False))
        cmd += ["--toc", str(tmp_toc)]
    log("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=root).returncode


def _jupyter_book() -> str:
    here = Path(sys.executable).parent / "jupyter-book"
    return str(here) if here.exists() else (shutil.which("jupyter-book") or "jupyter-book")


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rethink.book", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "all"):
        s = sub.add_parser(name, help="execute notebooks" + (" then build the HTML" if name == "all" else ""))
        s.add_argument("--profile", default="auto",
                       help="smoke, small, full, paper (default auto: full with a GPU, else smoke)")
        s.add_argument("--notebooks", nargs="+", metavar="STEM", help="e.g. 01_zoo (default: all)")
        s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter (YAML value); STEM.KEY=VALUE for one notebook")
        s.add_argument("--force-promote", action="store_true",
                       help="promote to book/executed even over a higher-ranked profile")
        s.add_argument("--no-promote", action="store_true", help="leave book/executed alone")
    sub.add_parser("build", help="build the HTML book with jupyter-book -W into _build/html")
    sub.add_parser("profiles", help="validate every profile against every notebook")
    args = p.parse_args(argv)

    if args.cmd == "profiles":
        try:
            names = _profiles.validate_all()
        except _profiles.ProfileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("valid profiles: " + ", ".join(names))
        return 0
    if args.cmd in ("run", "all"):
        profile = detect_profile() if args.profile == "auto" else args.profile
        try:
            report = run(profile, args.notebooks, args.param, force_promote=args.force_promote,
                         promote_results=not args.no_promote)
        except _profiles.ProfileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        failed = [o for o in report.outcomes if not o.ok]
        for o in failed:
            print(f"error: {o.message}", file=sys.stderr)
        if failed:
            return 1
        print(f"{len(report.outcomes)} notebook(s) executed at profile {profile}")
    if args.cmd in ("build", "all"):
        return build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
