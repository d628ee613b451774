"""ImageNet-P / CIFAR-10-P perturbation sequences (Hendrycks & Dietterich 2019), batched in torch.

A perturbation turns an image into a short "video" whose frames change a little at a time;
a stable classifier keeps its prediction along it (see :mod:`rethink.robustness.stability`).
The sequences follow CIFAR-10-P's generator (``ImageNet-P/create_p/make_cifar_p.py``):

* noise (frame 0 clean, then independent draws; the flip rule compares with frame 0):
  gaussian_noise (sigma 0.02 / 0.04 / 0.06 for difficulty 1/2/3), shot_noise (Poisson with
  700 / 400 / 200 photons), held-out speckle_noise (0.05 / 0.07 / 0.10); 31 frames.
* motion_blur: 21 frames, ImageMagick motion blur radius 6, sigma 1.8, angle (i - 20) * 9,
  here the ``imagecorruptions`` numpy emulation (:func:`corruptions.motion.apply_motion_blur`),
  rounded to 8 bits as ImageMagick's PNG output is (snow's blurred layer likewise).
* zoom_blur: running mean of the image zoomed by 1 + 0.004 i (PIL bilinear), 31 frames.
* snow: one snow layer per image, motion-blurred at angle 4 i - 150 (radius 10, sigma 2).
* brightness: HSV value + (i - 15) * 1.5 / 100, 31 frames.
* translate: 16 frames shifted by i - 7 px (nearest, zero fill).
* rotate (i - 15 degrees), scale ((2 i + 70) / 100), held-out shear (i - 15 degrees):
  31 frames of torchvision-0.2's PIL affine (centre at size / 2 + 0.5, angle clockwise),
  emulated exactly: PIL bilinear, zero outside the image, truncated to uint8.
* tilt: 31 frames of ``cv2.warpPerspective`` with the file's 3x3 homography (rotations of
  0.75 (i - 15) degrees about both axes; at 0 degrees it is not the identity but a
  f / (1 + f) ~ 0.978 shrink about the centre, f the image diagonal), bilinear, zero border.
* held-out gaussian_blur: skimage gaussian, sigma 0.3 + 0.015 i, truncate 7.

Not implemented: the held-out spatter (it needs OpenCV's Canny, distance transform and
histogram equalisation). BENCHMARK_P is the paper's list; hendrycks' cifar-p-eval.py
evaluates spatter in place of snow. For the non-noise perturbations the benchmark's difficulty is the
metrics' step size, not a different sequence: ``sequences`` returns the same frames for
any difficulty there.

    from rethink.robustness.perturbations import sequences, BENCHMARK_P
    seq = sequences(x_uint8, "rotate", seed=0)        # N x 31 x 3 x H x W uint8

Floats become uint8 by truncation (``np.uint8(x * 255)``) as in the generator, through
:func:`rethink.robustness.corruptions.to_uint8`. Randomness comes from a ``torch.Generator``
on the images' device, so a seed gives the same sequences on the same device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .corruptions import to_uint8
from .corruptions._ops import clipped_zoom, gaussian_filter, rgb_to_gray

KINDS = ("noise", "blur", "weather", "digital", "geometric")
BENCHMARK_P = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness",
               "translate", "rotate", "tilt", "scale")
HELD_OUT_P = ("speckle_noise", "gaussian_blur", "shear")
ALL_P = BENCHMARK_P + HELD_OUT_P
DIFFICULTIES = (1, 2, 3)


@dataclass(frozen=True)
class Perturbation:
    """One perturbation: ``fn(images_uint8, level, generator) -> uint8 N x T x 3 x H x W``.

    ``noise``: the flip rule compares every frame with the first (True) or frames
    ``difficulty`` apart (False). ``levels``: the parameter per difficulty (noise ones) or
    a single entry used for every difficulty.
    """
    name: str
    kind: str
    frames: int
    noise: bool
    levels: tuple
    fn: Callable[[Tensor, Any, torch.Generator], Tensor]

    def level(self, difficulty: int = 1) -> Any:
        if int(difficulty) not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty}")
        return self.levels[min(int(difficulty), len(self.levels)) - 1]


PERTURBATIONS: dict[str, Perturbation] = {}


def _register(name: str, kind: str, frames: int, levels: tuple = (None,)):
    def wrap(fn):
        PERTURBATIONS[name] = Perturbation(name, kind, frames, "noise" in name, tuple(levels), fn)
        return fn
    return wrap


def get(name: str) -> Perturbation:
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {name!r}; choose one of {list(ALL_P)}")
    return PERTURBATIONS[name]


def sequences(images_uint8: Tensor, name: str, *, difficulty: int = 1, seed: int | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """Perturbation sequences of uint8 images N x 3 x H x W -> uint8 N x T x 3 x H x W."""
    x = images_uint8
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a uint8 tensor N x 3 x H x W, got "
                         f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    p = get(name)
    level = p.level(difficulty)
    if generator is None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(0 if seed is None else int(seed))
    out = p.fn(x, level, generator)
    assert out.shape == (x.shape[0], p.frames, *x.shape[1:]) and out.dtype == torch.uint8
    return out


# --------------------------------------------------------------------------- helpers

def _f32(x: Tensor) -> Tensor:
    return x.float() / 255


def _round8(x: Tensor) -> Tensor:
    """[0, 1] -> nearest 8-bit level, as [0, 1] (ImageMagick writing an 8-bit PNG)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def legacy_affine_inverse(size: tuple[int, int], angle: float = 0.0, translate=(0.0, 0.0),
                          scale: float = 1.0, shear: float = 0.0) -> tuple[float, ...]:
    """The PIL ``Image.AFFINE`` data of torchvision 0.2's ``F.affine`` for an image (W, H).

    Output point p takes the input at c + RSS^-1 (p - c - t), with the centre c at
    (W / 2 + 0.5, H / 2 + 0.5) in PIL's continuous coordinates, translation t and, for y
    pointing down, RSS = scale * [[cos a, -sin(a + s)], [sin a, cos(a + s)]] (angle a
    clockwise on screen, shear s).
    """
    w, h = size
    cx, cy = w * 0.5 + 0.5, h * 0.5 + 0.5
    a, s = math.radians(angle), math.radians(shear)
    # RSS^-1 in closed form (det RSS = scale^2 * cos(s)), evaluated in the order torchvision
    # 0.2 used so that the float64 sampling positions, hence PIL's truncation, agree bit for bit.
    det = math.cos(a + s) * math.cos(a) + math.sin(a + s) * math.sin(a)
    k = (1.0 / scale) / det
    i00, i01, i10, i11 = (k * math.cos(a + s), k * math.sin(a + s), k * -math.sin(a), k * math.cos(a))
    px, py = -cx - translate[0], -cy - translate[1]
    return (i00, i01, i00 * px + i01 * py + cx, i10, i11, i10 * px + i11 * py + cy)


