"""Verdicts: one per claim of book/claims.yaml, computed by the chapters' rules
(``rethink.reports.<chapter>.verdicts``), stored in the results store, tabulated by the book.

A chapter computes its verdicts and records them::

    from rethink.reports import detection as report
    from rethink.verdicts import record_verdicts
    record_verdicts(report.verdicts(df, ...), profile=profile, chapter="02_detection")

Each verdict (``rethink.reports.rules.verdict``) carries its outcome (reproduced, partly,
not reproduced, inconclusive, not tested), the short number shown in the table, the rule
in words, the claim's preconditions with what this run measured, the reason when it is
inconclusive, and the intervals it rests on. It is stored under experiment ``verdicts``,
keyed by ``{claim_id, profile}`` (a smoke run never overwrites a full one). The verdict
page shows, per claim, the record of the highest-ranked profile (ties: the latest);
a claim without one is "not tested".

Storing refuses a decided outcome (reproduced, partly, not reproduced) whose claim's
preconditions are not all met: below the floor only "inconclusive" can be recorded.
"""
from __future__ import annotations

import html
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from .paths import REPO_ROOT
from .reports.rules import (INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTED, OUTCOMES, PARTLY, REPRODUCED,
                            check_preconditions)
from .results.store import PROFILE_RANK, ResultsStore, provenance

CLAIMS_FILE = REPO_ROOT / "book" / "claims.yaml"
EXPERIMENT = "verdicts"
VERDICTS = OUTCOMES
DECIDED = (REPRODUCED, PARTLY, NOT_REPRODUCED)
PENDING = NOT_TESTED   # the outcome of a claim no chapter has recorded


def load_claims(path: str | Path | None = None) -> dict:
    """{"papers": {key: {...}}, "claims": [{id, paper, section, claim, paper_value,
    preconditions, test, ...}, ...]}, checked for duplicate ids, unknown papers and
    malformed preconditions."""
    path = Path(path or CLAIMS_FILE)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    ids = [c["id"] for c in data["claims"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{path}: duplicate claim ids: {dupes}")
    for c in data["claims"]:
        if c["paper"] not in data["papers"]:
            raise ValueError(f"{path}: claim {c['id']!r}: unknown paper {c['paper']!r}")
        for p in c.get("preconditions", []):
            missing = [k for k in ("id", "text", "why") if k not in p]
            kinds = [k for k in ("at_least", "at_most", "equals") if k in p]
            if missing or len(kinds) != 1:
                raise ValueError(f"{path}: claim {c['id']!r}, precondition {p.get('id', '?')!r}: needs id, "
                                 f"text, why and exactly one of at_least / at_most / equals")
    return data


def claims_by_id(claims: dict | None = None) -> dict[str, dict]:
    return {c["id"]: c for c in (claims or load_claims())["claims"]}


def _check_decided(v: dict, claim: dict) -> None:
    """A decided outcome needs every precondition of its claim measured and met."""
    if v["verdict"] not in DECIDED:
        return
    wanted = [p["id"] for p in claim.get("preconditions", [])]
    checks = {c["id"]: c for c in v.get("preconditions", [])}
    missing = [i for i in wanted if i not in checks]
    unmet = [i for i in wanted if i in checks and not checks[i]["met"]]
    if missing or unmet:
        raise ValueError(f"verdict {v['verdict']!r} for {claim['id']!r} below its scale floor "
                         f"(unmet: {unmet}, not checked: {missing}): record 'inconclusive' with the reason")


def record_verdict(v: dict, *, profile: str, chapter: str, store: ResultsStore | None = None,
                   claims: dict | None = None) -> dict:
    """Validate and store one verdict (``rethink.reports.rules.verdict``); return the record."""
    claims = claims or load_claims()
    by_id = claims_by_id(claims)
    claim_id = v.get("claim_id")
    if claim_id not in by_id:
        raise ValueError(f"unknown claim id {claim_id!r}; valid ids: {', '.join(by_id)}")
    if v.get("verdict") not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {v.get('verdict')!r}")
    if profile not in PROFILE_RANK:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILE_RANK)}")
    _check_decided(v, by_id[claim_id])
    if v["verdict"] in (INCONCLUSIVE, NOT_TESTED) and not v.get("reason"):
        raise ValueError(f"{claim_id}: an {v['verdict']} verdict needs its reason")
    store = store or ResultsStore()
    result = {**v, "paper_value": v.get("paper_value") or by_id[claim_id]["paper_value"],
              "profile": profile, "chapter": chapter}
    return store.put(EXPERIMENT, {"claim_id": claim_id, "profile": profile}, result,
                     provenance(profile, list(v.get("seeds") or []), 0.0, time.time()))


