"""The book in self-contained pieces: the plan (rethink.pieces), the runner, bundles and merging
(rethink.bundle); end to end on fake data at smoke, pieces in separate processes."""
from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest

from rethink import bundle as B
from rethink import pieces as P
from rethink.results.store import ResultsStore, config_key

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import piece_child  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- the plan


def _check_plan(plan: P.Plan) -> None:
    """Every cell once; each piece under budget or one cell alone with a warning; every upstream
    network of a cell either an earlier cell of its piece or retrained by it, upstream first."""
    cells = [n.id for n in plan.nodes.values() if n.is_cell]
    placed = [c.id for p in plan.pieces for c in p.cells]
    assert sorted(placed) == sorted(cells) and len(placed) == len(set(placed))
    assert [p.id for p in plan.pieces] == list(range(plan.pieces[0].id, plan.pieces[0].id + len(plan.pieces)))
    for p in plan.pieces:
        if p.benchmark:
            assert p.id == 0 and not p.cells and bool(p.warning) == (p.estimate_s > plan.budget_s)
            continue
        if p.estimate_s > plan.budget_s:
            assert len(p.cells) == 1 and p.warning and f"piece {p.id}:" in " ".join(plan.warnings)
        else:
            assert p.warning is None
        assert p.estimate_s == pytest.approx(sum(c.cost_s for c in p.cells) + p.retrain_s)
        retrained = [n.id for n in p.retrains]
        for i, r in enumerate(p.retrains):   # upstream first
            assert all(u in retrained[:i] or u in [c.id for c in p.cells] for u in P.closure(plan.nodes, [r.id])
                       if u in retrained)
        before: set = set()
        for c in p.cells:
            for u in P.closure(plan.nodes, [c.id]):
                assert u in before or u in retrained, (p.id, c.label(), u)
            before.add(c.id)
        assert not set(retrained) & {c.id for c in p.cells}


@functools.lru_cache(maxsize=None)
def _book_plan(profile: str, budget: float = 300.0) -> P.Plan:
    """A plan of the whole book (made once per session: the full profile's takes seconds)."""
    return P.make_plan(profile, budget)


@pytest.mark.parametrize("profile, budget", [("smoke", 300.0), ("smoke", 12.0), ("full", 300.0), ("full", 120.0)])
def test_plan_covers_every_cell_under_budget(profile, budget):
    plan = _book_plan(profile, budget)
    _check_plan(plan)
    if profile == "full":
        assert plan.pieces[0].benchmark and plan.pieces[0].id == 0 and plan.pieces[1].id == 1
        assert "Noisy Student seed 0" in plan.pieces[1].title   # the priority order
    else:
        assert not any(p.benchmark for p in plan.pieces) and plan.pieces[0].id == 1
    if budget < 60:
        assert plan.warnings   # some smoke cells (5 s of start-up each) and their retraining exceed 12 s
    again = P.make_plan(profile, budget)   # deterministic: the same ids for the same pieces
    assert [(p.id, p.cells_key) for p in again.pieces] == [(p.id, p.cells_key) for p in plan.pieces]


def test_the_full_book_fits_the_hour_it_is_planned_for():
    """Issue 13's target: chapters 1-5 and the benchmark piece <= 60 estimated minutes on the
    reference GPU, in pieces of <= 5; no Noisy Student teacher retrained (ablations are fused
    into their teacher's chain)."""
    plan = _book_plan("full")
    ch1_5 = [p for p in plan.pieces if p.benchmark or not all(c.experiment in P.LATER_CHAPTERS for c in p.cells)]
    assert sum(p.estimate_s for p in ch1_5) <= 60 * 60, [(p.id, round(p.estimate_s)) for p in ch1_5]
    assert all(p.estimate_s <= 300 + 1e-9 for p in plan.pieces)
    assert not any(r.experiment == "noisy_student" and r.is_cell for p in plan.pieces for r in p.retrains)


def test_the_reproduce_page_quotes_the_plan_as_it_is():
    text = (REPO / "book" / "reproduce.md").read_text()
    start, end = text.index("<!-- plan:full"), text.index("<!-- /plan:full -->")
    quoted = text[text.index("\n", start) + 1:end].strip()
    assert quoted == P.plan_markdown(_book_plan("full")), \
        "book/reproduce.md is stale: paste `python -m rethink.book plan --profile full --markdown` between its markers"


