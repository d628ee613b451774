"""The built HTML of the committed pages (book/executed/), read as a reader sees it.

The book is built once per test session (a module fixture, ~10-30 s) from a temporary copy
of the book's sources, so nothing in the repository is written. Each check is one test
per page and lists every offending cell of that page:

* no table cell truncated by pandas (``...``) and no ``[N rows x M columns]`` footer;
* no stderr, warning or traceback output;
* no link or image pointing at a local file that the build did not produce;
* the verdict tables fit the page: at most VERDICT_MAX_COLUMNS columns and no cell text
  longer than VERDICT_MAX_CELL characters outside a dropdown.

Checks that fail on today's committed pages are marked xfail (not strict) with the reason
"pages not yet re-rendered" (KNOWN_FAILURES); they pass once the chapters are re-rendered
with rethink.display. To see every offending cell of those pages:
``pytest tests/test_html.py --runxfail``.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from rethink import book
from rethink.paths import REPO_ROOT

bs4 = pytest.importorskip("bs4")

pytestmark = pytest.mark.html

EXECUTED = REPO_ROOT / "book" / "executed"
PAGES = sorted(p.stem for p in EXECUTED.glob("*.ipynb"))
HAND_WRITTEN = sorted(f"book/{p.stem}" for p in (REPO_ROOT / "book").glob("*.md"))
VERDICT_PAGES = [s for s in PAGES if "verdict" in s]
VERDICT_MAX_COLUMNS = 4
# a claim is a sentence: longer prose than this belongs in the row's dropdown (the table's
# columns share the page width and wrap: book/_static/rethink.css, table.rethink-verdicts)
VERDICT_MAX_CELL = 200

# (check, page) pairs failing on the committed pages when this test was written
KNOWN_FAILURES: set[tuple[str, str]] = set()   # every page is rendered with rethink.display now
REASON = "pages not yet re-rendered"


def _params(check: str, pages: list[str]):
    return [pytest.param(p, marks=pytest.mark.xfail(strict=False, reason=REASON))
            if (check, p) in KNOWN_FAILURES else p for p in pages]


@pytest.fixture(scope="module")
def html_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("html")
    src = tmp / "src"
    (src / "book").mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / f, src / f)
    for f in (REPO_ROOT / "book").iterdir():
        if f.is_file():
            shutil.copy(f, src / "book" / f.name)
    shutil.copytree(REPO_ROOT / "book" / "_static", src / "book" / "_static")
    shutil.copytree(EXECUTED, src / "book" / "executed",
                    ignore=shutil.ignore_patterns("status.md", "benchmarks.md"))
    rc = book.build(src, tmp / "out", bench_dir=REPO_ROOT / "benchmarks")
    assert rc == 0, "jupyter-book build -W of the committed pages failed (see the captured output)"
    return tmp / "out" / "_build" / "html"


def _soup(html_dir: Path, page: str):
    path = html_dir / f"{page}.html"
    assert path.exists(), f"{page}.html was not built"
    return bs4.BeautifulSoup(path.read_text(), "html.parser")


def _outputs(soup):
    """The cell outputs of a page (myst-nb: div.cell_output)."""
    return soup.select("div.cell_output")


def _cell_id(out) -> str:
    """Which cell an output belongs to, for the failure message: its source's first line."""
    cell = out.find_parent("div", class_="cell")
    src = cell.select_one("div.cell_input pre") if cell else None
    first = next((ln for ln in (src.get_text() if src else "").splitlines() if ln.strip()), "")
    return f"cell starting {first.strip()[:70]!r}" if first else "a cell with hidden input"


def _report(page: str, what: str, found: list[str]) -> str:
    return f"{page}: {len(found)} {what}:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("page", _params("truncated", PAGES))
