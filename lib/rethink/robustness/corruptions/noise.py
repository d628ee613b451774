"""Noise corruptions: Gaussian, shot (Poisson), impulse (salt & pepper) and speckle noise.

References: CIFAR-10-C's generator (hendrycks/robustness, ``make_cifar_c.py``) for the
``cifar`` parameters and the ``imagecorruptions`` package (ImageNet-C) for the ``imagenet``
ones; the formulas are the same. Every pixel value (each channel) gets its own draw.
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import register


def _randn(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@register("gaussian_noise", "noise", cifar=[0.04, 0.06, 0.08, 0.09, 0.10],
          imagenet=[0.08, 0.12, 0.18, 0.26, 0.38])
def gaussian_noise(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """x + N(0, c^2)."""
    return (x + c * _randn(x, generator)).clamp(0, 1)


@register("shot_noise", "noise", cifar=[500, 250, 100, 75, 50], imagenet=[60, 25, 12, 5, 3])
def shot_noise(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Poisson(x * c) / c."""
    return (torch.poisson(x * c, generator=generator) / c).clamp(0, 1)


@register("impulse_noise", "noise", cifar=[0.01, 0.02, 0.03, 0.05, 0.07],
          imagenet=[0.03, 0.06, 0.09, 0.17, 0.27])
def impulse_noise(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """skimage ``random_noise(mode='s&p', amount=c)``: each value flipped w.p. c, to 1 or 0 w.p. 1/2."""
    flipped = torch.rand(x.shape, generator=generator, device=x.device) <= c
    salted = torch.rand(x.shape, generator=generator, device=x.device) <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    return torch.where(flipped & ~salted, torch.zeros_like(x), out)


@register("speckle_noise", "noise", cifar=[0.06, 0.1, 0.12, 0.16, 0.2],
          imagenet=[0.15, 0.2, 0.35, 0.45, 0.6])
def speckle_noise(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """x + x * N(0, c^2)."""
    return (x + x * c * _randn(x, generator)).clamp(0, 1)
