"""Weather corruptions (ImageNet-C / CIFAR-10-C): snow, frost, fog, spatter, batched in torch.

References: CIFAR-10-C's generator (hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py)
for the ``cifar`` parameters and the ``imagecorruptions`` package (corruptions.py) for the
``imagenet`` ones; the two differ beyond the numbers for snow (the zoom's crop, the 8-bit
snow layer handed to ImageMagick) and frost (how the frost picture is resized), so those two
carry a ``style`` field in their parameters. ImageMagick's motion blur is replaced by
imagecorruptions' numpy emulation (``motion.apply_motion_blur``) in both. Spatter's OpenCV
steps (Canny, distanceTransform, equalizeHist, filter2D, blur) are re-implemented in torch;
all randomness comes from the caller's ``torch.Generator``, one independent draw per image.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import register
from ._ops import clipped_zoom, gaussian_filter, pad2d, rgb_to_gray, zoom_linear
from .motion import apply_motion_blur


# ----------------------------------------------------------------------------------- snow
class SnowParams(NamedTuple):
    loc: float          # mean of the Gaussian snow layer
    scale: float        # its std
    zoom: float         # clipped-zoom factor of the layer
    threshold: float    # layer values below this become 0
    radius: float       # motion blur radius
    sigma: float        # motion blur sigma
    blend: float        # weight of the image against its brightened grey version
    style: str          # "cifar" (make_cifar_c.py) or "imagenet" (imagecorruptions)


def _snow_params(rows, style):
    return [SnowParams(*r, style) for r in rows]


def snow_from_noise(x: Tensor, noise: Tensor, angle: Tensor, c: SnowParams) -> Tensor:
    """Snow given the drawn Gaussian layer ``noise`` (N x 1 x H x W) and blur angles (N, degrees)."""
    h, w = x.shape[-2:]
    if c.style == "cifar":
        # make_cifar_c.py: centred clipped zoom, the layer saved as 8-bit (truncated) for Wand
        layer = clipped_zoom(noise, c.zoom)
        layer = torch.where(layer < c.threshold, torch.zeros_like(layer), layer)
        layer = torch.floor(layer.clamp(0, 1) * 255) / 255
    else:
        # imagecorruptions: its clipped_zoom keeps the whole zoomed crop (no trim)
        ch, cw = int(math.ceil(h / c.zoom)), int(math.ceil(w / c.zoom))
        top, left = (h - ch) // 2, (w - cw) // 2
        layer = zoom_linear(noise[..., top:top + ch, left:left + cw], int(round(ch * c.zoom)), int(round(cw * c.zoom)))
        layer = torch.where(layer < c.threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = apply_motion_blur(layer, c.radius, c.sigma, angle)
    layer = torch.round(layer * 255)[..., :h, :w] / 255  # 8-bit layer, top-left crop to the image
    x = c.blend * x + (1 - c.blend) * torch.maximum(x, rgb_to_gray(x) * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, dims=(-2, -1))).clamp(0, 1)


@register("snow", "weather",
          cifar=_snow_params([(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                              (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                              (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)], "cifar"),
          imagenet=_snow_params([(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)], "imagenet"))
def snow(x: Tensor, c: SnowParams, generator: torch.Generator) -> Tensor:
    """Snow: a thresholded, zoomed Gaussian layer motion-blurred at uniform(-135, -45) degrees."""
    n, _, h, w = x.shape
    noise = torch.randn(n, 1, h, w, generator=generator, device=x.device, dtype=x.dtype) * c.scale + c.loc
    angle = torch.rand(n, generator=generator, device=x.device, dtype=torch.float64) * 90 - 135
    return snow_from_noise(x, noise, angle, c)


# ---------------------------------------------------------------------------------- frost
class FrostParams(NamedTuple):
    image_weight: float
    frost_weight: float
    style: str          # "cifar": frost picture scaled by 0.2; "imagenet": imagecorruptions' rescaling


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
N_FROST = 5  # both references draw randint(5): frost6 is never used


def frost_dir() -> Path:
    """The folder holding frost1.png ... frost6.jpg: $RETHINK_FROST_DIR, else imagecorruptions' ``frost/``."""
    env = os.environ.get("RETHINK_FROST_DIR")
    if env:
        p = Path(env)
        missing = [f for f in FROST_FILES if not (p / f).is_file()]
        if missing:
            raise FileNotFoundError(f"RETHINK_FROST_DIR={env} lacks {missing}; point it to a folder "
                                    f"with {', '.join(FROST_FILES)}")
        return p
    spec = importlib.util.find_spec("imagecorruptions")  # locates the package without importing it
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc) / "frost"
        if all((p / f).is_file() for f in FROST_FILES):
            return p
    raise FileNotFoundError("frost needs the six ImageNet-C frost pictures: `pip install imagecorruptions` "
                            "(its frost/ folder is used), or set RETHINK_FROST_DIR to a folder with "
                            f"{', '.join(FROST_FILES)}")


