"""The corruption registry as a whole: names, families, parameters and the public entry point."""
from __future__ import annotations

import warnings

import pytest
import torch

from rethink.robustness import corruptions as C


def test_registry_holds_the_19_corruptions_of_imagenet_c():
    C.get("fog")  # loads the modules
    assert set(C.CORRUPTIONS) == set(C.ALL) and len(C.ALL) == 19
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from imagecorruptions import get_corruption_names
    assert list(C.BENCHMARK) == get_corruption_names("common")
    assert sorted(C.HELD_OUT) == sorted(get_corruption_names("validation"))
    families = {n: C.get(n).family for n in C.ALL}
    assert [n for n in C.BENCHMARK if families[n] == "noise"] == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert [n for n in C.BENCHMARK if families[n] == "weather"] == ["snow", "frost", "fog", "brightness"]
    for n in C.ALL:
        assert len(C.get(n).cifar) == len(C.get(n).imagenet) == 5


def test_every_corruption_runs_at_every_severity_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    for name in C.ALL:
        for sev in range(1, 6):
            y = C.corrupt(x, name, sev, seed=1)
            assert y.dtype == torch.uint8 and y.shape == x.shape, (name, sev)
            assert torch.equal(y, C.corrupt(x, name, sev, seed=1)), (name, sev)


def test_bad_inputs_are_named():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(KeyError, match="rain"):
        C.corrupt(x, "rain", 1)
    with pytest.raises(ValueError, match="severity"):
        C.corrupt(x, "fog", 6)
    with pytest.raises(ValueError, match="params"):
        C.corrupt(x, "fog", 1, params="tiny")
    with pytest.raises(ValueError, match="uint8"):
        C.corrupt(x.float(), "fog", 1)


def test_to_uint8_truncates_like_the_reference_but_keeps_exact_grey_levels():
    levels = torch.arange(256, dtype=torch.float32) / 255
    assert torch.equal(C.to_uint8(levels), torch.arange(256, dtype=torch.uint8))
    assert C.to_uint8(torch.tensor([0.5 / 255 + 10 / 255])).item() == 10   # 10.5 -> 10, as np.uint8
