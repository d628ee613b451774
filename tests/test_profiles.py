"""Profiles: loading, validation messages, overrides; every profile against every notebook."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from rethink import profiles as P
from rethink.paths import REPO_ROOT




@pytest.fixture
def tmp_book(tmp_path, myst_notebook):
    nbs, profs = tmp_path / "notebooks", tmp_path / "profiles"
    nbs.mkdir()
    profs.mkdir()
    myst_notebook(nbs / "01_a.md", 'profile = "smoke"\nepochs = 1\narchs: list = ["resnet18"]')
    myst_notebook(nbs / "02_b.md", 'profile = "smoke"\nlr, seed = 0.1, 0')
    (profs / "smoke.yaml").write_text("common: {epochs: 2}\n01_a: {archs: [resnet10t]}\n")
    (profs / "full.yaml").write_text("01_a: {epochs: 16}\n02_b: {lr: 0.4}\n")
    return nbs, profs


def test_notebook_parameters_parses_the_parameters_cell(tmp_book):
    nbs, _ = tmp_book
    assert P.notebook_parameters(nbs / "01_a.md") == {"profile": "smoke", "epochs": 1, "archs": ["resnet18"]}
    assert P.notebook_parameters(nbs / "02_b.md") == {"profile": "smoke", "lr": 0.1, "seed": 0}


def test_exactly_one_parameters_cell_is_required(tmp_path, myst_notebook):
    nb = myst_notebook(tmp_path / "01_x.md", "profile = 'smoke'",
                       "\n```{code-cell} ipython3\n:tags: [parameters]\n\nx = 1\n```\n")
    with pytest.raises(P.ProfileError, match="exactly one code cell tagged 'parameters', found 2"):
        P.notebook_parameters(nb)


def test_resolve_merges_common_section_overrides_and_profile(tmp_book):
    nbs, profs = tmp_book
    plan = P.resolve("smoke", overrides={"01_a.epochs": 5, "lr": 0.3}, notebooks_dir=nbs, profiles_dir=profs)
    assert plan.parameters == {
        "01_a": {"epochs": 5, "archs": ["resnet10t"], "profile": "smoke"},
        "02_b": {"lr": 0.3, "profile": "smoke"},
    }
    plan = P.resolve("full", ["02_b"], notebooks_dir=nbs, profiles_dir=profs)
    assert plan.parameters == {"02_b": {"lr": 0.4, "profile": "full"}}


def test_bad_profile_name_names_it_and_the_choices(tmp_book):
    nbs, profs = tmp_book
    with pytest.raises(P.ProfileError) as e:
        P.resolve("fast", notebooks_dir=nbs, profiles_dir=profs)
    assert "'fast'" in str(e.value) and "smoke, full" in str(e.value)


def test_unknown_parameter_in_profile_names_parameter_notebook_and_valid_names(tmp_book):
    nbs, profs = tmp_book
    (profs / "smoke.yaml").write_text("01_a: {epoch: 3}\n")
    with pytest.raises(P.ProfileError) as e:
        P.resolve("smoke", ["02_b"], notebooks_dir=nbs, profiles_dir=profs)  # validated even if not selected
    msg = str(e.value)
    assert "'epoch'" in msg and "'01_a'" in msg and "archs, epochs, profile" in msg


def test_unknown_common_parameter_and_unknown_section(tmp_book):
    nbs, profs = tmp_book
    (profs / "smoke.yaml").write_text("common: {seedz: [0]}\n")
    with pytest.raises(P.ProfileError, match="common parameter 'seedz' is declared by no notebook"):
        P.resolve("smoke", notebooks_dir=nbs, profiles_dir=profs)
    (profs / "smoke.yaml").write_text("03_c: {epochs: 1}\n")
    with pytest.raises(P.ProfileError, match="section '03_c' names no notebook.*01_a, 02_b"):
        P.resolve("smoke", notebooks_dir=nbs, profiles_dir=profs)


def test_profile_may_not_set_profile(tmp_book):
    nbs, profs = tmp_book
    (profs / "smoke.yaml").write_text("01_a: {profile: full}\n")
    with pytest.raises(P.ProfileError, match="injected by the runner"):
        P.resolve("smoke", notebooks_dir=nbs, profiles_dir=profs)


def test_overrides_are_yaml_parsed_and_validated(tmp_book):
    nbs, profs = tmp_book
    assert P.parse_overrides(["epochs=3", "archs=[a, b]", "x=null", "s=hello", "f=0.001"]) == {
        "epochs": 3, "archs": ["a", "b"], "x": None, "s": "hello", "f": 0.001}
    with pytest.raises(P.ProfileError, match="key=value"):
        P.parse_overrides(["epochs"])
    with pytest.raises(P.ProfileError) as e:
        P.resolve("smoke", ["01_a"], {"epoch": 3}, notebooks_dir=nbs, profiles_dir=profs)
    assert "'epoch'" in str(e.value) and "'01_a'" in str(e.value) and "archs, epochs, profile" in str(e.value)
    with pytest.raises(P.ProfileError, match="'nope' is not declared in the parameters cell of notebook '02_b'"):
        P.resolve("smoke", overrides={"02_b.nope": 1}, notebooks_dir=nbs, profiles_dir=profs)
    with pytest.raises(P.ProfileError, match="declared by none of the selected notebooks"):
        P.resolve("smoke", overrides={"nope": 1}, notebooks_dir=nbs, profiles_dir=profs)
    with pytest.raises(P.ProfileError, match="use --profile"):
        P.resolve("smoke", overrides={"profile": "full"}, notebooks_dir=nbs, profiles_dir=profs)


def test_load_profile_params_includes_defaults(tmp_book):
    nbs, profs = tmp_book
    params = P.load_profile_params("smoke", "01_a", ["epochs=7"], notebooks_dir=nbs, profiles_dir=profs)
    assert params == {"profile": "smoke", "epochs": 7, "archs": ["resnet10t"]}
    # what an experiment's command line takes: no profile, the data root apart
    params, data_root = P.experiment_params("smoke", "01_a", {"epochs": 7}, notebooks_dir=nbs, profiles_dir=profs)
    assert params == {"epochs": 7, "archs": ["resnet10t"]} and data_root is None


def test_the_four_profiles_exist_and_are_ranked():
    assert P.available_profiles() == ["smoke", "small", "full", "paper"]


@pytest.mark.parametrize("profile", ["smoke", "small", "full", "paper"])
def test_every_profile_validates_against_every_notebook(profile):
    notebooks = P.notebook_paths()
    assert notebooks, "no notebooks found in notebooks/"
    plan = P.resolve(profile)
    assert list(plan.parameters) == list(notebooks)
    for stem, params in plan.parameters.items():
        assert params["profile"] == profile
        assert set(params) <= set(P.notebook_parameters(notebooks[stem]))


def test_every_notebook_is_myst_with_python3_kernel():
    import jupytext
    for stem, path in P.notebook_paths().items():
        nb = jupytext.read(path)
        assert nb.metadata["kernelspec"]["name"] == "python3", stem
        assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "myst", stem
        assert "profile" in P.notebook_parameters(path), stem


def test_every_chapter_notebook_has_a_section_in_every_profile():
    """Aggregate pages (verdicts) need no parameters; every chapter needs a section per profile."""
    from rethink.book import is_aggregate
    for profile in P.available_profiles():
        data = yaml.safe_load((REPO_ROOT / "profiles" / f"{profile}.yaml").read_text()) or {}
        for stem, path in P.notebook_paths().items():
            if not is_aggregate(path):
                assert stem in data, f"profiles/{profile}.yaml has no section for {stem}"


def test_cli_rejects_a_bad_profile_before_running_anything(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "lib")}
    r = subprocess.run([sys.executable, "-m", "rethink.book", "run", "--profile", "huge",
                        "--no-promote"], capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert r.returncode == 2
    assert "unknown profile 'huge'; valid choices: smoke, small, full, paper" in r.stderr
    assert "executing" not in r.stdout
    r = subprocess.run([sys.executable, "-m", "rethink.book", "run", "--profile", "smoke",
                        "--notebooks", "99_verdicts", "-p", "epochz=1", "--no-promote"],
                       capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert r.returncode == 2 and "'epochz'" in r.stderr and "99_verdicts" in r.stderr


def test_parameters_are_read_without_jupytext_too():
    """The experiments' command lines must run on a machine with torch but no Jupyter stack."""
    import jupytext

    from rethink.profiles import _myst_parameters_sources, _parameters_cells, notebook_paths

    for stem, path in notebook_paths().items():
        with_jupytext = [c.source for c in _parameters_cells(jupytext.read(path))]
        assert _myst_parameters_sources(path.read_text()) == with_jupytext, stem


