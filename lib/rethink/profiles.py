"""Execution profiles: papermill parameters per notebook, as YAML data files.

A profile is ``profiles/<name>.yaml``::

    common:            # optional: injected into every notebook that declares the key
      seeds: [0]
    01_zoo:            # one section per notebook stem (notebooks/01_zoo.md)
      epochs: 1

Everything is validated before anything runs:

* an unknown profile name fails, naming it and the valid choices;
* a key in a notebook's section that the notebook's ``parameters`` cell does not
  declare fails, naming the parameter, the notebook and the valid names;
* a ``common`` key that no notebook declares fails the same way (typo guard);
* a section whose notebook does not exist fails, naming the existing notebooks;
* command-line overrides (``-p key=value``, value parsed as YAML; or
  ``-p 01_zoo.key=value`` for one notebook only) are checked the same way.

The runner always injects ``profile: <name>``, so every notebook must declare
``profile`` in its parameters cell.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import RethinkError
from .paths import REPO_ROOT
from .results.store import PROFILE_RANK

PROFILES_DIR = REPO_ROOT / "profiles"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
COMMON = "common"


class ProfileError(RethinkError, ValueError):
    """A profile, a parameter or a notebook's parameters cell is invalid."""


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (profiles/smoke.yaml)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _yaml_problem(e: yaml.YAMLError) -> tuple[str, str]:
    """(' at line L, column C', 'what PyYAML says is wrong') of a YAML error, lines from 1."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None and start is not mark:  # e.g. where an unclosed '[' opened
        context += f" (line {start.line + 1}, column {start.column + 1})"
    return where, f"{context}: {problem}" if context else problem


def read_yaml(path: Path) -> Any:
    """yaml.safe_load of a file; a syntax error is a ProfileError naming the file, line and column."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        where, problem = _yaml_problem(e)
        raise ProfileError(f"{_shown(path)} is not valid YAML{where}: {problem}; fix the syntax "
                           f"there (python -m rethink.book profiles checks every profile)") from None


# --------------------------------------------------------------------------- notebooks

def notebook_paths(notebooks_dir: Path | None = None) -> dict[str, Path]:
    """Stem -> path of every MyST notebook ``notebooks/NN_name.md``, sorted by stem."""
    d = Path(notebooks_dir or NOTEBOOKS_DIR)
    return {p.stem: p for p in sorted(d.glob("[0-9][0-9]_*.md"))}


def _parameters_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"
            and "parameters" in (c.get("metadata", {}).get("tags") or [])]


_MYST_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.M | re.S)


def _myst_parameters_sources(text: str) -> list[str]:
    """Sources of the MyST code cells tagged ``parameters``, read without jupytext (so the
    experiments' command lines run where only torch is installed, e.g. a bare GPU box)."""
    sources = []
    for body in _MYST_CODE_CELL.findall(text):
        lines = body.splitlines()
        options = [ln for ln in lines if ln.startswith(":")]
        if any(ln.startswith(":tags:") and "parameters" in ln for ln in options):
            sources.append("\n".join(ln for ln in lines if not ln.startswith(":")).strip("\n"))
    return sources


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """Names (and literal defaults, else None) declared in the notebook's ``parameters`` cell.

    The notebook must have exactly one code cell tagged ``parameters``; the names are
    the targets of its top-level assignments (``x = 1`` or ``x: int = 1``).
    """
    path = Path(path)
    try:
        import jupytext
        sources = [c.source for c in _parameters_cells(jupytext.read(path))]
    except ImportError:
        sources = _myst_parameters_sources(path.read_text())
    if len(sources) != 1:
        raise ProfileError(f"{path.name}: expected exactly one code cell tagged 'parameters', "
                           f"found {len(sources)}")
    try:
        tree = ast.parse(sources[0])
    except SyntaxError as e:
        raise ProfileError(f"{path.name}: parameters cell is not valid Python: {e}") from e
    params: dict[str, Any] = {}
    for node in tree.body:
        targets, value = [], None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        for t in targets:
            if isinstance(t, ast.Tuple):   # a, b = 1, 2
                values = value.elts if isinstance(value, ast.Tuple) and len(value.elts) == len(t.elts) \
                    else [None] * len(t.elts)
                pairs = list(zip(t.elts, values))
            else:
                pairs = [(t, value)]
            for name, val in pairs:
                if isinstance(name, ast.Name):
                    try:
                        params[name.id] = ast.literal_eval(val) if val is not None else None
                    except ValueError:
                        params[name.id] = None
    return params


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def notebook_experiment(path: str | Path) -> str | None:
    """The experiment a notebook narrates (front matter ``rethink_experiment``), or None.

    Such a notebook's parameters are its experiment module's ``DEFAULTS`` (the one source of
    default values); its ``parameters`` cell declares only ``profile``, ``overrides`` (and
    ``data_root``), and it reads its parameters with ``experiment_params``."""
    m = _FRONT_MATTER.match(Path(path).read_text())
    return (yaml.safe_load(m.group(1)) or {}).get("rethink_experiment") if m else None


