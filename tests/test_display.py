"""rethink.display: tables, captions, badges; and that its caption recipes build with jupyter-book."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rethink import display as D
from rethink.paths import REPO_ROOT


def test_table_drops_index_and_formats_values():
    df = pd.DataFrame({"arch": ["resnet18", "mobilenetv3_small"], "seed": [0.0, 2.0],
                       "top1": [41.2345, np.nan], "n": np.array([3, 4])}, index=["a", "b"])
    t = D.table(df)
    assert t.columns == ["arch", "seed", "top1", "n"]           # no index column
    texts = [[c[0] for c in r] for r in t.rows]
    assert texts == [["resnet18", "0", "41.23", "3"], ["mobilenetv3_small", "2", "—", "4"]]
    html = t.to_html()
    assert "<th>a</th>" not in html and ">a<" not in html
    assert "..." not in html and "NaN" not in html and "2.0" not in html


def test_table_keeps_the_index_when_asked_and_renames():
    df = pd.DataFrame({"x": [1.5, 2.25]}, index=pd.Index(["p", "q"], name="role"))
    t = D.table(df, index=True, rename={"x": "gain (pp)"})
    assert t.columns == ["role", "gain (pp)"]
    assert [[c[0] for c in r] for r in t.rows] == [["p", "1.500"], ["q", "2.250"]]


def test_table_digits_global_and_per_column():
    df = pd.DataFrame({"a": [0.123456, 0.5], "b": [10.0, 11.0], "c": [1.23456, 2.0]})
    assert [c[0] for c in D.table(df, digits=2).rows[0]] == ["0.12", "10", "1.23"]
    assert [c[0] for c in D.table(df, digits={"c": 1}).rows[0]] == ["0.1235", "10", "1.2"]
    tiny = D.table(pd.DataFrame({"p": [1e-6, 0.5]}), digits=3)
    assert tiny.rows[0][0][0] == "1.00e-06" and tiny.rows[1][0][0] == "0.500"


def test_table_never_truncates_and_scrolls():
    wide = pd.DataFrame({f"column_{i}": ["x" * 300] * 200 for i in range(40)})
    t = D.table(wide)
    html = t.to_html()
    assert len(t) == 200 and len(t.columns) == 40
    assert "..." not in html and "x" * 300 in html
    assert html.startswith('<div class="rethink-table" style="overflow-x: auto;')


def test_plus_minus_never_wraps():
    t = D.table(pd.DataFrame({"ours": ["41.00 ± 0.20 (n=3)"], "note": ["a ± b"]}), wrap=["note"])
    html = t.to_html()
    assert "41.00\u00a0±\u00a00.20" in html and '<td class="nowrap">' in html
    assert '<td class="wrap">' in html        # a prose column wraps instead


def test_strings_are_escaped_and_markup_objects_are_not():
    t = D.table(pd.DataFrame({"s": ["<b>x</b> & y"], "v": [D.verdict_badge("not reproduced")]}))
    html = t.to_html()
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html
    assert '<span class="verdict verdict-not-reproduced">not reproduced</span>' in html
    assert "| not reproduced |" not in t.to_markdown() and "verdict-not-reproduced" in t.to_markdown()
    assert repr(t).splitlines()[1].rstrip().endswith("not reproduced")


def test_markdown_and_text_forms():
    t = D.table(pd.DataFrame({"name": ["a|b"], "value": [1.5]}))
    assert t.to_markdown() == "| name | value |\n|---|---:|\n| a\\|b | 1.500 |\n"
    assert repr(t) == "name  value\na|b   1.500"


def test_non_finite_and_object_columns():
    t = D.table(pd.DataFrame({"x": [math.inf, -math.inf, 1.0], "o": [None, [1, 2], "s"]}))
    assert [r[0][0] for r in t.rows] == ["∞", "−∞", "1"]
    assert [r[1][0] for r in t.rows] == ["—", "[1, 2]", "s"]


@pytest.mark.parametrize("verdict, cls", [("reproduced", "verdict-reproduced"), ("partly", "verdict-partly"),
                                          ("not reproduced", "verdict-not-reproduced"),
                                          ("inconclusive", "verdict-inconclusive"),
                                          ("Not tested", "verdict-not-tested")])
def test_verdict_badges_have_a_css_class(verdict, cls):
    assert D.verdict_class(verdict) == cls
    assert f'class="verdict {cls}"' in D.verdict_badge(verdict)._repr_html_()
    css = (REPO_ROOT / "book" / "_static" / "rethink.css").read_text()
    assert f".{cls} " in css or f".{cls}{{" in css


def test_css_is_registered_in_the_config():
    import yaml
    cfg = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert "rethink.css" in cfg["html_css_files"]
    assert all((REPO_ROOT / d / "rethink.css").exists() for d in cfg["html_static_path"])
    css = (REPO_ROOT / "book" / "_static" / "rethink.css").read_text()
    for cls in (".rethink-table", ".nowrap", ".rethink-caption", ".verdict "):
        assert cls in css, cls


def test_figure_caption_renders_simple_markdown():
    html = D.figure_caption("Top-1 **on the val split**, *mean* ± std, `seeds`")._repr_html_()
    assert html == ('<p class="rethink-caption">Top-1 <strong>on the val split</strong>, '
                    "<em>mean</em>\u00a0±\u00a0std, <code>seeds</code></p>")
    assert "&lt;" in D.figure_caption("a < b")._repr_html_()


def test_setup_notebook_outside_ipython_sets_options():
    import matplotlib
    saved = {k: pd.get_option(k) for k in D.PANDAS_OPTIONS}
    rc = matplotlib.rcParams.copy()
    try:
        D.setup_notebook(font_size=13)
        assert pd.get_option("display.max_colwidth") is None and pd.get_option("display.max_rows") is None
        assert matplotlib.rcParams["font.size"] == 13 and matplotlib.rcParams["figure.autolayout"]
        df = pd.DataFrame({"t": ["y" * 500]})
        assert "..." not in df.to_string()
    finally:
        for k, v in saved.items():
            pd.set_option(k, v)
        matplotlib.rcParams.update(rc)


# --------------------------------------------------------------------------- in a built book

NOTEBOOK = textwrap.dedent('''\
    ---
    jupytext:
      formats: ipynb,md:myst
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # Display recipes

    See {numref}`fig-recipe`.

    ```{code-cell} ipython3
    import matplotlib.pyplot as plt
    import pandas as pd
    from rethink.display import figure_caption, setup_notebook, table, verdict_badge
    setup_notebook()
    ```

    ```{code-cell} ipython3
    ---
    mystnb:
      figure:
        caption: A numbered figure from the cell metadata.
        name: fig-recipe
    ---
    plt.plot([0, 1], [0, 1]);
    ```

    ```{code-cell} ipython3
    plt.plot([0, 1], [1, 0])
    plt.show()
    figure_caption(f"A computed caption: {2 + 2} networks.")
    ```

    ```{code-cell} ipython3
    table(pd.DataFrame({"seed": [0.0, 1.0], "ours": ["41.0 ± 0.2", "40.1 ± 0.3"],
                        "verdict": [verdict_badge("partly"), verdict_badge("reproduced")]}))
    ```
    ''')


@pytest.fixture(scope="module")
def recipes_book(tmp_path_factory):
    """A two-page book with the repository's _config.yml and CSS, its notebook executed with
    nbclient (a real kernel: retina figures, display objects), built with jupyter-book -W."""
    import jupytext
    import nbclient

    from rethink import book

    src = tmp_path_factory.mktemp("recipes")
    shutil.copy(REPO_ROOT / "_config.yml", src / "_config.yml")
    shutil.copytree(REPO_ROOT / "book" / "_static", src / "book" / "_static")
    (src / "book" / "intro.md").write_text("# Intro\n")
    (src / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/recipes\n")
    nb = jupytext.reads(NOTEBOOK, fmt="md:myst")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                extra_arguments=list(book.KERNEL_ARGS),
                                resources={"metadata": {"path": str(src)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    jupytext.write(nb, src / "book" / "recipes.ipynb", fmt="ipynb")
    out = subprocess.run([*book._jupyter_book(), "build", str(src), "-W", "--keep-going"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return nb, (src / "_build" / "html" / "book" / "recipes.html").read_text()


def test_retina_figures(recipes_book):
    nb, _ = recipes_book
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2
    assert all(o.get("metadata", {}).get("image/png", {}).get("width") for o in images), \
        "retina PNGs carry their 1x width"


def test_numbered_figure_caption_from_cell_metadata(recipes_book):
    _, html = recipes_book
    assert "<figcaption>" in html and "A numbered figure from the cell metadata." in html
    assert 'href="#fig-recipe"' in html          # {numref} resolved


def test_computed_caption_table_and_badges_in_the_page(recipes_book):
    _, html = recipes_book
    assert '<p class="rethink-caption">A computed caption: 4 networks.</p>' in html
    assert 'class="rethink-table"' in html and "41.0\u00a0±\u00a00.2" in html
    assert '<span class="verdict verdict-partly">partly</span>' in html
    assert "_static/rethink.css" in html