def pil_affine(x: Tensor, data, resample: str = "bilinear") -> Tensor:
    """PIL's ``Image.transform(size, AFFINE, data, resample)`` on uint8 N x C x H x W.

    PIL maps output pixel centres (x + 0.5, y + 0.5) through ``data``; a source point
    outside [0, W) x [0, H) gives 0, inside it samples (edge pixels repeated) and bilinear
    values are truncated. Computed in float64 like PIL.
    """
    n, c, h, w = x.shape
    dev = x.device
    yo, xo = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=dev) + 0.5,
                            torch.arange(w, dtype=torch.float64, device=dev) + 0.5, indexing="ij")
    a0, a1, a2, a3, a4, a5 = (float(v) for v in data)
    u = a0 * xo + a1 * yo + a2
    v = a3 * xo + a4 * yo + a5
    valid = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    if resample == "nearest":
        xi = torch.floor(u).long().clamp(0, w - 1)
        yi = torch.floor(v).long().clamp(0, h - 1)
        return torch.where(valid, x[..., yi, xi], torch.zeros((), dtype=x.dtype, device=dev))
    if resample != "bilinear":
        raise ValueError(f"resample must be bilinear or nearest, got {resample!r}")
    u, v = u - 0.5, v - 0.5
    x0, y0 = torch.floor(u), torch.floor(v)
    dx, dy = u - x0, v - y0
    x0, y0 = x0.long(), y0.long()
    xa, xb = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    ya, yb = y0.clamp(0, h - 1), (y0 + 1).clamp(0, h - 1)
    img = x.double()
    r0a, r0b = img[..., ya, xa], img[..., ya, xb]
    r1a, r1b = img[..., yb, xa], img[..., yb, xb]
    top = r0a + (r0b - r0a) * dx
    bot = r1a + (r1b - r1a) * dx
    val = top + (bot - top) * dy
    val = torch.where(valid, val, torch.zeros((), dtype=val.dtype, device=dev))
    return torch.floor(val).clamp_(0, 255).to(torch.uint8)


