"""Digital corruptions (and brightness): contrast, elastic transform, pixelate, JPEG, saturate.

References: CIFAR-10-C's generator (hendrycks/robustness, ``make_cifar_c.py``) for the
``cifar`` parameters and the ``imagecorruptions`` package (ImageNet-C) for the ``imagenet``
ones. Where the two differ, each parameter set follows its own reference: pixelate
upsamples with PIL BOX (CIFAR) or NEAREST (imagecorruptions), and elastic_transform is
CIFAR's random affine + displacement field (3-tuple parameters) or imagecorruptions'
displacement field alone, scaled to the image size (a float alpha).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from . import register
from ._ops import gaussian_kernel1d, separable_filter


# --- skimage's rgb2hsv / hsv2rgb on N x 3 x H x W --------------------------------------

def rgb_to_hsv(x: Tensor) -> Tensor:
    """skimage.color.rgb2hsv over dim 1 (ties for the max: blue, then green, then red wins)."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    flat = delta == 0
    safe = torch.where(flat, torch.ones_like(delta), delta)
    s = torch.where(flat, torch.zeros_like(delta), delta / torch.where(flat, torch.ones_like(v), v))
    h = torch.where(b == v, 4 + (r - g) / safe, torch.where(g == v, 2 + (b - r) / safe, (g - b) / safe))
    h = torch.where(flat, torch.zeros_like(h), torch.remainder(h / 6, 1.0))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """skimage.color.hsv2rgb over dim 1."""
    h, s, v = x.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = torch.remainder(hi, 6).long()
    table = torch.stack([torch.stack(c, 1) for c in
                         ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 0)
    idx = hi[None, :, None].expand(1, *table.shape[1:])
    return table.gather(0, idx)[0]


@register("brightness", "weather", cifar=[0.05, 0.1, 0.15, 0.2, 0.3],
          imagenet=[0.1, 0.2, 0.3, 0.4, 0.5])
def brightness(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Add c to the HSV value channel (clipped to [0, 1])."""
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + c).clamp(0, 1)], 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


@register("saturate", "digital",
          cifar=[(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
          imagenet=[(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)])
def saturate(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """HSV saturation s -> clip(s * c[0] + c[1], 0, 1)."""
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], (hsv[:, 1] * c[0] + c[1]).clamp(0, 1), hsv[:, 2]], 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


@register("contrast", "digital", cifar=[0.75, 0.5, 0.4, 0.3, 0.15],
          imagenet=[0.4, 0.3, 0.2, 0.1, 0.05])
def contrast(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """(x - mean) * c + mean, with per-image, per-channel means."""
    m = x.mean((2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0, 1)


# --- pixelate: PIL's BOX and NEAREST resizes --------------------------------------------

def _to_levels(x: Tensor) -> Tensor:
    """Float images -> their grey levels 0..255 (float64), the uint8 image PIL would see."""
    return torch.round(x.clamp(0, 1) * 255).double()


@functools.lru_cache(maxsize=None)
def _pil_box_weights(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's BOX resampling coefficients (n_out x n_in), in its 22-bit fixed point."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    k = np.zeros((n_out, n_in))
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        t = (np.arange(lo, hi) - center + 0.5) / fscale
        w = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if w.sum():
            w = w / w.sum()
        k[o, lo:hi] = np.floor(w * (1 << 22) + 0.5)
    return k


def _pil_box_pass(u: Tensor, n_out: int, dim: int) -> Tensor:
    k = torch.as_tensor(_pil_box_weights(u.shape[dim], n_out), device=u.device)
    y = torch.movedim(torch.movedim(u, dim, -1) @ k.T, -1, dim)
    return torch.floor((y + (1 << 21)) / (1 << 22)).clamp(0, 255)


def pil_resize_box(u: Tensor, out_h: int, out_w: int) -> Tensor:
    """PIL ``Image.resize((out_w, out_h), BOX)`` of grey levels: horizontal pass, uint8, vertical.

    Pillow >= 13 runs the vertical pass first for some strong height reductions; the pass
    order changes only the intermediate rounding, at most one grey level.
    """
    if out_w != u.shape[-1]:
        u = _pil_box_pass(u, out_w, -1)
    if out_h != u.shape[-2]:
        u = _pil_box_pass(u, out_h, -2)
    return u


def _pil_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's nearest-neighbour source index: position (o + 0.5) * n_in / n_out, accumulated."""
    step = n_in / n_out
    pos = np.full(n_out, step)
    pos[0] = step * 0.5
    return np.cumsum(pos).astype(np.int64)  # sequential sums, as Pillow's xo += a[0]


def pil_resize_nearest(u: Tensor, out_h: int, out_w: int) -> Tensor:
    """PIL ``Image.resize((out_w, out_h), NEAREST)``."""
    ih = torch.as_tensor(_pil_nearest_index(u.shape[-2], out_h), device=u.device)
    iw = torch.as_tensor(_pil_nearest_index(u.shape[-1], out_w), device=u.device)
    return u.index_select(-2, ih).index_select(-1, iw)


@register("pixelate", "digital",
          cifar=[(0.95, "box"), (0.9, "box"), (0.85, "box"), (0.75, "box"), (0.65, "box")],
          imagenet=[(0.6, "nearest"), (0.5, "nearest"), (0.4, "nearest"), (0.3, "nearest"),
                    (0.25, "nearest")])
def pixelate(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """PIL BOX resize to int(size * c[0]), then back up with PIL ``c[1]`` (BOX or NEAREST)."""
    factor, up = c
    h, w = x.shape[-2:]
    small = pil_resize_box(_to_levels(x), int(h * factor), int(w * factor))
    big = pil_resize_box(small, h, w) if up == "box" else pil_resize_nearest(small, h, w)
    return (big / 255).to(x.dtype)


# --- JPEG -------------------------------------------------------------------------------

@register("jpeg_compression", "digital", cifar=[80, 65, 58, 50, 40], imagenet=[25, 18, 15, 10, 7])
def jpeg_compression(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """JPEG round trip at quality c (libjpeg defaults as PIL's ``save(quality=c)``; nvjpeg on CUDA)."""
    u8 = _to_levels(x).to(torch.uint8)
    with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        enc = [e.cpu() for e in encode_jpeg(list(u8), quality=int(c))]  # decode_jpeg reads CPU bytes
        dec = decode_jpeg(enc, mode=ImageReadMode.RGB, device=x.device)
    return torch.stack(dec).to(x.device, x.dtype) / 255


# --- elastic transform ------------------------------------------------------------------

def _border_index(i: Tensor, n: int, mode: str) -> Tensor:
    """scipy 'reflect' (half-sample) or 'mirror' (whole-sample, cv2 BORDER_REFLECT_101) index."""
    if mode == "reflect":
        j = torch.remainder(i, 2 * n)
        return torch.where(j < n, j, 2 * n - 1 - j)
    if n == 1:
        return torch.zeros_like(i)
    j = torch.remainder(i, 2 * n - 2)
    return torch.where(j < n, j, 2 * n - 2 - j)


def sample_bilinear(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """x (N x C x H x W) linearly interpolated at per-image coordinates rows, cols (N x H x W)."""
    n, ch, h, w = x.shape
    r0, c0 = torch.floor(rows), torch.floor(cols)
    fr, fc = (rows - r0).to(x.dtype)[:, None], (cols - c0).to(x.dtype)[:, None]
    r0, c0 = r0.long(), c0.long()
    ri = (_border_index(r0, h, mode), _border_index(r0 + 1, h, mode))
    ci = (_border_index(c0, w, mode), _border_index(c0 + 1, w, mode))
    flat = x.reshape(n, ch, h * w)

    def at(r, c):
        idx = (r * w + c).reshape(n, 1, -1).expand(n, ch, -1)
        return flat.gather(2, idx).reshape(n, ch, *rows.shape[1:])

    return ((at(ri[0], ci[0]) * (1 - fc) + at(ri[0], ci[1]) * fc) * (1 - fr)
            + (at(ri[1], ci[0]) * (1 - fc) + at(ri[1], ci[1]) * fc) * fr)


def _smooth(u: Tensor, sigma_h: float, sigma_w: float) -> Tensor:
    """skimage ``gaussian(u, (sigma_h, sigma_w), mode='reflect', truncate=3)``."""
    return separable_filter(u, gaussian_kernel1d(sigma_h, 3.0), gaussian_kernel1d(sigma_w, 3.0),
                            mode="reflect")


def elastic_draws(n: int, h: int, w: int, c, generator: torch.Generator, device) -> tuple:
    """The random numbers of one elastic transform per image, in the reference's ranges.

    CIFAR (tuple c): point jitter U(-c[2], c[2]) (N x 3 x 2) and two U(-1, 1) fields;
    imagecorruptions (float c): two U(-0.005 h, 0.005 h) fields.
    """
    def uniform(shape, bound):
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return (2 * u - 1) * bound

    if isinstance(c, tuple):
        return uniform((n, 3, 2), c[2]), uniform((n, h, w), 1.0), uniform((n, h, w), 1.0)
    return uniform((n, h, w), 0.005 * h), uniform((n, h, w), 0.005 * h)


def _affine_warp(x: Tensor, jitter: Tensor) -> Tensor:
    """cv2.warpAffine(x, getAffineTransform(pts1, pts1 + jitter), BORDER_REFLECT_101), bilinear."""
    n, _, h, w = x.shape
    cs0, cs1 = float(h // 2), float(w // 2)  # np.float32(shape_size) // 2, used as (x, y) points
    s = min(h, w) // 3
    pts1 = torch.tensor([[cs0 + s, cs1 + s], [cs0 + s, cs1 - s], [cs0 - s, cs1 - s]],
                        dtype=torch.float64, device=x.device)
    pts2 = (pts1.float() + jitter.float()).double()  # the reference adds in float32
    # warpAffine samples the source at M^-1 (dst): the affine map taking pts2 to pts1.
    a = torch.cat([pts2, torch.ones(n, 3, 1, dtype=torch.float64, device=x.device)], 2)
    inv = torch.linalg.solve(a, pts1.expand(n, 3, 2))  # 3 x 2: [x y 1] @ inv = (sx, sy)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device),
                            torch.arange(w, dtype=torch.float64, device=x.device), indexing="ij")
    sx = inv[:, 0, 0, None, None] * xx + inv[:, 1, 0, None, None] * yy + inv[:, 2, 0, None, None]
    sy = inv[:, 0, 1, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 2, 1, None, None]
    return sample_bilinear(x, sy, sx, "mirror")


def elastic_with(x: Tensor, c, draws: tuple) -> Tensor:
    """Elastic transform with given random numbers (see ``elastic_draws``)."""
    n, _, h, w = x.shape
    if isinstance(c, tuple):
        alpha, sigma, _ = c
        jitter, ux, uy = draws
        x = _affine_warp(x, jitter)
        sigma_h = sigma_w = sigma
    else:
        alpha, (ux, uy) = c, draws
        sigma_h, sigma_w = 0.01 * h, 0.01 * w
    dx = (_smooth(ux, sigma_h, sigma_w) * alpha).float().double()  # the reference's float32 fields
    dy = (_smooth(uy, sigma_h, sigma_w) * alpha).float().double()
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=x.device),
                            torch.arange(w, dtype=torch.float64, device=x.device), indexing="ij")
    return sample_bilinear(x, yy + dy, xx + dx, "reflect").clamp(0, 1)


@register("elastic_transform", "digital",
          cifar=[(32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07),
                 (32 * 0.08, 32 * 0.06, 32 * 0.06), (32 * 0.1, 32 * 0.04, 32 * 0.05),
                 (32 * 0.1, 32 * 0.03, 32 * 0.03)],
          imagenet=[250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12])
def elastic_transform(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Smoothed random displacement field (after CIFAR's random affine), bilinear, 'reflect' border."""
    n, _, h, w = x.shape
    return elastic_with(x, c, elastic_draws(n, h, w, c, generator, x.device))