def record_verdicts(verdicts: Iterable[dict], *, profile: str, chapter: str,
                    store: ResultsStore | None = None) -> list[dict]:
    claims = load_claims()
    return [record_verdict(v, profile=profile, chapter=chapter, store=store, claims=claims) for v in verdicts]


def format_value(value: Any, digits: int = 2) -> str:
    """A per-seed list -> "mean ± std (n=k)"; {mean, std[, n]} likewise; a number or a string as is."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "mean" in value:
        mean, std, n = value["mean"], value.get("std"), value.get("n")
    elif isinstance(value, (list, tuple)):
        vals = [float(v) for v in value]
        if not vals:
            return ""
        mean = statistics.fmean(vals)
        std = statistics.stdev(vals) if len(vals) > 1 else None
        n = len(vals)
    elif isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) and not math.isnan(value) else str(value)
    else:
        return str(value)
    text = f"{mean:.{digits}f}"
    if std is not None:
        text += f" ± {std:.{digits}f}"
    if n is not None:
        text += f" (n={n})"
    return text


def _is_current(res: dict) -> bool:
    """Records written before verdicts carried their preconditions cannot be trusted to
    respect a floor: they are shown, but as inconclusive."""
    return "preconditions" in res and "rule" in res


def best_verdicts(store: ResultsStore | None = None) -> dict[str, dict]:
    """claim_id -> the result of its best record (highest profile rank, then the latest)."""
    store = store or ResultsStore()
    best: dict[str, tuple] = {}
    for rec in store.records(EXPERIMENT):
        res = rec.get("result") or {}
        if "claim_id" not in res:
            print(f"warning: {store.path(EXPERIMENT, rec.get('config', {}))} is not a verdict record: skipped",
                  file=sys.stderr)
            continue
        key = (PROFILE_RANK.get(res.get("profile"), -1), rec.get("provenance", {}).get("finished", ""))
        if res["claim_id"] not in best or key > best[res["claim_id"]][0]:
            best[res["claim_id"]] = (key, res)
    return {cid: res for cid, (_, res) in best.items()}


def verdict_rows(claims: dict | None = None, store: ResultsStore | None = None) -> list[dict]:
    """One row per claim, in claims.yaml order; claims with no record are "not tested"."""
    claims = claims or load_claims()
    best = best_verdicts(store)
    rows = []
    for c in claims["claims"]:
        paper = claims["papers"][c["paper"]]
        rec = best.get(c["id"])
        row = {"claim_id": c["id"], "paper": paper["short"], "paper_key": c["paper"],
               "arxiv": paper.get("arxiv"), "section": c.get("section"), "claim": c["claim"],
               "paper_value": c["paper_value"], "compared": c.get("compared", ""),
               "unverified": bool(c.get("unverified")), "test": c.get("test", ""),
               "verdict": NOT_TESTED, "our_value": "", "profile": "", "chapter": "", "note": "",
               "rule": "", "reason": "no chapter of the book has tested it yet", "preconditions":
               check_preconditions(c, {}) if c.get("preconditions") else []}
        if rec:
            row.update({k: rec.get(k, row[k]) for k in ("verdict", "our_value", "profile", "chapter",
                                                       "note", "rule", "reason", "preconditions")})
            if not _is_current(rec):
                row.update(verdict=INCONCLUSIVE, reason=f"recorded ({rec.get('verdict')}) before the book "
                           "checked scale floors: re-run the chapter")
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict[str, int]:
    out = {v: 0 for v in VERDICTS}
    for r in rows:
        out[r["verdict"]] += 1
    return out


def summary_line(rows: list[dict]) -> str:
    """'28 claims: 0 reproduced, ..., 7 not tested (profiles: small 18, full 3)'."""
    counts = summary(rows)
    profiles: dict[str, int] = {}
    for r in rows:
        if r["profile"]:
            profiles[r["profile"]] = profiles.get(r["profile"], 0) + 1
    by_rank = sorted(profiles, key=lambda p: -PROFILE_RANK.get(p, -1))
    where = ", ".join(f"{p} {profiles[p]}" for p in by_rank)
    return (f"{len(rows)} claims: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
            + (f" (verdict records by profile: {where})" if where else ""))


# ------------------------------------------------------------------ rendering


def badge(outcome: str) -> str:
    """An HTML pill (CSS classes in book/_static/rethink.css)."""
    cls = "verdict-" + outcome.replace(" ", "-")
    return f'<span class="verdict {cls}">{html.escape(outcome)}</span>'


def _esc(text: Any) -> str:
    return html.escape(str(text if text is not None else ""))


def floor_html(checks: list[dict]) -> str:
    if not checks:
        return "<p>No scale floor: the claim is decided by its rule alone.</p>"
    rows = "".join(
        f"<tr><td>{_esc(c['text'])}</td><td>{_esc(c['required'])}</td><td>{_esc(c['shown'])}</td>"
        f"<td>{'met' if c['met'] else '<b>not met</b>'}</td></tr>" for c in checks)
    return ("<table class='rethink-floor'><thead><tr><th>precondition</th><th>needs</th><th>this run</th>"
            f"<th></th></tr></thead><tbody>{rows}</tbody></table>")


def details_html(row: dict) -> str:
    """The rule, the floor, the statistics and the note of a verdict, for a dropdown."""
    parts = []
    if row.get("reason"):
        parts.append(f"<p><b>Why {_esc(row['verdict'])}:</b> {_esc(row['reason'])}</p>")
    if row.get("rule"):
        parts.append(f"<p><b>Rule:</b> {_esc(row['rule'])}</p>")
    if row.get("test"):
        parts.append(f"<p><b>Statistics:</b> {_esc(row['test'])}</p>")
    parts.append(floor_html(row.get("preconditions") or []))
    if row.get("note"):
        parts.append(f"<p>{_esc(row['note'])}</p>")
    if row.get("compared"):
        parts.append(f"<p><b>What the paper compared:</b> {_esc(row['compared'])}</p>")
    return "".join(parts)


def verdict_table_html(rows: list[dict]) -> str:
    """Three columns (claim with its verdict badge; the paper's number; ours), and the rule,
    the floor and the numbers in a dropdown under each row's own figures."""
    out = ["<table class='rethink-verdicts'><thead><tr><th>claim</th><th>paper</th><th>this book</th>"
           "</tr></thead><tbody>"]
    for r in rows:
        link = (f"<a href='https://arxiv.org/abs/{_esc(r['arxiv'])}'>{_esc(r['paper'])}</a>"
                if r.get("arxiv") else _esc(r["paper"]))
        where = f" <span class='verdict-where'>{_esc(r['profile'])} · {_esc(r['chapter'])}</span>" \
            if r["profile"] else ""
        claim = f"{badge(r['verdict'])}{where}<br>{_esc(r['claim'])} <small>({link})</small>"
        paper = _esc(r["paper_value"]) + (" <i>(unverified)</i>" if r["unverified"] else "")
        ours = _esc(r["our_value"]) if r["our_value"] else "—"
        ours += f"<details><summary>rule, floor, numbers</summary>{details_html(r)}</details>"
        out.append(f"<tr><td>{claim}</td><td>{paper}</td><td>{ours}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def chapter_table_html(verdicts: list[dict], claims: dict | None = None) -> str:
    """A chapter's own verdicts (from ``rethink.reports.<chapter>.verdicts``), as on the verdict page."""
    by_id = claims_by_id(claims)
    rows = []
    for v in verdicts:
        c = by_id[v["claim_id"]]
        rows.append({"claim": c["claim"], "paper": "", "arxiv": None, "paper_value": c["paper_value"],
                     "unverified": bool(c.get("unverified")), "compared": c.get("compared", ""),
                     "test": c.get("test", ""), "profile": "", "chapter": "", **v})
    return verdict_table_html(rows).replace(" <small>()</small>", "")