def test_no_truncated_tables(html_dir, page):
    soup = _soup(html_dir, f"book/executed/{page}")
    found = []
    for out in _outputs(soup):
        for td in out.find_all(["td", "th"]):
            text = td.get_text().strip()
            if text in ("...", "…") or text.endswith("...") or text.endswith("…"):
                found.append(f"{_cell_id(out)}: table cell {text[-60:]!r}")
        for pre in out.find_all("pre"):
            m = re.search(r"\[\d+ rows x \d+ columns\]", pre.get_text())
            if m:
                found.append(f"{_cell_id(out)}: pandas truncated a text table ({m.group(0)})")
    assert not found, _report(page, "truncated outputs (use rethink.display.table)", found)


@pytest.mark.parametrize("page", _params("stderr", PAGES))
def test_no_stderr_warning_or_traceback_outputs(html_dir, page):
    soup = _soup(html_dir, f"book/executed/{page}")
    found = []
    for out in _outputs(soup):
        for div in out.find_all("div", class_=["stderr", "traceback", "error"]):
            kind = "stderr" if "stderr" in div["class"] else "traceback"
            found.append(f"{_cell_id(out)}: {kind} output {div.get_text().strip()[:100]!r}")
        text = out.get_text()
        m = re.search(r"\b\w*Warning\b:.{0,80}", text)
        if m and not any(m.group(0)[:40] in f for f in found):
            found.append(f"{_cell_id(out)}: warning text {m.group(0)!r}")
    assert not found, _report(page, "stderr/warning outputs", found)


def _local_targets(soup):
    for tag, attr in (("a", "href"), ("img", "src"), ("link", "href"), ("script", "src"),
                      ("source", "src")):
        for el in soup.find_all(tag):
            url = el.get(attr)
            if not url:
                continue
            u = urlparse(url)
            if u.scheme or u.netloc or url.startswith("#") or not u.path:
                continue
            yield tag, url, unquote(u.path)


@pytest.mark.parametrize("page", _params("links", [f"book/executed/{p}" for p in PAGES] + HAND_WRITTEN))
def test_no_links_to_missing_local_files(html_dir, page):
    soup = _soup(html_dir, page)
    here = (html_dir / page).parent
    found = [f"<{tag}> {url!r}" for tag, url, path in _local_targets(soup)
             if not (here / path).exists()]
    assert not found, _report(page, "links to missing files", found)


@pytest.mark.parametrize("page", _params("verdict_width", VERDICT_PAGES))
def test_verdict_tables_fit_the_page(html_dir, page):
    soup = _soup(html_dir, f"book/executed/{page}")
    article = soup.select_one("article") or soup
    tables = article.find_all("table")
    assert tables, f"{page}: no table"
    found = []
    for k, t in enumerate(tables, 1):
        if t.find_parent(["details"]) or t.find_parent(class_=["dropdown", "toggle-details"]):
            continue
        header = t.find("tr")
        ncols = len(header.find_all(["th", "td"])) if header else 0
        if ncols > VERDICT_MAX_COLUMNS:
            found.append(f"table {k}: {ncols} columns (at most {VERDICT_MAX_COLUMNS}; move the "
                         f"rest into a dropdown)")
        for cell in t.find_all(["td", "th"]):
            for hidden in cell.find_all(["details"]):
                hidden.extract()
            text = " ".join(cell.get_text().split())
            if len(text) > VERDICT_MAX_CELL:
                found.append(f"table {k}: cell of {len(text)} characters "
                             f"(at most {VERDICT_MAX_CELL} outside a dropdown): {text[:60]!r}...")
    assert not found, _report(page, "verdict-table problems", found)


def test_every_committed_page_was_built(html_dir):
    missing = [p for p in PAGES if not (html_dir / "book" / "executed" / f"{p}.html").exists()]
    assert not missing, f"committed pages left out of the build: {missing}"


def test_no_empty_top_bar_with_a_second_search_box(html_dir):
    soup = _soup(html_dir, "book/intro")
    header = soup.find("header", id="pst-header")
    assert header is None or not header.find(class_="search-button-field"), \
        "the theme's top bar holds a second search box: set html_theme_options.navbar_persistent: []"
    assert soup.select_one(".bd-sidebar-primary .search-button-field"), "the sidebar's search box is gone"
    assert soup.find("link", href=re.compile(r"_static/rethink\.css")), "book/_static/rethink.css not loaded"
