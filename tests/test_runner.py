"""The runner's bookkeeping: source hashes, stale pages, scratch runs below the committed
profile, --stale selection, progress lines and the summary.

Tiny notebooks in temporary folders (a chapter that writes one record to the store it is
given, and an aggregate page); nothing in the repository is read or written except the
notebooks' source hashes."""
from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from rethink import book, profiles
from rethink.paths import REPO_ROOT

CHAPTER_CELLS = textwrap.dedent("""
    ```{code-cell} ipython3
    import os, pathlib
    store = pathlib.Path(os.environ["RETHINK_RESULTS"])
    rec = store / "toy" / f"{profile}.json"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text('{"profile": "%s"}' % profile)
    print("wrote", rec.name)
    ```
    """)

AGGREGATE_CELLS = textwrap.dedent("""
    ```{code-cell} ipython3
    import os, pathlib
    print(sorted(p.name for p in pathlib.Path(os.environ["RETHINK_RESULTS"]).glob("toy/*.json")))
    ```
    """)


# --------------------------------------------------------------------------- hashes and states

def test_source_hash_ignores_the_jupytext_header_but_not_the_cells(tmp_path, myst_notebook):
    md = myst_notebook(tmp_path / "01_a.md", 'profile = "smoke"', CHAPTER_CELLS)
    h = book.source_hash(md)
    assert h == book.source_hash(md) and len(h) == 64
    paired = md.read_text().replace("jupytext:\n", "jupytext:\n  formats: ipynb,md:myst\n", 1)
    assert "formats: ipynb,md:myst" in paired and book.source_hash(paired) == h
    assert book.source_hash(md.read_text().replace("wrote", "stored")) != h
    tagged = md.read_text().replace("```{code-cell} ipython3\nimport os",
                                    "```{code-cell} ipython3\n:tags: [remove-input]\nimport os")
    assert book.source_hash(tagged) != h


def test_every_notebook_is_paired_with_an_ipynb():
    """The design card: each chapter opens and saves as .ipynb and .md in JupyterLab."""
    import jupytext
    for stem, md in profiles.notebook_paths().items():
        formats = jupytext.read(md).metadata.get("jupytext", {}).get("formats")
        assert formats == "ipynb,md:myst", f"notebooks/{md.name}: front matter formats is {formats!r}"
    assert "notebooks/*.ipynb" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def _page(book_dir: Path, stem: str, **meta) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}")]
    nb.metadata["rethink"] = {"commit": "abc", "dirty": False, "executed_at": "t", "device": "cpu", **meta}
    p = book_dir / "executed" / f"{stem}.ipynb"
    p.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, p)
    return p


def test_page_state_missing_fresh_stale_unknown(tmp_path, myst_notebook):
    nbs, profs, bk = tmp_path / "notebooks", tmp_path / "profiles", tmp_path / "book"
    nbs.mkdir(), profs.mkdir()
    md = myst_notebook(nbs / "01_a.md", 'profile = "smoke"\nepochs = 1', CHAPTER_CELLS)
    (profs / "small.yaml").write_text("01_a:\n  epochs: 3\n")
    state = lambda: book.page_state("01_a", md, bk, profiles_dir=profs, notebooks_dir=nbs)  # noqa: E731
    assert state().state == "missing"
    params = {"epochs": 3, "profile": "small"}
    _page(bk, "01_a", profile="small", parameters=params, source_sha256=book.source_hash(md))
    assert state().state == "fresh"
    md.write_text(md.read_text().replace("wrote", "stored"))
    st = state()
    assert st.state == "stale" and "notebooks/01_a.md changed since commit abc" in st.reasons[0]
    _page(bk, "01_a", profile="small", parameters=params, source_sha256=book.source_hash(md))
    (profs / "small.yaml").write_text("01_a:\n  epochs: 4\n")
    st = state()
    assert st.state == "stale" and "profiles/small.yaml now gives other values for epochs" in st.reasons[0]
    _page(bk, "01_a", profile="small", parameters={"epochs": 4, "profile": "small"},
          commit="0" * 40)               # no hash recorded, and a commit git does not know
    st = state()
    assert st.state == "unknown" and "cannot be recomputed" in st.describe()


def test_a_page_without_a_recorded_hash_is_hashed_from_its_commit():
    """The committed pages predate source hashes: their commit's notebook is hashed instead."""
    manifest = json.loads((REPO_ROOT / "book" / "executed" / "manifest.json").read_text())
    stem, meta = next(iter(sorted(manifest.items())))
    if meta.get("source_sha256") or meta.get("dirty") is not False:
        pytest.skip("the committed page records its own hash")
    digest = book._source_hash_at(meta["commit"], meta["source"])
    if digest is None:
        pytest.skip("no git history here (e.g. a shallow copy)")
    assert len(digest) == 64


