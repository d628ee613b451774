"""SimCLR (Chen et al. 2020, arXiv 2002.05709) on unlabeled images, for Zoph et al.'s "SimCLR Init".

* :func:`nt_xent`: the paper's NT-Xent loss (its Algorithm 1 / Eq. 1): for 2N views z,
  l(i, j) = -log exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau), sim the
  cosine similarity, averaged over all 2N (anchor, positive) pairs. tests/test_simclr.py checks
  it against a literal double loop over pairs and its closed-form values.
* :class:`SimCLRAugment`: the two-view augmentation, batched on the device with per-sample
  parameters drawn from a CPU generator: random resized crop (scale (0.08, 1), ratio (3/4, 4/3),
  torchvision's sampling: 10 tries, then a centre crop), horizontal flip (p 0.5), colour
  jitter (p 0.8; brightness, contrast, saturation 0.8 s, hue 0.2 s, in a random order per
  image, as torchvision's ColorJitter), grayscale (p 0.2), Gaussian blur (optional). Each op
  is tested against torchvision v2 applied image by image.
  Choices: s = 0.5 and no blur by default, the paper's CIFAR-10 setting (its Appendix B.9:
  "we use ... color distortion strength 0.5" and no blur on 32 px images); at 64 px Tiny
  ImageNet is closer to CIFAR than to 224 px ImageNet (s = 1, blur p 0.5 with a kernel of
  10% of the side). ``blur_prob`` turns the blur on. The resize is bilinear without
  antialiasing (torchvision's resized_crop antialiases, which only matters when a crop is
  larger than the output).
* :class:`ProjectionHead`: g(h) = W2 ReLU(W1 h) with a 128-d output (the paper's Sec. 2.1);
  ``batch_norm=True`` (default) adds BatchNorm after W1 as the official TF code does
  (recalled, not re-read for this module).
* :func:`pretrain_simclr`: the training loop on a zoo backbone (``rethink.models.zoo``);
  SGD with momentum, linear warmup then cosine decay. The paper uses LARS (lr 0.3 x B / 256,
  weight decay 1e-6); torch has no LARS, so plain SGD with a CIFAR-style lr and weight decay
  is the (unverified for this setting) substitute. BatchNorm statistics over the 2N views of
  a step, as the paper (one device here).
* :func:`linear_probe`: logistic regression on frozen features (``rethink.transfer``).

Determinism: every draw of epoch k (order, augmentation) comes from a CPU generator seeded by
``epoch_seed(seed, k)``; on the CPU two runs with the same seed give the same weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.zoo import penultimate_features
from ..train.loop import epoch_seed

__all__ = ["nt_xent", "SimCLRAugment", "SimCLRParams", "ProjectionHead", "pretrain_simclr", "linear_probe"]

MEAN = (0.480, 0.448, 0.398)   # the zoo's Tiny ImageNet statistics (rethink.experiments.zoo)
STD = (0.277, 0.269, 0.282)


# ------------------------------------------------------------------ loss


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent of N positive pairs (z1[i], z2[i]): mean over the 2N anchors (float32)."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be N x D, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))  # k != i
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


# ------------------------------------------------------------------ augmentation


@dataclass(frozen=True)
class SimCLRParams:
    """Per-sample parameters: crop ``top, left, height, width`` (int64), ``flip``, ``jitter``
    (apply), ``brightness, contrast, saturation, hue`` (factors), ``order`` (N, 4) permutation of
    (brightness, contrast, saturation, hue), ``gray``, ``blur`` (apply), ``sigma``."""
    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip: Tensor
    jitter: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor

    def _map(self, fn) -> "SimCLRParams":
        return SimCLRParams(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device) -> "SimCLRParams":
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index) -> "SimCLRParams":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    def __len__(self) -> int:
        return self.flip.shape[0]


def _gray(x: Tensor) -> Tensor:
    """torchvision's rgb_to_grayscale of float images, (N, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    sector = i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)
    r = torch.stack([v, q, p, p, t, v], 1)
    g = torch.stack([t, v, v, q, p, p], 1)
    b = torch.stack([p, p, t, v, v, q], 1)
    return torch.stack([(sector * c).sum(1) for c in (r, g, b)], 1)


