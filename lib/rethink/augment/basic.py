"""Batched on-device augmentation with per-sample random parameters.

The pipeline is the classic small-image recipe, applied in this order:

1. translate: pad by ``p`` pixels (``reflect`` or zero padding) and crop back to
   H x W at a per-sample offset ``(oy, ox)`` in ``[0, 2p]``;
2. horizontal flip of the chosen samples (probability ``flip_prob``);
3. cutout: a square of side ``s`` centred on a pixel drawn uniformly over the
   image, clipped at the borders, filled with ``cutout_fill``.

Random parameters are always drawn on the CPU from a ``torch.Generator``
(:meth:`Augment.sample_params`), then moved to the batch's device, so the same
seed gives bit-identical parameters -- and bit-identical uint8 outputs -- on CPU
and CUDA. :func:`apply_params` is a pure, vectorised function of
``(images, params)``: one gather for translate+flip and one mask for cutout, no
Python loop over samples. :func:`reference_apply` is the slow per-image
torchvision version used by the tests.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["AugmentParams", "Augment", "apply_params", "reference_apply", "normalize"]

PADDING_MODES = ("reflect", "zeros")
Fill = float | Sequence[float]


class PerSampleParams:
    """Mixin for frozen dataclasses of per-sample tensors (named in ``_PER_SAMPLE``, the
    first one giving the device) plus batch constants: ``.to(device)`` and indexing by
    sample (``params[start:stop]``) apply to every per-sample tensor."""

    _PER_SAMPLE: tuple[str, ...] = ()

    def _map(self, fn):
        return dataclasses.replace(self, **{k: fn(getattr(self, k)) for k in self._PER_SAMPLE})

    def to(self, device: torch.device | str, non_blocking: bool = False):
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def __getitem__(self, index: int | slice | Tensor):
        return self._map(lambda t: t[index])

    @property
    def device(self) -> torch.device:
        return getattr(self, self._PER_SAMPLE[0]).device


@dataclass(frozen=True)
class AugmentParams(PerSampleParams):
    """Parameters for one batch: per-sample tensors of length N plus batch constants.

    ``offset_y/offset_x`` (int64) index the top-left corner of the crop in the padded
    image, in ``[0, 2 * padding]``; ``flip`` (bool); ``cutout_cy/cutout_cx`` (int64)
    the cutout centre pixel. Index with an int or slice to get a sub-batch.
    """

    offset_y: Tensor
    offset_x: Tensor
    flip: Tensor
    cutout_cy: Tensor
    cutout_cx: Tensor
    padding: int = 0
    padding_mode: str = "reflect"
    cutout_size: int = 0
    cutout_fill: Fill = 0.0

    _PER_SAMPLE = ("offset_y", "offset_x", "flip", "cutout_cy", "cutout_cx")

    def __len__(self) -> int:
        return self.flip.shape[0] if self.flip.dim() else 1


def cutout_box(cy: Tensor, cx: Tensor, size: int, h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Clipped half-open cutout box ``[y0, y1) x [x0, x1)`` for centres ``(cy, cx)``."""
    y0, x0 = cy - size // 2, cx - size // 2
    return y0.clamp(0, h), (y0 + size).clamp(0, h), x0.clamp(0, w), (x0 + size).clamp(0, w)


def _fill_tensor(fill: Fill, like: Tensor) -> Tensor:
    """Scalar fill -> 0-d tensor; per-channel fill -> (1, C, 1, 1). Same dtype/device as ``like``."""
    t = torch.as_tensor(fill, dtype=torch.float64).to(like.dtype).to(like.device)
    return t if t.dim() == 0 else t.view(1, -1, 1, 1)


def _source_index(out_len: int, offset: Tensor, padding: int, mode: str, flip: Tensor | None
                  ) -> tuple[Tensor, Tensor | None]:
    """Per-sample source indices (N, L) along one axis, and the in-bounds mask for zero padding."""
    pos = torch.arange(out_len, device=offset.device).expand(offset.shape[0], out_len)
    if flip is not None:  # the flip reads the translated image right-to-left
        pos = torch.where(flip[:, None], out_len - 1 - pos, pos)
    src = pos + (offset - padding)[:, None]
    if mode == "reflect":  # reflect without repeating the edge; valid because padding < L
        last = out_len - 1
        return last - (last - src.abs()).abs(), None
    valid = (src >= 0) & (src < out_len)
    return src.clamp(0, out_len - 1), valid


