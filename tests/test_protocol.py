"""The one experiment protocol: every registered module passes the same contract, and the
parameter checks name the parameter, what it got and what it needs."""
import pytest

from rethink import experiments
from rethink.experiments import protocol
from rethink.experiments.protocol import ParameterError, check_params
from rethink.profiles import experiment_params

MODULES = [experiments.get(n) for n in experiments.REGISTRY]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_every_module_implements_the_protocol(module):
    for attr in ("NAME", "STEM", "VERSION", "DEFAULTS", "SCHEMA"):
        assert hasattr(module, attr), f"{module.__name__} lacks {attr}"
    for fn in ("resolve_params", "cells", "train", "describe", "upstream", "cost", "main"):
        assert callable(getattr(module, fn, None)), f"{module.__name__} lacks {fn}()"
    assert experiments.for_stem(module.STEM) is module
    assert set(module.SCHEMA) <= set(module.DEFAULTS), set(module.SCHEMA) - set(module.DEFAULTS)
    # the defaults satisfy their own specs (None defaults are allowed where a spec says so)
    check_params(dict(module.DEFAULTS), module.DEFAULTS, module.SCHEMA, where=module.NAME)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_cells_at_smoke_are_stamped_and_described(module, monkeypatch, tmp_path):
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "results"))
    params, data_root = experiment_params("smoke", module.STEM)
    cells = module.cells(params, data_root=data_root, profile="smoke")
    assert cells and all(isinstance(c, protocol.Cell) for c in cells)
    # a role may reuse another role's cell (an equal-size baseline is the teacher), never twice itself
    assert len({(c.role, c.key) for c in cells}) == len(cells), "a cell appears twice"
    for c in cells:
        assert c.config["version"] == module.VERSION and isinstance(c.config["data"], dict)
        assert isinstance(module.describe(c.config), str) and module.describe(c.config)
        assert module.cost(c.config) > 0
        for experiment, config in module.upstream(c.config):
            assert experiment in experiments.REGISTRY and isinstance(config, dict)


@pytest.mark.parametrize("profile", ["smoke", "small", "full", "paper"])
def test_every_profile_gives_cells_for_every_module(profile, monkeypatch, tmp_path):
    monkeypatch.setenv("RETHINK_RESULTS", str(tmp_path / "results"))
    for module in MODULES:
        params, data_root = experiment_params(profile, module.STEM)
        assert module.cells(params, data_root=data_root, profile=profile), (profile, module.NAME)


@pytest.mark.parametrize("value, message", [
    ("abc", "parameter 'epochs' must be an integer > 0, got 'abc' (type str)"),
    (0, "parameter 'epochs' must be an integer > 0, got 0 (type int)"),
    (2.5, "parameter 'epochs' must be an integer > 0, got 2.5 (type float)"),
    (True, "parameter 'epochs' must be an integer > 0, got True (type bool)"),
])
def test_wrong_type_or_range_is_named(value, message):
    from rethink.experiments import zoo
    with pytest.raises(ParameterError) as e:
        check_params({"epochs": value}, zoo.DEFAULTS, zoo.SCHEMA, where="profiles/small.yaml, section 01_zoo")
    assert str(e.value) == f"profiles/small.yaml, section 01_zoo: {message}"


def test_seeds_must_be_integers_so_no_fake_error_bar_is_possible():
    from rethink.experiments import noisy_student as ns
    for seeds in ([0.5], [0.7], [-1], "0"):
        with pytest.raises(ParameterError, match="parameter 'seeds' must be a list of integers >= 0"):
            check_params({"seeds": seeds}, ns.DEFAULTS, ns.SCHEMA, where="x")
    check_params({"seeds": [0, 1, 2]}, ns.DEFAULTS, ns.SCHEMA, where="x")


def test_specs_cover_lists_choices_and_none():
    from rethink.experiments.protocol import _check_one
    assert _check_one("list[str]", "resnet10t") == "a list of strings"
    assert _check_one("int>0|None", None) is None and _check_one("int>0|None", -1) == "an integer > 0 or None"
    assert _check_one("choice:scratch,teacher", "imagenet") == "one of scratch, teacher"
    assert _check_one("float>=0", 0) is None and _check_one("float>0", float("nan")) == "a number > 0"


def test_unknown_parameters_are_named_with_the_valid_ones():
    from rethink.experiments import zoo
    with pytest.raises(ParameterError, match="unknown parameter\\(s\\) epochz; valid: .*epochs"):
        check_params({"epochz": 1}, zoo.DEFAULTS, zoo.SCHEMA, where="x")


@pytest.mark.parametrize("override", ["epochs=abc", "epochs=0", "batch_size=-1", "lr=-5", "archs=resnet10t",
                                      "seeds=[0.5]"])
def test_cli_refuses_bad_parameters_before_any_work(override, capsys):
    from rethink.experiments import zoo
    assert zoo.main(["--profile", "smoke", "-p", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: override ") and "(notebook 01_zoo)" in err[0]


def test_data_ids_name_the_archive_that_is_used(tmp_path):
    (tmp_path / "tiny-imagenet-200-sub400.tar.gz").write_bytes(b"")
    assert protocol.data_id("tiny-imagenet", tmp_path).startswith("tiny-imagenet-200-sub400.tar.gz:")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert protocol.data_id("tiny-imagenet", empty).startswith("tiny-imagenet-200.zip:")   # the canonical one
