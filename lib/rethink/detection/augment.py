"""Box-aware detection augmentation, batched on the device: Zoph et al. 2020's Augment-S1..S4.

One entry point, :class:`DetectionAugment` (``strength`` one of :data:`STRENGTHS`), called on
a batch: images N x 3 x H x W (uint8, or float in [0, 1]; CPU or CUDA), boxes a list of
(k_i, 4) xyxy pixel tensors, labels a list of (k_i,) tensors. Every random draw comes from
one CPU ``torch.Generator`` (:meth:`DetectionAugment.sample_params`), so a (seed, epoch)
generator reproduces a batch on any device; :meth:`DetectionAugment.apply` is a pure
function of (batch, params).

Pipeline, in the order of the TF RetinaNet parser (tensorflow/tpu
``models/official/detection/dataloader/retinanet_parser.py``): the policy's ops on the
image and boxes, then a random horizontal flip, then scale jitter
(``utils/input_utils.py resize_and_crop_image``: scale r ~ U(lo, hi), the image resized to
round(r S), a random crop of S x S if larger, padded at the bottom/right if smaller), then
boxes clipped to the canvas and sanitised.

Strengths (a registry, :data:`STRENGTHS`):

* ``S1``: flip + standard scale jitter (0.8, 1.2). The (0.8, 1.2) range is *unverified* for
  the paper; tensorflow/tpu's ``configs/yaml/retinanet_autoaugment.yaml`` uses it with the
  AutoAugment policy.
* ``S2``: detection AutoAugment policy v0 (Zoph et al. 2019) + flip + standard jitter.
* ``S3``: S2 with large scale jitter (0.5, 2.0).
* ``S4``: RandAugment (``num_ops`` N, ``magnitude`` M; the paper reports M = 10) + flip +
  large scale jitter. Op set: that of the TF Model Garden's detection RandAugment
  (tensorflow/models ``official/vision/ops/augment.py``, ``RandAugment.build_for_detection``:
  the 16 classification ops with Rotate/ShearX/ShearY/TranslateX/TranslateY replaced by
  their box-aware ``*_BBox`` versions; each layer picks uniformly among the ops and an
  identity), chosen because it is the public Google implementation of RandAugment on boxes;
  which op set, N and magnitude scale Zoph et al. used is *unverified*. N defaults to 2
  (that file's default).
* ``none``: identity (no flip, no jitter).

Verified against the TF source (tensorflow/tpu ``models/official/detection/utils/
autoaugment_utils.py``, read for this module): policy v0's five sub-policies and their
(op, probability, level) triples, as listed in :data:`AUTOAUGMENT_V0`; one sub-policy drawn
uniformly per image, each op applied with its probability; the level -> argument maps
(``level_to_arg``: translate level/10 x 250 px, box-only translate level/10 x 120 px with
the per-box probability prob/3 (``_scale_bbox_only_op_probability``) and boxes shuffled,
shear level/10 x 0.3, rotate level/10 x 30 degrees, all four with a random sign; enhance
factors level/10 x 1.8 + 0.1; cutout half-size level/10 x 100 px; posterize bits
int(level/10 x 4); solarize threshold int(level/10 x 256); solarize-add int(level/10 x 110));
fill 128 for every op (``replace_value``); boxes of geometric ops = the bounding box of the
transformed corners, clipped to the image; nearest interpolation for warps. As in TF,
(Sharpness 0.0 8) never fires and (ShearX_BBox 0.4 0) is an identity warp; both are kept.
Not verified: that Zoph et al. 2020 ran policy v0 unchanged with these constants.

Magnitude rule: the TF pixel constants (250, 120, 100) are for ~640 px COCO images; here
they scale by ``image_size / reference_size`` (default reference 640): at 160 px, TranslateX
at level 10 is 62.5 px and Cutout's half-size 25 px. Unitless arguments (angles, shear,
enhance factors) are unchanged.

Deliberate differences from TF (not replicated): coordinates stay float (TF truncates box
corners to integer pixels in each op); zero-size boxes are not inflated by
``_check_bbox_area``'s delta but dropped at the end; the grayscale of Color/Contrast is
floor(0.2989 R + 0.587 G + 0.114 B) (torchvision's; TF's conversion differs by <= 1 level)
and Contrast blends with the true grayscale mean (TF's ``contrast`` divides the pixel
count by 256 instead, a known bug); warps use torchvision's continuous-coordinate convention
(pixel i spans [i, i + 1); TF's pixel-centre origin differs by half a pixel).

Sanitising (the rule): boxes are clipped to the canvas after every geometric op and at the
end; a box is dropped with its label when, after the final clip, its width or height is
below ``min_size`` or its area below ``min_area`` (default 1 px and 1 px^2, torchvision's
``SanitizeBoundingBoxes`` rule; TF's parser drops only empty boxes).

Batching: per op slot, every op family that some sample drew runs once on the whole batch
with per-sample parameters (identity for the others): one ``grid_sample`` for all geometric
ops of the slot, ``torch.where`` selections for the colour ops. The box-only ops loop over
box slots (at most max_i k_i iterations, each batched over the images): TF applies them box
after box, later boxes seeing earlier changes, so the loop is inherent. Splitting the padded
boxes back into per-image lists needs one host synchronisation per batch.
:func:`op_params` builds the parameters of one op (to show or test it alone);
``apply(..., return_index=True)`` also returns the kept boxes' input indices.
tests/test_detection_augment.py checks each op against torchvision v2 (or, for the box-only
op, a literal per-box re-implementation of the TF code).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AUTOAUGMENT_V0", "RANDAUGMENT_OPS", "OPS", "STRENGTHS", "Strength", "PolicyOp", "DetectionAugment",
           "DetectionAugmentParams", "level_to_arg", "op_params", "sanitize_boxes"]

MAX_LEVEL = 10.0
REFERENCE_SIZE = 640
TRANSLATE_CONST = 250.0       # px at the reference size (TF augmentation_hparams)
TRANSLATE_BBOX_CONST = 120.0
CUTOUT_CONST = 100.0
FILL = 128.0                  # TF replace_value


@dataclass(frozen=True)
class PolicyOp:
    name: str
    prob: float
    level: float


# tensorflow/tpu autoaugment_utils.policy_v0 ("used for all of the results in the paper")
AUTOAUGMENT_V0: tuple[tuple[PolicyOp, ...], ...] = (
    (PolicyOp("TranslateX_BBox", 0.6, 4), PolicyOp("Equalize", 0.8, 10)),
    (PolicyOp("TranslateY_Only_BBoxes", 0.2, 2), PolicyOp("Cutout", 0.8, 8)),
    (PolicyOp("Sharpness", 0.0, 8), PolicyOp("ShearX_BBox", 0.4, 0)),
    (PolicyOp("ShearY_BBox", 1.0, 2), PolicyOp("TranslateY_Only_BBoxes", 0.6, 6)),
    (PolicyOp("Rotate_BBox", 0.6, 10), PolicyOp("Color", 1.0, 6)),
)

# tensorflow/models official/vision/ops/augment.py, RandAugment.build_for_detection
RANDAUGMENT_OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate_BBox", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX_BBox", "ShearY_BBox", "TranslateX_BBox", "TranslateY_BBox", "Cutout",
    "SolarizeAdd")

GEOMETRIC_OPS = frozenset({"TranslateX_BBox", "TranslateY_BBox", "ShearX_BBox", "ShearY_BBox", "Rotate_BBox"})
BOX_ONLY_OPS = frozenset({"TranslateX_Only_BBoxes", "TranslateY_Only_BBoxes"})
PIXEL_OPS = frozenset({"AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd", "Color",
                       "Contrast", "Brightness", "Sharpness", "Cutout"})
SIGNED_OPS = GEOMETRIC_OPS | BOX_ONLY_OPS
OPS: tuple[str, ...] = ("Identity",) + tuple(sorted(GEOMETRIC_OPS | BOX_ONLY_OPS | PIXEL_OPS))
_OP_INDEX = {name: i for i, name in enumerate(OPS)}


def level_to_arg(name: str, level, image_size: int, reference_size: int = REFERENCE_SIZE):
    """The unsigned argument of op `name` at `level` (0..10), pixel constants scaled to `image_size`.

    Works on floats and tensors. TF's maps (``level_to_arg`` in autoaugment_utils.py); pixel
    arguments x image_size / reference_size (see the module docstring).
    """
    k = image_size / reference_size
    f = level / MAX_LEVEL
    if name in ("TranslateX_BBox", "TranslateY_BBox"):
        return f * TRANSLATE_CONST * k
    if name in BOX_ONLY_OPS:
        return f * TRANSLATE_BBOX_CONST * k
    if name in ("ShearX_BBox", "ShearY_BBox"):
        return f * 0.3
    if name == "Rotate_BBox":
        return f * 30.0
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return f * 1.8 + 0.1
    if name == "Cutout":
        return _trunc(f * CUTOUT_CONST * k)
    if name == "Posterize":
        return _trunc(f * 4)
    if name == "Solarize":
        return _trunc(f * 256)
    if name == "SolarizeAdd":
        return _trunc(f * 110)
    return 0.0


def _trunc(v):
    return v.trunc() if isinstance(v, Tensor) else float(int(v))


@dataclass(frozen=True)
class Strength:
    """A named augmentation strength: the policy ('autoaugment_v0', 'randaugment' or None),
    horizontal flip, and the scale-jitter range."""
    name: str
    policy: str | None
    flip: bool
    scale_range: tuple[float, float]
    description: str


STRENGTHS: dict[str, Strength] = {s.name: s for s in [
    Strength("none", None, False, (1.0, 1.0), "no augmentation"),
    Strength("S1", None, True, (0.8, 1.2), "flip + standard scale jitter (0.8, 1.2)"),
    Strength("S2", "autoaugment_v0", True, (0.8, 1.2), "AutoAugment v0 + flip + standard scale jitter"),
    Strength("S3", "autoaugment_v0", True, (0.5, 2.0), "AutoAugment v0 + flip + large scale jitter (0.5, 2.0)"),
    Strength("S4", "randaugment", True, (0.5, 2.0), "RandAugment + flip + large scale jitter (0.5, 2.0)"),
]}


@dataclass(frozen=True)
class DetectionAugmentParams:
    """Per-sample random parameters of one batch (N samples, L op slots, K box slots).

    ``op`` (N, L) index into :data:`OPS`; ``apply`` (N, L) bool; ``level`` (N, L); ``negate``
    (N, L) bool (signed ops); ``box_prob`` (N, L) per-box probability of box-only ops;
    ``cutout_u`` (N, L, 2) and ``box_u``/``box_key`` (N, L, K) uniforms (cutout centre,
    per-box draw, per-box order); ``flip`` (N,); ``scale_u`` (N,) and ``offset_u`` (N, 2)
    uniforms of the scale jitter (y, x). ``params[i]`` / ``params[a:b]`` index samples.
    """
    op: Tensor
    apply: Tensor
    level: Tensor
    negate: Tensor
    box_prob: Tensor
    cutout_u: Tensor
    box_u: Tensor
    box_key: Tensor
    flip: Tensor
    scale_u: Tensor
    offset_u: Tensor

    def _map(self, fn) -> "DetectionAugmentParams":
        return DetectionAugmentParams(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device) -> "DetectionAugmentParams":
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index) -> "DetectionAugmentParams":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    def __len__(self) -> int:
        return self.flip.shape[0]


def op_params(n: int, max_boxes: int, name: str, level: float, *, negate: bool = False, box_prob: float = 1.0,
              cutout_u: tuple[float, float] = (0.5, 0.5), box_key: Tensor | None = None) -> DetectionAugmentParams:
    """Parameters applying the one op `name` at `level` to every image, without flip or jitter.

    Use with ``DetectionAugment("none").apply`` (to show or test one op). Box-only ops choose
    every box with ``box_prob`` > 0 and visit them in ``box_key`` order (default: index order).
    """
    if name not in _OP_INDEX:
        raise ValueError(f"unknown op {name!r}; choose one of {list(OPS)}")
    k = max_boxes
    key = torch.arange(k, dtype=torch.float32).div(max(k, 1)).expand(n, k) if box_key is None else box_key
    return DetectionAugmentParams(
        op=torch.full((n, 1), _OP_INDEX[name]), apply=torch.ones(n, 1, dtype=torch.bool),
        level=torch.full((n, 1), float(level)), negate=torch.full((n, 1), bool(negate)),
        box_prob=torch.full((n, 1), float(box_prob) if name in BOX_ONLY_OPS else 0.0),
        cutout_u=torch.tensor(cutout_u, dtype=torch.float32).expand(n, 1, 2).clone(),
        box_u=torch.zeros(n, 1, k), box_key=key.reshape(n, 1, k).float().clone(),
        flip=torch.zeros(n, dtype=torch.bool), scale_u=torch.zeros(n), offset_u=torch.zeros(n, 2))


# ------------------------------------------------------------------ boxes


def sanitize_boxes(boxes: Tensor, valid: Tensor, height: int, width: int, min_size: float = 1.0,
                   min_area: float = 1.0) -> tuple[Tensor, Tensor]:
    """Clip (N, K, 4) xyxy boxes to the canvas; keep = valid & width, height >= min_size & area >= min_area."""
    b = _clip(boxes, height, width)
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return b, valid & (w >= min_size) & (h >= min_size) & (w * h >= min_area)


def _clip(b: Tensor, height: int, width: int) -> Tensor:
    lim = b.new_tensor([width, height, width, height])
    return torch.minimum(b.clamp(min=0), lim)


def _pad_boxes(boxes: Sequence[Tensor], device) -> tuple[Tensor, Tensor]:
    """(N, K, 4) zero-padded boxes and the (N, K) validity mask; K = max k_i (known on the host)."""
    n = len(boxes)
    if n == 0 or max(len(b) for b in boxes) == 0:
        return torch.zeros(n, 0, 4, device=device), torch.zeros(n, 0, dtype=torch.bool, device=device)
    seq = [b.to(device, torch.float32).reshape(-1, 4) for b in boxes]
    out = torch.nn.utils.rnn.pad_sequence(seq, batch_first=True)
    lengths = torch.tensor([len(b) for b in seq], device=device)
    return out, torch.arange(out.shape[1], device=device).view(1, -1) < lengths.view(-1, 1)


def _transform_boxes(b: Tensor, m: Tensor, height: int, width: int) -> Tensor:
    """Bounding box of the 4 corners of each box under the per-sample forward matrix m (N, 2, 3), clipped."""
    x0, y0, x1, y1 = b.unbind(-1)
    cx = torch.stack([x0, x1, x0, x1], -1)
    cy = torch.stack([y0, y0, y1, y1], -1)
    a, c, tx, d, e, ty = (m[:, i, j].view(-1, 1, 1) for i in range(2) for j in range(3))
    nx = a * cx + c * cy + tx
    ny = d * cx + e * cy + ty
    out = torch.stack([nx.amin(-1), ny.amin(-1), nx.amax(-1), ny.amax(-1)], -1)
    return _clip(out, height, width)


# ------------------------------------------------------------------ warps


def _inverse(m: Tensor) -> Tensor:
    """Inverse of per-sample 2x3 affine matrices (float64 for accuracy)."""
    m = m.double()
    a, c, tx, d, e, ty = (m[:, i, j] for i in range(2) for j in range(3))
    det = a * e - c * d
    ia, ic, id_, ie = e / det, -c / det, -d / det, a / det
    return torch.stack([torch.stack([ia, ic, -(ia * tx + ic * ty)], -1),
                        torch.stack([id_, ie, -(id_ * tx + ie * ty)], -1)], 1)


def _warp(x: Tensor, m: Tensor, mode: str, fill: Tensor, padding_mode: str = "zeros") -> Tensor:
    """out(p) = x(m^-1 p) in continuous pixel coordinates (pixel i spans [i, i + 1)); fill outside."""
    n, _, h, w = x.shape
    inv = _inverse(m)
    s = inv.new_tensor([2.0 / w, 2.0 / h]).view(1, 2, 1)
    half = inv.new_tensor([w / 2.0, h / 2.0])
    # theta = S inv S^-1 with S: pixel -> [-1, 1] (align_corners=False)
    lin = inv[:, :, :2] * s * half.view(1, 1, 2)
    t = (inv[:, :, :2] @ half.view(1, 2, 1)).squeeze(-1) + inv[:, :, 2]
    theta = torch.cat([lin, (t * s.squeeze(-1) - 1).unsqueeze(-1)], -1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if padding_mode == "zeros":
        return F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def _matrix(name: str, arg: Tensor, height: int, width: int) -> Tensor:
    """Forward 2x3 matrices (N, 2, 3) of a geometric op with signed per-sample arguments."""
    n = arg.shape[0]
    one, zero = torch.ones_like(arg), torch.zeros_like(arg)
    if name == "TranslateX_BBox":    # TF translate_x: content moves by -pixels
        rows = [one, zero, -arg, zero, one, zero]
    elif name == "TranslateY_BBox":
        rows = [one, zero, zero, zero, one, -arg]
    elif name == "ShearX_BBox":      # TF shear_x: x' = x - level * y (origin top-left)
        rows = [one, -arg, zero, zero, one, zero]
    elif name == "ShearY_BBox":      # y' = y - level * x
        rows = [one, zero, zero, -arg, one, zero]
    elif name == "Rotate_BBox":      # counter-clockwise on screen about the image centre
        r = torch.deg2rad(arg)
        cos, sin = torch.cos(r), torch.sin(r)
        cx, cy = width / 2.0, height / 2.0
        rows = [cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy]
    else:
        raise ValueError(name)
    return torch.stack(rows, -1).view(n, 2, 3)


# ------------------------------------------------------------------ pixel ops (float 0..255 levels)


def _blend(degenerate: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """TF blend: degenerate + factor (image - degenerate), clipped, truncated to a level."""
    return (degenerate + factor * (image - degenerate)).clamp_(0, 255).floor_()


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).floor_().unsqueeze(1)


def _sharpness_degenerate(x: Tensor) -> Tensor:
    """TF's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, valid conv, truncated; border = the image."""
    c = x.shape[1]
    k = x.new_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    blur = F.conv2d(x, k.expand(c, 1, 3, 3), groups=c).clamp_(0, 255).floor_()
    out = x.clone()
    out[..., 1:-1, 1:-1] = blur
    return out