def tilt_homography(i: int, w: int, h: int) -> np.ndarray:
    """The CIFAR-10-P tilt matrix of frame i (forward, source -> destination pixels)."""
    phi = theta = math.radians(0.75 * (i - 15))
    f = math.sqrt(w ** 2 + h ** 2)
    # P1 lifts a pixel to 3-D around the centre (z = 1), RX/RY rotate, T pushes it f away,
    # P2 projects with focal length f back onto the centred image plane.
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]], dtype=np.float64)
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0],
                   [0, math.sin(theta), math.cos(theta), 0], [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0],
                   [math.sin(phi), 0, math.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]], dtype=np.float64)
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]], dtype=np.float64)
    return p2 @ t @ rx @ ry @ p1


def warp_perspective(x: Tensor, m: np.ndarray) -> Tensor:
    """``cv2.warpPerspective(img, m, (W, H))``: bilinear, constant 0 border, rounded to uint8.

    Destination pixel (x, y) (integer centres) samples the source at m^-1 (x, y, 1);
    neighbours outside the image count as 0. OpenCV's 1/32-pixel fixed point is not
    emulated (differences of one grey level on a few pixels).
    """
    n, c, h, w = x.shape
    dev = x.device
    mi = torch.as_tensor(np.linalg.inv(m), dtype=torch.float64, device=dev)
    yo, xo = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=dev),
                            torch.arange(w, dtype=torch.float64, device=dev), indexing="ij")
    den = mi[2, 0] * xo + mi[2, 1] * yo + mi[2, 2]
    den = torch.where(den == 0, torch.ones_like(den), den)
    u = (mi[0, 0] * xo + mi[0, 1] * yo + mi[0, 2]) / den
    v = (mi[1, 0] * xo + mi[1, 1] * yo + mi[1, 2]) / den
    x0, y0 = torch.floor(u), torch.floor(v)
    dx, dy = u - x0, v - y0
    x0, y0 = x0.long(), y0.long()
    img = x.double()
    zero = torch.zeros((), dtype=torch.float64, device=dev)

    def tap(yy, xx):
        ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        return torch.where(ok, img[..., yy.clamp(0, h - 1), xx.clamp(0, w - 1)], zero)

    val = ((tap(y0, x0) * (1 - dx) + tap(y0, x0 + 1) * dx) * (1 - dy)
           + (tap(y0 + 1, x0) * (1 - dx) + tap(y0 + 1, x0 + 1) * dx) * dy)
    return torch.floor(val + 0.5).clamp_(0, 255).to(torch.uint8)


def shift(x: Tensor, dx: int) -> Tensor:
    """Shift the last dim by ``dx`` pixels (positive: right), filling with zeros."""
    out = torch.zeros_like(x)
    w = x.shape[-1]
    if abs(dx) >= w:
        return out
    if dx >= 0:
        out[..., dx:] = x[..., :w - dx]
    else:
        out[..., :w + dx] = x[..., -dx:]
    return out


def _stack(frames: list[Tensor]) -> Tensor:
    return torch.stack(frames, dim=1)


# --------------------------------------------------------------------------- noise

def _noise_seq(x: Tensor, frames: int, draw) -> Tensor:
    xf = _f32(x)
    return _stack([x] + [to_uint8(draw(xf)) for _ in range(frames - 1)])


@_register("gaussian_noise", "noise", 31, levels=(0.02, 0.04, 0.06))
def gaussian_noise(x: Tensor, sigma: float, g: torch.Generator) -> Tensor:
    return _noise_seq(x, 31, lambda xf: xf + sigma * torch.randn(
        xf.shape, generator=g, device=xf.device, dtype=xf.dtype))


@_register("shot_noise", "noise", 31, levels=(700, 400, 200))
def shot_noise(x: Tensor, photons: float, g: torch.Generator) -> Tensor:
    return _noise_seq(x, 31, lambda xf: torch.poisson(xf * photons, generator=g) / photons)


@_register("speckle_noise", "noise", 31, levels=(0.05, 0.07, 0.10))
def speckle_noise(x: Tensor, sigma: float, g: torch.Generator) -> Tensor:
    return _noise_seq(x, 31, lambda xf: xf + xf * sigma * torch.randn(
        xf.shape, generator=g, device=xf.device, dtype=xf.dtype))


# --------------------------------------------------------------------------- blur

@_register("motion_blur", "blur", 21)
def motion_blur(x: Tensor, _level, g: torch.Generator) -> Tensor:
    from .corruptions.motion import apply_motion_blur
    xf = _f32(x)
    # ImageMagick writes the blurred image as an 8-bit PNG: rounded, not truncated.
    return _stack([torch.round(apply_motion_blur(xf, 6.0, 1.8, float((i - 20) * 9)).clamp(0, 1) * 255)
                   .to(torch.uint8) for i in range(21)])


