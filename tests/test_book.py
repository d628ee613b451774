"""The book: smoke execution of every notebook via the runner, promotion, verdicts, HTML build.

The smoke run writes to temporary folders only: RETHINK_RESULTS (the results store),
the build folder and the book folder the notebooks are promoted to; the committed
results/ and book/executed/ are left alone. The HTML build then runs on a temporary
copy of the book's sources holding those freshly executed notebooks.
"""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest

from rethink import book, profiles
from rethink.paths import REPO_ROOT
from rethink.results.store import PROFILE_RANK, ResultsStore

NOTEBOOKS = list(profiles.notebook_paths())


# --------------------------------------------------------------------------- smoke run

@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    saved = os.environ.get("RETHINK_RESULTS")
    os.environ["RETHINK_RESULTS"] = str(tmp / "results")
    try:
        report = book.run("smoke", book_dir=tmp / "book", build_dir=tmp / "build")
    finally:
        if saved is None:
            os.environ.pop("RETHINK_RESULTS", None)
        else:
            os.environ["RETHINK_RESULTS"] = saved
    return tmp, {o.stem: o for o in report.outcomes}


def test_there_are_notebooks():
    assert "99_verdicts" in NOTEBOOKS and len(NOTEBOOKS) >= 2, NOTEBOOKS


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_executes_at_smoke(smoke, stem):
    tmp, outcomes = smoke
    o = outcomes[stem]
    assert o.ok, o.message
    assert o.executed == tmp / "build" / "executed" / "smoke" / f"{stem}.ipynb"
    assert o.wall_time_s >= 0  # recorded (no bound: a busy CI machine must not fail the test)
    nb = nbformat.read(o.executed, as_version=4)
    meta = nb.metadata["rethink"]
    assert meta["profile"] == "smoke" and meta["device"] and meta["executed_at"] and meta["commit"]
    assert sum("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert sum(book.PROVENANCE_TAG in c.metadata.get("tags", []) for c in nb.cells) == 1
    assert o.promoted and (tmp / "book" / "executed" / f"{stem}.ipynb").exists()
    manifest = json.loads((tmp / "book" / "executed" / "manifest.json").read_text())
    assert manifest[stem]["profile"] == "smoke"


def test_html_build_with_warnings_as_errors(smoke, tmp_path):
    """jupyter-book build -W on a copy of the book's sources with the smoke-executed notebooks."""
    tmp, outcomes = smoke
    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / f, src / f)
    for f in (REPO_ROOT / "book").iterdir():
        if f.is_file():
            shutil.copy(f, src / "book" / f.name)
    shutil.copytree(REPO_ROOT / "book" / "_static", src / "book" / "_static")
    shutil.copytree(tmp / "book" / "executed", src / "book" / "executed")
    rc = book.build(src, tmp_path / "out", bench_dir=REPO_ROOT / "benchmarks")
    assert rc == 0, "jupyter-book build -W failed (see the captured output)"
    html = tmp_path / "out" / "_build" / "html"
    assert (html / "index.html").exists()
    for page in ("book/intro", "book/reproduce", "book/appendix_performance"):
        assert (html / f"{page}.html").exists(), page
    for stem in NOTEBOOKS:
        assert (html / "book" / "executed" / f"{stem}.html").exists(), stem
    intro = (html / "book" / "intro.html").read_text()
    assert "smoke" in intro  # the status table says which profile each page came from
    verdict_page = (html / "book" / "executed" / "99_verdicts.html").read_text()
    assert "he2019-scratch-catches-up" in verdict_page
    assert "<table" in verdict_page and "| paper |" not in verdict_page  # rendered, not raw


def test_build_leaves_out_missing_chapters(tmp_path):
    (tmp_path / "book" / "executed").mkdir(parents=True)
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "book" / "executed" / "99_verdicts.ipynb").write_text("{}")
    shutil.copy(REPO_ROOT / "_toc.yml", tmp_path / "_toc.yml")
    (tmp_path / "book" / "reproduce.md").write_text("# R\n")
    toc, missing = book.filtered_toc(tmp_path)
    assert "book/executed/01_zoo" in missing and "book/appendix_performance" in missing
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert files == ["book/reproduce", "book/executed/99_verdicts"]


# --------------------------------------------------------------------------- failures

FAILING_CELLS = textwrap.dedent("""
    ```{code-cell} ipython3
    x = 1
    ```

    ```{code-cell} ipython3
    raise ValueError("boom in the second cell")
    ```
    """)


def test_a_failing_cell_names_notebook_and_cell_and_is_not_promoted(tmp_path, myst_notebook):
    nbs, profs = tmp_path / "notebooks", tmp_path / "profiles"
    nbs.mkdir()
    profs.mkdir()
    myst_notebook(nbs / "01_fails.md", 'profile = "smoke"', FAILING_CELLS, title="Fails")
    (profs / "smoke.yaml").write_text("{}\n")
    report = book.run("smoke", notebooks_dir=nbs, profiles_dir=profs, book_dir=tmp_path / "book",
                      build_dir=tmp_path / "build")
    assert not report.ok
    (o,) = report.outcomes
    assert not o.ok and not o.promoted
    assert "01_fails" in o.message and "code cell 3 (line 25)" in o.message and "boom in the second cell" in o.message
    assert "raise ValueError" in o.message
    assert not (tmp_path / "book" / "executed" / "01_fails.ipynb").exists()


