"""One-stage detectors for He et al. 2019: torchvision FCOS (or RetinaNet) on a zoo ResNet-FPN.

The backbone is a zoo architecture (``rethink.models.zoo``, stem stride halved by
``adapt_stem``) wrapped by timm's ``features_only`` for C3-C5, followed by torchvision's
``FeaturePyramidNetwork`` with ``LastLevelP6P7`` (P3-P7, no norm in the FPN, as
torchvision). With the halved stem the pyramid strides are 4, 8, 16, 32, 64 (not 8-128):
FCOS's points and size ranges (4 and 8 x stride) and RetinaNet's anchors (4 x stride,
3 scales x 3 ratios) follow the measured strides.

Backbone initialisation: random (scratch: He et al.'s MSRA init of every conv, timm's
BN init) or copied from a zoo network's state dict. Backbone normalisation: see NORMS.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn

from ..models.zoo import ARCHITECTURES, adapt_stem, count_parameters, create_model

__all__ = ["NORMS", "HEAD_NORMS", "DETECTORS", "build_detector", "count_parameters", "describe",
           "group_count", "pyramid_strides"]

# frozen_bn: statistics and affine frozen (torchvision FrozenBatchNorm2d, the usual fine-tuning
# setting); bn: trainable BatchNorm (per-device batch statistics); gn: GroupNorm(32);
# syncbn: BatchNorm synchronised across processes (needs torch.distributed).
NORMS = ("frozen_bn", "bn", "gn", "syncbn")
HEAD_NORMS = ("gn", "bn", "none")
DETECTORS = ("fcos", "retinanet")


def group_count(channels: int, groups: int = 32) -> int:
    """GroupNorm groups: 32 (Wu & He) or the largest divisor of `channels` below it."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _is_bn_act(m: nn.Module) -> bool:
    from timm.layers import BatchNormAct2d
    return isinstance(m, BatchNormAct2d)


def _replace(module: nn.Module, convert) -> int:
    """Replace, depth first, every child for which convert(child) returns a module; count them."""
    n = 0
    for name, child in module.named_children():
        new = convert(child)
        if new is not None:
            setattr(module, name, new)
            n += 1
        else:
            n += _replace(child, convert)
    return n


def _frozen(bn: nn.Module) -> nn.Module | None:
    """BatchNorm -> torchvision FrozenBatchNorm2d with the same statistics and affine."""
    if not _is_bn(bn):
        return None
    if _is_bn_act(bn):  # timm's BN+activation (MobileNet/EfficientNet/DenseNet): timm's frozen twin
        from timm.layers import freeze_batch_norm_2d
        return freeze_batch_norm_2d(bn)
    from torchvision.ops import FrozenBatchNorm2d
    out = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            out.weight.copy_(bn.weight)
            out.bias.copy_(bn.bias)
        if bn.track_running_stats:
            out.running_mean.copy_(bn.running_mean)
            out.running_var.copy_(bn.running_var)
    return out


def _group_norm(bn: nn.Module) -> nn.Module | None:
    """BatchNorm -> GroupNorm(32) carrying over the BN affine weight and bias (not the statistics)."""
    if not _is_bn(bn):
        return None
    c = bn.num_features
    if _is_bn_act(bn):
        from timm.layers import GroupNormAct
        out = GroupNormAct(c, num_groups=group_count(c), eps=bn.eps, affine=True)
        out.act, out.drop = bn.act, bn.drop
    else:
        out = nn.GroupNorm(group_count(c), c, eps=bn.eps, affine=True)
    if bn.affine:
        with torch.no_grad():
            out.weight.copy_(bn.weight)
            out.bias.copy_(bn.bias)
    return out