def test_provenance_of_a_gpu_profile_rendered_on_a_cpu():
    meta = {"profile": "full", "device": "cpu: x86_64 (2 cores)", "commit": "1db78d6fc3b1", "executed_at": "now"}
    note = book.provenance_markdown(meta)
    assert "trained on the GPU" in note and "rendered on the CPU" in note and "see the records" in note.replace(
        "(see \nthe", "(see the")
    assert "with the `full` profile on `cpu" not in note
    gpu = book.provenance_markdown({**meta, "device": "cuda: NVIDIA H200 x1"})
    assert "rendered with the `full` profile on `cuda: NVIDIA H200 x1`" in gpu


def test_status_page_says_what_ran_where():
    md = book.status_markdown({
        "01_zoo": {"title": "Zoo", "profile": "full", "device": "cpu: x86_64 (2 cores)", "commit": "a" * 40},
        "02_det": {"title": "Det", "profile": "small", "device": "cpu: x86_64 (2 cores)", "commit": "b" * 40},
        "03_ns": {"title": "NS", "profile": "full", "device": "cuda: NVIDIA H200 x1", "commit": "c" * 40}})
    assert "1 page at the `full` profile, trained on the GPU (see the records), rendered on the CPU" in md
    assert "1 page at the `small` profile, run on the CPU (cpu: x86_64 (2 cores)): *Det*." in md
    assert "trained and rendered on the GPU (cuda: NVIDIA H200 x1)" in md


# --------------------------------------------------------------------------- progress and summary

class _Cell(dict):
    def __init__(self, kind):
        super().__init__(cell_type=kind)
        self.cell_type = kind


class _NB:
    def __init__(self, kinds):
        self.cells = [_Cell(k) for k in kinds]


def test_cell_progress_lines_in_a_log_and_on_a_terminal():
    t = iter([0.0, 0.0, 0.1, 0.2, 0.3, 5.3, 5.4, 5.5])
    out = io.StringIO()
    p = book.CellProgress("01_a", out, tty=False, clock=lambda: next(t))
    nb = _NB(["markdown", "code", "code", "markdown", "code"])
    p.begin(nb)
    for i, c in enumerate(nb.cells):
        p.start(c, i)
        p.complete(c, i)
    p.close()
    # the 0.1 s cell is not logged; the 5 s one and the last one are
    assert out.getvalue() == ("[01_a] cell 2/3 done in 5.0s, 5.3s elapsed\n"
                              "[01_a] cell 3/3 done in 0.1s, 5.5s elapsed\n")
    t = iter([0.0, 0.0, 0.0, 1.0])
    tty = io.StringIO()
    p = book.CellProgress("01_a", tty, tty=True, clock=lambda: next(t))
    p.begin(_NB(["code"]))
    p.start(None, 0)
    p.complete(None, 0)
    p.close()
    assert tty.getvalue() == "\r[01_a] cell 1/1 running, 0.0s elapsed\r[01_a] cell 1/1 done in 1.0s, 1.0s elapsed\n"
    assert tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1


def test_summary_lists_each_notebook():
    r = book.RunReport("smoke", [book.Outcome("01_a", True, wall_time_s=75, why="promoted to x"),
                                 book.Outcome("02_b", False, wall_time_s=3.2, why="not promoted: a cell failed"),
                                 book.Outcome("03_c", True, skipped=True, why="up to date")], wall_time_s=80)
    lines = r.summary().splitlines()
    assert lines[0] == "summary: profile smoke, 2 executed, 1 failed, 1 skipped, 1m20s"
    assert lines[1].split() == ["01_a", "ok", "1m15s", "promoted", "to", "x"]
    assert lines[2].split()[:3] == ["02_b", "FAILED", "3.2s"] and lines[3].split()[:2] == ["03_c", "skipped"]


# --------------------------------------------------------------------------- runs

@pytest.fixture
def toy(tmp_path, monkeypatch, myst_notebook):
    nbs, profs = tmp_path / "notebooks", tmp_path / "profiles"
    nbs.mkdir(), profs.mkdir()
    myst_notebook(nbs / "01_a.md", 'profile = "smoke"', CHAPTER_CELLS, title="A chapter")
    md = myst_notebook(nbs / "99_v.md", 'profile = "smoke"', AGGREGATE_CELLS, title="Verdicts")
    md.write_text(md.read_text().replace("---\n\n# Verdicts", "rethink_aggregate: true\n---\n\n# Verdicts"))
    for p in ("smoke", "small"):
        (profs / f"{p}.yaml").write_text("{}\n")
    store = tmp_path / "store"
    monkeypatch.setenv("RETHINK_RESULTS", str(store))

    def run(profile, **kw):
        return book.run(profile, notebooks_dir=nbs, profiles_dir=profs, book_dir=tmp_path / "book",
                        build_dir=tmp_path / "build", **kw)
    return run, tmp_path, store


