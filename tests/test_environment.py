"""environment.yml (conda/mamba) must describe the same dependencies as pyproject.toml (its
runtime dependencies and the [book] and [test] extras), and importing the library must not
need any extra."""
from __future__ import annotations

import ast
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


ENV_EXTRAS = ("book", "test")   # what environment.yml installs besides the runtime dependencies


def _wanted() -> list[str]:
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in ENV_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return reqs


def test_pip_section_matches_pyproject_dependencies_and_extras():
    ours: dict[str, list] = {}
    for n, *rest in map(_normalise, _wanted()):
        assert ours.setdefault(n, rest) == rest, f"{n}: different specifiers across pyproject's lists"
    theirs = {n: rest for n, *rest in map(_normalise, _env_pip())}
    assert sorted(set(ours) - set(theirs)) == [], "in pyproject.toml but not environment.yml"
    assert sorted(set(theirs) - set(ours)) == [], "in environment.yml but not pyproject.toml"
    differ = {n: (ours[n], theirs[n]) for n in ours if ours[n] != theirs[n]}
    assert differ == {}, "version specifiers differ (pyproject, environment.yml)"


def test_extras_are_the_documented_ones():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert set(extras) == {"book", "test", "lab", "bench"}
    names = {e: {_normalise(r)[0] for r in reqs} for e, reqs in extras.items()}
    runtime = {_normalise(r)[0] for r in _pyproject()["project"]["dependencies"]}
    assert {"jupyter-book", "jupytext", "papermill", "ipykernel", "sphinx-book-theme",
            "pydata-sphinx-theme"} <= names["book"]
    assert {"pytest", "beautifulsoup4"} <= names["test"] and "fastai" in names["bench"]
    assert not runtime & (names["book"] | names["test"] | names["bench"]), "runtime dependency in an extra"
    pins = {_normalise(r)[0]: _normalise(r)[1] for r in extras["book"]}
    assert pins["sphinx-book-theme"].startswith("==") and pins["pydata-sphinx-theme"].startswith("==")


# top-level modules of the extras (and of the test tools): `import rethink.<anything>` must not
# need them; they may be imported inside the functions that need them
EXTRA_MODULES = {"jupytext", "papermill", "nbformat", "nbclient", "IPython", "ipykernel",
                 "jupyter_book", "sphinx", "bs4", "pytest", "fastai", "skimage", "cv2",
                 "imagecorruptions", "pkg_resources", "matplotlib_inline"}


def test_library_imports_need_no_extra():
    offending = []
    for path in sorted((REPO_ROOT / "lib" / "rethink").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:   # module level only (function bodies import lazily)
            if isinstance(node, ast.Try):
                continue         # try: import x / except ImportError: optional
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            for name in names:
                if name.split(".")[0] in EXTRA_MODULES:
                    offending.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}")
    assert offending == [], "move these imports into the functions that need them:\n" + "\n".join(offending)


def test_python_version_matches_requires_python():
    conda = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    py = [d for d in conda if d.split(">")[0].split("=")[0].split("<")[0].strip() == "python"]
    assert len(py) == 1, conda
    assert SpecifierSet(py[0][len("python"):]) == SpecifierSet(_pyproject()["project"]["requires-python"])
    assert "pip" in conda
    assert "-e ." in [p.strip() for d in _environment()["dependencies"] if isinstance(d, dict)
                      for p in d.get("pip", [])]
