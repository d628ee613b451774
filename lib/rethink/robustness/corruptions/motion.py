"""Motion blur (ImageNet-C / CIFAR-10-C), batched in torch.

Reference: the ``imagecorruptions`` package's numpy emulation of ImageMagick's motion blur
(``_motion_blur`` with ``getOptimalKernelWidth1D`` and ``getMotionBlurKernel``): a one-sided
Gaussian kernel of width 2 * radius + 1 whose taps are integer pixel shifts along the
angle, the image edge replicated (its ``shift``), taps stopping once a shift reaches the
image size. CIFAR-10-C's generator (hendrycks/robustness, make_cifar_c.py) called
ImageMagick through Wand instead; we use the same numpy emulation for both parameter sets.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import register


def motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """The one-sided Gaussian tap weights, width 2 * radius + 1, normalised to sum 1."""
    width = int(radius * 2 + 1)
    k = np.exp(-np.arange(width, dtype=np.float64) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    return k / k.sum()


def motion_shifts(width: int, angle_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dy, dx) of each tap for each angle: arrays N x width (float64 as the reference)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))[:, None]
    p0, p1 = width * np.sin(a), width * np.cos(a)
    hyp = np.hypot(p0, p1)
    i = np.arange(width, dtype=np.float64)[None, :]
    dy = -np.ceil((i * p0) / hyp - 0.5)
    dx = -np.ceil((i * p1) / hyp - 0.5)
    return dy.astype(np.int64), dx.astype(np.int64)


def apply_motion_blur(x: Tensor, radius: float, sigma: float, angle: Tensor | float) -> Tensor:
    """imagecorruptions' ``_motion_blur`` on a batch: x N x C x H x W, angle (degrees) scalar or N.

    Output pixel (r, c) = sum_i k_i * x[clamp(r - dy_i), clamp(c - dx_i)]; an image's taps stop
    at the first i whose |dy_i| >= H or |dx_i| >= W (the reference's ``break``: the remaining
    weight is dropped, not renormalised). No clipping (the caller clips).
    """
    n, ch, h, w = x.shape
    k = motion_kernel(radius, sigma)
    width = len(k)
    ang = angle.detach().to("cpu", torch.float64).numpy() if isinstance(angle, Tensor) \
        else np.asarray(angle, dtype=np.float64)
    ang = np.broadcast_to(ang.reshape(-1), (n,)) if ang.size == 1 else ang.reshape(-1)
    if ang.shape[0] != n:
        raise ValueError(f"angle: expected a scalar or {n} angles, got {ang.shape[0]}")
    dy, dx = motion_shifts(width, ang)
    alive = np.cumprod(~((np.abs(dy) >= h) | (np.abs(dx) >= w)), axis=1).astype(bool)
    weights = torch.as_tensor(k[None, :] * alive, dtype=x.dtype, device=x.device)  # N x width
    rows = torch.as_tensor(np.clip(np.arange(h)[None, None, :] - dy[:, :, None], 0, h - 1), device=x.device)
    cols = torch.as_tensor(np.clip(np.arange(w)[None, None, :] - dx[:, :, None], 0, w - 1), device=x.device)
    flat = x.reshape(n, ch, h * w)
    out = torch.zeros_like(flat)
    for i in range(width):  # loop over the kernel's taps, the batch at once
        if not alive[:, i].any():
            break
        idx = (rows[:, i, :, None] * w + cols[:, i, None, :]).reshape(n, 1, h * w).expand(n, ch, h * w)
        out += weights[:, i, None, None] * flat.gather(2, idx)
    return out.reshape(n, ch, h, w)


@register("motion_blur", "blur",
          cifar=[(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
          imagenet=[(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)])
def motion_blur(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Motion blur of (radius, sigma) along an angle uniform in (-45, 45) degrees per image."""
    angle = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=torch.float64) * 90 - 45
    return apply_motion_blur(x, c[0], c[1], angle).clamp(0, 1)


__all__ = ["apply_motion_blur", "motion_blur", "motion_kernel", "motion_shifts"]
