"""Batched RandAugment (Cubuk et al. 2020) with per-sample ops and magnitudes.

The op set, magnitude tables and op semantics are those of torchvision's
``transforms.v2.RandAugment`` (14 ops, 31 magnitude bins, random sign for the signed
ops, nearest interpolation); each sample draws its own op, sign and magnitude bin for
every one of the ``num_ops`` slots.

Parameters are drawn on the CPU (:meth:`RandAugment.sample_params`), so a seed gives
the same parameters on every device. :meth:`RandAugment.apply` is batched, with no
Python loop over samples: per slot, each op family (geometric warp, colour blend,
posterize, solarize, autocontrast, equalize) looks up per-sample parameters in a
table indexed by (op, bin, sign); samples that drew another op get parameters that
make the family an exact identity. So a family can run on the whole batch without
host-device synchronisation (the default off the CPU) or on just its members (CPU).

Arithmetic follows torchvision's uint8 kernels step by step, in float32 with the
same rounding, using only elementwise ops and integer arithmetic, so the result is
bit-identical on CPU and CUDA (and independent of TF32 settings). Where torchvision
relies on a fused multiply-add (``Tensor.add_(other, alpha=...)`` is an FMA in torch's
vectorised CPU kernels) it is computed in float64, where the product and sum are
exact, then rounded once to float32. tests/test_randaugment.py checks every op
against torchvision.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .basic import PerSampleParams

__all__ = ["RANDAUGMENT_OPS", "RandAugment", "RandAugmentParams", "op_magnitudes", "signed_magnitude",
           "randaugment_apply", "reference_apply"]

Fill = float | Sequence[float]

# name -> (magnitude table as a function of (num_bins, height, width), signed); torchvision's table
_SPACE: dict[str, tuple[Callable[[int, int, int], Tensor | None], bool]] = {
    "Identity": (lambda b, h, w: None, False),
    "ShearX": (lambda b, h, w: torch.linspace(0.0, 0.3, b), True),
    "ShearY": (lambda b, h, w: torch.linspace(0.0, 0.3, b), True),
    "TranslateX": (lambda b, h, w: torch.linspace(0.0, 150.0 / 331.0 * w, b), True),
    "TranslateY": (lambda b, h, w: torch.linspace(0.0, 150.0 / 331.0 * h, b), True),
    "Rotate": (lambda b, h, w: torch.linspace(0.0, 30.0, b), True),
    "Brightness": (lambda b, h, w: torch.linspace(0.0, 0.9, b), True),
    "Color": (lambda b, h, w: torch.linspace(0.0, 0.9, b), True),
    "Contrast": (lambda b, h, w: torch.linspace(0.0, 0.9, b), True),
    "Sharpness": (lambda b, h, w: torch.linspace(0.0, 0.9, b), True),
    "Posterize": (lambda b, h, w: (8 - (torch.arange(b) / ((b - 1) / 4))).round().int(), False),
    "Solarize": (lambda b, h, w: torch.linspace(1.0, 0.0, b), False),
    "AutoContrast": (lambda b, h, w: None, False),
    "Equalize": (lambda b, h, w: None, False),
}
RANDAUGMENT_OPS: tuple[str, ...] = tuple(_SPACE)
GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
ENHANCE_OPS = frozenset({"Brightness", "Color", "Contrast", "Sharpness"})

# float32 constants of torchvision's rgb_to_grayscale, as exact doubles for the emulated FMA
_GRAY_G = torch.tensor(0.587, dtype=torch.float32).item()
_GRAY_B = torch.tensor(0.114, dtype=torch.float32).item()


def op_magnitudes(op: str, num_bins: int, height: int, width: int) -> Tensor | None:
    """torchvision's magnitude table of ``op`` (None for ops without a magnitude)."""
    return _SPACE[op][0](num_bins, height, width)


def signed_magnitude(op: str, bin: int, negate: bool, num_bins: int, height: int, width: int) -> float:
    """The magnitude torchvision's RandAugment passes to ``op`` for a bin and sign (0.0 if none)."""
    return _signed(op_magnitudes(op, num_bins, height, width), _SPACE[op][1], bin, negate)


def _signed(values: Tensor | None, signed: bool, bin: int, negate: bool) -> float:
    if values is None:
        return 0.0
    m = float(values[bin])
    return -m if signed and negate else m