@functools.lru_cache(maxsize=4)
def _frost_images(folder: str) -> tuple[np.ndarray, ...]:
    """The frost pictures as uint8 H x W x 3 RGB arrays (alpha dropped, as cv2.imread does)."""
    from PIL import Image
    out = []
    for f in FROST_FILES:
        with Image.open(Path(folder) / f) as im:
            out.append(np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8)))
    return tuple(out)


def frost_images() -> tuple[np.ndarray, ...]:
    return _frost_images(str(frost_dir()))


def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV INTER_CUBIC taps for 8-bit images: source indices (n_out x 4, edge-clamped) and
    fixed-point weights (float32 cubic with A = -0.75, scaled by 2048 and rounded)."""
    scale = 1.0 / (n_out / n_in)
    f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    f = (f - s).astype(np.float32)
    a, one = np.float32(-0.75), np.float32(1)
    x1, y = f + one, one - f
    c0 = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
    c1 = ((a + 2) * f - (a + 3)) * f * f + one
    c2 = ((a + 2) * y - (a + 3)) * y * y + one
    c3 = one - c0 - c1 - c2
    coef = np.rint(np.stack([c0, c1, c2, c3], 1).astype(np.float32) * np.float32(2048)).astype(np.int64)
    idx = np.clip(s.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return idx, coef


def cv2_resize_cubic(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """cv2.resize(img, (out_w, out_h), interpolation=INTER_CUBIC) for uint8 H x W x C images, in the
    fixed-point arithmetic of OpenCV's generic resize (horizontal then vertical pass, round by >> 22).

    The installed OpenCV 5.0 differs from it by one level in ~5% of the frost pictures' pixels.
    """
    ix, cx = _cubic_taps(img.shape[1], out_w)
    iy, cy = _cubic_taps(img.shape[0], out_h)
    src = img.astype(np.int64)
    horiz = (src[:, ix, :] * cx[None, :, :, None]).sum(2)                # H x out_w x C
    vert = (horiz[iy, :, :] * cy[:, :, None, None]).sum(1)               # out_h x out_w x C
    return np.clip((vert + (1 << 21)) >> 22, 0, 255).astype(np.uint8)


def cv2_resize_linear(img: np.ndarray, fx: float) -> np.ndarray:
    """cv2.resize(img, (0, 0), fx=fx, fy=fx) (INTER_LINEAR, half-pixel centres, edge-clamped).

    Floating point, rounded: bit-exact for fx = 0.2 (every sample falls on a source pixel).
    """
    def taps(n_in):
        n_out = int(round(n_in * fx))
        p = (np.arange(n_out) + 0.5) * (1.0 / fx) - 0.5
        i0 = np.floor(p)
        t = p - i0
        i0 = i0.astype(np.int64)
        return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), t
    r0, r1, ty = taps(img.shape[0])
    c0, c1, tx = taps(img.shape[1])
    src = img.astype(np.float64)
    rows = src[r0] * (1 - ty)[:, None, None] + src[r1] * ty[:, None, None]
    out = rows[:, c0] * (1 - tx)[None, :, None] + rows[:, c1] * tx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def frost_picture(idx: int, style: str, h: int, w: int) -> np.ndarray:
    """Frost picture ``idx`` (0-based) resized as the reference does for an h x w image."""
    img = frost_images()[idx]
    if style == "cifar":
        return cv2_resize_linear(img, 0.2)
    fh, fw = img.shape[:2]
    # imagecorruptions: scale up only if the picture is smaller than the image, then by 1.1
    if fh >= h and fw >= w:
        s = 1
    elif fh < h and fw >= w:
        s = h / fh
    elif fh >= h and fw < w:
        s = w / fw
    else:
        s = max(h / fh, w / fw)
    s *= 1.1
    return cv2_resize_cubic(img, int(np.ceil(fw * s)), int(np.ceil(fh * s)))


@functools.lru_cache(maxsize=16)
def _frost_bank(folder: str, style: str, h: int, w: int, device: str) -> tuple[Tensor, Tensor]:
    pics = [frost_picture(i, style, h, w) for i in range(N_FROST)]
    sizes = np.array([p.shape[:2] for p in pics])
    if (sizes[:, 0] <= h).any() or (sizes[:, 1] <= w).any():
        raise ValueError(f"frost ({style} parameters): the resized frost pictures ({sizes.tolist()}) must be "
                         f"larger than the {h}x{w} images; use params='imagenet' for large images")
    bank = np.zeros((N_FROST, sizes[:, 0].max(), sizes[:, 1].max(), 3), np.uint8)
    for i, p in enumerate(pics):
        bank[i, :p.shape[0], :p.shape[1]] = p
    return torch.as_tensor(bank, device=device), torch.as_tensor(sizes, device=device)


def frost_bank(style: str, h: int, w: int, device) -> tuple[Tensor, Tensor]:
    """The five resized frost pictures zero-padded into one uint8 tensor 5 x Hmax x Wmax x 3 and their sizes."""
    return _frost_bank(str(frost_dir()), style, h, w, str(torch.device(device)))


def frost_draws(n: int, h: int, w: int, style: str, generator: torch.Generator,
                device) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: which frost picture (0..4) and the crop's top-left corner, uniform as randint."""
    _, sizes = frost_bank(style, h, w, device)
    idx = torch.randint(0, N_FROST, (n,), generator=generator, device=device)
    u = torch.rand(n, 2, generator=generator, device=device, dtype=torch.float64)
    span = sizes[idx] - torch.tensor([h, w], device=device)          # randint(0, span) is exclusive
    corner = torch.floor(u * span).long()
    return idx, corner[:, 0], corner[:, 1]