def _outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_a_run_below_the_committed_profile_writes_only_to_build(toy, capfd):
    run, tmp, store = toy
    bk = tmp / "book" / "executed"
    report = run("small")
    assert report.ok and all(o.promoted for o in report.outcomes)
    assert (store / "toy" / "small.json").exists()
    assert "['small.json']" in _outputs(bk / "99_v.ipynb")
    manifest = json.loads((bk / "manifest.json").read_text())
    assert manifest["01_a"]["source_sha256"] == book.source_hash(tmp / "notebooks" / "01_a.md")
    pages = {p: p.read_bytes() for p in bk.iterdir()}
    out = capfd.readouterr()
    assert "without encryption" not in out.out + out.err          # the kernel's log is quiet
    assert "[01_a] cell 3/3 done in" in out.out and "summary: profile small, 2 executed" in out.out

    report = run("smoke")
    assert report.ok and not any(o.promoted for o in report.outcomes)
    assert all(o.scratch for o in report.outcomes)
    assert "at profile 'small', above 'smoke'" in report.outcomes[0].why
    assert not (store / "toy" / "smoke.json").exists()             # the store is untouched
    scratch = tmp / "build" / "results-smoke"
    assert sorted(p.name for p in (scratch / "toy").iterdir()) == ["small.json", "smoke.json"]  # seeded
    assert {p: p.read_bytes() for p in bk.iterdir()} == pages      # so are the pages
    assert "['small.json', 'smoke.json']" in _outputs(tmp / "build" / "executed" / "smoke" / "99_v.ipynb")

    report = run("smoke", force_promote=True, notebooks=["01_a"])
    assert report.outcomes[0].promoted and (store / "toy" / "smoke.json").exists()
    assert book.notebook_profile(bk / "01_a.ipynb") == "smoke"
    assert report.outcomes[1].promoted                             # the store changed: re-rendered


def test_stale_only_runs_what_is_missing_or_stale(toy, capfd):
    run, tmp, store = toy
    report = run("small", stale_only=True)                         # nothing there yet: both missing
    assert [o.skipped for o in report.outcomes] == [False, False] and report.ok
    report = run("small", stale_only=True)
    assert all(o.skipped for o in report.outcomes)
    assert report.outcomes[0].why == "up to date (page at profile 'small')"
    md = tmp / "notebooks" / "01_a.md"
    md.write_text(md.read_text().replace('print("wrote"', 'print("stored"'))
    report = run("smoke", stale_only=True)                         # stale, but committed at small
    o = report.outcomes[0]
    assert o.skipped and "make run PROFILE=small NOTEBOOKS=01_a" in o.why and "changed" in o.why
    assert report.outcomes[1].skipped
    report = run("small", stale_only=True)
    assert [o.skipped for o in report.outcomes] == [False, False]
    assert all(o.promoted for o in report.outcomes)
    assert book.page_state("01_a", md, tmp / "book", profiles_dir=tmp / "profiles",
                           notebooks_dir=tmp / "notebooks").state == "fresh"


def test_build_warns_about_stale_pages(tmp_path, myst_notebook):
    root = tmp_path
    (root / "notebooks").mkdir()
    md = myst_notebook(root / "notebooks" / "01_a.md", 'profile = "smoke"', CHAPTER_CELLS)
    _page(root / "book", "01_a", profile="small", source_sha256="0" * 64, source="notebooks/01_a.md")
    lines = book.stale_warnings(root)
    assert lines == ["warning: book/executed/01_a.ipynb is stale: notebooks/01_a.md changed since "
                     "commit abc; re-render: make run PROFILE=small NOTEBOOKS=01_a"]
    _page(root / "book", "01_a", profile="small", source_sha256=book.source_hash(md))
    assert book.stale_warnings(root) == []


def test_prepare_injects_parameters_and_points_a_lower_profile_at_the_scratch_store(toy):
    run, tmp, store = toy
    assert run("small", notebooks=["01_a"]).ok
    kw = dict(notebooks_dir=tmp / "notebooks", profiles_dir=tmp / "profiles", book_dir=tmp / "book",
              build_dir=tmp / "build", log=lambda *a, **k: None)
    (out,) = book.prepare("smoke", ["01_a"], **kw)
    assert out == tmp / "build" / "lab" / "smoke" / "01_a.ipynb"
    nb = nbformat.read(out, as_version=4)
    assert "rethink-scratch-store" in nb.cells[0].metadata["tags"]
    assert str((tmp / "build" / "results-smoke").resolve()) in nb.cells[0].source
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "smoke"' in injected[0].source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")   # not executed
    (out,) = book.prepare("small", ["01_a"], **kw)
    assert "rethink-scratch-store" not in nbformat.read(out, as_version=4).cells[0].metadata.get("tags", [])


def test_kernel_env_quiets_progress_bars_and_names_the_store(monkeypatch, tmp_path):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "error::ResourceWarning")
    env = book.kernel_env(tmp_path)
    assert env == {"TQDM_DISABLE": "1", "RETHINK_RESULTS": str(tmp_path),
                   "PYTHONWARNINGS": "error::ResourceWarning,ignore:IProgress not found"}
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert book.kernel_env()["TQDM_DISABLE"] == "0" and "RETHINK_RESULTS" not in book.kernel_env()
