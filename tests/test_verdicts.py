"""The verdict store and page: validation, the floor guard, best profile, legacy records, HTML."""
import pytest

from rethink import verdicts as V
from rethink.reports import rules
from rethink.results.store import ResultsStore


def test_claims_file_lists_every_claim_once_with_wellformed_floors():
    claims = V.load_claims()
    ids = [c["id"] for c in claims["claims"]]
    assert len(ids) == 28 and len(set(ids)) == 28
    assert {c["paper"] for c in claims["claims"]} == {"he2019", "zoph2020", "xie2020", "kornblith2019"}
    for c in claims["claims"]:
        assert c["claim"] and c["paper_value"] and c["section"]
        for p in c.get("preconditions", []):
            assert p["why"] and p["text"]
    tested = [c for c in claims["claims"] if c["paper"] != "zoph2020"]
    assert all(c.get("test") for c in tested)


def test_a_malformed_claims_file_is_named_with_its_line(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text("papers: {a: {short: A}}\nclaims:\n  - id: x\n    paper: a\n   bad: [\n")
    with pytest.raises(ValueError, match=r"claims.yaml \(line \d+, column \d+\): not valid YAML"):
        V.load_claims(bad)
    bad.write_text("papers: {a: {short: A}}\nclaims:\n  - {id: x, paper: a, claim: c, paper_value: v, "
                   "preconditions: [{id: p, text: t, why: w}]}\n")
    with pytest.raises(ValueError, match="exactly one of at_least / at_most / equals"):
        V.load_claims(bad)


def floor(claim_id, **measured):
    return rules.check_preconditions(V.claims_by_id()[claim_id], measured)


MET = dict(teacher_top1=80.0, pool_ratio=20.0, seeds=3, matched_control=True)


def test_a_decided_verdict_below_the_floor_is_refused(tmp_path):
    store = ResultsStore(tmp_path)
    low = rules.verdict("xie2020-top1-gain", "reproduced", ours="50 -> 55", rule="r",
                        checks=floor("xie2020-top1-gain", **{**MET, "teacher_top1": 50.0}))
    with pytest.raises(ValueError, match="below its scale floor"):
        V.record_verdict(low, profile="small", chapter="03", store=store)
    unchecked = rules.verdict("xie2020-top1-gain", "partly", ours="", rule="r", checks=[])
    with pytest.raises(ValueError, match="not checked"):
        V.record_verdict(unchecked, profile="small", chapter="03", store=store)
    ok = rules.verdict("xie2020-top1-gain", "reproduced", ours="80 -> 85", rule="r",
                       checks=floor("xie2020-top1-gain", **MET))
    assert V.record_verdict(ok, profile="full", chapter="03", store=store)["result"]["verdict"] == "reproduced"


def test_record_verdict_validates(tmp_path):
    store = ResultsStore(tmp_path)
    v = rules.verdict("xie2020-top1-gain", "inconclusive", ours="", rule="r", reason="why")
    with pytest.raises(ValueError, match="unknown claim id"):
        V.record_verdict({**v, "claim_id": "nope"}, profile="smoke", chapter="x", store=store)
    with pytest.raises(ValueError, match="verdict must be one of"):
        V.record_verdict({**v, "verdict": "yes"}, profile="smoke", chapter="x", store=store)
    with pytest.raises(ValueError, match="unknown profile"):
        V.record_verdict(v, profile="huge", chapter="x", store=store)
    with pytest.raises(ValueError, match="needs its reason"):
        V.record_verdict({**v, "reason": ""}, profile="smoke", chapter="x", store=store)


def test_rows_not_tested_then_best_profile_then_legacy(tmp_path):
    store = ResultsStore(tmp_path)
    rows = V.verdict_rows(store=store)
    assert all(r["verdict"] == "not tested" for r in rows)
    full = rules.verdict("xie2020-top1-gain", "partly", ours="80 -> 82", rule="r", reason="only the teacher",
                         checks=floor("xie2020-top1-gain", **MET))
    smoke = rules.verdict("xie2020-top1-gain", "inconclusive", ours="1 -> 2", rule="r", reason="below")
    V.record_verdicts([full], profile="full", chapter="03", store=store)
    V.record_verdicts([smoke], profile="smoke", chapter="03", store=store)
    # a record from before the floors: shown as inconclusive, never as its old verdict
    store.put(V.EXPERIMENT, {"claim_id": "he2019-scratch-catches-up", "profile": "small"},
              {"claim_id": "he2019-scratch-catches-up", "verdict": "partly", "our_value": "x", "profile": "small",
               "chapter": "02"}, {"profile": "small", "finished": "2026"})
    rows = {r["claim_id"]: r for r in V.verdict_rows(store=store)}
    assert rows["xie2020-top1-gain"]["verdict"] == "partly" and rows["xie2020-top1-gain"]["profile"] == "full"
    legacy = rows["he2019-scratch-catches-up"]
    assert legacy["verdict"] == "inconclusive" and "before the book checked scale floors" in legacy["reason"]
    counts = V.summary(list(rows.values()))
    assert counts["partly"] == 1 and counts["inconclusive"] == 1 and counts["not tested"] == 26
    line = V.summary_line(list(rows.values()))
    assert line.startswith("28 claims: 0 reproduced, 1 partly, 0 not reproduced, 1 inconclusive, 26 not tested")
    assert "full 1" in line and "small 1" in line


def test_the_html_table_has_three_columns_a_badge_and_the_rule_in_a_dropdown(tmp_path):
    store = ResultsStore(tmp_path)
    v = rules.verdict("xie2020-top1-gain", "inconclusive", ours="50 -> 55%", rule="the rule <in words>",
                      reason="below the scale floor: teacher", checks=floor("xie2020-top1-gain", teacher_top1=50.0))
    V.record_verdicts([v], profile="small", chapter="03_noisy_student", store=store)
    html = V.verdict_table_html(V.verdict_rows(store=store))
    assert html.split("<tbody>")[0].count("<th>") == 3
    assert '<span class="verdict verdict-inconclusive">inconclusive</span>' in html
    assert '<span class="verdict verdict-not-tested">not tested</span>' in html
    assert "<details><summary>rule, floor, numbers</summary>" in html
    assert "the rule &lt;in words&gt;" in html and "<b>not met</b>" in html
    assert html.count("<details>") == 28


def test_format_value():
    assert V.format_value({"mean": 0.5, "std": 0.1, "n": 2}) == "0.50 ± 0.10 (n=2)"
    assert V.format_value([1.0]) == "1.00 (n=1)"
    assert V.format_value("36.3 vs 36.3") == "36.3 vs 36.3"
