"""Blur corruptions: defocus, glass, zoom and Gaussian blur, batched in torch.

References: CIFAR-10-C's generator (hendrycks/robustness, ``make_cifar_c.py``) for the
``cifar`` parameters and the ``imagecorruptions`` package (ImageNet-C) for the ``imagenet``
ones; both share these algorithms (glass blur loops over the image's own height and width).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import register
from ._ops import clipped_zoom, gaussian_filter, pad2d


def _exact_levels(x: Tensor) -> Tensor:
    """x in float64, values within 1e-4 of a grey level k / 255 snapped to float64 k / 255."""
    x = x.double()
    lv = torch.round(x * 255)
    return torch.where((x * 255 - lv).abs() < 1e-4, lv / 255, x)


def _quantize_trunc(x: Tensor) -> Tensor:
    """The reference's ``np.uint8(x * 255) / 255`` (truncation) for float64 x.

    Truncation must see float64 sums of exact grey levels: at sigma 0.25 a pixel can sit
    1e-7 of a level below a grey level and drops to the next one; the 1e-9 guard only
    absorbs rounding error.
    """
    return torch.floor(x.clamp(0, 1) * 255 + 1e-9) / 255


@register("gaussian_blur", "blur", cifar=[0.4, 0.6, 0.7, 0.8, 1.0], imagenet=[1, 2, 3, 4, 6])
def gaussian_blur(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """skimage ``gaussian(x, sigma=c)`` per channel (mode 'nearest', truncate 4)."""
    return gaussian_filter(x, float(c)).clamp(0, 1)


# --- defocus blur -----------------------------------------------------------------------

def _cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma) for sigma > 0."""
    t = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    k = np.exp(-t ** 2 / (2 * sigma * sigma))
    return k / k.sum()


@functools.lru_cache(maxsize=None)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The generators' ``disk``: a normalised disk antialiased by cv2.GaussianBlur (float32).

    The disk lives on [-8, 8]^2 (3x3 blur) for radius <= 8, else on [-r, r]^2 (5x5 blur);
    GaussianBlur's default border is BORDER_REFLECT_101 (numpy 'reflect').
    """
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=np.float32)
    disk /= np.sum(disk)
    k = _cv2_gaussian_kernel(ksize, alias_blur)
    p = ksize // 2
    d = np.pad(disk.astype(np.float64), p, mode="reflect")
    d = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, d)
    d = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, d)
    return d.astype(np.float32)


@register("defocus_blur", "blur",
          cifar=[(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
          imagenet=[(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)])
def defocus_blur(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """cv2.filter2D of each channel with ``disk(radius, alias_blur)`` (BORDER_REFLECT_101)."""
    k = torch.as_tensor(disk_kernel(c[0], c[1]), dtype=x.dtype, device=x.device)
    r = k.shape[-1] // 2
    n, ch, h, w = x.shape
    y = pad2d(x.reshape(n * ch, 1, h, w), r, r, "mirror")
    return F.conv2d(y, k[None, None]).reshape(n, ch, h, w).clamp(0, 1)


# --- zoom blur --------------------------------------------------------------------------

def _zooms(stop: float, step: float) -> tuple:
    return tuple(float(z) for z in np.arange(1, stop, step))


@register("zoom_blur", "blur",
          cifar=[_zooms(1.06, 0.01), _zooms(1.11, 0.01), _zooms(1.16, 0.01),
                 _zooms(1.21, 0.01), _zooms(1.26, 0.01)],
          imagenet=[_zooms(1.11, 0.01), _zooms(1.16, 0.01), _zooms(1.21, 0.02),
                    _zooms(1.26, 0.02), _zooms(1.31, 0.03)])
def zoom_blur(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Mean of the image and its clipped zooms by each factor in ``c`` (the factors of np.arange)."""
    # imagecorruptions trims a zoom's excess at the bottom/right, CIFAR's symmetrically; for
    # z < 1.5 the excess is at most one pixel, so neither trims the top/left.
    out = torch.zeros_like(x)
    for z in c:
        out += clipped_zoom(x, float(z))
    return ((x + out) / (len(c) + 1)).clamp(0, 1)