def apply_params(images: Tensor, params: AugmentParams) -> Tensor:
    """Augment a batch N x C x H x W (uint8 or float) with ``params``; returns the same dtype.

    ``params`` must be on ``images.device`` (see :meth:`AugmentParams.to`). The output is
    a new contiguous NCHW tensor unless every op is off, in which case ``images`` is returned.
    """
    n, c, h, w = images.shape
    if len(params) != n:
        raise ValueError(f"params are for {len(params)} samples, batch has {n}")
    out = images
    p = params.padding
    # skip the gather when nothing flips; only checked on CPU (on CUDA it would sync)
    maybe_flip = params.device.type != "cpu" or bool(params.flip.any())
    if p > 0 or maybe_flip:
        # translate + flip as one gather on the flattened spatial axis
        iy, valid_y = _source_index(h, params.offset_y, p, params.padding_mode, None)
        ix, valid_x = _source_index(w, params.offset_x, p, params.padding_mode, params.flip)
        flat = (iy[:, :, None] * w + ix[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
        out = images.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
        if valid_y is not None:
            inside = (valid_y[:, :, None] & valid_x[:, None, :])[:, None]
            out = out.masked_fill(~inside, 0)
    if params.cutout_size > 0:
        y0, y1, x0, x1 = cutout_box(params.cutout_cy, params.cutout_cx, params.cutout_size, h, w)
        ys = torch.arange(h, device=images.device)
        xs = torch.arange(w, device=images.device)
        in_y = (ys >= y0[:, None]) & (ys < y1[:, None])
        in_x = (xs >= x0[:, None]) & (xs < x1[:, None])
        box = (in_y[:, :, None] & in_x[:, None, :])[:, None]
        if isinstance(params.cutout_fill, (int, float)):  # scalar: no host->device copy
            out = out.masked_fill(box, params.cutout_fill)
        else:
            out = torch.where(box, _fill_tensor(params.cutout_fill, images), out)
    return out


class Augment:
    """Composable batched augmentation: ``Augment(translate=4, flip=True, cutout=16)``.

    Args:
        translate: padding ``p`` in pixels; per-sample offsets in ``[0, 2p]`` (0 = off).
        flip: random horizontal flip, per sample with probability ``flip_prob``.
        cutout: side ``s`` of the cutout square (0 = off).
        padding_mode: ``"reflect"`` (requires ``p < H, W``) or ``"zeros"``.
        cutout_fill: value(s) written into the cutout square, in the images' own units
            (e.g. 0..255 for uint8); a scalar or one value per channel.
        flip_prob: probability of flipping each sample.

    Parameters are drawn in a fixed order from a CPU generator: ``offset_y``, ``offset_x``
    (if translate), ``flip`` (if flip), ``cutout_cy``, ``cutout_cx`` (if cutout).
    """

    def __init__(self, translate: int = 0, flip: bool = False, cutout: int = 0, *,
                 padding_mode: str = "reflect", cutout_fill: Fill = 0.0, flip_prob: float = 0.5):
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if translate < 0 or cutout < 0:
            raise ValueError("translate and cutout must be >= 0")
        self.translate = int(translate)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        self.padding_mode = padding_mode
        self.cutout_fill = cutout_fill
        self.flip_prob = float(flip_prob)

    def __repr__(self) -> str:
        return (f"Augment(translate={self.translate}, flip={self.flip}, cutout={self.cutout}, "
                f"padding_mode={self.padding_mode!r}, cutout_fill={self.cutout_fill!r}, "
                f"flip_prob={self.flip_prob})")

    @property
    def is_identity(self) -> bool:
        return self.translate == 0 and not self.flip and self.cutout == 0

    def sample_params(self, n: int, h: int, w: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw parameters for ``n`` images of size ``h x w`` on the CPU."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("use a CPU generator so parameters are identical on every device")
        p = self.translate
        if self.padding_mode == "reflect" and p >= min(h, w):
            raise ValueError(f"reflect padding {p} must be smaller than the image ({h}x{w})")
        zeros = torch.zeros(n, dtype=torch.int64)
        if p > 0:
            offset_y = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            offset_x = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        else:
            offset_y, offset_x = zeros, zeros.clone()
        if self.flip:
            flip = torch.rand(n, generator=generator) < self.flip_prob
        else:
            flip = torch.zeros(n, dtype=torch.bool)
        if self.cutout > 0:
            cy = torch.randint(0, h, (n,), generator=generator)
            cx = torch.randint(0, w, (n,), generator=generator)
        else:
            cy, cx = zeros.clone(), zeros.clone()
        return AugmentParams(offset_y, offset_x, flip, cy, cx, padding=p, padding_mode=self.padding_mode,
                             cutout_size=self.cutout, cutout_fill=self.cutout_fill)

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Apply ``params`` (moved to ``images.device`` if needed)."""
        if params.device != images.device:
            params = params.to(images.device)
        return apply_params(images, params)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw fresh parameters from ``generator`` (CPU) and augment ``images`` on their device."""
        if self.is_identity:
            return images
        n, _, h, w = images.shape
        return self.apply(images, self.sample_params(n, h, w, generator))


def reference_apply(image: Tensor, params_i: AugmentParams) -> Tensor:
    """Slow per-image reference with ``torchvision.transforms.v2.functional``.

    ``image`` is C x H x W, ``params_i = params[i]`` the parameters of one sample.
    """
    import torchvision.transforms.v2.functional as TF

    _, h, w = image.shape
    out = image
    p = params_i.padding
    if p > 0:
        mode = "constant" if params_i.padding_mode == "zeros" else "reflect"
        out = TF.pad(out, [p, p, p, p], fill=0, padding_mode=mode)
        out = TF.crop(out, top=int(params_i.offset_y), left=int(params_i.offset_x), height=h, width=w)
    if bool(params_i.flip):
        out = TF.hflip(out)
    if params_i.cutout_size > 0:
        y0, y1, x0, x1 = (int(v) for v in cutout_box(params_i.cutout_cy, params_i.cutout_cx,
                                                      params_i.cutout_size, h, w))
        fill = torch.as_tensor(params_i.cutout_fill, dtype=torch.float64).to(image.dtype)
        fill = fill.view(-1, 1, 1) if fill.dim() else fill
        out = TF.erase(out, i=y0, j=x0, h=y1 - y0, w=x1 - x0, v=fill)
    return out


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: torch.dtype = torch.float32, channels_last: bool = False) -> Tensor:
    """``(images / 255 - mean) / std`` per channel, as ``dtype``.

    ``mean`` and ``std`` are in 0..1 units (torchvision convention, e.g. ImageNet
    ``(0.485, 0.456, 0.406)``). uint8 images are scaled by 1/255 first; float images
    are taken to be in 0..1 already. With ``channels_last`` the result is in
    ``torch.channels_last`` memory format.
    """
    def as_tuple(v) -> tuple[float, ...]:
        return tuple(float(x) for x in v) if hasattr(v, "__iter__") else (float(v),)

    scale, shift = _normalize_coeffs(as_tuple(mean), as_tuple(std), images.shape[1],
                                     255.0 if images.dtype == torch.uint8 else 1.0, dtype, images.device)
    fmt = torch.channels_last if channels_last and images.dim() == 4 else torch.contiguous_format
    out = torch.empty_like(images, dtype=dtype, memory_format=fmt).copy_(images)  # cast + layout
    return out.mul_(scale).add_(shift)


@functools.lru_cache(maxsize=64)
def _normalize_coeffs(mean: tuple, std: tuple, c: int, unit: float, dtype: torch.dtype,
                      device: torch.device) -> tuple[Tensor, Tensor]:
    """(1, C, 1, 1) ``scale`` and ``shift`` with ``x * scale + shift == (x / unit - mean) / std``.

    Cached per device so the hot path makes no host->device copies.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float64)
    std_t = torch.as_tensor(std, dtype=torch.float64)
    if mean_t.numel() not in (1, c) or std_t.numel() not in (1, c):
        raise ValueError(f"mean/std need 1 or {c} values")
    scale = (1.0 / (unit * std_t)).expand(c).reshape(1, c, 1, 1)
    shift = (-mean_t / std_t).expand(c).reshape(1, c, 1, 1)
    return scale.to(dtype=dtype, device=device), shift.to(dtype=dtype, device=device)