def test_plan_fuses_evaluations_with_their_network():
    plan = _book_plan("full")
    first = plan.pieces[1]
    roles = {(c.experiment, c.role) for c in first.cells}
    assert {("noisy_student", "teacher"), ("noisy_student", "student_3"), ("robustness", "corruptions student_3")} \
        <= roles
    # the chain is fused: nothing of it is retrained; only the fixed baseline (a network with no
    # chapter cell of its own, the -A filter and mCE normaliser) is trained as an upstream
    assert all(not r.is_cell and "airbench94" in r.text for r in first.retrains), first.retrains
    by_cell = {c.id: p for p in plan.pieces for c in p.cells}
    zoo = next(c for c in plan.nodes.values() if c.experiment == "zoo" and c.role == "resnet10t" and c.seed == 0)
    transfer = [c for c in plan.nodes.values() if c.experiment == "transfer" and c.upstream == (zoo.id,)]
    assert any(by_cell[t.id] is by_cell[zoo.id] for t in transfer)
    # pieces follow the rules' order
    rule_of = {r.title: i for i, r in enumerate(P.PRIORITY)}
    order = [rule_of[p.title.rsplit(" (", 1)[0] if p.title.endswith(")") else p.title] for p in plan.pieces[1:]]
    assert order == sorted(order)


def test_plan_ids_do_not_depend_on_the_store(tmp_path):
    plan = P.make_plan("smoke")
    store = ResultsStore(tmp_path / "store")
    cell = plan.pieces[1].cells[0]
    store.put(cell.experiment, cell.config, {"top1": 0.5}, {"wall_time_s": 3.0, "device": "cpu: x"})
    states = {s.piece.id: s for s in P.piece_states(plan, store)}
    assert states[plan.pieces[1].id].status in ("partial", "done") and states[plan.pieces[0].id].status == "missing"
    assert states[plan.pieces[1].id].measured_s == 3.0 and states[plan.pieces[1].id].measured_from == "cells"
    assert [(p.id, p.cells_key) for p in P.make_plan("smoke").pieces] == [(p.id, p.cells_key) for p in plan.pieces]


@pytest.mark.parametrize("text, seconds", [("5m", 300), ("90s", 90), ("1.5h", 5400), ("4", 240), ("7.5min", 450)])
def test_parse_duration(text, seconds):
    assert P.parse_duration(text) == seconds


def test_bad_options_are_one_line_errors(capsys):
    from rethink import book

    for argv, words in ((["plan", "--profile", "smoke", "--budget", "5x"], "--budget '5x'"),
                        (["plan", "--profile", "smoke", "--chapters", "07_nope"], "--chapters 07_nope"),
                        (["piece", "--profile", "smoke", "--next"], "needs --budget"),
                        (["piece", "--profile", "smoke", "--id", "999", "--dry-run"], "--id 999"),
                        (["plan", "--profile", "smokey"], "unknown profile")):
        assert book.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err