# --- glass blur -------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _glass_schedule(h: int, w: int, d: int):
    """The reference's swap positions regrouped into wavefronts of independent operations.

    The reference visits (hh, ww) for hh from h - d down to d + 1 and, within a row, ww from
    w - d down to d + 1, with a partner (hh + dy, ww + dx), dx, dy in [-d, d). An operation
    touches rows [hh - d, hh + d - 1] and columns [ww - d, ww + d - 1], so two commute when
    their rows or their columns are >= 2d apart. Operation (r, s) (r-th row, s-th column in
    the reference's order) goes to step s + 2d r: it comes after every earlier operation it
    may touch, and those within a step are disjoint, so running the steps in order, each
    step at once, gives exactly the reference's sequential result.

    Returns (order, bounds): op indices (r * nw + s) sorted by step, and step boundaries.
    """
    nh, nw = h - 2 * d, w - 2 * d
    if nh <= 0 or nw <= 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    r, s = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
    step = (s + 2 * d * r).ravel()
    order = np.argsort(step, kind="stable")
    counts = np.bincount(step)
    return order, np.concatenate([[0], np.cumsum(counts)])


def glass_offsets(n: int, h: int, w: int, c, generator: torch.Generator, device) -> Tensor:
    """Random (dx, dy) per image, pass and visited position: iters x N x nh x nw x 2, in [-d, d)."""
    _, d, iters = c
    nh, nw = max(h - 2 * d, 0), max(w - 2 * d, 0)
    return torch.randint(-d, d, (iters, n, nh, nw, 2), generator=generator, device=device)


def glass_shuffle(x: Tensor, d: int, offsets: Tensor) -> Tensor:
    """The reference's local pixel "swaps", one batched step per wavefront.

    The reference writes ``x[h, w], x[h2, w2] = x[h2, w2], x[h, w]`` on numpy row views: the
    first assignment overwrites the view the second reads, so pixel (h, w) receives its
    partner's value and the partner keeps it. That copy is what is reproduced here.
    """
    n, ch, h, w = x.shape
    order, bounds = _glass_schedule(h, w, d)
    if len(order) == 0:
        return x
    perm = torch.arange(h * w, device=x.device).repeat(n, 1)  # source pixel of each position
    rows = torch.arange(h - d, d, -1, device=x.device)[:, None]
    cols = torch.arange(w - d, d, -1, device=x.device)[None, :]
    order_t = torch.as_tensor(order, device=x.device)
    a_all = (rows * w + cols).reshape(-1)[order_t]                         # visited positions
    for off in offsets:                                                      # one reference pass
        dx, dy = off[..., 0], off[..., 1]
        b_all = ((rows + dy) * w + (cols + dx)).reshape(n, -1)[:, order_t]  # their partners
        for i in range(len(bounds) - 1):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            perm.scatter_(1, a_all[lo:hi].expand(n, -1), perm.gather(1, b_all[:, lo:hi]))
    flat = x.reshape(n, ch, h * w)
    return flat.gather(2, perm[:, None, :].expand(n, ch, h * w)).reshape(n, ch, h, w)


def glass_blur_with(x: Tensor, c, offsets: Tensor) -> Tensor:
    """Glass blur with given pixel-move offsets (see ``glass_offsets``).

    Both blurs run in float64 on exact grey levels and both results are truncated to grey
    levels as the reference does: at small sigma the blurred values sit a hair (1e-7 of a
    level) below a grey level, and truncation must see that.
    """
    sigma, d, _ = c
    y = _quantize_trunc(gaussian_filter(_exact_levels(x), sigma))
    y = glass_shuffle(y, d, offsets)
    return _quantize_trunc(gaussian_filter(y, sigma)).to(x.dtype)


@register("glass_blur", "blur",
          cifar=[(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
          imagenet=[(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)])
def glass_blur(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Blur (sigma), quantise to uint8, ``iterations`` passes of local pixel shuffling, blur again."""
    n, _, h, w = x.shape
    return glass_blur_with(x, c, glass_offsets(n, h, w, c, generator, x.device))