def _experiment(stem: str, path: Path):
    name = notebook_experiment(path)
    if name is None:
        return None
    from . import experiments
    return experiments.get(name)


def declared_parameters(path: str | Path) -> dict[str, Any]:
    """Names a profile section may set for this notebook, with their defaults."""
    path = Path(path)
    module = _experiment(path.stem, path)
    if module is not None:
        return dict(module.DEFAULTS)
    return notebook_parameters(path)


# --------------------------------------------------------------------------- profiles

def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    d = Path(profiles_dir or PROFILES_DIR)
    names = [p.stem for p in d.glob("*.yaml")]
    return sorted(names, key=lambda n: (PROFILE_RANK.get(n, 99), n))


def load_profile(name: str, profiles_dir: Path | None = None) -> dict[str, dict]:
    """The raw profile: {section: {param: value}}, shape-checked but not yet matched to notebooks."""
    choices = available_profiles(profiles_dir)
    if name not in choices:
        raise ProfileError(f"unknown profile {name!r}; valid choices: {', '.join(choices)}")
    if name not in PROFILE_RANK:
        raise ProfileError(f"profile {name!r} has no rank in PROFILE_RANK "
                           f"(rethink.results.store); ranked: {', '.join(PROFILE_RANK)}")
    path = Path(profiles_dir or PROFILES_DIR) / f"{name}.yaml"
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    for section, params in data.items():
        if params is None:
            data[section] = {}
        elif not isinstance(params, dict):
            raise ProfileError(f"{path}: section {section!r} must be a mapping of parameters")
    if "profile" in data.get(COMMON, {}) or any("profile" in v for v in data.values()):
        raise ProfileError(f"{path}: 'profile' is injected by the runner; do not set it in the file")
    return data