def apply_norm(backbone: nn.Module, norm: str) -> nn.Module:
    """Convert the BatchNorms of a (built and initialised) backbone to `norm` (one of NORMS)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
    has_bn = any(_is_bn(m) for m in backbone.modules())
    if not has_bn:
        if norm != "bn":
            raise ValueError(f"norm={norm!r}: this backbone has no BatchNorm to convert "
                             "(its own normalisation, e.g. ConvNeXt's LayerNorm, is kept; use norm='bn')")
        return backbone
    if norm == "bn":
        return backbone
    if norm == "frozen_bn":
        _replace(backbone, _frozen)
        return backbone
    if norm == "gn":
        _replace(backbone, _group_norm)
        return backbone
    # syncbn
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("norm='syncbn' needs an initialised torch.distributed process group "
                           "(launch with torchrun and call init_process_group first); "
                           "use 'bn' or 'gn' on a single process")
    if any(_is_bn_act(m) for m in backbone.modules()):
        from timm.layers import convert_sync_batchnorm  # keeps timm's fused activations
        return convert_sync_batchnorm(backbone)
    return nn.SyncBatchNorm.convert_sync_batchnorm(backbone)


def _msra_init(backbone: nn.Module) -> None:
    """He et al. 2015 init of every conv (fan_out, ReLU gain), as He et al. 2019 train from scratch."""
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _zoo_key(key: str, zoo_keys: set[str]) -> str:
    """Feature-extractor key -> zoo-network key (timm's FeatureListNet flattens 'stages.0' to 'stages_0')."""
    if key in zoo_keys:
        return key
    head, _, rest = key.partition(".")
    alt = head.replace("_", ".", 1) + ("." + rest if rest else "")
    return alt if alt in zoo_keys else key


def _load_pretrained(body: nn.Module, arch: str, pretrained: nn.Module | dict) -> None:
    """Copy a zoo network's weights into the feature extractor; raise listing every mismatch."""
    state = pretrained.state_dict() if isinstance(pretrained, nn.Module) else dict(pretrained)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved dicts
    reference = create_model(arch, num_classes=1).state_dict()  # the zoo layout of this arch
    zoo_keys = set(reference)
    mapping = {k: _zoo_key(k, zoo_keys) for k in body.state_dict()}
    used = set(mapping.values())
    missing = sorted(z for z in used if z not in state)
    unexpected = sorted(k for k in state if k not in zoo_keys)  # classifier-only keys are fine
    target = body.state_dict()
    shapes = sorted(f"{z}: {tuple(state[z].shape)} vs {tuple(target[k].shape)}"
                    for k, z in mapping.items() if z in state and state[z].shape != target[k].shape)
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:12]) + (f", ... ({len(xs)} in all)" if len(xs) > 12 else "")
        parts = [f"{name} ({len(xs)}): {show(xs)}" for name, xs in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if xs]
        raise ValueError(f"pre-trained weights do not fit the {arch} backbone (is it a zoo {arch} "
                         f"with the adapted stem?); " + "; ".join(parts))
    body.load_state_dict({k: state[z] for k, z in mapping.items()}, strict=True)