def test_cli_exits_nonzero_on_a_failing_notebook(tmp_path, monkeypatch, myst_notebook):
    nbs, profs = tmp_path / "notebooks", tmp_path / "profiles"
    nbs.mkdir()
    profs.mkdir()
    myst_notebook(nbs / "01_fails.md", 'profile = "smoke"', FAILING_CELLS, title="Fails")
    (profs / "smoke.yaml").write_text("{}\n")
    monkeypatch.setattr(profiles, "NOTEBOOKS_DIR", nbs)
    monkeypatch.setattr(profiles, "PROFILES_DIR", profs)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "build")
    monkeypatch.setattr(book, "BOOK_DIR", tmp_path / "book")
    rc = book.main(["run", "--profile", "smoke", "--no-promote"])
    assert rc == 1


# --------------------------------------------------------------------------- promotion

def _executed(path: Path, profile: str | None, marker: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# Page {marker}")]
    if profile:
        nb.metadata["rethink"] = {"profile": profile, "commit": "abc", "executed_at": "t", "device": "cpu"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _book_profile(book_dir: Path, stem="01_x") -> str | None:
    return book.notebook_profile(book_dir / "executed" / f"{stem}.ipynb")


def test_promotion_keeps_the_best_profile(tmp_path):
    bk = tmp_path / "book"
    run = lambda prof, **kw: book.promote(_executed(tmp_path / prof / "01_x.ipynb", prof, prof), bk, **kw)
    assert run("small")[0] and _book_profile(bk) == "small"
    ok, why = run("smoke")
    assert not ok and "'small'" in why and "--force-promote" in why and _book_profile(bk) == "small"
    assert run("small")[0]                       # equal rank: the newer run wins
    assert run("full")[0] and _book_profile(bk) == "full"
    assert not run("small")[0] and _book_profile(bk) == "full"
    assert run("paper")[0] and _book_profile(bk) == "paper"
    assert run("smoke", force=True)[0] and _book_profile(bk) == "smoke"
    manifest = json.loads((bk / "executed" / "manifest.json").read_text())
    assert manifest["01_x"]["profile"] == "smoke" and manifest["01_x"]["title"] == "Page smoke"


def test_aggregate_pages_are_always_promoted(tmp_path):
    bk = tmp_path / "book"
    book.promote(_executed(tmp_path / "a" / "99_v.ipynb", "full", "a"), bk)
    ok, _ = book.promote(_executed(tmp_path / "b" / "99_v.ipynb", "smoke", "b"), bk, aggregate=True)
    assert ok and _book_profile(bk, "99_v") == "smoke"


def test_notebooks_without_metadata_are_replaced_and_never_promoted(tmp_path):
    bk = tmp_path / "book"
    _executed(bk / "executed" / "01_x.ipynb", None, "old")     # no metadata: ranks below smoke
    assert book.promote(_executed(tmp_path / "s" / "01_x.ipynb", "smoke", "s"), bk)[0]
    ok, why = book.promote(_executed(tmp_path / "n" / "01_x.ipynb", None, "n"), bk)
    assert not ok and "no rethink profile" in why


def test_profile_ranks_cover_the_profile_files():
    assert set(profiles.available_profiles()) == set(PROFILE_RANK)


def test_provenance_note_is_placed_under_the_title():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("1")]
    meta = {"profile": "full", "device": "cuda: H100 x1", "commit": "0123456789abc", "executed_at": "now"}
    book._insert_provenance(nb, meta, aggregate=False)
    book._insert_provenance(nb, meta, aggregate=False)   # idempotent
    assert [c.cell_type for c in nb.cells] == ["markdown", "markdown", "code"]
    assert "GPU" in nb.cells[1].source and "`full`" in nb.cells[1].source


def test_coalesce_streams_merges_and_applies_carriage_returns():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="10%\r"),
                    nbformat.v4.new_output("stream", name="stderr", text="50%\r100%\ndone\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="a\n")]
    nb.cells = [cell]
    book.coalesce_streams(nb)
    assert [(o.name, o.text) for o in nb.cells[0].outputs] == [("stderr", "100%\ndone\n"), ("stdout", "a\n")]


def test_benchmarks_page_renders_results_and_lists_pending(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "zoo_throughput.py").write_text("")
    (tmp_path / "other_bench.py").write_text("")
    (tmp_path / "results" / "zoo_throughput.json").write_text(json.dumps(
        {"device": "H100", "rows": [{"arch": "resnet18", "images_per_s": 12000.5}]}))
    md = book.benchmarks_markdown(tmp_path)
    assert "| arch | images/s |" in md and "| resnet18 | 12,000 |" in md and "**Device:** H100" in md
    assert "Pending" in md and "benchmarks/other_bench.py" in md and "zoo_throughput.py`" not in md
