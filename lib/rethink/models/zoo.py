"""The model zoo: ImageNet architectures from timm, stems adapted to small images.

Kornblith et al. retrain every architecture under one recipe; here each entry is a
timm architecture whose stem is made less aggressive so that a 64px input keeps a
total stride of 16 instead of 32 (final feature map 4x4 instead of 2x2).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    name: str          # book name
    timm_name: str     # timm.create_model name
    family: str
    kwargs: dict = field(default_factory=dict)


# Ordered roughly by capacity.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    Architecture("mobilenetv3_small", "mobilenetv3_small_100", "MobileNetV3"),
    Architecture("mobilenetv2", "mobilenetv2_100", "MobileNetV2"),
    Architecture("convnext_atto", "convnext_atto", "ConvNeXt"),
    Architecture("efficientnet_b0", "efficientnet_b0", "EfficientNet"),
    Architecture("resnet10t", "resnet10t", "ResNet"),
    Architecture("densenet121", "densenet121", "DenseNet"),
    Architecture("resnet18", "resnet18", "ResNet"),
    Architecture("resnet34", "resnet34", "ResNet"),
    Architecture("resnet50", "resnet50", "ResNet"),
    Architecture("wide_resnet50", "wide_resnet50_2", "ResNet"),
]}


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, child = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, child, module
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt")


def adapt_stem(model: nn.Module) -> nn.Module:
    """Halve the stem's stride: 7x7/2 -> 3x3/1, 3x3/2 -> 3x3/1, patchify 4/4 -> 2/2.

    Deep-stem ResNets (resnet10t) have a 3x3/2 first conv; the same rule applies.
    """
    parent, child, conv = _first_conv(model)
    k, s = conv.kernel_size[0], conv.stride[0]
    if s == 4:  # ConvNeXt patchify stem
        new_k, new_s, pad = 2, 2, 0
    elif s == 2:
        new_k, new_s, pad = 3, 1, 1
    else:
        raise ValueError(f"unexpected stem conv kernel={k} stride={s}")
    new = nn.Conv2d(conv.in_channels, conv.out_channels, new_k, new_s, pad,
                    bias=conv.bias is not None)
    setattr(parent, child, new)
    return model


def remove_bn_scale(model: nn.Module) -> nn.Module:
    """Kornblith's 'no BN scale' regularizer: every BatchNorm gamma fixed at 1."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no affine BatchNorm: 'no BN scale' would "
                         "change nothing (choose a BatchNorm network as variant_arch)")
    for m in norms:
        with torch.no_grad():
            m.weight.fill_(1.0)
        m.weight.requires_grad_(False)
    return model


def create_model(arch: str, num_classes: int, *, dropout: float = 0.0,
                 drop_path: float = 0.0, bn_scale: bool = True,
                 small_input: bool = True) -> nn.Module:
    """Build a zoo architecture with random init."""
    import timm

    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    kwargs = dict(spec.kwargs, num_classes=num_classes, drop_rate=dropout, pretrained=False)
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    model = timm.create_model(spec.timm_name, **kwargs)
    if small_input:
        adapt_stem(model)
    if not bn_scale:
        remove_bn_scale(model)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int, channels: int = 3) -> int:
    """Forward FLOPs (multiply-add = 2 FLOPs) of one image, via torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, channels, image_size, image_size,
                    device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features before the classifier (timm's forward_head(pre_logits=True))."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