def _equalize(x: Tensor) -> Tensor:
    """PIL/TF histogram equalisation per sample and channel."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w).long()
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(2, flat, torch.ones_like(flat))
    last = hist.gather(2, flat.amax(-1, keepdim=True))  # count of the last non-empty bin
    step = (h * w - last).div(255, rounding_mode="floor")
    lut = (hist.cumsum(-1) + step // 2).div(step.clamp(min=1), rounding_mode="floor")
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut[..., :-1]], -1).clamp_(0, 255)
    out = lut.gather(2, flat).view(n, c, h, w).to(x.dtype)
    return torch.where((step == 0).view(n, c, 1, 1), x, out)


def _autocontrast(x: Tensor) -> Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1)
    out = ((x - lo) * scale).clamp_(0, 255).floor_()
    return torch.where(hi > lo, out, x)


def _pixel_op(name: str, x: Tensor, arg: Tensor, cutout_u: Tensor, fill: Tensor) -> Tensor:
    """Op `name` on the whole batch with per-sample arguments arg (N,)."""
    n, _, h, w = x.shape
    a = arg.view(n, 1, 1, 1)
    if name == "Equalize":
        return _equalize(x)
    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Invert":
        return 255.0 - x
    if name == "Posterize":
        q = torch.pow(2.0, 8.0 - a)
        return (x / q).floor_() * q
    if name == "Solarize":
        return torch.where(x < a, x, 255.0 - x)
    if name == "SolarizeAdd":
        return torch.where(x < 128, (x + a).clamp_(0, 255), x)
    if name == "Brightness":
        return _blend(torch.zeros_like(x), x, a)
    if name == "Color":
        return _blend(_gray(x).expand_as(x), x, a)
    if name == "Contrast":
        return _blend(_gray(x).mean(dim=(-3, -2, -1), keepdim=True).expand_as(x), x, a)
    if name == "Sharpness":
        return _blend(_sharpness_degenerate(x), x, a)
    if name == "Cutout":  # a (2 pad) square centred on a uniform pixel, clipped at the borders
        cy = (cutout_u[:, 0] * h).floor().view(n, 1)
        cx = (cutout_u[:, 1] * w).floor().view(n, 1)
        pad = arg.view(n, 1)
        r = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h)
        c = torch.arange(w, device=x.device, dtype=x.dtype).view(1, w)
        rows = (r >= cy - pad) & (r < cy + pad)
        cols = (c >= cx - pad) & (c < cx + pad)
        mask = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)
        return torch.where(mask, fill, x)
    raise ValueError(name)


def _translate_only_boxes(x: Tensor, b: Tensor, valid: Tensor, chosen_image: Tensor, pixels: Tensor,
                          box_u: Tensor, box_key: Tensor, box_prob: Tensor, axis: int, fill: Tensor) -> Tensor:
    """TF translate_{x,y}_only_bboxes: each chosen box's content moved by -pixels inside the box.

    A box is chosen with probability box_prob (per box); boxes are visited in a random order
    (TF shuffles them), each seeing the earlier ones' changes. The box's pixel rectangle is
    TF's: rows int(y0) .. min(int(y1), H - 1) inclusive (columns likewise); vacated pixels
    get `fill`. One iteration per box slot, batched over the images.
    """
    n, c, h, w = x.shape
    if b.shape[1] == 0:
        return x
    chosen = valid & chosen_image[:, None] & (box_u < box_prob[:, None])
    order = torch.where(valid, box_key, torch.full_like(box_key, 2.0)).argsort(dim=1)
    bs = b.gather(1, order.unsqueeze(-1).expand(-1, -1, 4))
    ch = chosen.gather(1, order)
    p = pixels.round().long().view(n, 1)
    length = h if axis == 2 else w
    pos = torch.arange(length, device=x.device).view(1, length)
    src = pos + p                                           # output index <- input index
    rh = torch.arange(h, device=x.device).view(1, h)
    rw = torch.arange(w, device=x.device).view(1, w)
    for t in range(bs.shape[1]):
        x0, y0, x1, y1 = bs[:, t].floor().long().unbind(-1)
        x1, y1 = x1.clamp(max=w - 1), y1.clamp(max=h - 1)
        rows = (rh >= y0[:, None]) & (rh <= y1[:, None])
        cols = (rw >= x0[:, None]) & (rw <= x1[:, None])
        inside = (rows[:, :, None] & cols[:, None, :] & ch[:, t].view(n, 1, 1)).unsqueeze(1)
        lo, hi = (y0, y1) if axis == 2 else (x0, x1)
        ok = (src >= lo[:, None]) & (src <= hi[:, None])
        idx = src.clamp(0, length - 1)
        if axis == 2:
            shifted = x.gather(2, idx.view(n, 1, h, 1).expand(n, c, h, w))
            shifted = torch.where(ok.view(n, 1, h, 1), shifted, fill)
        else:
            shifted = x.gather(3, idx.view(n, 1, 1, w).expand(n, c, h, w))
            shifted = torch.where(ok.view(n, 1, 1, w), shifted, fill)
        x = torch.where(inside, shifted, x)
    return x


# ------------------------------------------------------------------ the augmenter


def _levels(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float()
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return (images.float() * 255).round_().clamp_(0, 255)


class DetectionAugment:
    """Augment-S1..S4 of Zoph et al. 2020 for a batch of detection images (see the module docstring).

    Args:
        strength: a key of :data:`STRENGTHS` ('none', 'S1', 'S2', 'S3', 'S4').
        image_size: canvas side used to scale the TF pixel magnitudes; default: the batch's width.
        magnitude: RandAugment's M on TF's 0..10 level scale (S4 only; the paper reports 10).
        num_ops: RandAugment's N (S4 only).
        fill: value 0..255 of pixels exposed by warps, cutout, box-only shifts and padding
            (TF's 128; one value or one per channel).
        min_size, min_area: the sanitising rule (:func:`sanitize_boxes`).
        reference_size: the canvas of TF's pixel constants (640).
        flip_prob: probability of the horizontal flip when the strength flips.
        scale_range: override the strength's scale-jitter range.
    """

    def __init__(self, strength: str = "S3", image_size: int | None = None, *, magnitude: float = 10,
                 num_ops: int = 2, fill: float | Sequence[float] = FILL, min_size: float = 1.0,
                 min_area: float = 1.0, reference_size: int = REFERENCE_SIZE, flip_prob: float = 0.5,
                 scale_range: tuple[float, float] | None = None):
        if strength not in STRENGTHS:
            raise ValueError(f"unknown strength {strength!r}; choose one of {list(STRENGTHS)}")
        if not 0 <= magnitude <= MAX_LEVEL:
            raise ValueError(f"magnitude must be in [0, {MAX_LEVEL:g}], got {magnitude}")
        self.strength = STRENGTHS[strength]
        self.image_size = image_size
        self.magnitude = float(magnitude)
        self.num_ops = int(num_ops)
        self.fill = tuple(float(f) for f in fill) if isinstance(fill, Sequence) else float(fill)
        self.min_size, self.min_area = float(min_size), float(min_area)
        self.reference_size = reference_size
        self.flip_prob = flip_prob if self.strength.flip else 0.0
        self.scale_range = tuple(scale_range) if scale_range is not None else self.strength.scale_range

    def __repr__(self) -> str:
        return (f"DetectionAugment(strength={self.strength.name!r}, magnitude={self.magnitude:g}, "
                f"num_ops={self.num_ops}, scale_range={self.scale_range}, fill={self.fill})")

    @property
    def num_slots(self) -> int:
        policy = self.strength.policy
        return 0 if policy is None else (2 if policy == "autoaugment_v0" else self.num_ops)

    def sample_params(self, n: int, max_boxes: int, generator: torch.Generator | None = None
                      ) -> DetectionAugmentParams:
        """Draw the parameters of n images with up to max_boxes boxes, on the CPU.

        Draw order: flip, scale, offsets (the same stream for every strength), then the
        policy's ops (op or sub-policy, apply, sign, cutout centre, per-box draw, box order).
        """
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("use a CPU generator so that parameters are the same on every device")
        g = generator
        flip = torch.rand(n, generator=g) < self.flip_prob
        scale_u = torch.rand(n, generator=g)
        offset_u = torch.rand(n, 2, generator=g)
        slots, k = self.num_slots, max_boxes
        policy = self.strength.policy
        if policy == "autoaugment_v0":
            sub = torch.randint(0, len(AUTOAUGMENT_V0), (n,), generator=g)
            table_op = torch.tensor([[_OP_INDEX[o.name] for o in s] for s in AUTOAUGMENT_V0])
            table_p = torch.tensor([[o.prob for o in s] for s in AUTOAUGMENT_V0])
            table_l = torch.tensor([[float(o.level) for o in s] for s in AUTOAUGMENT_V0])
            op, prob, level = table_op[sub], table_p[sub], table_l[sub]
            is_box_only = torch.tensor([name in BOX_ONLY_OPS for name in OPS])[op]
            # box-only ops: called always, each box with prob / 3 (TF)
            apply = (torch.rand(n, slots, generator=g) < prob) | is_box_only
            box_prob = torch.where(is_box_only, prob / 3.0, torch.zeros_like(prob))
        elif policy == "randaugment":
            choices = torch.tensor([_OP_INDEX[o] for o in RANDAUGMENT_OPS] + [_OP_INDEX["Identity"]])
            op = choices[torch.randint(0, len(choices), (n, slots), generator=g)]
            torch.rand(n, slots, generator=g)  # keeps the stream layout of the policy branch
            apply = torch.ones(n, slots, dtype=torch.bool)
            level = torch.full((n, slots), self.magnitude)
            box_prob = torch.zeros(n, slots)
        else:
            op = torch.zeros(n, 0, dtype=torch.int64)
            apply = torch.zeros(n, 0, dtype=torch.bool)
            level = box_prob = torch.zeros(n, 0)
        negate = torch.rand(n, slots, generator=g) < 0.5
        cutout_u = torch.rand(n, slots, 2, generator=g)
        box_u = torch.rand(n, slots, k, generator=g)
        box_key = torch.rand(n, slots, k, generator=g)
        return DetectionAugmentParams(op=op, apply=apply, level=level.float(), negate=negate,
                                      box_prob=box_prob.float(), cutout_u=cutout_u, box_u=box_u,
                                      box_key=box_key, flip=flip, scale_u=scale_u, offset_u=offset_u)

    def __call__(self, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor],
                 generator: torch.Generator | None = None, return_index: bool = False):
        params = self.sample_params(len(images), max((len(b) for b in boxes), default=0), generator)
        return self.apply(images, boxes, labels, params, return_index=return_index)

    def apply(self, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor],
              params: DetectionAugmentParams, return_index: bool = False):
        """Augment a batch with `params`; returns (images, boxes, labels[, kept indices]).

        Images keep their dtype and device (uint8 rounded; float in [0, 1]); boxes float32
        xyxy pixels; labels the kept entries of the inputs; the kept indices (into each
        image's input boxes) let callers carry other per-box data (e.g. pseudo-box scores).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be N x 3 x H x W, got {tuple(images.shape)}")
        n, _, h, w = images.shape
        if not (len(boxes) == len(labels) == len(params) == n):
            raise ValueError(f"{n} images, {len(boxes)} box tensors, {len(labels)} label tensors, "
                             f"{len(params)} parameter rows")
        device = images.device
        size = self.image_size or w
        fill = torch.tensor(self.fill, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        x = _levels(images)
        b, valid = _pad_boxes(boxes, device)
        k = b.shape[1]
        p = params.to(device)
        for slot in range(params.op.shape[1]):
            present = {OPS[i] for i in params.op[:, slot][params.apply[:, slot]].unique().tolist()} - {"Identity"}
            if present:
                x, b = self._slot(x, b, valid, p, slot, present, size, fill, k)
        x, b = self._flip_and_jitter(x, b, p, fill)
        b, keep = sanitize_boxes(b, valid, h, w, self.min_size, self.min_area)
        counts = keep.sum(1).tolist()  # the one host synchronisation
        out_boxes = list(b[keep].split(counts))
        index = torch.arange(k, device=device).expand(n, k)[keep].split(counts)
        out_labels = [torch.as_tensor(lab, device=device).reshape(-1)[i] for lab, i in zip(labels, index)]
        out = x.round_().clamp_(0, 255).to(torch.uint8) if images.dtype == torch.uint8 else (x / 255).to(images.dtype)
        if return_index:
            return out, out_boxes, out_labels, list(index)
        return out, out_boxes, out_labels

    def _slot(self, x, b, valid, p, slot, present, size, fill, k):
        n, _, h, w = x.shape
        op, apply, level = p.op[:, slot], p.apply[:, slot], p.level[:, slot]
        sign = torch.where(p.negate[:, slot], -1.0, 1.0)

        def arg_of(name):
            a = level_to_arg(name, level, size, self.reference_size)
            a = a if isinstance(a, Tensor) else torch.full_like(level, a)
            return a * sign if name in SIGNED_OPS else a

        def selected(name):
            return apply & (op == _OP_INDEX[name])

        geometric = sorted(present & GEOMETRIC_OPS)
        if geometric:
            m = torch.eye(2, 3, device=x.device).repeat(n, 1, 1)
            for name in geometric:
                m = torch.where(selected(name).view(n, 1, 1), _matrix(name, arg_of(name), h, w), m)
            x = _warp(x, m, "nearest", fill)
            b = _transform_boxes(b, m, h, w)
        for name in sorted(present & BOX_ONLY_OPS):
            axis = 2 if name.startswith("TranslateY") else 3
            x = _translate_only_boxes(x, b, valid, selected(name), arg_of(name), p.box_u[:, slot, :k],
                                      p.box_key[:, slot, :k], p.box_prob[:, slot], axis, fill)
        for name in sorted(present & PIXEL_OPS):
            out = _pixel_op(name, x, arg_of(name), p.cutout_u[:, slot], fill)
            x = torch.where(selected(name).view(n, 1, 1, 1), out, x)
        return x, b

    def _flip_and_jitter(self, x, b, p, fill):
        """Flip, then TF's resize_and_crop_image: one bilinear warp per batch (no antialiasing, as TF)."""
        n, _, h, w = x.shape
        lo, hi = self.scale_range
        if not self.strength.flip and lo == hi == 1.0:
            return x, b
        flip = p.flip.float()
        r = lo + (hi - lo) * p.scale_u
        scaled_h, scaled_w = torch.round(r * h), torch.round(r * w)
        sy, sx = scaled_h / h, scaled_w / w
        oy = ((scaled_h - h).clamp(min=0) * p.offset_u[:, 0]).floor()
        ox = ((scaled_w - w).clamp(min=0) * p.offset_u[:, 1]).floor()
        fx = 1 - 2 * flip
        zero = torch.zeros_like(sx)
        m = torch.stack([sx * fx, zero, sx * w * flip - ox, zero, sy, -oy], -1).view(n, 2, 3)
        out = _warp(x, m, "bilinear", fill, padding_mode="border")
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (rows < (scaled_h - oy).view(n, 1, 1)) & (cols < (scaled_w - ox).view(n, 1, 1))
        out = torch.where(inside.unsqueeze(1), out, fill)
        x0, y0, x1, y1 = b.unbind(-1)
        sxv, fv, oxv = sx.view(n, 1), flip.view(n, 1), ox.view(n, 1)
        nx0 = torch.where(fv > 0, w - x1, x0) * sxv - oxv
        nx1 = torch.where(fv > 0, w - x0, x1) * sxv - oxv
        b = torch.stack([nx0, y0 * sy.view(n, 1) - oy.view(n, 1), nx1, y1 * sy.view(n, 1) - oy.view(n, 1)], -1)
        return out, _clip(b, h, w)