def test_plan_cli_text_and_json(capsys, tmp_path, monkeypatch):
    from rethink import book

    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "store"))
    assert book.main(["plan", "--profile", "smoke"]) == 0
    text = capsys.readouterr().out
    assert "pieces of at most 5 min" in text and "still to run" in text and "missing" in text
    assert book.main(["plan", "--profile", "smoke", "--budget", "20s", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["budget_s"] == 20 and doc["pieces"] and all(p["status"] == "missing" for p in doc["pieces"])
    assert sum(len(p["cells"]) for p in doc["pieces"]) == sum(
        1 for n in P.book_nodes("smoke").values() if n.is_cell)


def test_plan_imports_no_jupyter_or_pandas():
    """The runner needs only what the experiment modules need (a bare GPU machine)."""
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('jupytext', 'papermill', 'nbformat', 'pandas', 'matplotlib',\n"
            "                                   'IPython', 'jupyter_book'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from rethink import book\n"
            "sys.exit(book.main(['plan', '--profile', 'smoke', '--json']))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO / "lib")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["pieces"]


def test_next_takes_the_pieces_that_fit_in_priority_order(capsys, tmp_path, monkeypatch):
    from rethink import book

    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "store"))
    plan = _book_plan("smoke")
    states = P.piece_states(plan, ResultsStore(tmp_path / "store"))
    chosen, skipped = P.select_next(plan, states, 120.0)
    assert [p.id for p in chosen] == [p.id for p in plan.pieces if p.id in {c.id for c in chosen}]  # in order
    assert sum(s.remaining_s for s in states if s.piece in chosen) <= 120.0
    assert chosen[0].id == 1 and all(f"piece {s.piece.id} " in " ".join(skipped)
                                     for s in states if s.piece not in chosen)
    assert book.main(["piece", "--profile", "smoke", "--next", "--budget", "2m", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"running {len(chosen)} pieces ({', '.join(str(p.id) for p in chosen)})")


def test_next_does_not_start_a_piece_that_no_longer_fits(tmp_path, monkeypatch):
    """The first piece overruns its estimate: the next one, chosen by estimate, is not started."""
    plan = _book_plan("smoke")
    clock = [1000.0]
    monkeypatch.setattr(P, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=lambda: 0.0,
                                                         perf_counter=lambda: clock[0]))

    def overrun(self, piece):
        clock[0] += 3600
        return {"id": piece.id, "status": "done"}

    monkeypatch.setattr(P.Runner, "run_piece", overrun)
    lines: list[str] = []
    report = P.run_pieces(plan, budget_s=180.0, store=ResultsStore(tmp_path / "store"), log=lines.append)
    assert [r["id"] for r in report.ran] == [1]
    assert any(line.startswith("not starting piece") for line in lines) and "not started: piece" in lines[-1]


def test_pieces_needing_what_the_machine_lacks(tmp_path, monkeypatch):
    plan = _book_plan("smoke")
    monkeypatch.setitem(P.REQUIRES_FALLBACK, "noisy_student", ("no_such_package_here|$NO_SUCH_VARIABLE",))
    monkeypatch.delenv("NO_SUCH_VARIABLE", raising=False)
    with pytest.raises(P.PlanError, match="noisy_student needs no_such_package_here or \\$NO_SUCH_VARIABLE"):
        P.run_pieces(plan, ids=[1], store=ResultsStore(tmp_path / "s"), log=lambda s: None, dry_run=True)
    lines: list[str] = []
    P.run_pieces(plan, budget_s=3600.0, store=ResultsStore(tmp_path / "s"), log=lines.append, dry_run=True)
    ns_pieces = {p.id for p in plan.pieces if any(c.experiment == "noisy_student" for c in p.cells)}
    assert not ns_pieces & {int(x) for x in lines[0].split("(")[1].split(")")[0].split(", ")}
    monkeypatch.setenv("NO_SUCH_VARIABLE", "/somewhere")   # an environment variable is an alternative
    assert not P.lacking(plan.piece(1))


def test_benchmark_piece_is_bundled_and_merged(tmp_path, monkeypatch):
    plan = P.make_plan("smoke", chapters=["03_noisy_student"], benchmark=True)
    assert plan.pieces[0].benchmark and plan.pieces[0].id == 0

    real_run = subprocess.run

    def fake_suite(cmd, **kwargs):   # benchmarks/suite.py, faked: its output file only
        if "--out" not in cmd:
            return real_run(cmd, **kwargs)
        out = Path(cmd[cmd.index("--out") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"schema": "rethink-benchmark-suite/1", "device": "cpu: test", "wall_s": 99.0}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(P.subprocess, "run", fake_suite)
    store = ResultsStore(tmp_path / "machine")
    report = P.run_pieces(plan, ids=[0], store=store, bundle_path=tmp_path / "b.tar.gz", log=lambda s: None,
                          bench_dir=tmp_path / "bench-machine")
    assert not report.failed
    read = B.read_bundle(tmp_path / "b.tar.gz")
    assert set(read.kinds.values()) == {"benchmark", "piece-log"}
    merged = B.merge(tmp_path / "b.tar.gz", store_root=tmp_path / "checkout", bench_dir=tmp_path / "bench")
    assert [p for p, _ in merged.added if p.startswith("benchmarks/")] == ["benchmarks/results/suite-full-cpu.json"]
    states = P.piece_states(plan, ResultsStore(tmp_path / "checkout"), bench_dir=tmp_path / "bench")
    assert states[0].status == "done" and states[0].runs == 1


# ---------------------------------------------------------------- end to end on fake data

CHAPTER = ["--chapters", "03_noisy_student"]
TINY = [f"03_noisy_student.{k}={v}" for k, v in dict(
    labels=20, in_domain_unlabeled=10, out_of_domain_unlabeled=12, teacher_arch="resnet10_w16",
    student_archs="[resnet10_w16]", seeds="[0]", ablations="[hard_labels]", ablation_seeds="[0]", threshold=0.0,
    unlabeled_ratio=2, batch_size=4, teacher_epochs=2, student_epochs=1, warmup_epochs=0.5,
    randaugment_magnitude=5).items()]
PLAN_ARGS = CHAPTER + [a for t in TINY for a in ("-p", t)]


@pytest.fixture
def fake_book(data_env, data_make_tar, data_fake_tiny, monkeypatch):
    """Fake CIFAR-10 (4 train, 2 test images per class) and the 3-class fake Tiny ImageNet,
    registered here as piece_child registers them in a subprocess."""
    from PIL import Image

    from rethink.data import registry

    rng = np.random.default_rng(0)
    files = {}
    for c, name in enumerate(registry.CIFAR10_CLASSES):
        for split, n in (("train", 4), ("test", 2)):
            for k in range(n):
                buf = io.BytesIO()
                img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = 25 * c
                Image.fromarray(img).save(buf, "PNG")
                files[f"fake-cifar/{split}/{name}/{k:04d}.png"] = buf.getvalue()
    data_make_tar(data_env / "fake-cifar.tar.gz", files)
    for name, spec in piece_child.fake_specs().items():
        monkeypatch.setitem(registry.DATASETS, name, spec)
    return data_env


def _plan():
    """The chapter's plan with a budget that fits the teacher -> student chain but not its
    ablation too, so that the ablation's piece must retrain the teacher (at the default budget
    the ablation is fused into its teacher's chain)."""
    whole = P.make_plan("smoke", 300.0, chapters=CHAPTER[1:], overrides=TINY)
    fused = next(p for p in whole.pieces if any(c.role == "student_1" for c in p.cells))
    assert [c.role for c in fused.cells] == ["teacher", "student_1", "ablation:hard_labels"] and not fused.retrains
    budget = P.estimate(whole.nodes, [c.id for c in fused.cells if not c.role.startswith("ablation:")])
    return P.make_plan("smoke", budget, chapters=CHAPTER[1:], overrides=TINY)


def _budget(plan):
    return ["--piece-budget", f"{plan.budget_s!r}s"]   # the children make the same plan


def _ids(plan):
    """The chain piece (teacher -> student) and the ablation piece (retrains the teacher)."""
    chain = next(p for p in plan.pieces if any(c.role == "student_1" for c in p.cells))
    ablation = next(p for p in plan.pieces if any(c.role.startswith("ablation:") for c in p.cells))
    assert [c.role for c in chain.cells] == ["teacher", "student_1"] and not chain.retrains
    assert [n.role for n in ablation.retrains] == ["teacher"]
    return chain.id, ablation.id


def _child(tmp_path, name, argv, *, store, kill_at=None):
    """piece_child.py ARGV with its own (empty) cache and the given store."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "RETHINK_CACHE": str(tmp_path / f"cache-{name}"),
           "RETHINK_RESULTS": str(store), "OMP_NUM_THREADS": "1", "RETHINK_COMMIT": "test-commit"}
    if kill_at:
        env["KILL_AT_TRAIN"] = str(kill_at)
    return subprocess.run([sys.executable, str(Path(__file__).parent / "piece_child.py"), *argv], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


_untimed = B.untimed   # a result without its wall-clock numbers (seconds, rates)


def _chapter_records(root: Path) -> dict:
    return {(r["experiment"], r["key"]): r for r in ResultsStore(root).records("noisy_student")}


def test_pieces_in_separate_processes_equal_one_run(fake_book, tmp_path, monkeypatch):
    plan = _plan()
    chain, ablation = _ids(plan)
    checkout = tmp_path / "checkout"   # the store the bundles are merged into

    # piece `chain` on an empty machine, its bundle merged into the checkout
    a = _child(tmp_path, "a", ["piece", "--profile", "smoke", *PLAN_ARGS, *_budget(plan), "--id", str(chain),
                               "--out", str(tmp_path / "a.tar.gz")], store=tmp_path / "machine-a")
    assert a.returncode == 0, a.stderr[-3000:] + a.stdout[-3000:]
    assert f"[piece {chain} · 1/2] noisy_student [teacher] supervised resnet10_w16 20 labels seed 0  top-1" in a.stdout
    assert "summary: 1 piece run" in a.stdout and "bundle:" in a.stdout
    report = B.merge(tmp_path / "a.tar.gz", store_root=checkout)
    assert sorted(p.split("/")[1] for p, _ in report.added) == ["noisy_student", "noisy_student", "pieces"]

    # piece `ablation` on another empty machine holding the checkout's records: it retrains the teacher
    shutil.copytree(checkout, tmp_path / "machine-b")
    b = _child(tmp_path, "b", ["piece", "--profile", "smoke", *PLAN_ARGS, *_budget(plan), "--id", str(ablation),
                               "--out", str(tmp_path / "b.tar.gz")], store=tmp_path / "machine-b")
    assert b.returncode == 0, b.stderr[-3000:] + b.stdout[-3000:]
    assert "retraining noisy_student [teacher] supervised resnet10_w16 20 labels seed 0" in b.stdout
    report = B.merge(tmp_path / "b.tar.gz", store_root=checkout)
    kinds = sorted(p.split("/")[1] for p, _ in report.added)
    assert kinds == ["noisy_student", "pieces", "retrains"]
    retrain = ResultsStore(checkout).records("retrains")[0]["result"]
    assert retrain["difference"] == 0.0   # the CPU retrains the teacher exactly

    # both pieces in one process, one cache
    monkeypatch.setenv("RETHINK_CACHE", str(tmp_path / "cache-one"))
    together = ResultsStore(tmp_path / "one")
    run = P.run_pieces(plan, ids=[chain, ablation], store=together, log=lambda s: None)
    assert not run.failed and [r["status"] for r in run.ran] == ["done", "done"]
    assert not together.records("retrains")   # the teacher's weights were in the cache

    split, one = _chapter_records(checkout), _chapter_records(together.root)
    assert split.keys() == one.keys() and len(one) == 3
    for k in one:
        assert split[k]["config"] == one[k]["config"]
        assert _untimed(split[k]["result"]) == _untimed(one[k]["result"]), k

    # the plan sees both pieces done, with their measured minutes from the pieces log
    states = {s.piece.id: s for s in P.piece_states(plan, ResultsStore(checkout))}
    assert states[chain].status == "done" and states[ablation].status == "done"
    assert states[chain].measured_from == "runs" and states[chain].runs == 1
    assert {s.status for i, s in states.items() if i not in (chain, ablation)} == {"missing"}
    text = P.format_plan(plan, list(states.values()))
    assert f"{chain:>4}  done" in text


def test_killed_piece_resumes_without_retraining_the_stored_cell(fake_book, tmp_path, monkeypatch):
    plan = _plan()
    chain, _ = _ids(plan)
    store = tmp_path / "machine"
    killed = _child(tmp_path, "k", ["piece", "--profile", "smoke", *PLAN_ARGS, *_budget(plan), "--id", str(chain),
                                    "--out", str(tmp_path / "k.tar.gz")], store=store, kill_at=2)
    assert killed.returncode == -9, killed.stderr[-3000:]
    teacher, student = plan.piece(chain).cells
    path = ResultsStore(store).path(teacher.experiment, teacher.config)
    stored = path.read_bytes()
    assert not ResultsStore(store).path(student.experiment, student.config).exists()
    # the bundle of the killed run holds the cell that finished
    partial = B.read_bundle(tmp_path / "k.tar.gz")
    assert partial.manifest["complete"] is False and partial.manifest["commit"] == "test-commit"
    assert f"results/noisy_student/{teacher.key}.json" in partial.files

    # run again with the same machine's cache: the teacher is stored, not retrained
    monkeypatch.setenv("RETHINK_CACHE", str(tmp_path / "cache-k"))
    monkeypatch.setenv("RETHINK_RESULTS", str(store))
    lines: list[str] = []
    run = P.run_pieces(plan, ids=[chain], bundle_path=tmp_path / "k2.tar.gz", log=lines.append)
    assert not run.failed
    assert any(line.endswith(f"{teacher.label()}  stored") for line in lines)
    assert not any("] retraining " in line for line in lines)
    assert path.read_bytes() == stored and not ResultsStore(store).records("retrains")
    assert ResultsStore(store).path(student.experiment, student.config).exists()
    log = ResultsStore(store).records("pieces")
    assert [(r["result"]["trained"], r["result"]["stored"]) for r in log] == [(1, 1)]


# ---------------------------------------------------------------- bundles


def _store_with_records(root: Path) -> list[dict]:
    store = ResultsStore(root)
    prov = {"profile": "smoke", "device": "cpu: test", "commit": "abc", "wall_time_s": 1.5}
    return [store.put("noisy_student", {"kind": "supervised", "seed": s}, {"top1": 0.1 * s}, prov) for s in range(3)]


def _bundle(path: Path, files: dict[str, bytes], *, kinds=None, manifest=None) -> Path:
    """A bundle holding ``files`` (as BundleWriter writes it, or with ``manifest`` instead)."""
    w = B.BundleWriter(path, profile="smoke", budget_s=300)
    for rel, data in files.items():
        w.add(rel, data, (kinds or {}).get(rel, "cell"))
    if manifest is None:
        w.finish()
        return path
    with tarfile.open(path, "w:gz") as tf:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {f"results/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(root.glob("*/*.json"))}


def test_bundle_round_trip(tmp_path):
    _store_with_records(tmp_path / "machine")
    path = _bundle(tmp_path / "b.tar.gz", _files(tmp_path / "machine"))
    read = B.read_bundle(path)
    assert read.manifest["schema"] == B.SCHEMA and read.manifest["complete"] is True
    assert {f["path"] for f in read.manifest["files"]} == set(_files(tmp_path / "machine"))
    report = B.merge(path, store_root=tmp_path / "checkout")
    assert len(report.added) == 3 and not report.conflicts
    assert _files(tmp_path / "checkout") == _files(tmp_path / "machine")   # byte for byte
    again = B.merge(path, store_root=tmp_path / "checkout")
    assert not again.added and len(again.same) == 3


def test_merge_cli_prints_what_it_added(tmp_path, capsys, monkeypatch):
    from rethink import book

    _store_with_records(tmp_path / "machine")
    path = _bundle(tmp_path / "b.tar.gz", _files(tmp_path / "machine"))
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "checkout"))
    assert book.main(["merge", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("added results/noisy_student/") == 3 and "added 3 file(s)" in out


def test_smoke_pieces_and_their_bundles_stay_out_of_the_committed_store(tmp_path, capsys, monkeypatch):
    """smoke is a test of the code: without $RETHINK_RESULTS its piece store and the merge of a
    smoke bundle are build/results-smoke/, never results/; published profiles use results/."""
    from rethink import book, paths

    monkeypatch.delenv("RETHINK_RESULTS", raising=False)
    monkeypatch.setattr(book, "BUILD_DIR", tmp_path / "build")
    assert book.piece_store("smoke").root == tmp_path / "build" / "results-smoke"
    assert book.piece_store("full").root == book.piece_store("small").root == paths.results_root()
    _store_with_records(tmp_path / "machine")
    path = _bundle(tmp_path / "b.tar.gz", _files(tmp_path / "machine"))
    committed = {p: p.read_bytes() for p in paths.results_root().glob("noisy_student/*.json")}
    assert book.main(["merge", str(path)]) == 0
    out = capsys.readouterr().out
    assert "merging into the scratch store" in out and "added 3 file(s)" in out
    assert _files(tmp_path / "build" / "results-smoke") == _files(tmp_path / "machine")
    assert {p: p.read_bytes() for p in paths.results_root().glob("noisy_student/*.json")} == committed
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "mine"))
    assert book.piece_store("smoke").root == tmp_path / "mine"


def _tamper(tmp_path, how: str) -> Path:
    recs = _store_with_records(tmp_path / "machine")
    files = _files(tmp_path / "machine")
    first = f"results/noisy_student/{recs[0]['key']}.json"
    if how == "corrupted":
        path = _bundle(tmp_path / "b.tar.gz", files)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    if how == "checksum":
        path = _bundle(tmp_path / "ok.tar.gz", files)
        manifest = B.read_bundle(path).manifest
        files[first] = files[first].replace(b'"top1": 0.0', b'"top1": 0.9')
        return _bundle(tmp_path / "b.tar.gz", files, manifest=manifest)
    if how == "key":
        rec = json.loads(files[first])
        rec["config"]["seed"] = 7          # the config no longer hashes to the key
        files[first] = json.dumps(rec).encode()
    elif how == "escape":
        files["results/../../outside.json"] = files.pop(first)
    elif how == "experiment":
        files[first.replace("noisy_student", "bogus")] = files.pop(first)
    elif how == "provenance":
        rec = json.loads(files[first])
        del rec["provenance"]["commit"]
        files[first] = json.dumps(rec).encode()
    elif how == "foreign":
        return _bundle(tmp_path / "b.tar.gz", files, manifest={"schema": "something-else/1"})
    return _bundle(tmp_path / "b.tar.gz", files)


@pytest.mark.parametrize("how, words", [
    ("corrupted", "not a readable .tar.gz bundle"),
    ("checksum", "checksum differs from manifest.json"),
    ("key", "is not config_key(config)"),
    ("escape", "not a plain relative path"),
    ("experiment", "unknown experiment 'bogus'"),
    ("provenance", "provenance lacks commit"),
    ("foreign", "expected 'rethink-pieces-bundle/1'"),
])
def test_bad_bundles_are_refused_and_nothing_is_written(tmp_path, capsys, monkeypatch, how, words):
    from rethink import book

    path = _tamper(tmp_path, how)
    checkout = tmp_path / "checkout"
    monkeypatch.setenv("RETHINK_RESULTS", str(checkout))
    with pytest.raises(B.BundleError, match=None) as e:
        B.merge(path, store_root=checkout)
    assert words in str(e.value) and str(path) in str(e.value)
    assert book.main(["merge", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: ") and words in err and "\n" not in err
    assert not checkout.exists() or not list(checkout.rglob("*.json"))
    assert not (tmp_path / "outside.json").exists()


def test_conflicting_record_refuses_the_bundle_unless_skipped(tmp_path):
    recs = _store_with_records(tmp_path / "machine")
    path = _bundle(tmp_path / "b.tar.gz", _files(tmp_path / "machine"))
    checkout = ResultsStore(tmp_path / "checkout")
    checkout.put("noisy_student", recs[1]["config"], {"top1": 0.99}, recs[1]["provenance"])
    with pytest.raises(B.BundleError, match="differ from the store's"):
        B.merge(path, store_root=checkout.root)
    assert len(checkout.records("noisy_student")) == 1
    report = B.merge(path, store_root=checkout.root, skip_conflicts=True)
    assert len(report.added) == 2 and len(report.conflicts) == 1
    assert checkout.get("noisy_student", recs[1]["config"])["result"] == {"top1": 0.99}
    # the same numbers with other wall times (a deterministic re-run) are the same record
    again = json.loads((tmp_path / "machine" / "noisy_student" / f"{recs[2]['key']}.json").read_text())
    checkout.put("noisy_student", again["config"], {**again["result"], "train_time_s": 9.0},
                 {**again["provenance"], "wall_time_s": 99.0})
    report = B.merge(path, store_root=checkout.root, skip_conflicts=True)
    assert f"results/noisy_student/{recs[2]['key']}.json" in report.same
    # an upstream network's retrained record never overrides the store's
    up = _bundle(tmp_path / "up.tar.gz", _files(tmp_path / "machine"),
                 kinds={f"results/noisy_student/{recs[1]['key']}.json": "upstream"})
    report = B.merge(up, store_root=checkout.root)
    assert report.kept and not report.conflicts
