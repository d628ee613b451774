"""Image operations the corruptions share, matching scipy / skimage on N x C x H x W tensors."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PAD_MODES = ("nearest", "reflect", "mirror", "wrap", "constant")


def pad_indices(n: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of each padded position along an axis of length ``n`` (scipy.ndimage's modes).

    nearest: a a a | a b c | c c c;  reflect: c b a | a b c | c b a (half-sample symmetric);
    mirror: d c b | a b c d | c b a (whole-sample);  wrap: b c | a b c | a b.
    ``constant`` returns -1 where the value is the constant.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    i = np.arange(-before, n + after)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "constant":
        return np.where((i < 0) | (i >= n), -1, i)
    if mode == "wrap":
        return np.mod(i, n)
    if mode == "reflect":
        period = 2 * n
        j = np.mod(i, period)
        return np.where(j < n, j, period - 1 - j)
    if n == 1:  # mirror of a single sample
        return np.zeros_like(i)
    period = 2 * n - 2
    j = np.mod(i, period)
    return np.where(j < n, j, period - j)


def pad2d(x: Tensor, ph: int, pw: int, mode: str, cval: float = 0.0) -> Tensor:
    """Pad the last two dims by ``ph`` rows and ``pw`` columns on both sides."""
    h, w = x.shape[-2:]
    ih = torch.as_tensor(pad_indices(h, ph, ph, mode), device=x.device)
    iw = torch.as_tensor(pad_indices(w, pw, pw, mode), device=x.device)
    out = x.index_select(-2, ih.clamp(min=0)).index_select(-1, iw.clamp(min=0))
    if mode == "constant":
        mask = (ih >= 0)[:, None] & (iw >= 0)[None, :]
        out = torch.where(mask, out, torch.full_like(out, cval))
    return out


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian weights: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    if sigma <= 0:
        return (x == 0).astype(np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def separable_filter(x: Tensor, kernel_h: np.ndarray, kernel_w: np.ndarray, mode: str = "nearest",
                     cval: float = 0.0) -> Tensor:
    """Correlate the last two dims of x (any leading dims) with two odd 1-D kernels."""
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    rh, rw = len(kernel_h) // 2, len(kernel_w) // 2
    y = pad2d(y, rh, rw, mode, cval)
    kh = torch.as_tensor(kernel_h, dtype=y.dtype, device=y.device).view(1, 1, -1, 1)
    kw = torch.as_tensor(kernel_w, dtype=y.dtype, device=y.device).view(1, 1, 1, -1)
    with torch.backends.cudnn.flags(allow_tf32=False):  # full float32 on CUDA, as on the CPU
        y = F.conv2d(F.conv2d(y, kh), kw)
    return y.reshape(shape)


def gaussian_filter(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0,
                    cval: float = 0.0) -> Tensor:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter over the last two dims.

    skimage's default mode is 'nearest' and its default truncate 4.0, as here; channels
    are filtered independently (skimage's ``channel_axis``).
    """
    k = gaussian_kernel1d(sigma, truncate)
    return separable_filter(x, k, k, mode, cval)


def zoom_linear(x: Tensor, out_h: int, out_w: int) -> Tensor:
    """scipy.ndimage.zoom(order=1) of the last two dims to (out_h, out_w).

    scipy's default (grid_mode=False) maps the corner samples onto each other, which is
    bilinear interpolation with align_corners=True.
    """
    shape = x.shape
    y = x.reshape(-1, 1, *shape[-2:])
    y = F.interpolate(y, size=(out_h, out_w), mode="bilinear", align_corners=True)
    return y.reshape(*shape[:-2], out_h, out_w)


def clipped_zoom(x: Tensor, zoom_factor: float) -> Tensor:
    """Zoom into the centre by ``zoom_factor`` (>= 1) keeping the size (the generators' clipped_zoom).

    Crop ceil(size / z) around the centre, scipy-zoom it by z (output round(crop * z)),
    trim the excess symmetrically (floor on the top/left side).
    """
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / zoom_factor)), int(math.ceil(w / zoom_factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    oh, ow = int(round(ch * zoom_factor)), int(round(cw * zoom_factor))
    z = zoom_linear(crop, oh, ow)
    th, tw = (oh - h) // 2, (ow - w) // 2
    return z[..., th:th + h, tw:tw + w]


def rgb_to_gray(x: Tensor) -> Tensor:
    """OpenCV's RGB2GRAY weights (0.299, 0.587, 0.114): N x 3 x H x W -> N x 1 x H x W."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)
