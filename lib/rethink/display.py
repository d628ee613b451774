"""How the chapters show tables, figures and verdicts in the book (and in JupyterLab).

    from rethink.display import setup_notebook, table, figure_caption, verdict_badge
    setup_notebook()                      # first code cell after the parameters
    table(df)                             # a DataFrame as a page-width-safe HTML table
    figure_caption("Top-1 against parameters, mean ± std over 3 seeds.")
    verdict_badge("partly")               # a coloured pill (CSS: book/_static/rethink.css)

``table`` never truncates (no pandas ``...``), drops the pandas index unless asked,
prints NaN as "—" and integer-valued float columns (seeds stored as 2.0) as integers,
keeps "41.0 ± 0.2" on one line, and wraps the table in a ``div.rethink-table`` that
scrolls sideways when the table is wider than the page.

Captions, two recipes that build with jupyter-book 1.x (myst-nb 1.x), both tested in
tests/test_display.py:

* a numbered figure: the cell's ``mystnb.figure`` metadata, in the MyST notebook::

      ```{code-cell} ipython3
      ---
      mystnb:
        figure:
          caption: Top-1 against parameters.
          name: fig-zoo-capacity
      ---
      report.plot_accuracy_vs_capacity(records);
      ```

  renders the cell's image as ``<figure>`` with a numbered ``<figcaption>``, referenced
  with ``{numref}`fig-zoo-capacity```. The caption is static text (no computed values)
  and is shown by the book only, not by JupyterLab.
* a computed caption: ``figure_caption(f"... {n} networks ...")`` as the cell's last
  expression (or ``display(figure_caption(...))``) after the figure: a paragraph in
  ``p.rethink-caption`` under the image, in the book and in JupyterLab, not numbered.

The module imports only pandas and the standard library at import time: matplotlib and
IPython are imported by the functions that need them.
"""
from __future__ import annotations

import html
import math
import numbers
import re
import warnings
from typing import Any, Iterable, Mapping

import pandas as pd

NA = "—"
NBSP = "\u00a0"
VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive", "not tested", "pending")
# at most this many significant digits in a float column whose decimals are not given
SIGNIFICANT = 4
MAX_DECIMALS = 4


# --------------------------------------------------------------------------- values

def _is_na(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):   # arrays, lists: not a scalar NA
        return False


def _is_float(v: Any) -> bool:
    return isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f")


def _html_of(v: Any) -> str | None:
    """Markup an object brings itself (``__html__`` or ``_repr_html_``), else None."""
    for name in ("__html__", "_repr_html_"):
        f = getattr(v, name, None)
        if callable(f):
            return f()
    return None


def _column_decimals(values: list[float]) -> int | None:
    """Decimals for a float column: None if every value is integer-valued (printed as ints),
    else enough for SIGNIFICANT digits of its largest magnitude (at most MAX_DECIMALS)."""
    finite = [float(v) for v in values if not _is_na(v) and math.isfinite(float(v))]
    if all(v.is_integer() for v in finite):
        return None
    biggest = max(abs(v) for v in finite)
    if biggest == 0:
        return 1
    return int(min(MAX_DECIMALS, max(0, SIGNIFICANT - 1 - math.floor(math.log10(biggest)))))


def _fmt_number(v: Any, decimals: int | None) -> str:
    if _is_na(v):
        return NA
    x = float(v)
    if not math.isfinite(x):
        return "∞" if x > 0 else ("−∞" if x < 0 else NA)
    if decimals is None:
        return str(int(x)) if x.is_integer() else repr(x)
    if x != 0 and abs(x) < 10 ** -decimals / 2:     # would print as 0.000: say how small
        return f"{x:.2e}"
    return f"{x:.{decimals}f}"


def _keep_together(text: str) -> str:
    """Non-breaking spaces around ± so "41.0 ± 0.2" never breaks."""
    return re.sub(r"\s*±\s*", f"{NBSP}±{NBSP}", text)


# --------------------------------------------------------------------------- table

