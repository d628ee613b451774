"""The book in self-contained pieces: plan them, run them on a machine that starts empty, bring
their records back (``rethink.bundle``).

    python -m rethink.book plan --profile full [--budget 5m] [--json]
    python -m rethink.book piece --profile full --next --budget 8m [--out BUNDLE]
    python -m rethink.book piece --profile full --id 4 [--id 5]
    python -m rethink.book merge BUNDLE

*Plan.* Every cell of every chapter at a profile is in exactly one *piece*. Weights never enter
the results store (only metrics do), so a piece retrains inside itself every upstream network
its cells need (the protocol's ``upstream(config)``, followed to the end of the chain), and its
estimate (the modules' ``cost``, seconds on the reference GPU) includes those retrainings. A
network and the evaluations of it are kept in one piece where the budget allows: a Noisy
Student network with its robustness cells, a zoo network with its transfer cells, detection
cells in groups that each retrain their zoo backbone once. The order of the pieces is
``PRIORITY``, a list of rules (data, not code per chapter); pieces are numbered in that order,
from the profile's cells alone, so an id does not change when other pieces finish (it changes
when the profile, ``--budget``, ``--chapters`` or ``-p`` change the plan: give ``piece`` the same).

*Status.* A piece is done when every cell's record is in the store, partly done when some are.
Its measured minutes come from the pieces log (experiment ``pieces``: a record per run of a
piece, with its wall time; the latest run that did the whole piece, else its runs summed) or,
without one, from its cells' own wall times (their ``provenance``).

*Runner.* ``piece`` trains each cell with the store (a finished cell is stored at once: a
killed piece loses at most the cell in flight), retraining a missing upstream network just
before the first cell that needs it, and rewrites one bundle file after every cell (the records
added, the retrains records, the pieces log), so even a killed run leaves a bundle behind.
It needs only the experiment modules' packages (no Jupyter, no pandas).
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from . import paths as _paths
from .results.store import ResultsStore, canonical_json, config_key

PIECES = "pieces"                 # the results-store experiment of the pieces log
RETRAINS = "retrains"             # written by experiments.record_retrain
DEFAULT_BUDGET_S = 300.0          # the per-piece budget the planner packs to
LATER_CHAPTERS = ("zoph",)        # outside the one-hour target of chapters 1-5 and the benchmark


@dataclass(frozen=True)
class Rule:
    """Which cells a group of pieces takes: ``cells``, fnmatch patterns on "experiment:role"
    (a robustness role is "<benchmark> <scored role>"), and ``seeds``, the seeds of the
    network a cell descends from (its *root*: the end of its upstream chain, or itself)."""
    title: str
    cells: tuple[str, ...]
    seeds: tuple[int, ...] | None = None


# The order of the book's pieces: each cell goes to the first rule it matches; a rule's cells
# are grouped by root network (a network with its evaluations) and packed under the budget.
# an ablation's student learns from its seed's teacher: fused into that chain, no teacher is retrained
NS_CHAIN = ("noisy_student:teacher", "noisy_student:student_*", "noisy_student:ablation:*")
NS_CHAIN_EVAL = ("robustness:* teacher", "robustness:* student_*", "robustness:* ablation:*")
NS_BASELINES = ("noisy_student:supervised_*", "noisy_student:matched_control*")
NS_BASELINES_EVAL = ("robustness:* supervised_*", "robustness:* matched_control*")
PRIORITY: tuple[Rule, ...] = (
    Rule("Noisy Student seed 0: teacher -> students and ablations, with their robustness and the baseline's",
         NS_CHAIN + NS_CHAIN_EVAL + ("robustness:* baseline",), seeds=(0,)),
    Rule("Noisy Student seed 0: supervised baselines and controls, with their robustness",
         NS_BASELINES + NS_BASELINES_EVAL, seeds=(0,)),
    Rule("zoo seed 0: each network with its transfer cells",
         ("zoo:*", "transfer:fixed *", "transfer:finetune *"), seeds=(0,)),
    Rule("transfer controls: scratch and random init", ("transfer:scratch *", "transfer:random *")),
    Rule("detection, each group retraining its zoo backbone once", ("detection:*",)),
    Rule("Noisy Student, other seeds, with their ablations and robustness",
         NS_CHAIN + NS_BASELINES + NS_CHAIN_EVAL + NS_BASELINES_EVAL + ("robustness:* baseline",)),
    Rule("zoo, other seeds (the variant study), with their transfer cells", ("zoo:*", "transfer:*")),
    Rule("Zoph et al.: the inits, the detectors and their self-trained students", ("zoph:*",)),
    Rule("other cells", ("*",)),
)

# The benchmark piece (first: it measures the reference GPU the estimates assume).
BENCHMARK = {"profiles": ("full", "paper"), "size": "full", "budget_s": 100, "estimate_s": 120.0,
             "title": "benchmark suite (measures the reference GPU)"}


class PlanError(ValueError):
    """A plan cannot be made or run as asked (the message names the option and the fix)."""


# ------------------------------------------------------------------ the plan


@dataclass
class Node:
    """A cell of a chapter, or an upstream network that is no chapter's cell."""
    experiment: str
    key: str
    config: dict
    role: str
    seed: int
    cost_s: float
    upstream: tuple[tuple[str, str], ...]   # direct upstream (experiment, key)
    is_cell: bool
    index: int                              # position in the book's order (upstream first)
    data_root: str | None = None
    text: str = ""                          # the module's describe(config), squeezed

    @property
    def id(self) -> tuple[str, str]:
        return (self.experiment, self.key)

    def label(self) -> str:
        """'noisy_student [ablation:hard_labels] student 1 resnet18_w64 ...': the role where the
        module's description does not say it."""
        said = all(w in self.text.split() or w in self.text for w in self.role.split())
        return f"{self.experiment} {self.text}" if said or not self.is_cell else \
            f"{self.experiment} [{self.role}] {self.text}"