@dataclass(frozen=True)
class RandAugmentParams(PerSampleParams):
    """Per-sample parameters, each of shape (N, num_ops): ``op`` (int64 index into ``ops``),
    ``magnitude`` (int64 bin), ``negate`` (bool; used by signed ops only). Index with an
    int or slice to get a sub-batch.
    """

    op: Tensor
    magnitude: Tensor
    negate: Tensor
    ops: tuple[str, ...] = RANDAUGMENT_OPS
    num_magnitude_bins: int = 31
    fill: Fill = 0

    _PER_SAMPLE = ("op", "magnitude", "negate")

    def __len__(self) -> int:
        return self.op.shape[0] if self.op.dim() == 2 else 1

    @property
    def num_ops(self) -> int:
        return self.op.shape[-1]


# ------------------------------------------------------------------ tables


def _inverse_affine(center: list[float], angle: float, translate: list[float],
                    shear: list[float]) -> list[float]:
    """Inverse affine matrix (scale 1), same float64 steps as torchvision's ``_get_inverse_affine_matrix``."""
    rot = math.radians(angle)
    sx, sy = math.radians(shear[0]), math.radians(shear[1])
    cx, cy = center
    tx, ty = translate
    cos_sy = math.cos(sy)
    tan_sx = math.tan(sx)
    rot_minus_sy = rot - sy
    cx_plus_tx, cy_plus_ty = cx + tx, cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty
    m[5] += cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty
    return m


def _geometric_matrix(op: str, m: float, h: int, w: int) -> list[float]:
    """Inverse affine matrix of a geometric op as torchvision's RandAugment calls F.affine/F.rotate."""
    corner = [-w * 0.5, -h * 0.5]  # center=[0, 0] (top-left) in centred coordinates
    if op == "ShearX":
        return _inverse_affine(corner, 0.0, [0.0, 0.0], [math.degrees(math.atan(m)), 0.0])
    if op == "ShearY":
        return _inverse_affine(corner, 0.0, [0.0, 0.0], [0.0, math.degrees(math.atan(m))])
    if op == "TranslateX":
        return _inverse_affine([0.0, 0.0], 0.0, [float(int(m)), 0.0], [0.0, 0.0])
    if op == "TranslateY":
        return _inverse_affine([0.0, 0.0], 0.0, [0.0, float(int(m))], [0.0, 0.0])
    if op == "Rotate":  # F.rotate: angle % 360, then the affine matrix of -angle
        return _inverse_affine([0.0, 0.0], -(m % 360), [0.0, 0.0], [0.0, 0.0])
    raise ValueError(op)


class _Tables(NamedTuple):
    """Per-(op, bin, sign) parameters, indexed by ``(op * num_bins + bin) * 2 + negate``.

    Ops outside a family get that family's identity parameters.
    """

    theta: Tensor  # (K, 2, 3) float32 inverse affine, rows scaled by 2/w and 2/h
    ratio: Tensor  # (K,) float32, image weight of the blend
    alpha: Tensor  # (K,) float64 holding a float32, weight of the degenerate image
    color: Tensor  # (K,) bool, degenerate = grayscale
    contrast: Tensor  # (K,) bool, degenerate = mean grayscale
    sharpness: Tensor  # (K,) bool, degenerate = blur - image (ratio 1)
    posterize_mask: Tensor  # (K,) uint8 bit mask (255 = identity)
    solarize_threshold: Tensor  # (K,) int16 (256 = identity)
    autocontrast: Tensor  # (K,) bool
    equalize: Tensor  # (K,) bool
    group: Tensor  # (K,) int64 index into _GROUPS (-1: Identity)