def _jitter_op(k: int, x: Tensor, p: SimCLRParams) -> Tensor:
    """One of torchvision's float colour adjustments (0 brightness, 1 contrast, 2 saturation, 3 hue)."""
    n = x.shape[0]
    if k == 0:
        return (x * p.brightness.view(n, 1, 1, 1)).clamp(0, 1)
    if k == 1:
        f = p.contrast.view(n, 1, 1, 1)
        mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)
    if k == 2:
        f = p.saturation.view(n, 1, 1, 1)
        return (f * x + (1 - f) * _gray(x)).clamp(0, 1)
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + p.hue.view(n, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], 1))


def _gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """torchvision's gaussian_blur (reflect padding) with a per-sample sigma: one grouped conv."""
    n, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    k = k / k.sum(1, keepdim=True)  # (N, k)
    pad = kernel_size // 2
    y = F.pad(x, [pad, pad, pad, pad], mode="reflect").reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    kx = k.repeat_interleave(c, 0).view(n * c, 1, 1, kernel_size)
    ky = k.repeat_interleave(c, 0).view(n * c, 1, kernel_size, 1)
    y = F.conv2d(F.conv2d(y, kx, groups=n * c), ky, groups=n * c)
    return y.view(n, c, h, w)


class SimCLRAugment:
    """SimCLR's view augmentation for uint8 (or 0..1 float) N x 3 x H x W batches; returns float 0..1 views.

    Args:
        size: output side (default: the input's).
        scale, ratio: RandomResizedCrop's area fraction and aspect-ratio ranges.
        flip_prob, jitter_prob, gray_prob, blur_prob: probabilities of each op.
        strength: the colour distortion strength s (brightness, contrast, saturation 0.8 s;
            hue 0.2 s).
        blur_sigma: sigma range of the blur; blur_kernel: its odd kernel size (default: the
            odd integer nearest 10% of the side, at least 3).
    """

    def __init__(self, size: int | None = None, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_prob: float = 0.5,
                 jitter_prob: float = 0.8, strength: float = 0.5, gray_prob: float = 0.2, blur_prob: float = 0.0,
                 blur_sigma=(0.1, 2.0), blur_kernel: int | None = None):
        self.size = size
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.flip_prob, self.jitter_prob, self.gray_prob, self.blur_prob = flip_prob, jitter_prob, gray_prob, blur_prob
        self.strength = strength
        self.blur_sigma = tuple(blur_sigma)
        self.blur_kernel = blur_kernel

    def __repr__(self) -> str:
        return (f"SimCLRAugment(size={self.size}, scale={self.scale}, strength={self.strength}, "
                f"jitter_prob={self.jitter_prob}, gray_prob={self.gray_prob}, blur_prob={self.blur_prob})")

    def sample_params(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> SimCLRParams:
        """Per-sample parameters on the CPU (torchvision's RandomResizedCrop.get_params, vectorised)."""
        g = generator
        area = height * width
        tries = 10
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(n, tries, generator=g))
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * torch.rand(n, tries, generator=g))
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        u_top, u_left = torch.rand(n, tries, generator=g), torch.rand(n, tries, generator=g)
        first = ok.int().argmax(1, keepdim=True)  # the first successful try
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
        top = torch.floor(u_top.gather(1, first).squeeze(1) * (height - h + 1))
        left = torch.floor(u_left.gather(1, first).squeeze(1) * (width - w + 1))
        # fallback: centre crop at the clamped aspect ratio
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            fw, fh = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            fw, fh = round(height * max(self.ratio)), height
        else:
            fw, fh = width, height
        any_ok = ok.any(1)
        h = torch.where(any_ok, h, torch.tensor(float(fh)))
        w = torch.where(any_ok, w, torch.tensor(float(fw)))
        top = torch.where(any_ok, top, torch.tensor(float((height - fh) // 2)))
        left = torch.where(any_ok, left, torch.tensor(float((width - fw) // 2)))
        flip = torch.rand(n, generator=g) < self.flip_prob
        jitter = torch.rand(n, generator=g) < self.jitter_prob
        s = self.strength

        def factor(amount):
            a, b = max(0.0, 1 - amount), 1 + amount
            return a + (b - a) * torch.rand(n, generator=g)

        brightness, contrast, saturation = factor(0.8 * s), factor(0.8 * s), factor(0.8 * s)
        hue = 0.2 * s * (2 * torch.rand(n, generator=g) - 1)
        order = torch.rand(n, 4, generator=g).argsort(1)
        gray = torch.rand(n, generator=g) < self.gray_prob
        blur = torch.rand(n, generator=g) < self.blur_prob
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * torch.rand(n, generator=g)
        return SimCLRParams(top=top.long(), left=left.long(), height=h.long(), width=w.long(), flip=flip,
                            jitter=jitter, brightness=brightness, contrast=contrast, saturation=saturation,
                            hue=hue, order=order, gray=gray, blur=blur, sigma=sigma)

    def kernel_size(self, size: int) -> int:
        if self.blur_kernel is not None:
            return self.blur_kernel
        k = max(3, int(round(0.1 * size)))
        return k if k % 2 else k + 1

    def apply(self, images: Tensor, params: SimCLRParams) -> Tensor:
        """The views of `images` under `params` (float32 0..1, on the images' device)."""
        n, _, height, width = images.shape
        size = self.size or width
        p = params.to(images.device)
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = self._resized_crop(x, p, size)
        if bool(params.jitter.any()):
            y = x
            for t in range(4):
                step = p.order[:, t]
                y = sum(torch.where((step == k).view(n, 1, 1, 1), _jitter_op(k, y, p), 0) for k in range(4))
            x = torch.where(p.jitter.view(n, 1, 1, 1), y, x)
        if bool(params.gray.any()):
            x = torch.where(p.gray.view(n, 1, 1, 1), _gray(x).expand_as(x), x)
        if bool(params.blur.any()):
            x = torch.where(p.blur.view(n, 1, 1, 1), _gaussian_blur(x, p.sigma, self.kernel_size(size)), x)
        return x

    @staticmethod
    def _resized_crop(x: Tensor, p: SimCLRParams, size: int) -> Tensor:
        """Crop then bilinear resize (torchvision's interpolate, align_corners=False) then flip: one grid_sample."""
        n, _, height, width = x.shape
        u = torch.arange(size, device=x.device, dtype=torch.float32)

        def source(offset, length, full, flip=None):
            pos = u.view(1, -1).expand(n, -1)
            if flip is not None:
                pos = torch.where(flip.view(n, 1), size - 1 - pos, pos)
            src = ((pos + 0.5) * (length.view(n, 1).float() / size) - 0.5).clamp(min=0)
            src = torch.minimum(src, length.view(n, 1).float() - 1) + offset.view(n, 1).float()
            return (2 * src + 1) / full - 1  # pixel-centre index -> [-1, 1]

        gx = source(p.left, p.width, width, p.flip)
        gy = source(p.top, p.height, height)
        grid = torch.stack([gx.view(n, 1, size).expand(n, size, size), gy.view(n, size, 1).expand(n, size, size)], -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, _, h, w = images.shape
        return self.apply(images, self.sample_params(n, h, w, generator))

    def two_views(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two independently augmented views of each image (the first view's draws come first)."""
        return self(images, generator), self(images, generator)


# ------------------------------------------------------------------ model


class ProjectionHead(nn.Module):
    """g(h) = W2 ReLU(BN(W1 h)) (BN optional): SimCLR's MLP projection head."""

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128, batch_norm: bool = True):
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


def _feature_dim(backbone: nn.Module) -> int:
    dim = getattr(backbone, "num_features", None)
    if dim is None:
        raise ValueError("the backbone must expose num_features (a timm / zoo model)")
    return int(dim)


def _normalize(x: Tensor, mean, std) -> Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def pretrain_simclr(backbone: nn.Module, images_uint8, *, epochs: int | None = None, steps: int | None = None,
                    batch_size: int = 256, lr: float = 0.5, momentum: float = 0.9, weight_decay: float = 5e-4,
                    temperature: float = 0.5, warmup_fraction: float = 0.1, device=None, seed: int = 0,
                    augment: SimCLRAugment | None = None, head: nn.Module | None = None, proj_dim: int = 128,
                    mean: Sequence[float] = MEAN, std: Sequence[float] = STD, verbose: bool = False):
    """Train `backbone` (a zoo network; its pooled pre-classifier features) with SimCLR on unlabeled images.

    images_uint8: N x 3 x H x W uint8 (numpy or tensor), moved to the device once. Give
    `epochs` (steps = epochs x (N // batch_size)) or `steps` (the data order still reshuffles
    every N // batch_size steps). lr: peak of a linear warmup (warmup_fraction of the steps)
    then cosine decay to 0. Returns ``(backbone, history)``: history has the per-step
    ``loss`` and ``lr`` lists, ``steps``, ``train_time_s`` and ``images_per_s``; the trained
    projection head is ``history["head"]``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    images = torch.as_tensor(np.asarray(images_uint8)).to(device)
    n = len(images)
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"{n} images are fewer than one batch of {batch_size}")
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    total = steps if steps is not None else epochs * per_epoch
    augment = augment or SimCLRAugment()
    backbone = backbone.to(device)
    head = (head or ProjectionHead(_feature_dim(backbone), out_dim=proj_dim)).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        backbone = backbone.to(memory_format=torch.channels_last)
    params = [p for m in (backbone, head) for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=momentum,
                                **({"fused": True} if cuda else {"foreach": True}))
    warmup = max(1, round(warmup_fraction * total)) if warmup_fraction > 0 else 0
    backbone.train()
    head.train()
    losses, lrs = [], []
    g = None
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step in range(total):
        if step % per_epoch == 0:
            epoch = step // per_epoch
            torch.manual_seed(epoch_seed(seed, epoch))  # dropout / drop-path, if any
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            order = torch.randperm(n, generator=g).to(device)
        b = step % per_epoch
        f = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * f
        x = images.index_select(0, order[b * batch_size:(b + 1) * batch_size])
        v1, v2 = augment.two_views(x, g)
        v = _normalize(torch.cat([v1, v2]), mean, std)
        if cuda:
            v = v.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            z = head(penultimate_features(backbone, v))
        z1, z2 = z.float().chunk(2)
        loss = nt_xent(z1, z2, temperature)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        lrs.append(lr * f)
        if verbose and (step + 1) % max(1, per_epoch) == 0:
            print(f"simclr step {step + 1}/{total}  loss {loss.item():.4f}", flush=True)
    if cuda:
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    history = {"loss": torch.stack(losses).tolist() if losses else [], "lr": lrs, "steps": total,
               "train_time_s": dt, "images_per_s": total * batch_size / dt if dt else float("nan"), "head": head}
    return backbone, history


def linear_probe(backbone: nn.Module, train, test, *, l2: float | None = None, grid: Sequence[float] | None = None,
                 val_fraction: float = 0.2, mean: Sequence[float] = MEAN, std: Sequence[float] = STD, device=None,
                 batch_size: int = 512, seed: int = 0) -> dict:
    """Linear evaluation: multinomial logistic regression on frozen pooled features.

    train, test: (uint8 images N x 3 x H x W, labels). Features: ``rethink.transfer.features.
    extract_features`` (eval mode). With `l2` (the mean-loss penalty of ``fit_logistic``) one fit
    on standardised train features; otherwise Kornblith's protocol, ``rethink.transfer.logistic.
    fit_transfer``, choosing the penalty on a random `val_fraction` of train (over `grid`,
    default 9 log-spaced values in [1e-3, 1e5]) and refitting on all of train. Returns
    {"test_top1", "l2", "num_features", "val_top1" (None with a given l2)}.
    """
    from ..transfer.features import extract_features
    from ..transfer.logistic import accuracy, fit_logistic, fit_transfer, penalty_grid, predict, standardize

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    (xtr, ytr), (xte, yte) = train, test
    xtr, xte = (x.cpu().numpy() if isinstance(x, Tensor) else x for x in (xtr, xte))  # eval_batches slices arrays
    ftr = extract_features(backbone, xtr, mean=mean, std=std, device=device, batch_size=batch_size)
    fte = extract_features(backbone, xte, mean=mean, std=std, device=device, batch_size=batch_size)
    ytr = torch.as_tensor(np.asarray(ytr)).long().to(device)
    yte = torch.as_tensor(np.asarray(yte)).long().to(device)
    k = int(max(ytr.max(), yte.max())) + 1
    if l2 is not None:
        a, b = standardize(ftr.double(), fte.double())
        W, bias = fit_logistic(a, ytr, k, l2)
        return {"test_top1": accuracy(predict(b, W, bias), yte), "l2": float(l2), "num_features": ftr.shape[1],
                "val_top1": None}
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(seed)).to(device)
    n_val = max(1, int(round(val_fraction * len(ytr))))
    va, fit = perm[:n_val], perm[n_val:]
    res = fit_transfer(ftr[fit], ytr[fit], ftr[va], ytr[va], fte, yte, k,
                       grid=list(grid) if grid is not None else penalty_grid(9, 1e-3, 1e5))
    return {"test_top1": res.test_score, "l2": res.l2, "num_features": ftr.shape[1], "val_top1": res.val_score}
