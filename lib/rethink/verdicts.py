"""Verdicts: one per claim of book/claims.yaml, written by the chapters, tabulated by the book.

A chapter that has tested a claim calls::

    from rethink.verdicts import record_verdict
    record_verdict("he2019-scratch-catches-up", "partly",
                   our_value=[41.2, 40.8, 41.0],        # per-seed values -> "41.00 ± 0.20 (n=3)"
                   paper_value="40.7 vs 40.9 at 5x",  # optional: defaults to claims.yaml's
                   profile=profile, chapter="02_scratch", note="Tiny ImageNet stand-in, 64px")

which stores, in the results store under experiment ``verdicts``, a record keyed by
``{claim_id, profile}`` (so a smoke run never overwrites a full one) whose result is
``{claim_id, verdict, paper_value, our_value, profile, chapter, note}``.
The verdict table (notebooks/99_verdicts.md) shows, per claim, the record of the
highest-ranked profile (ties: the latest), and "pending" for claims without one.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from .paths import REPO_ROOT
from .results.store import PROFILE_RANK, ResultsStore, provenance

CLAIMS_FILE = REPO_ROOT / "book" / "claims.yaml"
EXPERIMENT = "verdicts"
VERDICTS = ("reproduced", "partly", "not reproduced")
PENDING = "pending"


def load_claims(path: str | Path | None = None) -> dict:
    """{"papers": {key: {...}}, "claims": [{id, paper, section, claim, paper_value}, ...]}."""
    data = yaml.safe_load(Path(path or CLAIMS_FILE).read_text())
    ids = [c["id"] for c in data["claims"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate claim ids: {dupes}")
    for c in data["claims"]:
        if c["paper"] not in data["papers"]:
            raise ValueError(f"claim {c['id']!r}: unknown paper {c['paper']!r}")
    return data


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


def record_verdict(claim_id: str, verdict: str, *, our_value: Any, profile: str, chapter: str,
                   paper_value: str | None = None, note: str = "", seeds: Iterable[int] | None = None,
                   store: ResultsStore | None = None, claims: dict | None = None) -> dict:
    """Validate and store a verdict record; return the stored record."""
    claims = claims or load_claims()
    by_id = {c["id"]: c for c in claims["claims"]}
    if claim_id not in by_id:
        raise ValueError(f"unknown claim id {claim_id!r}; valid ids: {', '.join(by_id)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    if profile not in PROFILE_RANK:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILE_RANK)}")
    store = store or ResultsStore()
    result = {
        "claim_id": claim_id,
        "verdict": verdict,
        "paper_value": paper_value if paper_value is not None else by_id[claim_id]["paper_value"],
        "our_value": format_value(our_value),
        "our_value_raw": our_value if not isinstance(our_value, str) else None,
        "profile": profile,
        "chapter": chapter,
        "note": note,
    }
    now = time.time()
    return store.put(EXPERIMENT, {"claim_id": claim_id, "profile": profile}, result,
                     provenance(profile, list(seeds or []), 0.0, now))


def best_verdicts(store: ResultsStore | None = None) -> dict[str, dict]:
    """claim_id -> the result of its best record (highest profile rank, then the latest)."""
    store = store or ResultsStore()
    best: dict[str, tuple] = {}
    for rec in store.records(EXPERIMENT):
        res = rec["result"]
        key = (PROFILE_RANK.get(res.get("profile"), -1), rec.get("provenance", {}).get("finished", ""))
        if res["claim_id"] not in best or key > best[res["claim_id"]][0]:
            best[res["claim_id"]] = (key, res)
    return {cid: res for cid, (_, res) in best.items()}


def verdict_rows(claims: dict | None = None, store: ResultsStore | None = None) -> list[dict]:
    """One row per claim, in claims.yaml order; claims with no record are "pending"."""
    claims = claims or load_claims()
    best = best_verdicts(store)
    rows = []
    for c in claims["claims"]:
        paper = claims["papers"][c["paper"]]
        rec = best.get(c["id"])
        rows.append({
            "claim_id": c["id"],
            "paper": paper["short"],
            "arxiv": paper.get("arxiv"),
            "section": c.get("section"),
            "claim": c["claim"],
            "paper_value": rec["paper_value"] if rec else c["paper_value"],
            "our_value": rec["our_value"] if rec else "",
            "verdict": rec["verdict"] if rec else PENDING,
            "profile": rec["profile"] if rec else "",
            "chapter": rec["chapter"] if rec else "",
            "note": rec.get("note", "") if rec else "",
            "unverified": bool(c.get("unverified")),
        })
    return rows


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def verdict_table_markdown(rows: list[dict]) -> str:
    """A Markdown (MyST/GFM) table of the rows: claim, paper's number, ours, verdict."""
    header = ["claim", "paper's number", "ours", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        paper = f"[{r['paper']}](https://arxiv.org/abs/{r['arxiv']})" if r["arxiv"] else r["paper"]
        paper_value = r["paper_value"] + (" (unverified)" if r["unverified"] else "")
        ours = r["our_value"] + (f" — {r['note']}" if r["note"] else "")
        if r["verdict"] == PENDING:
            verdict = "*pending*"
        else:
            verdict = f"**{r['verdict']}** ({r['profile']}, {r['chapter']})"
        lines.append("| " + " | ".join(_cell(x) for x in [
            f"{paper}: {r['claim']} `{r['claim_id']}`", paper_value, ours, verdict]) + " |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> dict[str, int]:
    out = {v: 0 for v in (*VERDICTS, PENDING)}
    for r in rows:
        out[r["verdict"]] += 1
    return out