# --------------------------------------------------------------------------- YAML syntax errors

def test_yaml_syntax_error_names_file_line_and_column(tmp_book):
    nbs, profs = tmp_book
    (profs / "smoke.yaml").write_text("01_a:\n  archs: [resnet10t\n  epochs: 2\n")
    with pytest.raises(P.ProfileError) as e:
        P.resolve("smoke", notebooks_dir=nbs, profiles_dir=profs)
    assert str(e.value) == (f"{profs / 'smoke.yaml'} is not valid YAML at line 3, column 9: while parsing a flow "
                            f"sequence (line 2, column 10): expected ',' or ']', but got ':'; fix the syntax "
                            f"there (python -m rethink.book profiles checks every profile)")


def test_yaml_syntax_error_in_the_repository_is_shown_relative(monkeypatch, tmp_path):
    path = REPO_ROOT / "profiles" / "smoke.yaml"
    monkeypatch.setattr(P.Path, "read_text", lambda self: "a: b: c\n")
    with pytest.raises(P.ProfileError, match=r"^profiles/smoke\.yaml is not valid YAML at line 1, column 5: "
                       r"mapping values are not allowed here; fix the syntax there"):
        P.read_yaml(path)


def test_override_yaml_error_says_where(tmp_book):
    with pytest.raises(P.ProfileError, match=r"^override 'archs=\[a,': the value is not valid YAML at "
                       r"line 1, column 4: .*; quote it or fix its syntax$"):
        P.parse_overrides(["archs=[a,"])


def test_book_cli_prints_one_error_line_for_a_broken_profile(tmp_book, monkeypatch, capsys):
    from rethink import book

    nbs, profs = tmp_book
    (profs / "full.yaml").write_text("01_a: {epochs: 16\n")
    monkeypatch.setattr(P, "PROFILES_DIR", profs)
    monkeypatch.setattr(P, "NOTEBOOKS_DIR", nbs)
    assert book.main(["profiles"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {profs / 'full.yaml'} is not valid YAML at line 2")


def test_experiment_cli_prints_error_line_not_traceback(capsys):
    from rethink.errors import cli

    def main():
        raise P.ProfileError("profiles/x.yaml is broken: fix it")

    with pytest.raises(SystemExit) as e:
        cli(main)
    assert e.value.code == 2 and capsys.readouterr().err == "error: profiles/x.yaml is broken: fix it\n"
    with pytest.raises(SystemExit) as e:
        cli(lambda: None)
    assert e.value.code == 0