def parse_overrides(items: Iterable[str] | None) -> dict[str, Any]:
    """``["epochs=3", "01_zoo.archs=[resnet18]"]`` -> {"epochs": 3, "01_zoo.archs": ["resnet18"]}."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ProfileError(f"override {item!r} must look like key=value (value parsed as YAML)")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            where, problem = _yaml_problem(e)
            raise ProfileError(f"override {item!r}: the value is not valid YAML{where}: {problem}; "
                               f"quote it or fix its syntax") from None
    return out


def _unknown(param: str, stem: str, declared: dict, where: str, module=None) -> ProfileError:
    what = (f"a parameter of notebook {stem!r} (rethink.experiments.{module.NAME}.DEFAULTS)" if module
            else f"declared in the parameters cell of notebook {stem!r}")
    return ProfileError(f"{where}: parameter {param!r} is not {what}; valid parameters: "
                        f"{', '.join(sorted(declared))}")


@dataclass
class Plan:
    """Validated parameters to inject, per notebook, in execution order."""
    profile: str
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)   # what papermill injects
    paths: dict[str, Path] = field(default_factory=dict)
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)     # experiment notebooks: their
    # parameters from the profile and the overrides (on top of the module's DEFAULTS)


def resolve(profile: str, notebooks: Iterable[str] | None = None,
            overrides: dict[str, Any] | None = None, *,
            profiles_dir: Path | None = None, notebooks_dir: Path | None = None) -> Plan:
    """Validate a profile (+ overrides) against the notebooks' parameters cells.

    Precedence, lowest first: the notebook's defaults, ``common``, the notebook's
    section, unscoped overrides, scoped overrides (``stem.key``), ``profile``.
    The whole profile is validated against every notebook, whichever are selected,
    so a typo fails even when its notebook is not being run.
    """
    data = load_profile(profile, profiles_dir)
    nbs = notebook_paths(notebooks_dir)
    where = f"profile {profile!r}"
    selected = list(notebooks) if notebooks else list(nbs)
    for stem in selected:
        if stem not in nbs:
            raise ProfileError(f"unknown notebook {stem!r}; notebooks: {', '.join(nbs) or '(none)'}")
    for section in data:
        if section != COMMON and section not in nbs:
            raise ProfileError(f"{where}: section {section!r} names no notebook "
                               f"(notebooks/{section}.md); notebooks: {', '.join(nbs) or '(none)'}")
    cells = {stem: notebook_parameters(p) for stem, p in nbs.items()}
    modules = {stem: _experiment(stem, p) for stem, p in nbs.items()}
    declared = {stem: (dict(modules[stem].DEFAULTS) if modules[stem] else cells[stem]) for stem in nbs}
    for stem, names in cells.items():
        needed = ("profile", "overrides") if modules[stem] else ("profile",)
        missing = [n for n in needed if n not in names]
        if missing:
            raise ProfileError(f"notebook {stem!r} must declare {', '.join(map(repr, missing))} in its parameters "
                               f"cell (the runner injects them); it declares: {', '.join(sorted(names))}")
    all_names = set().union(*declared.values()) if declared else set()
    for key in data.get(COMMON, {}):
        if key not in all_names:
            raise ProfileError(f"{where}: common parameter {key!r} is declared by no notebook; "
                               f"valid parameters: {', '.join(sorted(all_names))}")
    for stem, params in data.items():
        if stem != COMMON:
            for key in params:
                if key not in declared[stem]:
                    raise _unknown(key, stem, declared[stem], where, modules[stem])
    path = Path(profiles_dir or PROFILES_DIR) / f"{profile}.yaml"
    for stem, module in modules.items():   # types and ranges of every section, selected or not
        if module is not None:
            common = {k: v for k, v in data.get(COMMON, {}).items() if k in declared[stem]}
            _check(module, {**common, **data.get(stem, {})}, f"{path}, section {stem}")

    overrides = dict(overrides or {})
    scoped: dict[str, dict[str, Any]] = {}
    unscoped: dict[str, Any] = {}
    for key, value in overrides.items():
        stem, dot, name = key.partition(".")
        if dot and stem in nbs:
            if stem not in selected:
                raise ProfileError(f"override {key!r}: notebook {stem!r} is not selected "
                                   f"({', '.join(selected)})")
            if name not in declared[stem]:
                raise _unknown(name, stem, declared[stem], f"override {key!r}", modules[stem])
            scoped.setdefault(stem, {})[name] = value
        else:
            if key == "profile":
                raise ProfileError("override 'profile': use --profile instead")
            users = [s for s in selected if key in declared[s]]
            if not users:
                if len(selected) == 1:
                    raise _unknown(key, selected[0], declared[selected[0]], f"override {key!r}",
                                   modules[selected[0]])
                names = sorted(set().union(*(declared[s] for s in selected)))
                raise ProfileError(f"override {key!r}: parameter {key!r} is declared by none of the "
                                   f"selected notebooks ({', '.join(selected)}); "
                                   f"valid parameters: {', '.join(names)}")
            unscoped[key] = value

    plan = Plan(profile)
    for stem in selected:
        names = declared[stem]
        common = {k: v for k, v in data.get(COMMON, {}).items() if k in names}
        given = {**{k: v for k, v in unscoped.items() if k in names}, **scoped.get(stem, {})}
        params: dict[str, Any] = {**common, **data.get(stem, {}), **given}
        module = modules[stem]
        if module is not None:
            if given:
                _check(module, params, f"override {', '.join(f'{k}={v!r}' for k, v in given.items())} "
                                       f"(notebook {stem})")
            plan.resolved[stem] = params
            plan.parameters[stem] = {"profile": profile, "overrides": given}
        else:
            params["profile"] = profile
            plan.parameters[stem] = params
        plan.paths[stem] = nbs[stem]
    return plan


def _check(module, params: dict, where: str) -> None:
    """Types and ranges (protocol.check_params), then the module's own checks (names of
    architectures, targets, ...), as a ProfileError naming where the value was set."""
    from .experiments.protocol import ParameterError, check_params

    try:
        check_params(params, module.DEFAULTS, getattr(module, "SCHEMA", {}), where=where)
        module.resolve_params(params)
    except (ParameterError, ValueError) as e:
        msg = str(e)
        raise ProfileError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def validate_all(profiles_dir: Path | None = None, notebooks_dir: Path | None = None) -> list[str]:
    """Validate every profile file against every notebook; return the profile names."""
    names = available_profiles(profiles_dir)
    for name in names:
        resolve(name, profiles_dir=profiles_dir, notebooks_dir=notebooks_dir)
    return names


def load_profile_params(profile: str, stem: str, overrides: Iterable[str] | dict | None = None, *,
                        profiles_dir: Path | None = None, notebooks_dir: Path | None = None) -> dict[str, Any]:
    """The validated parameters of one notebook at a profile, for running an experiment
    without Jupyter (``python -m rethink.experiments.zoo --profile full``).

    Returns the notebook's parameter defaults overlaid with the profile and the
    overrides (``["key=value", ...]`` or a dict), including ``profile``.
    """
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    plan = resolve(profile, [stem], overrides, profiles_dir=profiles_dir, notebooks_dir=notebooks_dir)
    if stem in plan.resolved:
        return {**declared_parameters(plan.paths[stem]), **plan.resolved[stem], "profile": profile}
    defaults = notebook_parameters(plan.paths[stem])
    return {**defaults, **plan.parameters[stem]}


def experiment_params(profile: str, stem: str, overrides: Iterable[str] | dict | None = None,
                      **kwargs) -> tuple[dict[str, Any], str | None]:
    """``load_profile_params`` split into what an experiment takes and the data root:
    (the parameters without ``profile`` and ``data_root``, the notebook's data_root)."""
    params = load_profile_params(profile, stem, overrides, **kwargs)
    params.pop("profile", None)
    return params, params.pop("data_root", None)