@dataclass
class Piece:
    id: int
    title: str
    cells: list[Node]
    retrains: list[Node]                    # upstream networks it retrains, upstream first
    estimate_s: float
    cells_key: str                          # what the piece is, whatever its id
    warning: str | None = None
    benchmark: dict | None = None           # the benchmark piece's settings

    @property
    def retrain_s(self) -> float:
        return sum(n.cost_s for n in self.retrains)


@dataclass
class Plan:
    profile: str
    budget_s: float
    pieces: list[Piece]
    nodes: dict[tuple[str, str], Node]
    chapters: list[str]
    overrides: list[str] = field(default_factory=list)

    def piece(self, pid: int) -> Piece:
        for p in self.pieces:
            if p.id == pid:
                return p
        ids = [p.id for p in self.pieces]
        raise PlanError(f"--id {pid}: no such piece at profile {self.profile!r} "
                        f"(ids {min(ids)}..{max(ids)}; see `python -m rethink.book plan --profile {self.profile}`)")

    @property
    def warnings(self) -> list[str]:
        return [f"piece {p.id}: {p.warning}" for p in self.pieces if p.warning]


def _mins(seconds: float) -> str:
    """Seconds as minutes for a message: 5, 0.67, 1.5 (not 0.666667)."""
    return f"{round(seconds / 60, 2):g}"


def parse_duration(text: str, option: str = "--budget") -> float:
    """'5m', '90s', '1.5h' or a bare number of minutes -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise PlanError(f"{option} {text!r}: expected a positive duration like 5m, 90s or 1.5h")
    return float(m.group(1)) * {"s": 1, "sec": 1, None: 60, "m": 60, "min": 60, "h": 3600}[m.group(2)]


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _chapter_overrides(overrides: list[str], stems: list[str]) -> dict[str, dict]:
    """'-p STEM.KEY=V' to its chapter; '-p KEY=V' to every chapter that declares KEY."""
    from . import profiles

    parsed = profiles.parse_overrides(overrides)
    nbs = profiles.notebook_paths()
    out: dict[str, dict] = {s: {} for s in stems}
    for key, value in parsed.items():
        stem, dot, name = key.partition(".")
        if dot and stem in nbs:
            if stem not in out:
                raise PlanError(f"-p {key}: chapter {stem!r} is not in the plan (--chapters {' '.join(stems)})")
            out[stem][name] = value
            continue
        users = [s for s in stems if key in profiles.declared_parameters(nbs[s])]
        if not users:
            raise PlanError(f"-p {key}: no chapter of the plan ({', '.join(stems)}) has a parameter {key!r}; "
                            f"use STEM.KEY=VALUE")
        for s in users:
            out[s][key] = value
    return out


def chapter_modules(chapters: list[str] | None = None) -> list:
    """The experiment modules of the plan, in the book's order (``--chapters``: stems or names)."""
    from . import experiments

    modules = experiments.all_modules()
    if not chapters:
        return modules
    known = {m.STEM: m for m in modules} | {m.NAME: m for m in modules}
    bad = [c for c in chapters if c not in known]
    if bad:
        raise PlanError(f"--chapters {' '.join(bad)}: unknown; chapters: {', '.join(m.STEM for m in modules)}")
    wanted = {known[c].NAME for c in chapters}
    return [m for m in modules if m.NAME in wanted]


def book_nodes(profile: str, *, chapters: list[str] | None = None, overrides: list[str] | None = None,
               data_root=None) -> dict[tuple[str, str], Node]:
    """Every cell of the chapters at ``profile`` and every upstream network they need, in the
    book's order (a cell's upstream before it)."""
    from . import experiments
    from .profiles import experiment_params

    modules = chapter_modules(chapters)
    per_stem = _chapter_overrides(list(overrides or []), [m.STEM for m in modules])
    nodes: dict[tuple[str, str], Node] = {}
    extra: list[tuple[str, dict, str | None]] = []
    for module in modules:
        params, root = experiment_params(profile, module.STEM, per_stem[module.STEM])
        root = data_root or root
        for cell in module.cells(params, data_root=root, profile=profile):
            node_id = (module.NAME, cell.key)
            if node_id in nodes:   # a config shared by two roles is one cell
                continue
            ups = tuple((e, config_key(c)) for e, c in module.upstream(cell.config))
            extra += [(e, c, root) for e, c in module.upstream(cell.config)]
            nodes[node_id] = Node(module.NAME, cell.key, cell.config, cell.role, cell.seed,
                                  float(module.cost(cell.config)), ups, True, len(nodes), root,
                                  _squeeze(module.describe(cell.config)))
    while extra:   # upstream networks that are no chapter's cell (e.g. robustness's baseline)
        exp, config, root = extra.pop(0)
        node_id = (exp, config_key(config))
        if node_id in nodes:
            continue
        module = experiments.get(exp)
        ups = tuple((e, config_key(c)) for e, c in module.upstream(config))
        extra += [(e, c, root) for e, c in module.upstream(config)]
        nodes[node_id] = Node(exp, node_id[1], config, "(upstream)", config.get("seed", 0),
                              float(module.cost(config)), ups, False, len(nodes), root,
                              _squeeze(module.describe(config)))
    return nodes


