"""The one protocol every chapter's experiment module implements, and what they share.

A module (registered in ``rethink.experiments.REGISTRY``) declares::

    NAME = "noisy_student"        # its results-store experiment
    STEM = "03_noisy_student"     # the notebook that narrates it (its profiles section)
    VERSION = 2                   # bumped when training semantics change: part of every config
    DEFAULTS = {...}              # the one source of default parameter values
    SCHEMA = {"epochs": "int>0"}  # types and ranges (else inferred from DEFAULTS)

    def cells(params, data_root=None) -> list[Cell]   # every cell, upstream first
    def train(config, artifact_dir, *, data_root, store, profile, progress, verbose) -> dict
    def describe(config) -> str                        # one line for listings
    def upstream(config) -> list[tuple[str, dict]]     # (experiment, config) whose weights it loads
    def cost(config) -> float                          # estimated seconds on the reference GPU

and gets from here the parameter checks, the command line (``main``: --profile --list
--piece --only -p --data-root, the same for every module) and the cell runner.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..results.store import ResultsStore, config_key


class ParameterError(ValueError):
    """A parameter has the wrong type or is out of range (the message names it and the fix)."""


@dataclass
class Cell:
    """One unit of the results store: a trained network or an evaluation."""
    role: str                      # "teacher", "student_2", "resnet18/dropout", "fixed cifar10", ...
    seed: int
    config: dict
    experiment: str = ""

    @property
    def key(self) -> str:
        return config_key(self.config)

    @property
    def kind(self) -> str:
        return self.config.get("kind", "")


# ------------------------------------------------------------------ parameter checks

_SPEC = re.compile(r"^(?P<type>int|float|bool|str|any)(?P<op>>=|>|<=|<)?(?P<bound>-?[0-9.e]+)?$")


def _check_one(spec: str, value: Any) -> str | None:
    """None if ``value`` satisfies ``spec`` ('int>0', 'float>=0', 'list[int>=0]', 'str',
    'int>0|None', 'choice:a,b'), else what it should be, in words."""
    for alt in spec.split("|"):
        if alt == "None":
            if value is None:
                return None
            continue
        if alt.startswith("list[") and alt.endswith("]"):
            inner = alt[5:-1]
            if isinstance(value, (list, tuple)) and all(_check_one(inner, v) is None for v in value):
                return None
            continue
        if alt.startswith("choice:"):
            if value in alt[7:].split(","):
                return None
            continue
        m = _SPEC.match(alt)
        if not m:
            raise ValueError(f"bad parameter spec {spec!r}")
        kind, op, bound = m.group("type"), m.group("op"), m.group("bound")
        if kind == "any":
            return None
        ok_type = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
                   "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                   "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str)}[kind](value)
        if not ok_type:
            continue
        if op:
            b = float(bound)
            if not {">": value > b, ">=": value >= b, "<": value < b, "<=": value <= b}[op]:
                continue
        return None
    return _words(spec)


def _words(spec: str, plural: bool = False) -> str:
    """'int>0' -> 'an integer > 0' ('integers > 0' in a list), 'list[int>=0]' -> 'a list of integers >= 0'."""
    names = {"int": ("an integer", "integers"), "float": ("a number", "numbers"), "bool": ("true or false", "booleans"),
             "str": ("a string", "strings"), "any": ("anything", "anything")}
    parts = []
    for alt in spec.split("|"):
        if alt == "None":
            parts.append("None")
        elif alt.startswith("list["):
            parts.append(f"a list of {_words(alt[5:-1], plural=True)}")
        elif alt.startswith("choice:"):
            parts.append("one of " + ", ".join(alt[7:].split(",")))
        else:
            m = _SPEC.match(alt)
            name = names[m.group("type")][1 if plural else 0]
            parts.append(name + (f" {m.group('op')} {m.group('bound')}" if m.group("op") else ""))
    return " or ".join(parts)


def inferred_spec(default: Any) -> str:
    """The spec of a parameter without one in SCHEMA, from its default value."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (list, tuple)):
        inner = {inferred_spec(v) for v in default}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list[any]"
    return "any"