def frost_layer(idx: Tensor, top: Tensor, left: Tensor, h: int, w: int, style: str) -> Tensor:
    """The h x w crops of the chosen frost pictures, float N x 3 x h x w in [0, 255]."""
    bank, _ = frost_bank(style, h, w, idx.device)
    rows = top[:, None, None] + torch.arange(h, device=idx.device)[None, :, None]
    cols = left[:, None, None] + torch.arange(w, device=idx.device)[None, None, :]
    return bank[idx[:, None, None], rows, cols].permute(0, 3, 1, 2).float()


@register("frost", "weather",
          cifar=[FrostParams(*r, "cifar") for r in [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)]],
          imagenet=[FrostParams(*r, "imagenet") for r in [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)]])
def frost(x: Tensor, c: FrostParams, generator: torch.Generator) -> Tensor:
    """Frost: image_weight * x + frost_weight * a random crop of one of five frost pictures."""
    n, _, h, w = x.shape
    idx, top, left = frost_draws(n, h, w, c.style, generator, x.device)
    layer = frost_layer(idx, top, left, h, w, c.style).to(x.dtype)
    return (c.image_weight * x + c.frost_weight * layer / 255).clamp(0, 1)


# ------------------------------------------------------------------------------------ fog
def next_power_of_2(v: int) -> int:
    return 1 if v == 0 else 2 ** (v - 1).bit_length()


def plasma_fractal(n: int, mapsize: int, wibbledecay: float, generator: torch.Generator,
                   device=None, dtype=torch.float32) -> Tensor:
    """Diamond-square height maps, one per image: n x mapsize x mapsize in [0, 1].

    The references' algorithm (including its wibble * uniform(-wibble, wibble) amplitude),
    each random draw made for the whole batch at once.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(n, mapsize, mapsize, device=device, dtype=dtype)
    step, wibble = mapsize, 100.0

    def wibbled_mean(a: Tensor) -> Tensor:
        u = torch.rand(a.shape, generator=generator, device=device, dtype=dtype)
        return a / 4 + wibble * (u * (2 * wibble) - wibble)

    while step >= 2:
        half = step // 2
        # squares: centre of each square = mean of its four corners + wibble
        corners = m[:, 0::step, 0::step]
        acc = corners + torch.roll(corners, -1, dims=1)
        acc = acc + torch.roll(acc, -1, dims=2)
        m[:, half::step, half::step] = wibbled_mean(acc)
        # diamonds: edge midpoints = mean of the two corners and two centres around them
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0::step, half::step] = wibbled_mean(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half::step, 0::step] = wibbled_mean(tt)
        step //= 2
        wibble /= wibbledecay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def fog_blend(x: Tensor, fractal: Tensor, c) -> Tensor:
    """(x + c0 * fractal) * max / (max + c0), max = each image's largest value; fractal N x H x W."""
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + c[0] * fractal[:, None]) * max_val / (max_val + c[0])).clamp(0, 1)