def closure(nodes: dict, ids) -> set[tuple[str, str]]:
    """Every upstream network of ``ids``, followed to the end of each chain (``ids`` excluded
    unless one is upstream of another)."""
    out: set = set()
    todo = [u for i in ids for u in nodes[i].upstream]
    while todo:
        u = todo.pop()
        if u not in out:
            out.add(u)
            todo += nodes[u].upstream
    return out


def _depth(nodes: dict, node_id, memo: dict) -> int:
    if node_id not in memo:
        ups = nodes[node_id].upstream
        memo[node_id] = 0 if not ups else 1 + max(_depth(nodes, u, memo) for u in ups)
    return memo[node_id]


def retrain_set(nodes: dict, ids) -> list[Node]:
    """The upstream networks that cells ``ids`` need and that are not among them, upstream first."""
    ids = set(ids)
    memo: dict = {}
    need = closure(nodes, ids) - ids
    return [nodes[i] for i in sorted(need, key=lambda i: (_depth(nodes, i, memo), nodes[i].index))]


def estimate(nodes: dict, ids) -> float:
    """Seconds on the reference GPU of running cells ``ids`` on an empty machine: the cells and
    the upstream networks they need that are not among them."""
    return sum(nodes[i].cost_s for i in ids) + sum(n.cost_s for n in retrain_set(nodes, ids))


def root_of(nodes: dict, node_id) -> tuple[str, str]:
    """The network a cell descends from: the end of its (first) upstream chain, or itself."""
    while nodes[node_id].upstream:
        node_id = nodes[node_id].upstream[0]
    return node_id


def _matches(rule: Rule, nodes: dict, node: Node) -> bool:
    name = f"{node.experiment}:{node.role}"
    if not any(fnmatch.fnmatchcase(name, pat) for pat in rule.cells):
        return False
    return rule.seeds is None or nodes[root_of(nodes, node.id)].seed in rule.seeds


def _group_order(nodes: dict, group: list[Node]) -> list[Node]:
    """Upstream first; an evaluation as soon as what it needs is placed (so that a group split
    over pieces keeps each network's evaluations with it)."""
    ids = {n.id for n in group}
    needed_by = {u for n in group for u in n.upstream if u in ids}
    placed: set = set()
    out: list[Node] = []
    todo = list(group)
    while todo:
        ready = [n for n in todo if all(u in placed or u not in ids for u in n.upstream)]
        pick = next((n for n in ready if n.id not in needed_by and any(u in ids for u in n.upstream)), ready[0])
        out.append(pick)
        placed.add(pick.id)
        todo.remove(pick)
    return out


def _pack(nodes: dict, groups: list[list[Node]], budget_s: float) -> list[list[Node]]:
    """Groups into pieces under ``budget_s`` (their retraining included). A group goes whole into
    the piece it adds least to (retraining avoided counts; ties: the earliest), else into a new
    piece; a group larger than a piece is cut, in order, into chunks that each fill a piece (each
    after the first retraining what it needs), placed the same way; a cell larger than a piece
    by itself is a chunk alone (warned)."""
    cost = lambda cells: estimate(nodes, [c.id for c in cells])  # noqa: E731
    pieces: list[list[Node]] = []

    def place(cells: list[Node]) -> None:
        best, best_add = None, None
        for i, p in enumerate(pieces):
            before, after = cost(p), cost(p + cells)
            if after <= budget_s + 1e-9 and (best_add is None or after - before < best_add - 1e-9):
                best, best_add = i, after - before
        if best is None:
            pieces.append(list(cells))
        else:
            pieces[best] += cells

    for group in groups:
        if cost(group) <= budget_s + 1e-9:
            place(group)
            continue
        chunk: list[Node] = []
        for cell in group:
            if chunk and cost(chunk + [cell]) > budget_s + 1e-9:
                place(chunk)
                chunk = []
            chunk.append(cell)
        place(chunk)
    return pieces


def _cells_key(cells: list[Node]) -> str:
    return hashlib.sha256(canonical_json(sorted(f"{n.experiment}:{n.key}" for n in cells)).encode()).hexdigest()[:16]


