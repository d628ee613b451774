"""The book runner: execute the MyST notebooks at a profile, promote them, build the HTML.

    python -m rethink.book run --profile smoke [--notebooks 01_zoo ...] [-p key=value ...]
    python -m rethink.book run --stale              # only pages that are missing or stale
    python -m rethink.book status                   # which pages are fresh, stale or missing
    python -m rethink.book prepare --profile small --notebooks 03_noisy_student   # for JupyterLab
    python -m rethink.book build
    python -m rethink.book all --profile smoke        # run, then build
    python -m rethink.book plan --profile full        # the book in self-contained pieces (rethink.pieces)
    python -m rethink.book piece --profile full --next --budget 8m --out bundle.tar.gz
    python -m rethink.book merge bundle.tar.gz        # its records into the results store (rethink.bundle)

``run``
    1. validates the profile and overrides against every notebook's ``parameters``
       cell (rethink.profiles) before anything executes;
    2. decides, per notebook, where the run writes. A run at a profile ranked at least
       as high as the committed page's (``PROFILE_RANK``; a missing page ranks lowest),
       or with ``--force-promote``, writes records into the results store
       (``paths.results_root()``: ``results/`` or ``$RETHINK_RESULTS``) and promotes the
       page. A run *below* the committed page's profile is a scratch run: its records go
       to ``build/results-<profile>/`` (seeded with a copy of the store's records, so
       chapters that read another chapter's records find them) and its page stays in the
       build folder; the store and ``book/executed/`` are left alone;
    3. converts ``notebooks/<stem>.md`` (MyST, jupytext) to .ipynb, injects the
       parameters (always including ``profile``) and executes it with papermill,
       kernel ``python3``, working directory = the repository root, with
       ``lib/`` prepended to PYTHONPATH (a fallback if rethink is not pip-installed),
       the kernel's log quiet and tqdm's bars off in it (``kernel_env``), printing each
       code cell's progress (cell i/N, elapsed time);
    4. writes the executed notebook to ``build/executed/<profile>/<stem>.ipynb`` with
       ``metadata.rethink = {profile, commit, dirty, executed_at, device, parameters,
       wall_time_s, source, source_sha256}`` and a provenance note under its title;
    5. promotes it to ``book/executed/<stem>.ipynb`` (committed to git) when step 2 said
       so, and updates ``book/executed/manifest.json``.
    Aggregate pages (front matter ``rethink_aggregate: true``, e.g. the verdict table)
    are re-rendered from the results store after the chapters when the run wrote into
    the store (or, run alone, when it is at or above the committed page's profile);
    after a scratch run they are rendered from the scratch store into the build folder.
    ``--stale`` selects only the pages that are missing or stale (``page_state``) and
    skips a stale page whose committed profile ranks above the run's, naming the command
    that re-renders it.
    A failing cell makes the run exit non-zero, naming the notebook and the cell; the
    other notebooks still run, and nothing failing is promoted. The run ends with a
    summary: each notebook, ok/failed, promoted or why not, its time.

A page is *stale* when the notebook it was executed from has changed since: the hash
of ``notebooks/<stem>.md``'s cells and metadata (``source_hash``: cell types, sources,
tags and options; not jupytext's header, so pairing or re-saving does not count) differs
from the page's, or the parameters its profile now resolves to differ from those it
was executed with (``profiles/<profile>.yaml`` changed). The library code and the
records a page reads are not hashed: a library change would make every page stale on
every commit, and the page's commit is in the manifest.

``build``
    regenerates the status pages (book/executed/status.md from the manifest,
    book/executed/benchmarks.md from benchmarks/results/*.json; both generated, not
    committed), warns (one line per page) about stale pages, and runs
    ``jupyter-book build --all -W`` (warnings are errors) into ``_build/html``.
    Chapters whose executed notebook is missing are left out of a filtered copy of
    ``_toc.yml`` (listed as such), so the book builds before everything has been run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths as _paths
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


def _read_meta(path: Path) -> dict | None:
    """``metadata.rethink`` of an executed notebook, read as plain JSON (None if absent)."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    meta = (nb.get("metadata") or {}).get("rethink")
    return meta if isinstance(meta, dict) else None


# --------------------------------------------------------------------------- page state