def check_params(params: dict, defaults: dict, schema: dict, *, where: str) -> dict:
    """``params`` checked against each parameter's spec: unknown names and wrong types or
    ranges raise ParameterError naming the parameter, what it got, what it needs and
    where to fix it (``where``: e.g. "profile 'small' (profiles/small.yaml), notebook
    03_noisy_student")."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ParameterError(f"{where}: unknown parameter(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(defaults))}")
    for name, value in params.items():
        spec = schema.get(name) or inferred_spec(defaults[name])
        if defaults[name] is None and name not in schema:
            continue
        wrong = _check_one(spec, value)
        if wrong:
            raise ParameterError(f"{where}: parameter {name!r} must be {wrong}, got {value!r} "
                                 f"(type {type(value).__name__})")
    return params


# ------------------------------------------------------------------ running cells


def select(cells: list[Cell], only: Iterable[str] | None) -> list[Cell]:
    """Cells whose role (or its last ':'-part, or its first '/'-part) is in ``only``."""
    if not only:
        return cells
    only = set(only)
    return [c for c in cells if c.role in only or c.role.split(":")[-1] in only
            or c.role.split("/")[0] in only or c.role.split(" ")[0] in only]


def split_piece(items: list, piece: str, same_group: Callable | None = None) -> list:
    """'k/n': the k-th of n contiguous pieces, balanced by count, never splitting a group
    (``same_group(first_of_group, item)``)."""
    from .common import split_piece as _split
    return _split(items, piece, same_group)


def run_cells(module, cells: list[Cell], *, profile: str, store: ResultsStore | None = None, data_root=None,
              progress=None, verbose: bool = False, log=None) -> list[tuple[Cell, dict]]:
    """Train (or fetch from the store) each cell; a line per cell as it finishes."""
    from functools import partial

    store = store or ResultsStore()
    out = []
    for i, cell in enumerate(cells, 1):
        cached = store.get(module.NAME, cell.config) is not None
        fn = partial(module.train, data_root=data_root, store=store, profile=profile, progress=progress,
                     verbose=verbose)
        rec = store.run(module.NAME, cell.config, fn, profile=profile, seeds=[cell.seed])
        out.append((cell, rec))
        if log:
            took = "stored" if cached else f"{rec['provenance']['wall_time_s']:.1f}s"
            log(f"[{i}/{len(cells)}] {module.describe(cell.config)}  {summary_of(rec)}  ({took})")
    return out


def summary_of(record: dict) -> str:
    """The headline number of a record, whatever the experiment."""
    res = record.get("result", {})
    for key, fmt in (("top1", "top-1 {:.2%}"), ("test_score", "test {:.2%}")):
        if isinstance(res.get(key), (int, float)):
            return fmt.format(res[key])
    if isinstance(res.get("final"), dict) and "AP" in res["final"]:
        return f"AP {res['final']['AP']:.1f}"
    return "done"


# ------------------------------------------------------------------ command line


def parser(module) -> argparse.ArgumentParser:
    doc = (module.__doc__ or module.NAME).strip()
    ap = argparse.ArgumentParser(prog=f"python -m rethink.experiments.{module.NAME}",
                                 description=doc.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", help="smoke, small, full or paper (profiles/<name>.yaml)")
    ap.add_argument("--data-root", default=None, help="folder with the dataset archives")
    ap.add_argument("--list", action="store_true", help="list the cells, done or not, with their estimated cost")
    ap.add_argument("--only", nargs="*", metavar="ROLE", help="run only these roles (see --list)")
    ap.add_argument("--piece", help="k/n: run the k-th of n contiguous pieces (each resumable)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter (YAML value)")
    return ap


def main(module, argv=None, *, extra: Callable | None = None) -> int:
    """The command line of every experiment module (``python -m rethink.experiments.X``)."""
    from ..profiles import ProfileError, experiment_params

    args = parser(module).parse_args(argv)
    try:
        params, data_root = experiment_params(args.profile, module.STEM, args.param)
    except (ProfileError, ParameterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data_root = args.data_root or data_root
    try:
        cells = select(module.cells(params, data_root=data_root, profile=args.profile), args.only)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.piece:
        cells = module.split_piece(cells, args.piece) if hasattr(module, "split_piece") \
            else split_piece(cells, args.piece)
    store = ResultsStore()
    if args.list:
        total = 0.0
        for c in cells:
            done = store.get(module.NAME, c.config) is not None
            est = module.cost(c.config)
            total += 0 if done else est
            print(f"{'done' if done else 'todo'}  {c.role:<30} seed {c.seed}  {module.describe(c.config):<60} "
                  f"~{est / 60:.1f} min")
        print(f"{len(cells)} cells; still to run: ~{total / 60:.1f} min on the reference GPU (estimate)")
        return 0
    records = run_cells(module, cells, profile=args.profile, store=store, data_root=data_root,
                        log=lambda s: print(s, flush=True))
    wall = sum(r["provenance"]["wall_time_s"] for _, r in records)
    print(f"{len(records)} cells, {wall / 60:.1f} min of compute in the store")
    return 0


@dataclass
class NetworkInfo:
    """What a downstream chapter needs to know about an upstream network."""
    dataset: str
    mean: tuple
    std: tuple
    classes: int
    image_size: int
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ config stamps


def data_id(name: str, data_root=None) -> str:
    """Which copy of a dataset a cell trains on: '<archive>:<first 12 hex of its digest>'
    (``rethink.data.registry.data_version``: the book's local mirror when it is in the data
    root, else the canonical download), so records made on different copies (400 vs 500
    Tiny ImageNet images per class) never share a key."""
    from ..data.registry import data_version

    return data_version(name, data_root)


def stamp(config: dict, version: int, datasets: Iterable[str], data_root=None) -> dict:
    """``config`` with the module's ``version`` and the ``data`` ids of the datasets it trains
    or evaluates on (both part of its results-store key)."""
    return {**config, "version": version, "data": {d: data_id(d, data_root) for d in datasets}}