def make_plan(profile: str, budget_s: float = DEFAULT_BUDGET_S, *, chapters: list[str] | None = None,
              overrides: list[str] | None = None, data_root=None, rules: tuple[Rule, ...] = PRIORITY,
              benchmark: bool | None = None) -> Plan:
    """The book at ``profile`` as pieces of at most ``budget_s`` seconds on the reference GPU."""
    nodes = book_nodes(profile, chapters=chapters, overrides=overrides, data_root=data_root)
    cells = [n for n in nodes.values() if n.is_cell]
    claimed: dict[tuple[str, str], int] = {}
    for n in cells:
        rule = next((i for i, r in enumerate(rules) if _matches(r, nodes, n)), None)
        if rule is None:
            raise PlanError(f"{n.label()}: no rule of rethink.pieces.PRIORITY takes it; add one "
                            "(the last rule, '*', takes every cell)")
        claimed[n.id] = rule
    pieces: list[Piece] = []
    pid = 0
    if benchmark if benchmark is not None else (profile in BENCHMARK["profiles"] and not chapters):
        bench = Piece(0, BENCHMARK["title"], [], [], BENCHMARK["estimate_s"], f"benchmark:{BENCHMARK['size']}",
                      benchmark=dict(BENCHMARK))
        if bench.estimate_s > budget_s:
            bench.warning = (f"the benchmark suite takes ~{bench.estimate_s / 60:.1f} min (--budget-s "
                             f"{BENCHMARK['budget_s']} and start-up), over the {_mins(budget_s)} min budget")
        pieces.append(bench)
    for i, rule in enumerate(rules):
        mine = [n for n in cells if claimed[n.id] == i]
        groups: dict[tuple[str, str], list[Node]] = {}
        for n in mine:
            groups.setdefault(root_of(nodes, n.id), []).append(n)
        ordered = sorted(groups.items(), key=lambda kv: nodes[kv[0]].index if nodes[kv[0]].is_cell
                         else kv[1][0].index)
        packed = _pack(nodes, [_group_order(nodes, g) for _, g in ordered], budget_s)
        for k, group in enumerate(packed, 1):
            pid += 1
            group = _group_order(nodes, sorted(group, key=lambda n: n.index))
            ids = [c.id for c in group]
            title = rule.title + (f" ({k}/{len(packed)})" if len(packed) > 1 else "")
            piece = Piece(pid, title, group, retrain_set(nodes, ids), estimate(nodes, ids), _cells_key(group))
            if piece.estimate_s > budget_s + 1e-9:
                own = group[0].cost_s
                why = (f"~{own / 60:.1f} min by itself" if own > budget_s else
                       f"~{piece.estimate_s / 60:.1f} min with the upstream networks it retrains")
                piece.warning = (f"{group[0].label()} takes {why}, over the {_mins(budget_s)} min budget: "
                                 "it is alone in its piece")
            pieces.append(piece)
    return Plan(profile, budget_s, pieces, nodes, [m.STEM for m in chapter_modules(chapters)], list(overrides or []))


# ------------------------------------------------------------------ status


@dataclass
class PieceState:
    piece: Piece
    done: int
    total: int
    remaining_s: float            # estimate of what is left, with the retraining it needs
    runs_s: float | None          # wall time from the pieces log: its latest whole run, else its runs summed
    cells_s: float | None         # its finished cells' own wall times (their provenance)
    runs: int
    device: str | None

    @property
    def status(self) -> str:
        return "done" if self.done == self.total else "partial" if self.done else "missing"

    @property
    def measured_s(self) -> float | None:
        return self.runs_s if self.runs_s is not None else self.cells_s

    @property
    def measured_from(self) -> str | None:
        return "runs" if self.runs_s is not None else "cells" if self.cells_s is not None else None


def benchmark_files(size: str = "full", bench_dir: Path | None = None) -> list[Path]:
    d = Path(bench_dir or _paths.REPO_ROOT / "benchmarks") / "results"
    return sorted(d.glob(f"suite-{size}-*.json"))


def piece_runs(store: ResultsStore, profile: str) -> dict[str, list[dict]]:
    """The pieces log at ``profile``: cells_key -> its runs' records, oldest first."""
    out: dict[str, list[dict]] = {}
    for rec in store.records(PIECES):
        c = rec.get("config", {})
        if c.get("profile") == profile:
            out.setdefault(c.get("cells_key"), []).append(rec)
    for runs in out.values():
        runs.sort(key=lambda r: r["config"].get("started", ""))
    return out


def piece_states(plan: Plan, store: ResultsStore | None = None, *, bench_dir: Path | None = None) -> list[PieceState]:
    store = store or ResultsStore()
    runs = piece_runs(store, plan.profile)
    states = []
    for p in plan.pieces:
        logged = runs.get(p.cells_key, [])
        whole = [r for r in logged if r["result"].get("status") == "done" and not r["result"].get("stored")]
        # a run that did the whole piece: the latest; else the runs that did it together (resumed)
        run_s = whole[-1]["result"]["wall_s"] if whole else \
            sum(r["result"].get("wall_s", 0.0) for r in logged) if logged else None
        device = logged[-1]["provenance"].get("device") if logged else None
        if p.benchmark:
            files = benchmark_files(p.benchmark["size"], bench_dir)
            if run_s is None and files:
                try:
                    data = json.loads(files[-1].read_text())
                    run_s, device = data.get("wall_s"), data.get("device")
                except (OSError, ValueError):
                    pass
            states.append(PieceState(p, int(bool(files)), 1, 0.0 if files else p.estimate_s, run_s, None,
                                     len(logged), device))
            continue
        missing, cell_s, cell_device = [], 0.0, None
        for n in p.cells:
            path = store.root / n.experiment / f"{n.key}.json"
            if not path.exists():
                missing.append(n.id)
                continue
            try:
                prov = json.loads(path.read_text()).get("provenance", {})
                cell_s += float(prov.get("wall_time_s") or 0.0)
                cell_device = cell_device or prov.get("device")
            except (OSError, ValueError):
                missing.append(n.id)
        done = len(p.cells) - len(missing)
        states.append(PieceState(p, done, len(p.cells), estimate(plan.nodes, missing) if missing else 0.0,
                                 run_s, cell_s if done else None, len(logged), device or cell_device))
    return states


# ------------------------------------------------------------------ showing the plan


def _short_device(device: str | None) -> str:
    if not device:
        return ""
    if device.startswith("cuda:"):
        name = device.split(":", 1)[1].split(" x")[0].strip()
        return name.replace("NVIDIA ", "").split()[0] if name else "cuda"
    return "cpu"