@register("fog", "weather",
          cifar=[(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
          imagenet=[(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)])
def fog(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Fog: a plasma fractal (map size the next power of two of the image side; 32 for CIFAR) added."""
    n, _, h, w = x.shape
    frac = plasma_fractal(n, next_power_of_2(max(h, w)), c[1], generator, x.device, x.dtype)
    return fog_blend(x, frac[:, :h, :w], c)


# -------------------------------------------------------------------------------- spatter
WATER_RGB = (175 / 255, 238 / 255, 238 / 255)   # pale turquoise
MUD_RGB = (63 / 255, 42 / 255, 20 / 255)        # mud brown
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
# OpenCV's 5x5 DIST_L2 chamfer mask: weight 1 for (0, 1) moves, 1.4 for (1, 1), 2.1969 for (1, 2)
_DIST_MOVES = ([(dy, dx, 1.0) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
               + [(dy, dx, float(np.float32(1.4))) for dy in (-1, 1) for dx in (-1, 1)]
               + [(dy, dx, float(np.float32(2.1969)))
                  for dy, dx in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))])


def _shift(p: Tensor, dy: int, dx: int, r: int) -> Tensor:
    """From a tensor padded by r on both sides, the H x W window offset by (dy, dx)."""
    h, w = p.shape[-2] - 2 * r, p.shape[-1] - 2 * r
    return p[..., r + dy:r + dy + h, r + dx:r + dx + w]


def canny(img: Tensor, low: float = 50, high: float = 150) -> Tensor:
    """cv2.Canny(img, low, high) (aperture 3, L1 gradient) on integer-valued N x H x W: bool edges.

    Sobel with replicated borders, |dx| + |dy|, OpenCV's fixed-point non-maximum suppression
    (magnitude 0 outside the image), then hysteresis: weak pixels joined to strong ones by
    repeated 3x3 dilation.
    """
    v = img.to(torch.int64)
    p = pad2d(v, 1, 1, "nearest")
    dx = (_shift(p, -1, 1, 1) + 2 * _shift(p, 0, 1, 1) + _shift(p, 1, 1, 1)
          - _shift(p, -1, -1, 1) - 2 * _shift(p, 0, -1, 1) - _shift(p, 1, -1, 1))
    dy = (_shift(p, 1, -1, 1) + 2 * _shift(p, 1, 0, 1) + _shift(p, 1, 1, 1)
          - _shift(p, -1, -1, 1) - 2 * _shift(p, -1, 0, 1) - _shift(p, -1, 1, 1))
    mag = dx.abs() + dy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside the image
    ax, ay = dx.abs(), dy.abs() << 15
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << 16)
    horiz = ay < tg22x
    vert = ay > tg67x
    s_neg = (dx < 0) != (dy < 0)  # (xs ^ ys) < 0
    nms_h = (mag > _shift(mp, 0, -1, 1)) & (mag >= _shift(mp, 0, 1, 1))
    nms_v = (mag > _shift(mp, -1, 0, 1)) & (mag >= _shift(mp, 1, 0, 1))
    # s = +1: previous row j-1 and next row j+1; s = -1: previous row j+1 and next row j-1
    nms_dp = (mag > _shift(mp, -1, -1, 1)) & (mag > _shift(mp, 1, 1, 1))
    nms_dn = (mag > _shift(mp, -1, 1, 1)) & (mag > _shift(mp, 1, -1, 1))
    nms = torch.where(horiz, nms_h, torch.where(vert, nms_v, torch.where(s_neg, nms_dn, nms_dp)))
    weak = nms & (mag > low)
    edges = weak & (mag > high)
    weak_f = weak[:, None].float()
    while True:
        grown = (F.max_pool2d(edges[:, None].float(), 3, 1, 1) * weak_f)[:, 0] > 0
        grown |= edges
        if torch.equal(grown, edges):
            return edges
        edges = grown


def chamfer_distance(zero: Tensor, cap: float = 20) -> Tensor:
    """cv2.distanceTransform(src, DIST_L2, 5) where ``zero`` marks src's zero pixels, truncated at cap.

    The 5x5 chamfer distance is the shortest path over the mask's moves, summed in float32 as
    the installed OpenCV (5.0) does (older sources sum 16-bit fixed point: ~1e-5 apart). Every move costs
    >= 1, so min-plus relaxation over the moves for ceil(cap) rounds finds every distance below
    the cap; it can pick a path other than the two-pass scan's, equal up to float rounding
    (1 ulp in our checks), float32 N x H x W.
    """
    big = float(cap) + 10.0
    d = torch.where(zero, torch.zeros(zero.shape, device=zero.device), torch.full(zero.shape, big, device=zero.device))
    for _ in range(int(math.ceil(cap))):
        p = F.pad(d, (2, 2, 2, 2), value=big)
        nd = d
        for dy, dx, wgt in _DIST_MOVES:
            nd = torch.minimum(nd, _shift(p, dy, dx, 2) + wgt)
        if torch.equal(nd, d):
            break
        d = nd
    return d.clamp(max=cap)


def _box3_sum(v: Tensor) -> Tensor:
    """3 x 3 sums with OpenCV's default border (reflect-101) of N x H x W."""
    p = pad2d(v, 1, 1, "mirror")
    return sum(_shift(p, dy, dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def equalize_hist(v: Tensor) -> Tensor:
    """cv2.equalizeHist per image of integer N x H x W (values 0..255), OpenCV's LUT formula."""
    n = v.shape[0]
    flat = v.reshape(n, -1).long()
    total = flat.shape[1]
    hist = torch.zeros(n, 256, dtype=torch.int64, device=v.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).long().argmax(1, keepdim=True)
    h_first = hist.gather(1, first)
    scale = torch.tensor(255.0, dtype=torch.float32, device=v.device) / (total - h_first).clamp(min=1).float()
    lut = torch.round((hist.cumsum(1) - h_first).float() * scale).clamp(0, 255).long()
    const = h_first == total  # a one-value image maps to that value
    lut = torch.where(const, first.expand(-1, 256), lut)
    return lut.gather(1, flat).reshape(v.shape)


def spatter_from_noise(x: Tensor, noise: Tensor, c) -> Tensor:
    """Spatter given the drawn Gaussian liquid layer ``noise`` (N x H x W)."""
    liquid = gaussian_filter(noise, c[2])
    liquid = torch.where(liquid < c[3], torch.zeros_like(liquid), liquid)
    if c[5] == 0:  # water
        lu8 = torch.remainder(torch.floor(liquid * 255), 256)        # .astype(np.uint8), wrap included
        dist = chamfer_distance(canny(lu8, 50, 150), cap=20)         # threshold(TRUNC, 20) included
        # cv2.blur of float32 sums in float64 and scales by 1/9; .astype(np.uint8) truncates
        dist = torch.floor((_box3_sum(dist.double()) * (1 / 9)).float()).long()
        dist = equalize_hist(dist)
        ker = ((0, 0, -2), (0, 1, -1), (0, 2, 0), (1, 0, -1), (1, 1, 1), (1, 2, 1), (2, 0, 0), (2, 1, 1), (2, 2, 2))
        p = pad2d(dist, 1, 1, "mirror")
        dist = sum(k * _shift(p, i - 1, j - 1, 1) for i, j, k in ker if k).clamp(0, 255)  # filter2D, CV_8U
        dist = ((_box3_sum(dist) + 4) * 7282) >> 16                                       # 8-bit blur rounding
        m = lu8 * dist.to(x.dtype)
        m_max = m.amax(dim=(1, 2), keepdim=True)
        # (with no drop left the reference divides 0 by 0; we leave such an image unchanged)
        m = torch.where(m_max > 0, m / m_max.clamp(min=1e-12), torch.zeros_like(m)) * c[4]
        color = torch.tensor(WATER_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x + m[:, None] * color).clamp(0, 1)
    # mud
    m = gaussian_filter((liquid > c[3]).to(x.dtype), c[4])
    m = torch.where(m < 0.8, torch.zeros_like(m), m)[:, None]
    color = torch.tensor(MUD_RGB, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * (1 - m) + color * m).clamp(0, 1)


@register("spatter", "weather",
          cifar=[(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                 (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
          imagenet=[(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)])
def spatter(x: Tensor, c, generator: torch.Generator) -> Tensor:
    """Spatter: water drops (Canny / distance-transform shading) or mud blobs from a blurred Gaussian layer."""
    n, _, h, w = x.shape
    noise = torch.randn(n, h, w, generator=generator, device=x.device, dtype=x.dtype) * c[1] + c[0]
    return spatter_from_noise(x, noise, c)


__all__ = ["FrostParams", "SnowParams", "canny", "chamfer_distance", "cv2_resize_cubic", "cv2_resize_linear",
           "equalize_hist", "fog", "fog_blend", "frost", "frost_bank", "frost_dir", "frost_draws", "frost_images",
           "frost_layer", "frost_picture", "plasma_fractal", "snow", "snow_from_noise", "spatter",
           "spatter_from_noise"]
