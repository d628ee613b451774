"""CIFAR-sized ResNets for the self-training chapters: teachers and their students.

Noisy Student grows the network between iterations (EfficientNet-B7 -> L2); here the
family is timm's ResNet with a CIFAR stem (3x3 stride-1 conv, no max-pool: 32px ->
4x4 final map) at two depths and three widths. The two kinds of model noise of the
paper are ``dropout`` before the classifier and ``drop_path``, stochastic depth by Huang et
al.'s (2016) linear decay rule: block l of L is dropped with probability ``drop_path * l / L``
(l = 1..L), so the survival is 1 - drop_path at the last block (the paper's 0.8) and
1 - drop_path / L at the first (timm's own rule starts at 0).
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class CifarResNet:
    name: str
    layers: tuple[int, int, int, int]   # BasicBlocks per stage
    widths: tuple[int, int, int, int]   # channels per stage

    @property
    def depth(self) -> int:
        return 2 * sum(self.layers) + 2


# Ordered by capacity. resnet18_w64 is the standard CIFAR ResNet-18 (11M parameters).
CIFAR_ARCHITECTURES: dict[str, CifarResNet] = {a.name: a for a in [
    CifarResNet("resnet10_w16", (1, 1, 1, 1), (16, 32, 64, 128)),
    CifarResNet("resnet10_w32", (1, 1, 1, 1), (32, 64, 128, 256)),
    CifarResNet("resnet18_w32", (2, 2, 2, 2), (32, 64, 128, 256)),
    CifarResNet("resnet18_w64", (2, 2, 2, 2), (64, 128, 256, 512)),
    CifarResNet("resnet26_w64", (3, 3, 3, 3), (64, 128, 256, 512)),
]}


def capacity_rank(arch: str) -> int:
    """Position in CIFAR_ARCHITECTURES (a larger rank is a larger network)."""
    return list(CIFAR_ARCHITECTURES).index(check_arch(arch))


def check_arch(arch: str) -> str:
    if arch not in CIFAR_ARCHITECTURES:
        raise KeyError(f"unknown CIFAR architecture {arch!r}; choose one of {list(CIFAR_ARCHITECTURES)}")
    return arch


def create_cifar_model(arch: str, num_classes: int = 10, *, dropout: float = 0.0,
                       drop_path: float = 0.0) -> nn.Module:
    """A CIFAR ResNet with random init; ``dropout`` and ``drop_path`` are the model noise."""
    from timm.models.resnet import BasicBlock, ResNet

    spec = CIFAR_ARCHITECTURES[check_arch(arch)]
    if not 0 <= dropout < 1 or not 0 <= drop_path < 1:
        raise ValueError(f"dropout ({dropout}) and drop_path ({drop_path}) must be in [0, 1)")
    # a 'deep' stem of width w/2 makes timm size the stem output (and bn1, layer1) at w ...
    model = ResNet(BasicBlock, list(spec.layers), num_classes=num_classes, channels=spec.widths,
                   stem_type="deep", stem_width=spec.widths[0] // 2, drop_rate=dropout,
                   drop_path_rate=drop_path)
    # ... which is then replaced by the CIFAR stem: one 3x3 stride-1 conv, no max-pool
    model.conv1 = nn.Conv2d(3, spec.widths[0], 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    if drop_path > 0:   # Huang et al.'s rule: l / L, l = 1..L (timm's: (l - 1) / (L - 1))
        from timm.layers import DropPath
        from timm.models.resnet import BasicBlock

        blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
        for l, block in enumerate(blocks, start=1):
            block.drop_path = DropPath(drop_path * l / len(blocks))
    return model


def drop_path_rates(model: nn.Module) -> list[float]:
    """Drop probability of each residual block, input to output (0 where there is none)."""
    from timm.layers import DropPath
    from timm.models.resnet import BasicBlock, Bottleneck

    rates = []
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            dp = m.drop_path
            rates.append(float(dp.drop_prob) if isinstance(dp, DropPath) else 0.0)
    return rates