def _roles(cells: list[Node], most: int = 4) -> str:
    """'teacher, student_1 (seed 0)'; 'corruptions/natural of teacher, student_3' for a full cross
    product of two-word roles; else grouped by first word."""
    def listed(items):
        return ", ".join(items if len(items) <= most else items[:most - 1] + [f"... (+{len(items) - most + 1} more)"])

    roles = list(dict.fromkeys(c.role for c in cells))
    pairs = [r.split(" ", 1) for r in roles]
    text = listed(roles)
    if len(roles) > 1 and all(len(p) == 2 for p in pairs):
        firsts = list(dict.fromkeys(p[0] for p in pairs))
        rests = list(dict.fromkeys(p[1] for p in pairs))
        if len(firsts) * len(rests) == len(roles):
            text = f"{'/'.join(firsts)} of {listed(rests)}"
        else:
            text = "; ".join(f"{f} {listed([p[1] for p in pairs if p[0] == f])}" for f in firsts)
    seeds = sorted({c.seed for c in cells})
    return text + f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def piece_lines(p: Piece) -> list[str]:
    """What a piece trains and evaluates, and what it retrains."""
    if p.benchmark:
        return [f"python benchmarks/suite.py --size {p.benchmark['size']} --budget-s {p.benchmark['budget_s']}; "
                f"done when benchmarks/results/suite-{p.benchmark['size']}-*.json exists"]
    by_exp: dict[str, list[Node]] = {}
    for c in p.cells:
        by_exp.setdefault(c.experiment, []).append(c)
    lines = [f"{exp} x{len(cs)}: {_roles(cs)}" for exp, cs in by_exp.items()]
    if p.retrains:
        lines.append("retrains: " + "; ".join(f"{n.label()}{'' if n.is_cell else ' [no chapter cell]'} "
                                              f"(~{n.cost_s / 60:.1f} min)" for n in p.retrains))
    return lines


def format_plan(plan: Plan, states: list[PieceState]) -> str:
    budget = plan.budget_s
    out = [f"The book at profile {plan.profile!r} in {len(plan.pieces)} pieces of at most {_mins(budget)} min "
           "on the reference GPU",
           "(estimates: the modules' cost(), rethink.experiments.cost; measured: the pieces log, else the cells' "
           "own wall times*)", "",
           f"{'id':>4}  {'status':<13} {'est.':>5} {'measured':>9}  {'on':<6} piece (minutes on the reference GPU)"]
    over = []
    for s in states:
        p = s.piece
        status = s.status if s.status != "partial" else f"partial {s.done}/{s.total}"
        meas = "" if s.measured_s is None else f"{s.measured_s / 60:.1f}{'*' if s.measured_from == 'cells' else ''}"
        flag = ""
        if s.measured_s is not None and s.measured_s > budget:
            flag = " !"
            over.append(f"piece {p.id}: {s.measured_s / 60:.1f} min measured > {_mins(budget)} min budget "
                        f"(estimate {p.estimate_s / 60:.1f})")
        out.append(f"{p.id:>4}  {status:<13} {p.estimate_s / 60:>5.1f} {meas + flag:>9}  "
                   f"{_short_device(s.device):<6} {p.title}")
        out += [f"{'':>8}{line}" for line in piece_lines(p)]
        if s.status == "partial":
            out.append(f"{'':>8}left: ~{s.remaining_s / 60:.1f} min ({s.total - s.done} cells and the retraining "
                       "they need)")
        if s.runs_s is not None and s.cells_s is not None:
            out.append(f"{'':>8}measured: {s.runs_s / 60:.1f} min in {s.runs} run{'s' * (s.runs > 1)} "
                       f"(its cells {s.cells_s / 60:.1f} min; the rest is retraining and start-up)")
    cells = sum(len(p.cells) for p in plan.pieces)
    total = sum(p.estimate_s for p in plan.pieces)
    retrain = sum(p.retrain_s for p in plan.pieces)
    counts = {k: sum(1 for s in states if s.status == k) for k in ("done", "partial", "missing")}
    left = sum(s.remaining_s for s in states)
    out += ["", f"{len(plan.pieces)} pieces, {cells} cells: ~{total / 60:.0f} min on the reference GPU, of which "
                f"~{retrain / 60:.0f} min retrain upstream networks inside pieces",
            f"done {counts['done']}, partly done {counts['partial']}, missing {counts['missing']}; "
            f"still to run: ~{left / 60:.0f} min",
            "* the cells' own wall times (no piece log): without start-up and retraining"]
    if plan.warnings:
        out += ["", "warnings:"] + [f"  {w}" for w in plan.warnings]
    if over:
        out += ["", "over budget when run:"] + [f"  {o}" for o in over]
    return "\n".join(out)


def chapter_minutes(plan: Plan) -> dict[str, float]:
    """Estimated minutes per chapter stem (its cells), plus 'benchmark' and 'retraining' (the
    upstream networks pieces retrain), in the book's order; they sum to the plan's total."""
    from . import experiments

    modules = experiments.all_modules()
    stems = {m.NAME: m.STEM for m in modules}
    out: dict[str, float] = {}
    for p in plan.pieces:
        if p.benchmark:
            out["benchmark"] = out.get("benchmark", 0.0) + p.estimate_s / 60
        for c in p.cells:
            out[stems[c.experiment]] = out.get(stems[c.experiment], 0.0) + c.cost_s / 60
        if p.retrains:
            out["retraining"] = out.get("retraining", 0.0) + p.retrain_s / 60
    order = ["benchmark"] + [m.STEM for m in modules] + ["retraining"]
    return {k: out[k] for k in order if k in out}


