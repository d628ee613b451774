"""The airbench94 network: an 8-layer convnet with a frozen patch-whitening first layer.

Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv:2404.00498 (2024);
code at https://github.com/KellerJordan/cifar10-airbench. Written here from the paper's
description in plain torch; the layer layout and constants are the paper's (airbench94).

Architecture (CIFAR-10, 3 x 32 x 32 input)::

    whiten   Conv2d(3, 24, 2x2, no padding, bias)  -- weights frozen, set by `whiten_init_`
    GELU
    block x3 (widths 64, 256, 256):
        Conv3x3(no bias) -> MaxPool2 -> BN -> GELU -> Conv3x3(no bias) -> BN -> GELU
    MaxPool2d(3) -> flatten -> Linear(256, 10, no bias) -> x 1/9

* The first layer is a *patch-whitening* convolution (after Page 2018 / hlb-CIFAR10): its
  12 filters are the eigenvectors of the 2x2-patch second-moment matrix of training images,
  each divided by sqrt(eigenvalue + eps), followed by their negatives (24 filters), so that
  a GELU after it sees both signs. The weights stay frozen; only its bias trains (for the
  first epochs, see `rethink.train.speedrun`).
* Other convs use partial identity ("dirac") initialisation: of the `out` filters, the
  first `in` are identity maps on the input channels (an implicit residual).
* BatchNorm has no trainable scale (weight fixed at 1; only the bias trains), eps 1e-12 and
  a fast running-statistics momentum (the paper's 0.6 decay = torch momentum 0.4).
* The logits are scaled down by 1/9.

The network has 1,972,792 parameters (1,971,352 trainable), as the released airbench94
network definition; its forward pass is 118.1M multiply-adds per image, which over 9.9
epochs of 50k images (forward + backward = 3x) plus 6-view TTA of the 10k test images gives
the 0.36 PFLOPs per run the paper reports (both checked in tests/test_airbench.py).

Test-time augmentation (`TTA`): the paper's levels 0 (none), 1 (average with the mirror
image) and 2 (also average over one-pixel reflect-padded translations up-left and
down-right, each with its mirror; weights 1/2 for the untranslated pair, 1/4 for each
translated pair -- 6 forward passes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "AirbenchNet", "airbench94", "whiten_init_",
           "whitening_weights", "patches", "TTA"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose affine weight is fixed at 1; only the bias trains."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvBlock(nn.Module):
    """conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float = 0.4):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(c_out, bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = FrozenScaleBatchNorm(c_out, bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


def _dirac_partial_(conv: nn.Conv2d) -> None:
    """Default (kaiming-uniform) init, then the first `in_channels` filters set to identity."""
    conv.reset_parameters()
    with torch.no_grad():
        w = conv.weight
        n = min(w.shape[0], w.shape[1])
        nn.init.dirac_(w[:n])


class AirbenchNet(nn.Module):
    """The airbench94 convnet (see module docstring).

    Args:
        widths: output channels of the three blocks (paper: 64, 256, 256).
        num_classes: logits.
        whiten_kernel: patch size of the whitening conv (paper: 2 -> 2*3*2*2 = 24 filters).
        bn_momentum: torch-convention BatchNorm momentum (paper's 0.6 decay -> 0.4).
        logit_scale: multiplier of the head's output (paper: 1/9).
    """

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10,
                 whiten_kernel: int = 2, bn_momentum: float = 0.4, logit_scale: float = 1 / 9):
        super().__init__()
        k = whiten_kernel
        self.whiten = nn.Conv2d(3, 2 * 3 * k * k, k, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        chans = (self.whiten.out_channels, *widths)
        self.blocks = nn.Sequential(*[ConvBlock(chans[i], chans[i + 1], bn_momentum) for i in range(3)])
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh initialisation (uses the global torch RNG). The whitening weights are zeroed:
        call `whiten_init_` with training images before training."""
        with torch.no_grad():
            self.whiten.weight.zero_()
            self.whiten.bias.zero_()
        for m in self.modules():
            if isinstance(m, ConvBlock):
                _dirac_partial_(m.conv1)
                _dirac_partial_(m.conv2)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, running stats reset
                m.weight.requires_grad_(False)
        self.head.reset_parameters()

    def norm_biases(self) -> list[nn.Parameter]:
        """The BatchNorm biases (the parameters whose lr the paper scales up by 64)."""
        return [m.bias for m in self.modules() if isinstance(m, nn.BatchNorm2d)]

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.act(self.whiten(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.head(x) * self.logit_scale


def airbench94(num_classes: int = 10) -> AirbenchNet:
    """The paper's network (widths 64/256/256), whitening not yet initialised."""
    return AirbenchNet((64, 256, 256), num_classes)


# ------------------------------------------------------------------ patch whitening

def patches(images: Tensor, kernel: int) -> Tensor:
    """All `kernel x kernel` patches (stride 1, no padding) as rows (N*L, C*k*k), float32.

    Column order is (channel, row, col) -- the order of `conv.weight.view(out, -1)`.
    """
    cols = F.unfold(images.float(), kernel)          # (N, C*k*k, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _as_normalized(images: Tensor, mean, std) -> Tensor:
    if images.dtype == torch.uint8:
        m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - m) / s
    return images.float()


@torch.no_grad()
def whitening_weights(images: Tensor, kernel: int = 2, eps: float = 5e-4, center: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """(filters, mean): whitening filters (D, C, k, k), D = C*k*k, largest eigenvalue first.

    With `S` the patches' second-moment matrix (`center=False`, the paper's choice) or
    covariance (`center=True`), `S = V diag(lam) V^T`, the filters are the rows of
    `diag(1/sqrt(lam + eps)) V^T`: the filter outputs over the patches have second-moment
    (or covariance) matrix `diag(lam / (lam + eps))` -- the identity up to `eps`.
    `mean` is the patch mean (zeros when `center=False`).
    """
    p = patches(images, kernel)
    n, d = p.shape
    mean = p.mean(0) if center else torch.zeros(d, device=p.device)
    if center:
        p = p - mean
    cov = (p.T @ p).double() / n
    lam, vec = torch.linalg.eigh(cov)                 # ascending
    lam, vec = lam.flip(0), vec.flip(1)               # largest first
    filters = (vec.T / torch.sqrt(lam.clamp_min(0) + eps)[:, None]).float()
    c = images.shape[1]
    return filters.view(d, c, kernel, kernel), mean.float()


@torch.no_grad()
def whiten_init_(model: nn.Module, images: Tensor, *, eps: float = 5e-4, center: bool = False,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD) -> nn.Module:
    """Set the frozen whitening conv of `model` (an `AirbenchNet` or the conv itself) from images.

    `images`: N x 3 x H x W, uint8 (normalised here with `mean`/`std`, which must match the
    training loader's) or float already normalised. The paper uses the first 5000
    training images. Weights become `[W; -W]` (see `whitening_weights`); the bias is zeroed
    (`center=False`) or set so that the first half's outputs have zero mean over the patches
    (`center=True`). Returns `model`.
    """
    conv = model.whiten if hasattr(model, "whiten") else model
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected an AirbenchNet or a Conv2d, got {type(model).__name__}")
    k = conv.kernel_size[0]
    d = conv.in_channels * k * k
    if conv.out_channels != 2 * d:
        raise ValueError(f"whitening conv needs 2 * C*k*k = {2 * d} filters, has {conv.out_channels}")
    x = _as_normalized(images.to(conv.weight.device), mean, std)
    w, mu = whitening_weights(x, k, eps, center)
    conv.weight.copy_(torch.cat([w, -w]).to(conv.weight))
    if conv.bias is not None:
        b = -(w.view(d, -1) @ mu)
        conv.bias.copy_(torch.cat([b, -b]).to(conv.bias))
    conv.weight.requires_grad_(False)
    return model


# ------------------------------------------------------------------ test-time augmentation

class TTA(nn.Module):
    """Average a model's logits over mirrored and translated views (the paper's TTA levels).

    level 0: model(x). level 1: (model(x) + model(flip(x))) / 2. level 2: 1/2 of level 1 on
    x, plus 1/4 of level 1 on each of x translated by `translate` pixels up-left and
    down-right (reflect padding). Usable anywhere a model is, e.g.
    `rethink.train.loop.evaluate(TTA(net, 2), loader, device)`.
    """

    def __init__(self, model: nn.Module, level: int = 2, translate: int = 1):
        super().__init__()
        if level not in (0, 1, 2):
            raise ValueError(f"TTA level must be 0, 1 or 2, got {level}")
        self.model, self.level, self.translate = model, level, translate

    def _mirror(self, x: Tensor) -> Tensor:
        return 0.5 * self.model(x) + 0.5 * self.model(x.flip(-1))

    def forward(self, x: Tensor) -> Tensor:
        if self.level == 0:
            return self.model(x)
        logits = self._mirror(x)
        if self.level == 1:
            return logits
        t = self.translate
        h, w = x.shape[-2:]
        padded = F.pad(x, (t, t, t, t), mode="reflect")
        top_left = padded[..., :h, :w]                          # content moved t px down-right
        bottom_right = padded[..., 2 * t:2 * t + h, 2 * t:2 * t + w]  # content moved t px up-left
        shifted = 0.5 * self._mirror(top_left) + 0.5 * self._mirror(bottom_right)
        return 0.5 * logits + 0.5 * shifted