class Table:
    """A formatted table: ``_repr_html_`` for notebooks and the book, ``to_markdown()``,
    and a plain-text ``repr``. Build it with ``table(df, ...)``."""

    def __init__(self, columns: list[str], rows: list[list[tuple[str, str | None]]],
                 numeric: list[bool], *, caption: str | None = None, wrap: Iterable[str] = ()):
        self.columns, self.rows, self.numeric = columns, rows, numeric
        self.caption, self.wrap = caption, set(wrap)

    # cells are (text, html or None): html when the value brought its own markup
    def _td(self, j: int, cell: tuple[str, str | None], tag: str = "td") -> str:
        text, markup = cell
        classes = []
        if self.numeric[j]:
            classes.append("num")
        if self.columns[j] in self.wrap:
            classes.append("wrap")
        elif "±" in text:
            classes.append("nowrap")
        attr = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{attr}>{markup if markup is not None else html.escape(text)}</{tag}>"

    def to_html(self) -> str:
        head = "".join(self._td(j, (c, None), "th") for j, c in enumerate(self.columns))
        body = "\n".join("<tr>" + "".join(self._td(j, cell) for j, cell in enumerate(r)) + "</tr>"
                         for r in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        # the inline style scrolls in JupyterLab too, where the book's CSS is not loaded
        return ('<div class="rethink-table" style="overflow-x: auto; max-width: 100%;">\n'
                f'<table class="dataframe rethink">{cap}\n<thead><tr>{head}</tr></thead>\n'
                f"<tbody>\n{body}\n</tbody>\n</table>\n</div>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __html__(self) -> str:
        return self.to_html()

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|").replace("\n", " ")
        out = ["| " + " | ".join(esc(c) for c in self.columns) + " |",
               "|" + "|".join("---:" if n else "---" for n in self.numeric) + "|"]
        out += ["| " + " | ".join(esc(t if m is None else m) for t, m in r) + " |" for r in self.rows]
        return "\n".join(out) + "\n"

    def __repr__(self) -> str:
        widths = [max([len(c)] + [len(r[j][0]) for r in self.rows]) for j, c in enumerate(self.columns)]
        line = lambda cells: "  ".join(t.rjust(w) if n else t.ljust(w)  # noqa: E731
                                       for t, w, n in zip(cells, widths, self.numeric)).rstrip()
        return "\n".join([line(self.columns)] + [line([t for t, _ in r]) for r in self.rows])

    def __len__(self) -> int:
        return len(self.rows)


def table(df: Any, *, index: bool = False, digits: int | Mapping[str, int] | None = None,
          caption: str | None = None, wrap: Iterable[str] = (),
          rename: Mapping[str, str] | None = None) -> Table:
    """A DataFrame (or anything ``pd.DataFrame()`` takes) as a Table for the book.

    index: keep the index as the first column(s) (default: dropped). digits: decimals of
    every float column, or {column: decimals}; by default a float column whose values are
    all integers prints as integers (seeds stored as 2.0 print as 2) and any other gets
    4 significant digits of its largest value. NaN/None print as "—". Strings are escaped;
    a value with ``__html__``/``_repr_html_`` (e.g. ``verdict_badge``) is inserted as
    markup. wrap: columns of long prose, which wrap instead of widening the table. Every
    row and column is shown: nothing is truncated."""
    frame = df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)
    if index:
        frame = frame.reset_index()
    if rename:
        frame = frame.rename(columns=dict(rename))
    columns = [" / ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c)
               for c in frame.columns]
    numeric, formats = [], []
    for j in range(frame.shape[1]):
        values = frame.iloc[:, j].tolist()
        present = [v for v in values if not _is_na(v)]
        is_num = bool(present) and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                       for v in present)
        numeric.append(is_num)
        floats = [v for v in present if _is_float(v)] if is_num else []
        if not floats:
            formats.append(None)
            continue
        auto = _column_decimals(floats)
        explicit = digits.get(columns[j]) if isinstance(digits, Mapping) else None
        if explicit is not None:
            formats.append(explicit)
        elif auto is None:            # integer-valued floats: printed as integers
            formats.append(None)
        else:
            formats.append(digits if isinstance(digits, int) else auto)
    rows = []
    for i in range(frame.shape[0]):
        row = []
        for j in range(frame.shape[1]):
            v = frame.iat[i, j]
            markup = _html_of(v)
            if markup is not None:
                row.append((re.sub(r"<[^>]+>", "", markup), markup))
            elif numeric[j]:
                row.append((_fmt_number(v, formats[j]), None))
            elif _is_na(v):
                row.append((NA, None))
            else:
                row.append((_keep_together(str(v)), None))
        rows.append(row)
    return Table(columns, rows, numeric, caption=caption, wrap=wrap)