def source_hash(source: str | Path) -> str:
    """SHA-256 of what a page is made from: the notebook's cells (type, source, metadata
    such as tags and options) and its metadata, without jupytext's header (``formats``,
    versions) and the kernelspec (the runner sets it). ``source`` is a path to a MyST
    notebook or its text. Pairing it with an .ipynb or re-saving it from JupyterLab
    leaves the hash unchanged; editing a cell or a tag changes it."""
    import jupytext
    text = Path(source).read_text() if isinstance(source, Path) else source
    nb = jupytext.reads(text, fmt="md:myst")
    cells = [{"cell_type": c.cell_type, "source": c.source,
              "metadata": {k: v for k, v in c.metadata.items() if k != "id"}} for c in nb.cells]
    meta = {k: v for k, v in nb.metadata.items() if k not in ("jupytext", "kernelspec")}
    blob = json.dumps({"cells": cells, "metadata": meta}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _source_hash_at(commit: str, source: str) -> str | None:
    """The source hash of ``source`` (repository-relative) as committed at ``commit``."""
    try:
        out = subprocess.run(["git", "show", f"{commit}:{source}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return source_hash(out.stdout) if out.returncode == 0 else None


@dataclass
class PageState:
    """Where a committed page stands against its notebook.

    state: ``missing`` (no page), ``fresh``, ``stale`` (reasons say why) or ``unknown``
    (the page's source hash can be neither read nor recomputed from its commit)."""
    stem: str
    state: str
    profile: str | None = None
    reasons: list[str] = field(default_factory=list)
    page: Path | None = None

    def describe(self) -> str:
        if self.state == "missing":
            return f"{self.stem}: no page in book/executed/"
        head = f"{self.stem}: page at profile {self.profile!r} is {self.state}"
        return head + (": " + "; ".join(self.reasons) if self.reasons else "")


def page_state(stem: str, md_path: Path, book_dir: Path | None = None, *,
               profiles_dir: Path | None = None, notebooks_dir: Path | None = None) -> PageState:
    """Compare book_dir/executed/<stem>.ipynb with notebooks/<stem>.md and its profile.

    The page's ``source_sha256`` is compared with ``source_hash(md_path)``; a page executed
    before hashes were recorded is hashed from ``git show <its commit>:<its source>`` (when
    it was executed from a clean checkout). Its recorded parameters are compared with
    what its profile resolves to now."""
    page = Path(book_dir or BOOK_DIR) / "executed" / f"{stem}.ipynb"
    if not page.exists():
        return PageState(stem, "missing")
    meta = _read_meta(page) or {}
    prof = meta.get("profile")
    st = PageState(stem, "fresh", prof, page=page)
    recorded = meta.get("source_sha256")
    if not recorded and meta.get("commit") and meta.get("dirty") is False:
        recorded = _source_hash_at(meta["commit"], meta.get("source") or f"notebooks/{md_path.name}")
    if not recorded:
        st.state = "unknown"
        st.reasons.append("its source hash was not recorded and cannot be recomputed from its commit")
    elif recorded != source_hash(md_path):
        st.state = "stale"
        since = f" since commit {meta['commit'][:10]}" if meta.get("commit") else ""
        st.reasons.append(f"notebooks/{md_path.name} changed{since}")
    if prof in PROFILE_RANK and isinstance(meta.get("parameters"), dict):
        try:
            now = _profiles.resolve(prof, [stem], profiles_dir=profiles_dir,
                                    notebooks_dir=notebooks_dir).parameters[stem]
        except _profiles.ProfileError as e:
            st.reasons.append(f"parameters not compared: {e}")
        else:
            was = meta["parameters"]
            differ = sorted(k for k in set(now) | set(was) if now.get(k, "<unset>") != was.get(k, "<unset>"))
            if differ:
                st.state = "stale"
                st.reasons.append(f"profiles/{prof}.yaml now gives other values for "
                                  + ", ".join(differ[:6]) + (", ..." if len(differ) > 6 else ""))
    elif prof not in PROFILE_RANK:
        st.state = "stale"
        st.reasons.append("the page has no rethink profile metadata")
    return st


def page_states(book_dir: Path | None = None, *, notebooks_dir: Path | None = None,
                profiles_dir: Path | None = None) -> dict[str, PageState]:
    """page_state of every notebook, by stem."""
    return {stem: page_state(stem, md, book_dir, profiles_dir=profiles_dir, notebooks_dir=notebooks_dir)
            for stem, md in _profiles.notebook_paths(notebooks_dir).items()}


def provenance_markdown(meta: dict, aggregate: bool = False) -> str:
    prof, dev = meta["profile"], meta["device"]
    commit = (meta.get("commit") or "unknown")[:10] + (" (with uncommitted changes)" if meta.get("dirty") else "")
    where = f"with the `{prof}` profile on `{dev}`, commit `{commit}`, {meta['executed_at']}"
    if aggregate:
        return ("```{note}\nThis page was rebuilt from the results store " + where +
                ". Each row states the profile its numbers come from.\n```")
    if prof in ("full", "paper"):
        gpus = "one GPU" if prof == "full" else "several GPUs"
        if str(dev).startswith("cpu"):
            # the GPU profiles' networks are trained on a GPU; a CPU only re-renders their records
            said = (f"This page's networks were trained on the GPU with the `{prof}` profile (see "
                    "the records: their training device, commit, seeds and wall time are stated "
                    f"beside each table); the page was rendered on the CPU (`{dev}`), commit "
                    f"`{commit}`, {meta['executed_at']}, from those records.")
        else:
            said = (f"This page was rendered {where}, from results-store records whose own "
                    "provenance (training device, commit, seeds, wall time) is stated beside each "
                    "table.")
        return ("```{admonition} GPU\n:class: warning\n" + said +
                f" Re-running the training at this profile needs {gpus}; the `small` profile "
                "runs the pipeline on a laptop CPU in a few hours, below the claims' scale floors (see "
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

ENGINE = "rethink"
# The kernel's own log is noise in a runner's output: "Kernel is running over TCP without
# encryption" as each notebook starts, "KeyboardInterrupt caught in kernel" as it is shut
# down (jupyter_client interrupts a kernel before shutting it down). A failing cell is
# reported by nbclient, a kernel that dies by DeadKernelError, neither through this log.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


@dataclass
class Outcome:
    stem: str
    ok: bool
    executed: Path | None = None
    promoted: bool = False
    message: str = ""
    wall_time_s: float = 0.0
    skipped: bool = False   # not executed (--stale: up to date, or kept at a higher profile)
    scratch: bool = False   # executed against the scratch results store: never promoted
    why: str = ""           # "promoted ..." or why not: the summary's last column


@dataclass
class RunReport:
    profile: str
    outcomes: list[Outcome] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def summary(self) -> str:
        """Each notebook: ok / FAILED / skipped, its time, promoted or why not."""
        ran = [o for o in self.outcomes if not o.skipped]
        failed = [o for o in ran if not o.ok]
        head = (f"summary: profile {self.profile}, {len(ran)} executed"
                + (f", {len(failed)} failed" if failed else "")
                + f", {len(self.outcomes) - len(ran)} skipped, {_fmt_duration(self.wall_time_s)}")
        width = max([len(o.stem) for o in self.outcomes] + [4])
        lines = [head]
        for o in self.outcomes:
            status = "skipped" if o.skipped else ("ok" if o.ok else "FAILED")
            took = "" if o.skipped else _fmt_duration(o.wall_time_s)
            lines.append(f"  {o.stem:<{width}}  {status:<7}  {took:>7}  {o.why}")
        return "\n".join(lines)


def _fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class CellProgress:
    """Cell i/N and the elapsed time as a notebook's code cells run.

    On a terminal one line is rewritten in place (``\\r``) as each code cell starts and
    finishes; otherwise (a log file, CI) one line is written per code cell that took at
    least ``min_s`` seconds, and for the last one. N counts the code cells of the executed
    notebook, the injected parameters cell included."""

    def __init__(self, stem: str, stream=None, *, tty: bool | None = None, min_s: float = 1.0,
                 clock=time.perf_counter):
        self.stem, self.stream, self.min_s, self.clock = stem, stream or sys.stdout, min_s, clock
        self.tty = self.stream.isatty() if tty is None and hasattr(self.stream, "isatty") else bool(tty)
        self.t0 = clock()
        self.number: dict[int, int] = {}
        self.total = 0
        self._t_cell: float | None = None
        self._shown = 0

    def begin(self, nb) -> None:
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        self.number = {i: k for k, i in enumerate(code, 1)}
        self.total = len(code)
        self.t0 = self.clock()

    def _line(self, text: str, final: bool) -> None:
        if self.tty:
            pad = max(0, self._shown - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._shown = len(text)
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, cell, index) -> None:
        if index not in self.number:
            return
        self._t_cell = self.clock()
        self._line(f"[{self.stem}] cell {self.number[index]}/{self.total} running, "
                   f"{_fmt_duration(self._t_cell - self.t0)} elapsed", final=False)

    def complete(self, cell, index) -> None:
        if index not in self.number or self._t_cell is None:
            return
        now = self.clock()
        took, self._t_cell = now - self._t_cell, None
        k = self.number[index]
        self._line(f"[{self.stem}] cell {k}/{self.total} done in {_fmt_duration(took)}, "
                   f"{_fmt_duration(now - self.t0)} elapsed",
                   final=took >= self.min_s or k == self.total)

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


KERNEL_ENV_KEYS = ("RETHINK_RESULTS", "TQDM_DISABLE", "PYTHONWARNINGS", "OMP_NUM_THREADS")


def kernel_env(results_root: Path | None = None, profile: str | None = None) -> dict[str, str]:
    """What the runner adds to a notebook kernel's environment: the results store it writes
    to; no tqdm progress bars (a page shows a bar's last state as stderr output; set
    TQDM_DISABLE=0 to keep them); no "IProgress not found" warning (tqdm without ipywidgets);
    at ``smoke``, one intra-op thread (its tensors are tiny, and on a busy 2-core machine more
    threads only fight: a smoke detection step took 2.5x longer with two than with one),
    unless OMP_NUM_THREADS is set."""
    env = {"TQDM_DISABLE": os.environ.get("TQDM_DISABLE", "1")}
    if profile == "smoke" or os.environ.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or "1"
    if results_root is not None:
        env["RETHINK_RESULTS"] = str(results_root)
    quiet = "ignore:IProgress not found"
    warn = os.environ.get("PYTHONWARNINGS", "")
    env["PYTHONWARNINGS"] = warn if quiet in warn else ",".join(w for w in (warn, quiet) if w)
    return env


def _register_engine() -> str:
    """papermill's nbclient engine, calling a CellProgress (engine kwarg ``rethink_progress``)
    as cells start and finish."""
    from papermill.engines import NBClientEngine, papermill_engines

    class RethinkEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            hook = kwargs.pop("rethink_progress", None)
            if hook is not None:
                hook.begin(nb_man.nb)
                start, complete = nb_man.cell_start, nb_man.cell_complete

                def cell_start(cell, cell_index=None, **kw):
                    hook.start(cell, cell_index)
                    return start(cell, cell_index, **kw)

                def cell_complete(cell, cell_index=None, **kw):
                    out = complete(cell, cell_index, **kw)
                    hook.complete(cell, cell_index)
                    return out

                nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, RethinkEngine)
    return ENGINE


def execute_notebook(stem: str, md_path: Path, parameters: dict, *, profile: str,
                     build_dir: Path | None = None, cwd: Path = REPO_ROOT,
                     results_root: Path | None = None, progress: bool | CellProgress = True) -> Outcome:
    """Convert, parameterise and execute one notebook into build_dir/executed/<profile>/<stem>.ipynb.

    results_root: the results store the kernel writes to (``RETHINK_RESULTS`` for this
    notebook only; default: the current one). progress: print cell i/N as cells finish."""
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
    digest = source_hash(md_path)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    # an executed page is no longer paired with the .md it came from (jupytext would
    # otherwise write a .md beside it when it is opened and saved in JupyterLab)
    nb.metadata.get("jupytext", {}).pop("formats", None)
    jupytext.write(nb, src, fmt="ipynb")

    lib = str(REPO_ROOT / "lib")
    pp = os.environ.get("PYTHONPATH", "")
    if lib not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = lib + (os.pathsep + pp if pp else "")
    os.environ.setdefault("RETHINK_PROFILE", profile)
    saved_env = {k: os.environ.get(k) for k in KERNEL_ENV_KEYS}
    os.environ.update(kernel_env(results_root, profile))
    hook = progress if isinstance(progress, CellProgress) else (CellProgress(stem) if progress else None)
    engine_kwargs = {"rethink_progress": hook} if hook else {}

    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name=KERNEL,
                            engine_name=_register_engine(), cwd=str(cwd), progress_bar=False,
                            log_output=False, extra_arguments=list(KERNEL_ARGS), **engine_kwargs)
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
    except Exception as e:   # the kernel died, timed out or did not start: not a cell's error
        msg = (f"notebook {stem} (notebooks/{md_path.name}) did not finish: {type(e).__name__}: "
               f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}\n  partial output: {out}")
        return Outcome(stem, False, out, message=msg, wall_time_s=time.perf_counter() - t0)
    finally:
        if hook:
            hook.close()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    wall = time.perf_counter() - t0

    executed = nbformat.read(out, as_version=4)
    meta = {**git_commit(), "profile": profile, "executed_at": _now(), "device": device_description(),
            "parameters": parameters, "wall_time_s": round(wall, 1), "source": f"notebooks/{md_path.name}",
            "source_sha256": digest}
    executed.metadata["rethink"] = meta
    executed.metadata.pop("rethink_aggregate", None)
    executed.metadata.get("jupytext", {}).pop("formats", None)
    coalesce_streams(executed)
    aggregate = is_aggregate(md_path)
    for c in executed.cells:   # the parameters are in the metadata and the injected cell
        tags = c.metadata.setdefault("tags", [])
        if "parameters" in tags or ("injected-parameters" in tags and aggregate):
            tags.append("remove-cell" if aggregate else "hide-input")
    _insert_provenance(executed, meta, aggregate)
    nbformat.write(executed, out)
    return Outcome(stem, True, out, message=f"executed in {_fmt_duration(wall)}", wall_time_s=wall)


def promote(executed: Path, book_dir: Path | None = None, *, force: bool = False,
            aggregate: bool = False) -> tuple[bool, str]:
    """Copy an executed notebook to book_dir/executed/ if its profile ranks >= the one there
    (always with force or aggregate: run() decides when an aggregate page is promoted)."""
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
    """book/executed/manifest.json: stem -> the provenance of the promoted notebook
    (profile, device, commit, executed_at, wall time, source and its source_sha256)."""
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


def seed_scratch_store(store: Path, scratch: Path) -> int:
    """Copy the records of the results store into a scratch store, where they are missing or
    differ; returns how many were copied. A scratch run reads a record it finds instead of
    recomputing it, so a scratch record under a store record's key is always that record's
    copy, and overwriting it is safe; the scratch run's own records are kept."""
    n = 0
    store, scratch = Path(store), Path(scratch)
    if not store.is_dir() or store.resolve() == scratch.resolve():
        scratch.mkdir(parents=True, exist_ok=True)
        return 0
    for rec in sorted(store.glob("*/*.json")):
        dest = scratch / rec.relative_to(store)
        if dest.exists() and filecmp.cmp(rec, dest, shallow=False):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rec, dest)
        n += 1
    scratch.mkdir(parents=True, exist_ok=True)
    return n


def run(profile: str, notebooks: list[str] | None = None, overrides: list[str] | None = None, *,
        force_promote: bool = False, promote_results: bool = True, stale_only: bool = False,
        book_dir: Path | None = None, build_dir: Path | None = None,
        notebooks_dir: Path | None = None, profiles_dir: Path | None = None,
        progress: bool = True, log=print) -> RunReport:
    """Validate everything, then execute (and promote) the selected notebooks in stem order.

    A notebook whose committed page (book_dir/executed/<stem>.ipynb) is at a higher-ranked
    profile than ``profile`` runs against the scratch store ``build_dir/results-<profile>``
    and is not promoted (unless force_promote). stale_only: run only the notebooks whose
    page is missing or stale (``page_state``), skipping a stale page whose profile ranks
    above ``profile``. Aggregate pages run last: against the results store and promoted
    if a chapter of this run wrote to it; against the scratch store if only scratch runs
    did; run alone, by the same rule as a chapter. Ends by logging ``RunReport.summary``."""
    t_run = time.perf_counter()
    nbs = _profiles.notebook_paths(notebooks_dir)
    selected = list(notebooks) if notebooks else list(nbs)
    aggregates = [s for s, p in nbs.items() if is_aggregate(p)]
    selected += [s for s in aggregates if s not in selected]
    plan = _profiles.resolve(profile, selected, _profiles.parse_overrides(overrides),
                             notebooks_dir=notebooks_dir, profiles_dir=profiles_dir)
    build_dir = Path(build_dir or BUILD_DIR)
    store = _paths.results_root()
    scratch = build_dir / f"results-{profile}"
    rank = PROFILE_RANK[profile]
    states = {s: page_state(s, plan.paths[s], book_dir, profiles_dir=profiles_dir,
                            notebooks_dir=notebooks_dir) for s in selected}
    report = RunReport(profile)
    seeded = False

    def below(stem: str) -> bool:
        st = states[stem]
        return not force_promote and st.state != "missing" and rank < PROFILE_RANK.get(st.profile, -1)

    def keep(stem: str) -> Outcome:
        st = states[stem]
        if st.state in ("fresh", "unknown"):
            why = f"up to date (page at profile {st.profile!r})" if st.state == "fresh" else \
                f"kept the committed page (profile {st.profile!r}): {'; '.join(st.reasons)}"
        else:
            why = (f"kept the committed page (profile {st.profile!r}), stale: {'; '.join(st.reasons)}; "
                   f"re-render it with `make run PROFILE={st.profile} NOTEBOOKS={stem}`")
        return Outcome(stem, True, skipped=True, why=why)

    def execute(stem: str, use_scratch: bool) -> Outcome:
        nonlocal seeded
        if use_scratch and not seeded:
            n = seed_scratch_store(store, scratch)
            seeded = True
            log(f"scratch results store {scratch} ({n} records copied in from {store})", flush=True)
        where = f"scratch store {scratch}" if use_scratch else f"results store {store}"
        log(f"[{stem}] executing at profile {profile} ({where}) with {plan.parameters[stem]}", flush=True)
        o = execute_notebook(stem, plan.paths[stem], plan.parameters[stem], profile=profile,
                             build_dir=build_dir, results_root=scratch if use_scratch else store,
                             progress=progress)
        o.scratch = use_scratch
        if not o.ok:
            o.why = "not promoted: a cell failed"
        elif use_scratch:
            o.why = (f"not promoted: book has {stem} at profile {states[stem].profile!r}, above "
                     f"{profile!r} (--force-promote); records in {scratch}, page in {o.executed}")
        elif not promote_results:
            o.why = f"not promoted (--no-promote): page in {o.executed}"
        else:
            o.promoted, o.why = promote(o.executed, book_dir, force=force_promote,
                                        aggregate=stem in aggregates)
        log(f"[{stem}] {'ok' if o.ok else 'FAILED'}: {o.message}; {o.why}", flush=True)
        return o

    touched_store = ran_scratch = False
    for stem in sorted(s for s in selected if s not in aggregates):
        if stale_only and (states[stem].state in ("fresh", "unknown") or below(stem)):
            o = keep(stem)
            log(f"[{stem}] {o.why}", flush=True)
        else:
            o = execute(stem, below(stem))
            touched_store |= not o.scratch
            ran_scratch |= o.scratch
        report.outcomes.append(o)
    for stem in sorted(s for s in selected if s in aggregates):
        st = states[stem]
        if touched_store:
            o = execute(stem, False)
        elif ran_scratch:
            o = execute(stem, True)
        elif stale_only and not (st.state == "missing" or (st.state == "stale" and not below(stem))):
            o = keep(stem)
            log(f"[{stem}] {o.why}", flush=True)
        else:
            o = execute(stem, below(stem))
        report.outcomes.append(o)
    report.wall_time_s = time.perf_counter() - t_run
    log(report.summary(), flush=True)
    return report


def prepare(profile: str, notebooks: list[str] | None = None, overrides: list[str] | None = None, *,
            book_dir: Path | None = None, build_dir: Path | None = None,
            notebooks_dir: Path | None = None, profiles_dir: Path | None = None, log=print) -> list[Path]:
    """Notebooks to open in JupyterLab at a profile: build/lab/<profile>/<stem>.ipynb with the
    profile's parameters injected after the parameters cell (papermill's prepare-only mode),
    not executed. Where the committed page is at a higher profile, a first cell points
    RETHINK_RESULTS at the scratch store (seeded as for a scratch run), so the records of an
    interactive session stay out of results/. Edits there are not copied back to notebooks/."""
    import jupytext
    import nbformat
    import papermill as pm

    plan = _profiles.resolve(profile, notebooks, _profiles.parse_overrides(overrides),
                             notebooks_dir=notebooks_dir, profiles_dir=profiles_dir)
    build_dir = Path(build_dir or BUILD_DIR)
    out_dir, src_dir = build_dir / "lab" / profile, build_dir / "source"
    out_dir.mkdir(parents=True, exist_ok=True)
    src_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, md in plan.paths.items():
        st = page_state(stem, md, book_dir, profiles_dir=profiles_dir, notebooks_dir=notebooks_dir)
        nb = jupytext.read(md)
        nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
        nb.metadata.get("jupytext", {}).pop("formats", None)
        if st.state != "missing" and PROFILE_RANK[profile] < PROFILE_RANK.get(st.profile, -1):
            scratch = build_dir / f"results-{profile}"
            seed_scratch_store(_paths.results_root(), scratch)
            cell = nbformat.v4.new_code_cell(
                f"# book/executed/{stem}.ipynb is at profile {st.profile!r}, above {profile!r}: this\n"
                f"# session's records go to the scratch store, not to results/\n"
                f"import os\nos.environ[\"RETHINK_RESULTS\"] = {str(scratch.resolve())!r}")
            cell.metadata["tags"] = ["rethink-scratch-store"]
            nb.cells.insert(0, cell)
        src, out = src_dir / f"{stem}.lab.ipynb", out_dir / f"{stem}.ipynb"
        jupytext.write(nb, src, fmt="ipynb")
        pm.execute_notebook(str(src), str(out), parameters=plan.parameters[stem], kernel_name=KERNEL,
                            prepare_only=True, progress_bar=False, log_output=False)
        log(f"[{stem}] {out} (profile {profile}; not executed)", flush=True)
        written.append(out)
    return written


# --------------------------------------------------------------------------- build

def _where(m: dict) -> str:
    """Where a page's numbers were made and where it was rendered, from its manifest entry."""
    dev = str(m.get("device", "?"))
    on_cpu = dev.startswith("cpu")
    if m.get("profile") in ("full", "paper") and on_cpu:
        return f"trained on the GPU (see the records), rendered on the CPU ({dev})"
    if m.get("profile") in ("full", "paper"):
        return f"trained and rendered on the GPU ({dev})"
    return f"run on the CPU ({dev})" if on_cpu else f"run on {dev}"


def status_markdown(manifest: dict) -> str:
    """The intro's "what this build contains": a sentence per profile, then one row per page."""
    if not manifest:
        return ("No chapter has been executed yet: run `make book` (or "
                "`python -m rethink.book run --profile smoke`) first.\n")
    by_where: dict[str, list[str]] = {}
    for stem, m in sorted(manifest.items()):
        by_where.setdefault(f"`{m.get('profile', '?')}` profile, {_where(m)}", []).append(
            m.get("title", stem))
    out = ["In this build:", ""]
    for where, titles in by_where.items():
        n = len(titles)
        out.append(f"- {n} page{'s' if n != 1 else ''} at the {where}: " + "; ".join(f"*{t}*" for t in titles) + ".")
    out += ["", "| page | profile | where | executed | commit |", "|---|---|---|---|---|"]
    for stem, m in sorted(manifest.items()):
        out.append(f"| {m.get('title', stem)} | `{m.get('profile', '?')}` | {_where(m)} | "
                   f"{m.get('executed_at', '?')} | `{(m.get('commit') or '?')[:10]}` |")
    out.append("\nA page re-rendered from the results store runs no training: where its "
               "networks were trained (device, commit, seeds, wall time) is stated on the page, "
               "beside the tables those records fill.")
    return "\n".join(out) + "\n"


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
    atomic_write_text(dest / "verdict_summary.md", verdict_summary_markdown())


def verdict_summary_markdown(store=None) -> str:
    """The headline counts of the verdict page, with the profiles they come from (for the intro)."""
    from . import verdicts

    try:
        rows = verdicts.verdict_rows(store=store)
    except Exception as e:  # noqa: BLE001  (a summary must never stop the build)
        return f"The verdict counts could not be computed: {e}\n"
    return (f"**Verdicts so far.** {verdicts.summary_line(rows)}. A verdict below a claim's scale floor is "
            "*inconclusive*, whatever its numbers; see the [verdict page](executed/99_verdicts.ipynb).\n")


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


def stale_warnings(root: Path = REPO_ROOT, book_dir: Path | None = None) -> list[str]:
    """One line per page whose notebook no longer matches it (``page_state``)."""
    root = Path(root)
    book_dir = Path(book_dir or root / "book")
    nb_dir = root / "notebooks" if (root / "notebooks").is_dir() else None
    lines = []
    for stem, md in _profiles.notebook_paths(nb_dir).items():
        if not (book_dir / "executed" / f"{stem}.ipynb").exists():
            continue
        try:
            st = page_state(stem, md, book_dir, notebooks_dir=nb_dir)
        except Exception as e:  # a warning must never stop the build
            lines.append(f"warning: {stem}: could not compare the page with notebooks/{md.name}: {e}")
            continue
        if st.state in ("stale", "unknown"):
            fix = f"; re-render: make run PROFILE={st.profile} NOTEBOOKS={stem}" if st.profile in PROFILE_RANK else ""
            lines.append(f"warning: book/executed/{stem}.ipynb is {st.state}: {'; '.join(st.reasons)}{fix}")
    return lines


def build(root: Path = REPO_ROOT, output: Path | None = None, *, book_dir: Path | None = None,
          bench_dir: Path | None = None, log=print) -> int:
    """jupyter-book build <root> -W --all into <output>/_build/html; returns the exit status.

    Warns first, one line per page, about pages whose notebook has changed since."""
    import yaml
    root = Path(root)
    write_status_pages(book_dir or root / "book", bench_dir or root / "benchmarks")
    for line in stale_warnings(root, book_dir):
        log(line, flush=True)
    cmd = [*_jupyter_book(), "build", str(root), "--all", "-W", "--keep-going"]
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


def _jupyter_book() -> list[str]:
    """The jupyter-book command: the script beside this interpreter, else the one on PATH,
    else its entry point run by this interpreter (an environment whose scripts are elsewhere)."""
    here = Path(sys.executable).parent / "jupyter-book"
    if here.exists():
        return [str(here)]
    if shutil.which("jupyter-book"):
        return [shutil.which("jupyter-book")]
    return [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]


# --------------------------------------------------------------------------- CLI: pieces


def _piece_parsers(sub) -> None:
    """``plan``, ``piece`` and ``merge``: the book in self-contained pieces (rethink.pieces)."""
    def plan_options(s, budget_help):
        s.add_argument("--profile", required=True, help="smoke, small, full, paper")
        s.add_argument("--chapters", nargs="+", metavar="STEM", help="plan only these chapters (changes the ids)")
        s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter (YAML value); STEM.KEY=VALUE for one chapter (changes the plan)")
        s.add_argument("--data-root", help="folder with the dataset archives (default: $RETHINK_DATA)")
        s.add_argument("--budget", default=None, help=budget_help)

    s = sub.add_parser("plan", help="every piece of the book at a profile: what it runs and retrains, its "
                                    "estimated and measured minutes, done or not")
    plan_options(s, "the per-piece budget the plan packs to (default 5m; e.g. 300s, 4.5m)")
    s.add_argument("--json", action="store_true", help="the plan as JSON")
    s.add_argument("--markdown", action="store_true",
                   help="the pieces and their estimates as a Markdown table (as on the reproduce page)")
    s = sub.add_parser("piece", help="run pieces of the plan (--next: the next ones that fit in --budget; "
                                     "--id N) and write one bundle of the records they added")
    plan_options(s, "with --next: the wall time this run may take (e.g. 8m)")
    s.add_argument("--piece-budget", default="5m", help="the plan's per-piece budget (default 5m, as `plan`)")
    how = s.add_mutually_exclusive_group(required=True)
    how.add_argument("--next", action="store_true", help="the highest-priority pieces not done that fit in --budget")
    how.add_argument("--id", type=int, action="append", metavar="N", help="this piece (repeatable)")
    s.add_argument("--out", help="the bundle file (default build/bundles/<profile>-<time>.tar.gz)")
    s.add_argument("--dry-run", action="store_true", help="say what would run, run nothing")
    s = sub.add_parser("merge", help="validate bundles written by `piece` and merge them into the results store")
    s.add_argument("bundles", nargs="+", metavar="BUNDLE")
    s.add_argument("--skip-conflicts", action="store_true",
                   help="keep the store's record where a bundle's differs, and merge the rest")
    s.add_argument("--dry-run", action="store_true", help="validate and say what would be added, write nothing")


def _piece_command(args) -> int:
    from . import bundle as _bundle
    from . import design as _design
    from . import pieces as _pieces

    started = time.monotonic()
    try:
        if args.cmd == "merge":
            return _merge_command(args, _bundle)
        budget = _pieces.parse_duration(args.budget or "5m", "--budget") if args.cmd == "plan" else \
            _pieces.parse_duration(args.piece_budget, "--piece-budget")
        plan = _pieces.make_plan(args.profile, budget, chapters=args.chapters, overrides=args.param,
                                 data_root=args.data_root)
        store = piece_store(args.profile)
        if args.cmd == "plan":
            states = _pieces.piece_states(plan, store)
            if args.json:
                print(json.dumps({**_pieces.plan_json(plan, states),
                                  "floors": _design.design_checks(plan.nodes, store)}, indent=1, default=str))
            elif args.markdown:
                print(_pieces.plan_markdown(plan))
            else:
                print("\n".join([_pieces.format_plan(plan, states), ""]
                                + _design.design_lines(plan.nodes, store)).rstrip())
            return 0
        if args.next and not args.budget:
            raise _pieces.PlanError("piece --next needs --budget, the wall time this run may take (e.g. --budget 8m)")
        run_budget = _pieces.parse_duration(args.budget, "--budget") if args.budget else None
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = f"{args.profile}-{stamp}.tar.gz"
        out = Path(args.out) if args.out else BUILD_DIR / "bundles" / name
        out = out / name if out.is_dir() else out   # --out FOLDER: a file in it
        if store.root != _paths.results_root() and not args.dry_run:
            print(f"profile {args.profile!r} is a test of the code: its records go to the scratch store "
                  f"{store.root}, not to results/", flush=True)
        report = _pieces.run_pieces(plan, ids=args.id, budget_s=None if args.id else run_budget,
                                    store=store, bundle_path=out, started=started, dry_run=args.dry_run,
                                    log=lambda line: print(line, flush=True))
    except (_profiles.ProfileError, _pieces.PlanError, _bundle.BundleError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if report.failed else 0


SCRATCH_PIECE_PROFILES = ("smoke",)   # never published: the piece runner keeps them out of results/


def piece_store(profile: str):
    """The store a piece run (and merge) at ``profile`` uses: $RETHINK_RESULTS if set, else the
    committed results/ for a published profile and build/results-<profile>/ for smoke, so that a
    test of the code never leaves records in the working tree."""
    from .results.store import ResultsStore
    if os.environ.get("RETHINK_RESULTS") or profile not in SCRATCH_PIECE_PROFILES:
        return ResultsStore()
    return ResultsStore(BUILD_DIR / f"results-{profile}")


def _merge_command(args, _bundle) -> int:
    for path in args.bundles:
        profile = _bundle.read_bundle(path).manifest["profile"]   # a bad bundle: BundleError, one line
        store_root = piece_store(profile).root
        if store_root != _paths.results_root():
            print(f"{path}: a {profile!r} bundle: merging into the scratch store {store_root}", flush=True)
        report = _bundle.merge(path, store_root=store_root, skip_conflicts=args.skip_conflicts,
                               dry_run=args.dry_run)
        verb = "would add" if args.dry_run else "added"
        for name, what in report.added:
            print(f"{verb} {name}  {what}")
        for line in report.conflicts:
            print(f"conflict (kept the store's): {line}")
        print(f"{path}: {verb} {len(report.added)} file(s); {len(report.same)} already in the store; "
              f"{len(report.kept)} retrained upstream record(s) where the store keeps its own; "
              f"{len(report.conflicts)} conflict(s)")
    return 0


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rethink.book", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("run", "all"):
        s = sub.add_parser(name, help="execute notebooks" + (" then build the HTML" if name == "all" else ""),
                           description="Execute notebooks at a profile. A notebook whose committed page "
                           "is at a higher profile runs against the scratch store build/results-<profile>/ "
                           "and is not promoted.")
        s.add_argument("--profile", default="auto",
                       help="smoke, small, full, paper (default auto: full with a GPU, else smoke)")
        s.add_argument("--notebooks", nargs="+", metavar="STEM", help="e.g. 01_zoo (default: all)")
        s.add_argument("--stale", action="store_true",
                       help="only notebooks whose page is missing or stale; a stale page at a higher "
                            "profile is kept (the command to re-render it is printed)")
        s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="override a parameter (YAML value); STEM.KEY=VALUE for one notebook")
        s.add_argument("--force-promote", action="store_true",
                       help="promote to book/executed (and write to the results store) even over a "
                            "higher-ranked profile")
        s.add_argument("--no-promote", action="store_true", help="leave book/executed alone")
        s.add_argument("--no-progress", action="store_true", help="no per-cell progress lines")
    s = sub.add_parser("prepare", help="write notebooks with a profile's parameters injected, not "
                                       "executed, to open in JupyterLab (build/lab/<profile>/)")
    s.add_argument("--profile", required=True, help="smoke, small, full, paper")
    s.add_argument("--notebooks", nargs="+", metavar="STEM", help="e.g. 01_zoo (default: all)")
    s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter (YAML value); STEM.KEY=VALUE for one notebook")
    sub.add_parser("build", help="build the HTML book with jupyter-book -W into _build/html "
                                 "(warns about stale pages)")
    sub.add_parser("status", help="each page: fresh, stale (and why) or missing")
    sub.add_parser("profiles", help="validate every profile against every notebook")
    _piece_parsers(sub)
    args = p.parse_args(argv)

    if args.cmd in ("plan", "piece", "merge"):
        return _piece_command(args)

    if args.cmd == "profiles":
        try:
            names = _profiles.validate_all()
        except _profiles.ProfileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("valid profiles: " + ", ".join(names))
        return 0
    if args.cmd == "prepare":
        try:
            prepare(args.profile, args.notebooks, args.param)
        except _profiles.ProfileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "status":
        for st in page_states().values():
            print(st.describe())
        return 0
    if args.cmd in ("run", "all"):
        profile = detect_profile() if args.profile == "auto" else args.profile
        try:
            report = run(profile, args.notebooks, args.param, force_promote=args.force_promote,
                         promote_results=not args.no_promote, stale_only=args.stale,
                         progress=not args.no_progress)
        except _profiles.ProfileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        failed = [o for o in report.outcomes if not o.ok]
        for o in failed:
            print(f"error: {o.message}", file=sys.stderr)
        if failed:
            return 1
    if args.cmd in ("build", "all"):
        return build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