@_register("zoom_blur", "blur", 31)
def zoom_blur(x: Tensor, _level, g: torch.Generator) -> Tensor:
    h, w = x.shape[-2:]
    avg = _f32(x)
    frames = [x]
    for i in range(1, 31):
        z = pil_affine(x, legacy_affine_inverse((w, h), scale=1 + 0.004 * i))
        avg = avg + _f32(z)
        frames.append(to_uint8(avg / (i + 1)))
    return _stack(frames)


@_register("gaussian_blur", "blur", 31)
def gaussian_blur(x: Tensor, _level, g: torch.Generator) -> Tensor:
    xf = _f32(x)
    return _stack([to_uint8(gaussian_filter(xf, 0.3 + 0.015 * i, truncate=7.0)) for i in range(31)])


# --------------------------------------------------------------------------- weather

@_register("snow", "weather", 31)
def snow(x: Tensor, _level, g: torch.Generator) -> Tensor:
    n, _, h, w = x.shape
    layer = torch.randn((n, 1, h, w), generator=g, device=x.device) * 0.3 + 0.05
    return snow_from_layer(x, layer)


def snow_from_layer(x: Tensor, layer: Tensor) -> Tensor:
    """The 31 snow frames of uint8 images N x 3 x H x W given the raw N x 1 x H x W
    normal(0.05, 0.3) draw: zoomed 2x, thresholded at 0.5, stored as 8 bits, then per
    frame motion-blurred (radius 10, sigma 2, angle 4 i - 150) and added twice (the layer
    and its 180-degree rotation) to the greyed-up image."""
    from .corruptions.motion import apply_motion_blur
    xf = _f32(x)
    layer = clipped_zoom(layer.to(xf.dtype), 2)
    layer = torch.where(layer < 0.5, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255          # saved as an 8-bit grey PNG
    base = 0.85 * xf + 0.15 * torch.maximum(xf, rgb_to_gray(xf) * 1.5 + 0.5)
    frames = []
    for i in range(31):
        s = _round8(apply_motion_blur(layer, 10.0, 2.0, float(i * 4 - 150)))
        frames.append(to_uint8(base + s + torch.flip(s, dims=(-2, -1))))
    return _stack(frames)


# --------------------------------------------------------------------------- digital

@_register("brightness", "digital", 31)
def brightness(x: Tensor, _level, g: torch.Generator) -> Tensor:
    from .corruptions.digital import hsv_to_rgb, rgb_to_hsv
    hsv = rgb_to_hsv(_f32(x))
    frames = []
    for i in range(31):
        c = (i - 15) * 1.5 / 100
        z = torch.cat([hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)], dim=1)
        frames.append(to_uint8(hsv_to_rgb(z)))
    return _stack(frames)


# --------------------------------------------------------------------------- geometric

@_register("translate", "geometric", 16)
def translate(x: Tensor, _level, g: torch.Generator) -> Tensor:
    return _stack([shift(x, i - 7) for i in range(16)])


def _affine_seq(x: Tensor, **kw_of_i) -> Tensor:
    h, w = x.shape[-2:]
    return _stack([pil_affine(x, legacy_affine_inverse((w, h), **{k: f(i) for k, f in kw_of_i.items()}))
                   for i in range(31)])


@_register("rotate", "geometric", 31)
def rotate(x: Tensor, _level, g: torch.Generator) -> Tensor:
    return _affine_seq(x, angle=lambda i: i - 15)


@_register("scale", "geometric", 31)
def scale(x: Tensor, _level, g: torch.Generator) -> Tensor:
    return _affine_seq(x, scale=lambda i: (i * 2 + 70) / 100)


@_register("shear", "geometric", 31)
def shear(x: Tensor, _level, g: torch.Generator) -> Tensor:
    return _affine_seq(x, shear=lambda i: i - 15)


@_register("tilt", "geometric", 31)
def tilt(x: Tensor, _level, g: torch.Generator) -> Tensor:
    h, w = x.shape[-2:]
    return _stack([warp_perspective(x, tilt_homography(i, w, h)) for i in range(31)])


__all__ = ["ALL_P", "BENCHMARK_P", "DIFFICULTIES", "HELD_OUT_P", "KINDS", "PERTURBATIONS",
           "Perturbation", "get", "legacy_affine_inverse", "pil_affine", "sequences", "shift",
           "snow_from_layer",
           "tilt_homography", "warp_perspective"]