@functools.lru_cache(maxsize=64)
def _tables(ops: tuple[str, ...], num_bins: int, h: int, w: int, device: torch.device) -> _Tables:
    rows: dict[str, list] = {f: [] for f in _Tables._fields}
    levels = torch.arange(256, dtype=torch.uint8)
    for op in ops:
        values, signed = op_magnitudes(op, num_bins, h, w), _SPACE[op][1]
        for b in range(num_bins):
            for negate in (False, True):
                m = _signed(values, signed, b, negate)
                theta = _geometric_matrix(op, m, h, w) if op in GEOMETRIC_OPS else [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                rows["theta"].append(theta)
                factor = 1.0 + m
                ratio = factor if op in ("Brightness", "Color", "Contrast") else 1.0
                alpha = 1.0 - factor if op in ("Color", "Contrast", "Sharpness") else 0.0
                rows["ratio"].append(ratio)
                rows["alpha"].append(alpha)
                rows["color"].append(op == "Color")
                rows["contrast"].append(op == "Contrast")
                rows["sharpness"].append(op == "Sharpness")
                bits = int(m) if op == "Posterize" else 8
                rows["posterize_mask"].append((((1 << bits) - 1) << (8 - bits)) & 255)
                threshold = 256
                if op == "Solarize":  # smallest level torchvision's `image >= 255 * m` selects
                    hit = levels >= 255 * m
                    threshold = int(hit.int().argmax()) if bool(hit.any()) else 256
                rows["solarize_threshold"].append(threshold)
                rows["autocontrast"].append(op == "AutoContrast")
                rows["equalize"].append(op == "Equalize")
                rows["group"].append(_GROUP_OF.get(op, -1))
    theta = torch.tensor(rows["theta"], dtype=torch.float32).view(-1, 2, 3)
    # rows scaled to normalised coordinates, as torchvision's _affine_grid
    theta = theta / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32).view(1, 2, 1)
    dtypes = dict(ratio=torch.float32, alpha=torch.float32, color=torch.bool, contrast=torch.bool,
                  sharpness=torch.bool, posterize_mask=torch.uint8, solarize_threshold=torch.int16,
                  autocontrast=torch.bool, equalize=torch.bool, group=torch.int64)
    t = {k: torch.tensor(rows[k], dtype=dt) for k, dt in dtypes.items()}
    t["alpha"] = t["alpha"].double()  # a float32 value, kept as float64 for the FMA emulation
    return _Tables(theta=theta.to(device), **{k: v.to(device) for k, v in t.items()})


@functools.lru_cache(maxsize=16)
def _fill_tensor(fill: tuple[float, ...], device: torch.device) -> Tensor:
    """(1, C, 1, 1) uint8 fill, rounded like torchvision (round half to even)."""
    return torch.tensor(fill, dtype=torch.float32).round().to(torch.uint8).view(1, -1, 1, 1).to(device)


# ------------------------------------------------------------------ batched ops