def plan_markdown(plan: Plan) -> str:
    """The plan's pieces and estimates as a Markdown table (the reproduce page quotes it; a test
    keeps the two equal)."""
    rows = ["| piece | what it runs | est. min |", "|---:|---|---:|"]
    for p in plan.pieces:
        what = "; ".join(piece_lines(p)).replace("|", "/")
        rows.append(f"| {p.id} | {p.title}: {what} | {p.estimate_s / 60:.1f} |")
    mins = chapter_minutes(plan)
    total = sum(mins.values())
    rows += ["", f"{len(plan.pieces)} pieces of at most {_mins(plan.budget_s)} min, ~{total:.0f} min in all on "
                 "the reference GPU by the cost model: " + ", ".join(f"{k} {v:.1f}" for k, v in mins.items()) + "."]
    later = [p for p in plan.pieces if p.cells and all(c.experiment in LATER_CHAPTERS for c in p.cells)]
    if later:
        first = sum(p.estimate_s for p in plan.pieces if p not in later) / 60
        rows[-1] += (f" Chapters 1-5 with the benchmark (the one-hour target; chapter 6 came later): "
                     f"~{first:.1f} min.")
    return "\n".join(rows)


def plan_json(plan: Plan, states: list[PieceState]) -> dict:
    return {
        "profile": plan.profile, "budget_s": plan.budget_s, "chapters": plan.chapters, "overrides": plan.overrides,
        "pieces": [{
            "id": s.piece.id, "title": s.piece.title, "status": s.status, "done": s.done, "total": s.total,
            "estimate_s": round(s.piece.estimate_s, 1), "remaining_s": round(s.remaining_s, 1),
            "retrain_s": round(s.piece.retrain_s, 1), "measured_s": s.measured_s, "measured_from": s.measured_from,
            "runs_s": s.runs_s, "cells_s": s.cells_s,
            "over_budget": s.measured_s is not None and s.measured_s > plan.budget_s,
            "runs": s.runs, "device": s.device, "cells_key": s.piece.cells_key, "warning": s.piece.warning,
            "benchmark": s.piece.benchmark,
            "cells": [{"experiment": n.experiment, "key": n.key, "role": n.role, "seed": n.seed,
                       "estimate_s": round(n.cost_s, 1), "describe": n.text} for n in s.piece.cells],
            "retrains": [{"experiment": n.experiment, "key": n.key, "estimate_s": round(n.cost_s, 1),
                          "chapter_cell": n.is_cell, "describe": n.text} for n in s.piece.retrains],
        } for s in states],
        "warnings": plan.warnings,
    }


# ------------------------------------------------------------------ running pieces


def _has_weights(node: Node) -> bool:
    """What experiments.load_network looks for: the network's weights in the user cache."""
    return (ResultsStore.artifact_dir(node.experiment, node.config) / "weights.pt").exists()


# What a module needs beyond the runtime's core is its ``REQUIRES`` (alternatives separated
# by '|', a '$NAME' alternative being an environment variable); none declared: nothing.
REQUIRES_FALLBACK: dict[str, tuple[str, ...]] = {}


def lacking(piece: Piece) -> list[str]:
    """What this machine lacks of what the piece's experiment modules need."""
    import importlib.util

    from . import experiments

    def present(alt: str) -> bool:
        return bool(os.environ.get(alt[1:])) if alt.startswith("$") else importlib.util.find_spec(alt) is not None

    out = []
    for exp in sorted({n.experiment for n in piece.cells + piece.retrains}):
        needs = getattr(experiments.get(exp), "REQUIRES", None)
        for need in REQUIRES_FALLBACK.get(exp, ()) if needs is None else needs:
            if not any(present(alt) for alt in need.split("|")):
                out.append(f"{exp} needs {' or '.join(need.split('|'))}")
    return out


def _some(items: list[str], most: int = 3) -> str:
    return "; ".join(items[:most]) + (f"; ... ({len(items) - most} more)" if len(items) > most else "")


@dataclass
class RunReport:
    ran: list[dict] = field(default_factory=list)         # per piece: id, status, wall_s, trained, ...
    skipped: list[str] = field(default_factory=list)
    bundle: Path | None = None
    failed: bool = False


def device_tag() -> str:
    """'h200', 'h100', 'cpu': the suffix of the benchmark file a machine writes."""
    try:
        import torch
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name().replace("NVIDIA", "").strip().split()
            return re.sub(r"[^a-z0-9]", "", (name[0] if name else "cuda").lower()) or "cuda"
    except ImportError:
        pass
    return "cpu"


