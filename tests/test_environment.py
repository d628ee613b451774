"""environment.yml (conda/mamba) must describe the same dependencies as pyproject.toml."""
from __future__ import annotations

import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from rethink.paths import REPO_ROOT


def _normalise(req: str) -> tuple[str, str, str, str]:
    r = Requirement(req)
    spec = ",".join(sorted(str(s) for s in r.specifier))
    return canonicalize_name(r.name), spec, ",".join(sorted(r.extras)), str(r.marker or "")


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _environment() -> dict:
    return yaml.safe_load((REPO_ROOT / "environment.yml").read_text())


def _env_pip() -> list[str]:
    deps = _environment()["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return [p for p in pip[0] if not p.startswith("-e")]   # `-e .` installs rethink itself


def test_pip_section_matches_pyproject_dependencies():
    ours = {n: rest for n, *rest in map(_normalise, _pyproject()["project"]["dependencies"])}
    theirs = {n: rest for n, *rest in map(_normalise, _env_pip())}
    assert sorted(set(ours) - set(theirs)) == [], "in pyproject.toml but not environment.yml"
    assert sorted(set(theirs) - set(ours)) == [], "in environment.yml but not pyproject.toml"
    differ = {n: (ours[n], theirs[n]) for n in ours if ours[n] != theirs[n]}
    assert differ == {}, "version specifiers differ (pyproject, environment.yml)"


def test_python_version_matches_requires_python():
    conda = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    py = [d for d in conda if d.split(">")[0].split("=")[0].split("<")[0].strip() == "python"]
    assert len(py) == 1, conda
    assert SpecifierSet(py[0][len("python"):]) == SpecifierSet(_pyproject()["project"]["requires-python"])
    assert "pip" in conda
    assert "-e ." in [p.strip() for d in _environment()["dependencies"] if isinstance(d, dict)
                      for p in d.get("pip", [])]