def _warp(x: Tensor, theta: Tensor, fill: Fill) -> Tensor:
    """Per-sample affine warp with nearest sampling, as torchvision's affine_grid + grid_sample."""
    n, c, h, w = x.shape
    bx = (torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2).view(1, 1, w)
    by = (torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2).view(1, h, 1)
    t = theta.view(n, 6, 1, 1).unbind(1)
    gx = bx * t[0] + by * t[1] + t[2]  # same float32 steps as torchvision's grid
    gy = bx * t[3] + by * t[4] + t[5]
    ix = (((gx + 1) * w - 1) / 2).round()  # grid_sample's unnormalisation, align_corners=False
    iy = (((gy + 1) * h - 1) / 2).round()
    valid = ((ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)).unsqueeze(1)
    index = iy.clamp(0, h - 1).long() * w + ix.clamp(0, w - 1).long()
    out = x.reshape(n, c, h * w).gather(2, index.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
    if isinstance(fill, (int, float)):
        return out.masked_fill(~valid, round(fill))
    return torch.where(valid, out, _fill_tensor(tuple(float(f) for f in fill), x.device))


def _fma(a: Tensor, b: Tensor | float, c: Tensor) -> Tensor:
    """float32 ``a * b + c`` rounded once, like an FMA.

    ``a``, ``c`` float32 and ``b`` a float32 value: the float64 product and sum are exact
    for our operands (magnitudes <= 2**9, at most ~40 significant bits).
    """
    out = c.double()
    out = out.add_(a, alpha=b) if isinstance(b, float) else out.addcmul_(a, b)
    return out.float()


def _grayscale_floor(x: Tensor) -> Tensor:
    """floor(0.2989 R + 0.587 G + 0.114 B), (N, 1, H, W) float32, as torchvision's uint8 path."""
    r, g, b = x.float().unbind(1)
    gray = _fma(g, _GRAY_G, r * 0.2989)
    gray = _fma(b, _GRAY_B, gray)
    return gray.floor_().unsqueeze(1)


def _sharpness_delta(x: Tensor) -> Tensor:
    """blur(x) - x inside a 1-pixel border (0 on it), with torchvision's 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13.

    The blur of a uint8 image is round(S / 13) for an integer S, never a tie, so it is
    computed exactly in integers (device and TF32 independent). Images of side <= 2 get
    no interior, hence no change, as in torchvision.
    """
    xi = x.to(torch.int16)
    rows = xi[..., :, :-2] + xi[..., :, 1:-1] + xi[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    centre = xi[..., 1:-1, 1:-1]
    blur = (2 * (box + 4 * centre) + 13).div_(26, rounding_mode="floor")
    delta = torch.zeros_like(xi)
    delta[..., 1:-1, 1:-1] = blur - centre
    return delta


def _geometric(x: Tensor, tab: _Tables, k: Tensor, present: set[str], fill: Fill) -> Tensor:
    return _warp(x, tab.theta[k], fill)


def _enhance(x: Tensor, tab: _Tables, k: Tensor, present: set[str], fill: Fill) -> Tensor:
    """Brightness, Color, Contrast, Sharpness as one blend ``x * ratio + degenerate * alpha``.

    Brightness: degenerate 0; Color: grayscale; Contrast: its mean; Sharpness: blur - x
    with ratio 1 (torchvision's ``x + (blur - x) * (1 - f)``). Other ops: ratio 1, alpha 0,
    so their degenerate image does not matter.
    """
    n, c, h, w = x.shape
    per_sample = (n, 1, 1, 1)
    out = x.float() * tab.ratio[k].view(per_sample)
    degenerates = []  # (selects the samples, degenerate image)
    if "Color" in present or "Contrast" in present:
        gray = _grayscale_floor(x)
        if "Color" in present:
            degenerates.append((tab.color, gray))
        if "Contrast" in present:
            # torch.mean on CPU is sum / n; the float32 sum of integers is exact below 2**24
            mean = gray.double().sum(dim=(-3, -2, -1), keepdim=True).float() / (h * w)
            degenerates.append((tab.contrast, mean))
    if "Sharpness" in present:
        degenerates.append((tab.sharpness, _sharpness_delta(x).float()))
    if degenerates:
        degenerate = degenerates[0][1]  # alpha is 0 where no other kind is selected
        for selects, image in degenerates[1:]:
            degenerate = torch.where(selects[k].view(per_sample), image, degenerate)
        out = _fma(degenerate, tab.alpha[k].view(per_sample), out)
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(x: Tensor, tab: _Tables, k: Tensor, present: set[str], fill: Fill) -> Tensor:
    return x & tab.posterize_mask[k].view(-1, 1, 1, 1)


def _solarize(x: Tensor, tab: _Tables, k: Tensor, present: set[str], fill: Fill) -> Tensor:
    return torch.where(x >= tab.solarize_threshold[k].view(-1, 1, 1, 1), 255 - x, x)


def _autocontrast(x: Tensor, tab: _Tables, k: Tensor, present: set[str], fill: Fill) -> Tensor:
    """Per-channel min/max stretch (torchvision's float32 steps)."""
    lo = x.amin(dim=(-2, -1), keepdim=True).float()
    hi = x.amax(dim=(-2, -1), keepdim=True).float()
    stretch = tab.autocontrast[k].view(-1, 1, 1, 1) & (hi != lo)
    inv_scale = torch.where(stretch, (hi - lo).mul_(1.0 / 255), 1.0)
    lo = torch.where(stretch, lo, 0.0)
    return (x.float() - lo).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def _equalize(x: Tensor, tab: _Tables, k: Tensor, present: set[str], fill: Fill) -> Tensor:
    """Histogram equalisation per sample and channel with PIL's LUT, as torchvision."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w).long()
    hist = torch.zeros(n, c, 256, dtype=torch.int32, device=x.device)
    hist.scatter_add_(2, flat, torch.ones((), dtype=torch.int32, device=x.device).expand_as(flat))
    top = x.amax(dim=(-2, -1)).long().unsqueeze(-1)  # the last non-empty bin
    step = (h * w - hist.gather(2, top)).div_(255, rounding_mode="floor")
    lut = (hist.cumsum(-1)[..., :-1] + step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], dim=-1).to(torch.uint8)
    equalized = lut.gather(2, flat).view(n, c, h, w)
    use = (tab.equalize[k].view(n, 1, 1) & (step != 0)).unsqueeze(-1)
    return torch.where(use, equalized, x)


# Op families, applied in this order within a slot. Each maps the samples that drew
# another op exactly to themselves, so it can run on the whole batch or on its members.
_FAMILIES: tuple[tuple[frozenset[str], Callable[..., Tensor]], ...] = (
    (GEOMETRIC_OPS, _geometric),
    (ENHANCE_OPS, _enhance),
    (frozenset({"Posterize"}), _posterize),
    (frozenset({"Solarize"}), _solarize),
    (frozenset({"AutoContrast"}), _autocontrast),
    (frozenset({"Equalize"}), _equalize),
)
# Groups of ops gathered together on the subset path: the families, with the colour
# ops apart (each then computes only its own degenerate image).
_GROUPS: tuple[tuple[frozenset[str], Callable[..., Tensor]], ...] = tuple(
    group for names, run in _FAMILIES
    for group in ([(frozenset({op}), run) for op in sorted(names)] if run is _enhance else [(names, run)]))
_GROUP_OF = {op: g for g, (names, _) in enumerate(_GROUPS) for op in names}


class RandAugment:
    """Batched RandAugment: ``num_ops`` ops per sample, each with its own op, sign and magnitude.

    Args:
        num_ops: ops applied in sequence to every sample.
        magnitude: magnitude bin in ``[0, num_magnitude_bins - 1]`` (upper bound if ``random_magnitude``).
        num_magnitude_bins: bins of torchvision's magnitude tables (31 as in the paper's 0..30 scale).
        random_magnitude: draw each sample's bin uniformly in ``[0, magnitude]`` per slot, else
            use ``magnitude``.
        fill: value(s) 0..255 outside the image after shear/translate/rotate; a scalar or one per channel.
        ops: subset of :data:`RANDAUGMENT_OPS` to draw from (default: all 14).

    Random draws, in this order, from the CPU generator, each of shape (n, num_ops): op
    index (``randint``), sign (``rand < 0.5`` negates), then the magnitude bin (``randint``,
    only if ``random_magnitude``).
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 random_magnitude: bool = True, fill: Fill = 0, ops: Sequence[str] | None = None):
        if not isinstance(num_ops, int) or num_ops < 0:
            raise ValueError(f"num_ops must be a non-negative integer, got {num_ops!r}")
        if not isinstance(num_magnitude_bins, int) or num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins must be an integer >= 2, got {num_magnitude_bins!r}")
        if not isinstance(magnitude, int) or not 0 <= magnitude <= num_magnitude_bins - 1:
            raise ValueError(f"magnitude must be an integer in [0, {num_magnitude_bins - 1}] for "
                             f"num_magnitude_bins={num_magnitude_bins}, got {magnitude!r}")
        ops = RANDAUGMENT_OPS if ops is None else tuple(ops)
        unknown = [op for op in ops if op not in _SPACE]
        if unknown or not ops or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be distinct names from {list(RANDAUGMENT_OPS)}, got {list(ops)}"
                             + (f" (unknown: {unknown})" if unknown else ""))
        fills = fill if isinstance(fill, Sequence) else [fill]
        if len(fills) not in (1, 3) or not all(0 <= float(f) <= 255 for f in fills):
            raise ValueError(f"fill must be one value or one per channel in [0, 255], got {fill!r}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.num_magnitude_bins = num_magnitude_bins
        self.random_magnitude = bool(random_magnitude)
        self.fill = fill if isinstance(fill, (int, float)) else tuple(float(f) for f in fill)
        self.ops = ops

    def __repr__(self) -> str:
        ops = "" if self.ops == RANDAUGMENT_OPS else f", ops={list(self.ops)}"
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"num_magnitude_bins={self.num_magnitude_bins}, random_magnitude={self.random_magnitude}, "
                f"fill={self.fill!r}{ops})")

    @property
    def is_identity(self) -> bool:
        return self.num_ops == 0 or self.ops == ("Identity",)

    def sample_params(self, n: int, h: int, w: int,
                      generator: torch.Generator | None = None) -> RandAugmentParams:
        """Draw parameters for ``n`` images of size ``h x w`` on the CPU."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("use a CPU generator so parameters are identical on every device")
        shape = (n, self.num_ops)
        op = torch.randint(0, len(self.ops), shape, generator=generator)
        negate = torch.rand(shape, generator=generator) < 0.5
        if self.random_magnitude:
            magnitude = torch.randint(0, self.magnitude + 1, shape, generator=generator)
        else:
            magnitude = torch.full(shape, self.magnitude, dtype=torch.int64)
        return RandAugmentParams(op, magnitude, negate, ops=self.ops,
                                 num_magnitude_bins=self.num_magnitude_bins, fill=self.fill)

    def apply(self, images: Tensor, params: RandAugmentParams) -> Tensor:
        """Augment uint8 N x 3 x H x W ``images`` with ``params`` on the images' device."""
        return randaugment_apply(images, params)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw fresh parameters from ``generator`` (CPU) and augment ``images`` on their device."""
        if self.is_identity:
            return images
        n, _, h, w = images.shape
        return self.apply(images, self.sample_params(n, h, w, generator))


def randaugment_apply(images: Tensor, params: RandAugmentParams, subsets: bool | None = None) -> Tensor:
    """Batched RandAugment of uint8 N x 3 x H x W ``images``; returns a new uint8 tensor.

    With ``subsets`` each op family (each colour op apart) runs on the samples that drew
    it, gathered by index: least work, but finding them needs the op indices on the host.
    Otherwise every family in ``params.ops`` runs on the whole batch, which needs no
    host-device synchronisation. Default: subsets on CPU only. Outputs are identical.
    """
    if images.dim() != 4 or images.dtype != torch.uint8 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 N x 3 x H x W, got {images.dtype} {tuple(images.shape)}")
    n, _, h, w = images.shape
    if len(params) != n or params.op.dim() != 2:
        raise ValueError(f"params are for {len(params)} samples, batch has {n}")
    if params.device != images.device:
        params = params.to(images.device)
    if subsets is None:
        subsets = images.device.type == "cpu"
    tab = _tables(params.ops, params.num_magnitude_bins, h, w, images.device)
    x = images.clone() if subsets else images  # the subset path writes in place
    for slot in range(params.num_ops):
        op = params.op[:, slot]
        k = (op * params.num_magnitude_bins + params.magnitude[:, slot]) * 2 + params.negate[:, slot]
        if not subsets:
            present = set(params.ops)
            for names, run in _FAMILIES:
                if present & names:
                    x = run(x, tab, k, present, params.fill)
            continue
        group = tab.group[k]
        for g, (_, run) in enumerate(_GROUPS):
            rows = (group == g).nonzero().squeeze(1)
            if rows.numel():
                present = {params.ops[i] for i in op[rows].unique().tolist()}
                x[rows] = run(x[rows], tab, k[rows], present, params.fill)
    return x.clone() if x is images else x


def reference_apply(image: Tensor, params_i: RandAugmentParams) -> Tensor:
    """Slow per-image reference with ``torchvision.transforms.v2.functional``, mirroring the op
    dispatch of torchvision's RandAugment. ``image`` is 3 x H x W uint8, ``params_i = params[i]``.
    """
    import torchvision.transforms.v2.functional as TF

    _, h, w = image.shape
    fill = params_i.fill if isinstance(params_i.fill, (int, float)) else list(params_i.fill)
    nearest = TF.InterpolationMode.NEAREST
    out = image
    for slot in range(params_i.num_ops):
        op = params_i.ops[int(params_i.op[slot])]
        m = signed_magnitude(op, int(params_i.magnitude[slot]), bool(params_i.negate[slot]),
                             params_i.num_magnitude_bins, h, w)
        if op == "ShearX":
            out = TF.affine(out, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                            interpolation=nearest, fill=fill, center=[0, 0])
        elif op == "ShearY":
            out = TF.affine(out, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                            interpolation=nearest, fill=fill, center=[0, 0])
        elif op == "TranslateX":
            out = TF.affine(out, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0],
                            interpolation=nearest, fill=fill)
        elif op == "TranslateY":
            out = TF.affine(out, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0],
                            interpolation=nearest, fill=fill)
        elif op == "Rotate":
            out = TF.rotate(out, angle=m, interpolation=nearest, fill=fill)
        elif op == "Brightness":
            out = TF.adjust_brightness(out, brightness_factor=1.0 + m)
        elif op == "Color":
            out = TF.adjust_saturation(out, saturation_factor=1.0 + m)
        elif op == "Contrast":
            out = TF.adjust_contrast(out, contrast_factor=1.0 + m)
        elif op == "Sharpness":
            out = TF.adjust_sharpness(out, sharpness_factor=1.0 + m)
        elif op == "Posterize":
            out = TF.posterize(out, bits=int(m))
        elif op == "Solarize":
            out = TF.solarize(out, threshold=255 * m)
        elif op == "AutoContrast":
            out = TF.autocontrast(out)
        elif op == "Equalize":
            out = TF.equalize(out)
    return out