class Runner:
    """Runs pieces against the store, writing the pieces log and the bundle as it goes."""

    def __init__(self, plan: Plan, *, store: ResultsStore | None = None, bundle_path: Path | None = None,
                 log=print, bench_dir: Path | None = None):
        from .bundle import BundleWriter, StoreWatcher

        self.plan = plan
        self.store = store or ResultsStore()
        self.log = log
        self.bench_dir = Path(bench_dir or _paths.REPO_ROOT / "benchmarks")
        self.watcher = StoreWatcher(self.store.root)
        self.bundle = BundleWriter(bundle_path, profile=plan.profile, budget_s=plan.budget_s) if bundle_path else None
        self.own: set[tuple[str, str]] = set()   # cells of the pieces run so far

    def _sync_bundle(self) -> None:
        if self.bundle is None:
            return
        for rel, data in self.watcher.added():
            parts = Path(rel).parts
            exp, key = parts[0], Path(rel).stem
            kind = {RETRAINS: "retrain", PIECES: "piece-log"}.get(exp) or (
                "cell" if (exp, key) in self.own else "upstream")
            self.bundle.add(f"results/{rel}", data, kind)
        self.bundle.write()

    def _ensure(self, node_id, piece: Piece, seen: set) -> float:
        """Retrain an upstream network whose weights are not in the cache (its own upstream
        first); returns the seconds it took."""
        from . import experiments

        node = self.plan.nodes[node_id]
        if node_id in seen or _has_weights(node):
            return 0.0
        took = sum(self._ensure(u, piece, seen) for u in node.upstream)
        t0 = time.perf_counter()
        self.log(f"[piece {piece.id}] retraining {node.label()} (upstream; weights are not stored)")
        experiments.load_network(node.experiment, node.config, data_root=node.data_root, store=self.store,
                                 profile=self.plan.profile)
        dt = time.perf_counter() - t0
        seen.add(node_id)
        self.log(f"[piece {piece.id}] retrained {node.label()}  ({dt:.1f}s)")
        return took + dt

    def run_piece(self, piece: Piece) -> dict:
        from functools import partial

        from . import experiments
        from .experiments.protocol import summary_of
        from .results.store import device_description, provenance

        started, t0 = time.time(), time.perf_counter()
        row = {"id": piece.id, "title": piece.title, "trained": 0, "stored": 0, "retrain_s": 0.0,
               "status": "done", "error": None, "cells": [], "retrained": []}
        self.own |= {n.id for n in piece.cells}
        if piece.benchmark:
            self._run_benchmark(piece, row)
        n = len(piece.cells)
        seen: set = set()
        for i, node in enumerate(piece.cells, 1):
            module = experiments.get(node.experiment)
            where = f"[piece {piece.id} · {i}/{n}]"
            if self.store.get(node.experiment, node.config) is not None:
                row["stored"] += 1
                row["cells"].append({"experiment": node.experiment, "key": node.key, "status": "stored"})
                self.log(f"{where} {node.label()}  stored")
                continue
            try:
                for u in node.upstream:
                    before = set(seen)
                    dt = self._ensure(u, piece, seen)
                    row["retrain_s"] += dt
                    row["retrained"] += [{"experiment": e, "key": k} for e, k in seen - before]
                fn = partial(module.train, data_root=node.data_root, store=self.store, profile=self.plan.profile,
                             progress=None, verbose=False)
                rec = self.store.run(node.experiment, node.config, fn, profile=self.plan.profile, seeds=[node.seed])
            except Exception as e:   # noqa: BLE001 - recorded in the pieces log, the run goes on
                traceback.print_exc()
                row.update(status="failed", error=f"{node.label()}: {type(e).__name__}: {e}")
                row["cells"].append({"experiment": node.experiment, "key": node.key, "status": "failed"})
                self.log(f"{where} FAILED {node.label()}: {type(e).__name__}: {e}")
                break
            wall = rec["provenance"]["wall_time_s"]
            row["trained"] += 1
            row["cells"].append({"experiment": node.experiment, "key": node.key, "status": "trained", "wall_s": wall})
            self.log(f"{where} {node.label()}  {summary_of(rec)}  ({wall:.1f}s, est. {node.cost_s:.0f}s)")
            self._sync_bundle()
        wall = time.perf_counter() - t0
        row["wall_s"] = round(wall, 3)
        if row["status"] == "done" and not row["trained"] and not piece.benchmark:
            row["status"] = "stored"   # nothing to do: no log record
        else:
            config = {"profile": self.plan.profile, "piece": piece.id, "cells_key": piece.cells_key,
                      "budget_s": self.plan.budget_s, "device": device_description(),
                      "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(
                          timespec="milliseconds")}
            result = {"title": piece.title, "status": row["status"], "wall_s": round(wall, 3),
                      "estimate_s": round(piece.estimate_s, 1), "retrain_s": round(row["retrain_s"], 3),
                      "trained": row["trained"], "stored": row["stored"], "cells": row["cells"],
                      "retrained": row["retrained"], "error": row["error"]}
            self.store.put(PIECES, config, result, provenance(self.plan.profile, [], wall, started))
        if self.bundle is not None:
            self.bundle.note_piece(row)
        self._sync_bundle()
        verdict = {"done": "done", "stored": "already done", "failed": "FAILED"}[row["status"]]
        self.log(f"piece {piece.id} {verdict} in {wall / 60:.1f} min (estimate {piece.estimate_s / 60:.1f}): "
                 f"{row['trained']} trained, {row['stored']} already stored, retraining {row['retrain_s']:.0f}s"
                 + (f"; {row['error']}" if row["error"] else ""))
        return row

    def _run_benchmark(self, piece: Piece, row: dict) -> None:
        size = piece.benchmark["size"]
        out = self.bench_dir / "results" / f"suite-{size}-{device_tag()}.json"
        cmd = [sys.executable, str(self.bench_dir / "suite.py"), "--size", size,
               "--budget-s", str(piece.benchmark["budget_s"]), "--out", str(out)]
        self.log(f"[piece {piece.id}] {' '.join(cmd[1:])}")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_paths.REPO_ROOT / "lib") + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        code = subprocess.run(cmd, cwd=_paths.REPO_ROOT, env=env).returncode
        if code != 0 or not out.exists():
            row.update(status="failed", error=f"benchmarks/suite.py exited with {code}")
            return
        row["trained"] = 1
        if self.bundle is not None:
            self.bundle.add(f"benchmarks/results/{out.name}", out.read_bytes(), "benchmark")