class ZooFPN(nn.Module):
    """C3-C5 of a zoo network (timm features_only) -> torchvision FPN + LastLevelP6P7 = P3-P7."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int, p6p7_from_c5: bool = False):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        self.body = body
        extra = LastLevelP6P7(in_channels[-1] if p6p7_from_c5 else out_channels, out_channels)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


@torch.no_grad()
def pyramid_strides(backbone: ZooFPN, probe: int = 128) -> list[int]:
    """Strides of P3-P7, measured on a probe input (timm's feature_info ignores adapt_stem)."""
    was = backbone.training
    backbone.eval()
    p = next(backbone.parameters())
    feats = backbone(torch.zeros(1, 3, probe, probe, device=p.device, dtype=p.dtype))
    backbone.train(was)
    return [probe // f.shape[-1] for f in feats.values()]


def _set_head_norm(head: nn.Module, head_norm: str) -> None:
    """torchvision FCOS's head has GroupNorm(32); swap for GN(divisor), BatchNorm2d or nothing."""
    if head_norm not in HEAD_NORMS:
        raise ValueError(f"unknown head_norm {head_norm!r}; choose one of {HEAD_NORMS}")

    def convert(m):
        if not isinstance(m, nn.GroupNorm):
            return None
        c = m.num_channels
        if head_norm == "gn":
            return nn.GroupNorm(group_count(c), c) if m.num_groups != group_count(c) else m
        return nn.BatchNorm2d(c) if head_norm == "bn" else nn.Identity()

    _replace(head, convert)


def _float_outputs(module, inputs, outputs):
    return {k: v.float() for k, v in outputs.items()}


def build_detector(arch: str = "resnet18", num_classes: int = 80, *, image_size: int, norm: str = "gn",
                   head_norm: str = "gn", pretrained: nn.Module | dict | None = None, fpn_channels: int = 128,
                   detector: str = "fcos", score_thresh: float | None = None) -> nn.Module:
    """torchvision FCOS (or RetinaNet) on a zoo ResNet-FPN, for square `image_size` inputs.

    norm (backbone): 'frozen_bn' | 'bn' | 'gn' | 'syncbn' (NORMS). With a pre-trained backbone,
    'gn' copies the BN affine weight/bias into GroupNorm and drops the BN statistics: this is
    *not* He et al.'s GN setting (their GN backbones were pre-trained with GN), only a GN
    initialised from BN weights. 'frozen_bn' from scratch is an un-normalised network with
    fixed unit affine (every gamma 1, timm's zero-init of the last gamma undone; He et al. 2019
    note that training from scratch needs GN or SyncBN). 'syncbn' requires an initialised
    torch.distributed group.
    head_norm: 'gn' (torchvision FCOS's default, GroupNorm 32), 'bn' (BatchNorm2d, statistics
    shared over pyramid levels) or 'none'. The FPN has no norm, as in torchvision.
    pretrained: a zoo network (``rethink.experiments.zoo.load_pretrained``) or its state dict;
    None trains from scratch with MSRA init.
    The transform does not resize (min_size = max_size = image_size) and normalises with the
    pre-trained network's statistics (its ``.info``, see ``rethink.experiments.load_network``),
    else Tiny ImageNet's (the zoo's pre-training set, ``rethink.data.registry.stats``), so
    scratch and pre-trained detectors see the same inputs; inputs are 0..1 float images.
    """
    import timm
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    from ..data.registry import stats

    info = getattr(pretrained, "info", None)
    MEAN, STD = (info.mean, info.std) if info is not None else stats("tiny-imagenet")

    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
    if head_norm not in HEAD_NORMS:
        raise ValueError(f"unknown head_norm {head_norm!r}; choose one of {HEAD_NORMS}")
    if norm == "syncbn":
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("norm='syncbn' needs an initialised torch.distributed process group "
                               "(launch with torchrun and call init_process_group first); "
                               "use 'bn' or 'gn' on a single process")
    spec = ARCHITECTURES[arch]
    body = timm.create_model(spec.timm_name, features_only=True, out_indices=(-3, -2, -1),
                             pretrained=False, **spec.kwargs)
    adapt_stem(body)  # same stem as the zoo networks, so their weights fit
    if pretrained is None:
        _msra_init(body)
        if norm == "frozen_bn":  # timm zero-inits each block's last BN gamma: frozen, it would stay 0
            for m in body.modules():
                if _is_bn(m) and m.affine:
                    nn.init.ones_(m.weight)
    else:
        _load_pretrained(body, arch, pretrained)
    in_channels = list(body.feature_info.channels())
    backbone = ZooFPN(body, in_channels, fpn_channels, p6p7_from_c5=False)
    strides = pyramid_strides(backbone, probe=max(128, image_size))
    backbone.body = apply_norm(body, norm)

    common = dict(min_size=image_size, max_size=image_size, image_mean=list(MEAN), image_std=list(STD),
                  _skip_resize=True)  # images arrive at image_size; training skips the resize
    if score_thresh is not None:
        common["score_thresh"] = score_thresh
    if detector == "fcos":
        from torchvision.models.detection.fcos import FCOSHead
        # one point per location; the anchor's size = its stride (FCOS's points and size ranges)
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = FCOSHead(fpn_channels, 1, num_classes)
        _set_head_norm(head, head_norm)
        model = FCOS(backbone, num_classes, anchor_generator=anchors, head=head, **common)
    else:
        from torchvision.models.detection.retinanet import RetinaNetHead
        # RetinaNet's anchors: base 4 x stride, 3 octave scales, 3 aspect ratios
        anchors = AnchorGenerator(tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3)))
                                        for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
        norm_layer = {"gn": partial(nn.GroupNorm, group_count(fpn_channels)), "bn": nn.BatchNorm2d,
                      "none": None}[head_norm]
        head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes,
                             norm_layer=norm_layer)
        model = RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, **common)
    # under bf16 autocast, hand the losses / box decoding fp32 head outputs (bf16 box coordinates
    # and GIoU lose pixels at 128-192 px); a no-op in fp32
    model.head.register_forward_hook(_float_outputs)
    model.image_size = image_size
    model.strides = strides
    model.config = {"arch": arch, "num_classes": num_classes, "image_size": image_size, "norm": norm,
                    "head_norm": head_norm, "pretrained": pretrained is not None,
                    "fpn_channels": fpn_channels, "detector": detector}
    return model


def describe(model: nn.Module) -> str:
    """One line: detector, arch, norms, init, strides, parameters."""
    c = getattr(model, "config", {})
    return (f"{c.get('detector', type(model).__name__)} {c.get('arch', '?')} "
            f"{'pretrained' if c.get('pretrained') else 'scratch'} norm={c.get('norm')} "
            f"head={c.get('head_norm')} fpn={c.get('fpn_channels')} strides={getattr(model, 'strides', '?')} "
            f"{count_parameters(model) / 1e6:.2f}M params")
