"""ImageNet-C / CIFAR-10-C corruptions (Hendrycks & Dietterich 2019), batched in torch.

Each corruption is registered with its five severity parameters twice: ``cifar`` (the
32x32 values of CIFAR-10-C's generator) and ``imagenet`` (ImageNet-C's, the values the
``imagecorruptions`` package uses; the tests compare against that package). A corruption
function takes float images N x 3 x H x W in [0, 1] on any device, one severity parameter
and a ``torch.Generator`` on the images' device, and returns float images in [0, 1].

    from rethink.robustness.corruptions import corrupt, BENCHMARK
    x_c = corrupt(x_uint8, "glass_blur", severity=3, seed=0)          # CIFAR-10-C parameters
    x_c = corrupt(x_uint8, "fog", 5, params="imagenet", seed=0)       # ImageNet-C parameters

The same seed on the same device gives the same images; CPU and CUDA draw different
random numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

PARAM_SETS = ("cifar", "imagenet")
FAMILIES = ("noise", "blur", "weather", "digital")
# ImageNet-C's 15 benchmark corruptions (in the benchmark's order) and its 4 held-out ones.
BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
             "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
             "elastic_transform", "pixelate", "jpeg_compression")
HELD_OUT = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = BENCHMARK + HELD_OUT


@dataclass(frozen=True)
class Corruption:
    name: str
    family: str
    fn: Callable[[Tensor, Any, torch.Generator], Tensor]
    cifar: tuple
    imagenet: tuple

    def params(self, severity: int, params: str = "cifar") -> Any:
        if params not in PARAM_SETS:
            raise ValueError(f"params must be one of {PARAM_SETS}, got {params!r}")
        if not 1 <= int(severity) <= 5:
            raise ValueError(f"severity must be 1..5, got {severity}")
        return getattr(self, params)[int(severity) - 1]


CORRUPTIONS: dict[str, Corruption] = {}


def register(name: str, family: str, *, cifar, imagenet):
    """Decorator: add ``fn(x, c, generator)`` to the registry under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if len(cifar) != 5 or len(imagenet) != 5:
        raise ValueError(f"{name}: five severity parameters per set")

    def wrap(fn):
        CORRUPTIONS[name] = Corruption(name, family, fn, tuple(cifar), tuple(imagenet))
        return fn
    return wrap


def get(name: str) -> Corruption:
    _load()
    if name not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {name!r}; choose one of {list(ALL)}")
    return CORRUPTIONS[name]


def to_uint8(x: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 by truncation, as the reference generators' ``np.uint8(x * 255)``.

    The small offset keeps exact grey levels (k / 255 * 255 = k - 1e-5 in float32) at k.
    """
    return torch.floor(x.clamp(0, 1) * 255 + 1e-3).clamp_(0, 255).to(torch.uint8)


def corrupt(images: Tensor, name: str, severity: int, *, params: str = "cifar",
            seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """``images`` (uint8 N x 3 x H x W) corrupted by ``name`` at ``severity`` (1..5), as uint8."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 images N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
    c = get(name)
    if generator is None:
        generator = torch.Generator(device=images.device)
        generator.manual_seed(0 if seed is None else int(seed))
    x = images.float() / 255
    return to_uint8(c.fn(x, c.params(severity, params), generator))


def _load() -> None:
    """Import the modules that register the corruptions (once)."""
    from . import blur, digital, motion, noise, weather  # noqa: F401


__all__ = ["ALL", "BENCHMARK", "CORRUPTIONS", "Corruption", "FAMILIES", "HELD_OUT", "PARAM_SETS",
           "corrupt", "get", "register", "to_uint8"]