def select_next(plan: Plan, states: list[PieceState], budget_s: float, *,
                scale: float = 1.0) -> tuple[list[Piece], list[str]]:
    """The highest-priority pieces not done whose estimates (x ``scale``) fit in ``budget_s``
    together, in order; and why the others that are not done were left."""
    chosen, skipped, left = [], [], budget_s
    for s in states:
        if s.status == "done":
            continue
        need = s.remaining_s * scale
        if need <= left:
            chosen.append(s.piece)
            left -= need
        else:
            skipped.append(f"piece {s.piece.id} (~{need / 60:.1f} min > {max(left, 0) / 60:.1f} min left)")
    return chosen, skipped


def measured_scale(plan: Plan, store: ResultsStore, device: str) -> tuple[float, int]:
    """Measured / estimated wall time of the finished runs of pieces on ``device`` (1.0, 0 when none)."""
    est = meas = 0.0
    n = 0
    for runs in piece_runs(store, plan.profile).values():
        for r in runs:
            if r["provenance"].get("device") == device and r["result"].get("status") == "done" \
                    and r["result"].get("stored", 0) == 0 and r["result"].get("estimate_s"):
                est += r["result"]["estimate_s"]
                meas += r["result"]["wall_s"]
                n += 1
    return (meas / est, n) if n and est > 0 else (1.0, 0)


def run_pieces(plan: Plan, *, ids: list[int] | None = None, budget_s: float | None = None,
               store: ResultsStore | None = None, bundle_path: Path | None = None, started: float | None = None,
               log=print, bench_dir: Path | None = None, dry_run: bool = False) -> RunReport:
    """``ids``: run these pieces; else the next ones that fit in ``budget_s`` seconds of wall time
    (counted from ``started``), by estimate, and never starting one that would not fit in what is
    left of the measured time."""
    from .results.store import device_description

    store = store or ResultsStore()
    started = time.monotonic() if started is None else started
    states = piece_states(plan, store, bench_dir=bench_dir)
    by_id = {s.piece.id: s for s in states}
    report = RunReport()
    scale = 1.0
    if ids:
        todo = [plan.piece(i) for i in ids]
        missing = sorted({m for p in todo for m in lacking(p)})
        if missing:
            raise PlanError(f"this machine lacks what the pieces need: {'; '.join(missing)} (pip install it, "
                            "or carry its wheels)")
    else:
        scale, n = measured_scale(plan, store, device_description())
        if n:
            log(f"estimates x {scale:.2f}: measured / estimated wall time of {n} earlier piece runs on this device")
        runnable = []
        for s in states:
            if s.status != "done" and (missing := lacking(s.piece)):
                report.skipped.append(f"piece {s.piece.id} ({'; '.join(missing)})")
            else:
                runnable.append(s)
        todo, skipped = select_next(plan, runnable, budget_s - (time.monotonic() - started), scale=scale)
        report.skipped += skipped
    if not todo:
        log("nothing to run: " + ("every piece is done" if all(s.status == "done" for s in states) else
                                  f"no piece that is not done fits in {budget_s / 60:.1f} min "
                                  f"or can run here ({_some(report.skipped)})"))
        return report
    total = sum(by_id[p.id].remaining_s for p in todo)
    log(f"running {len(todo)} piece{'s' * (len(todo) > 1)} ({', '.join(str(p.id) for p in todo)}) at profile "
        f"{plan.profile!r} on {device_description()}: ~{total * scale / 60:.1f} min estimated"
        + (f" of {_mins(budget_s)} min" if budget_s else ""))
    if dry_run:
        for p in todo:
            log(f"  piece {p.id}: {p.title}, ~{by_id[p.id].remaining_s * scale / 60:.1f} min")
            for line in piece_lines(p):
                log(f"    {line}")
        return report
    runner = Runner(plan, store=store, bundle_path=bundle_path, log=log, bench_dir=bench_dir)
    report.bundle = bundle_path
    for p in todo:
        if budget_s is not None and not ids:
            left = budget_s - (time.monotonic() - started)
            need = by_id[p.id].remaining_s * scale
            if need > left:
                report.skipped.append(f"piece {p.id} (~{need / 60:.1f} min > {max(left, 0) / 60:.1f} min left)")
                log(f"not starting piece {p.id}: ~{need / 60:.1f} min estimated, {max(left, 0) / 60:.1f} min left")
                continue
        row = runner.run_piece(p)
        report.ran.append(row)
        report.failed |= row["status"] == "failed"
    if runner.bundle is not None:
        runner.bundle.finish()
    wall = time.monotonic() - started
    done = [r for r in report.ran if r["status"] != "failed"]
    log(f"summary: {len(report.ran)} piece{'s' * (len(report.ran) != 1)} run in {wall / 60:.1f} min"
        + (f" of {_mins(budget_s)}" if budget_s and not ids else "")
        + f": {len(done)} finished ({', '.join(str(r['id']) for r in done) or '-'})"
        + (f", failed: {', '.join(str(r['id']) for r in report.ran if r['status'] == 'failed')}"
           if report.failed else "")
        + (f"; not started: {_some(report.skipped)}" if report.skipped else ""))
    if runner.bundle is not None:
        log(f"bundle: {bundle_path} ({runner.bundle.describe()}); merge it with "
            f"`python -m rethink.book merge {bundle_path}`")
    return report