# --------------------------------------------------------------------------- verdicts

def verdict_class(verdict: str) -> str:
    """"not reproduced" -> "verdict-not-reproduced" (the CSS classes of book/_static/rethink.css)."""
    slug = re.sub(r"[^a-z]+", "-", str(verdict).strip().lower()).strip("-")
    return f"verdict-{slug}"


class Badge:
    def __init__(self, verdict: str, label: str | None = None):
        self.verdict, self.label = verdict, label if label is not None else verdict

    def __html__(self) -> str:
        return f'<span class="verdict {verdict_class(self.verdict)}">{html.escape(self.label)}</span>'

    _repr_html_ = __html__

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"[{self.label}]"


def verdict_badge(verdict: str, label: str | None = None) -> Badge:
    """A coloured pill for a verdict: ``<span class="verdict verdict-partly">partly</span>``.
    Known verdicts: reproduced, partly, not reproduced, inconclusive, not tested, pending;
    another word gets the grey ``.verdict`` pill. Usable as a table() cell."""
    return Badge(verdict, label)


# --------------------------------------------------------------------------- figures

class Caption:
    def __init__(self, text: str):
        self.text = text

    def _repr_html_(self) -> str:
        s = html.escape(self.text)
        s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", s)
        s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
        return f'<p class="rethink-caption">{_keep_together(s)}</p>'

    def __repr__(self) -> str:
        return self.text


def figure_caption(text: str) -> Caption:
    """A caption paragraph to show under a figure (``p.rethink-caption``), for captions
    with computed values; ``**bold**``, ``*italic*`` and ```code``` are rendered. For a
    numbered figure with a static caption use the cell's ``mystnb.figure`` metadata
    instead (see this module's docstring)."""
    return Caption(text)


# --------------------------------------------------------------------------- setup

PANDAS_OPTIONS = {"display.max_colwidth": None, "display.max_rows": None,
                  "display.max_columns": None, "display.width": 10_000,
                  "display.show_dimensions": False}

RC_PARAMS = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.autolayout": True,          # tight layout for every figure
    "axes.titlesize": "large",
    "axes.labelsize": "medium",
    "legend.fontsize": "small",
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def setup_notebook(*, figure_format: str = "retina", font_size: float = 12,
                   quiet: bool = True) -> None:
    """Set a chapter up for the book: call once, in the first code cell after the parameters.

    * pandas never truncates (max_colwidth, max_rows, max_columns: none);
    * matplotlib: figures as ``retina`` PNG (2x pixels at 1x size; or ``"svg"``, ``"png"``),
      base font ``font_size`` pt, tight layout, light grid;
    * quiet: hides warnings that say nothing about the results (tqdm's "IProgress not
      found", other libraries' DeprecationWarning/FutureWarning); rethink's own warnings
      and every other category still show.
    Idempotent; outside IPython only the options are set."""
    for key, value in PANDAS_OPTIONS.items():
        pd.set_option(key, value)
    import matplotlib
    matplotlib.rcParams.update({**RC_PARAMS, "font.size": font_size})
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats
        except ImportError:   # older IPython
            from IPython.display import set_matplotlib_formats
        set_matplotlib_formats(figure_format)
    if quiet:
        warnings.filterwarnings("ignore", message="IProgress not found")
        for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("default", category=category, module=r"rethink(\.|$)")
