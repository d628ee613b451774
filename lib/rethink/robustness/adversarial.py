"""Gradient attacks in pixel space: FGSM (Goodfellow et al. 2015) and L-inf PGD (Madry et al. 2018).

Images are attacked in [0, 1] pixel units (epsilon in 1/255 steps, as the papers quote
it); normalisation happens inside the attacked function, so the budget is the same
for every model. The model is in eval mode (no dropout, BN running statistics) and the
attack runs in float32.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Normalized(nn.Module):
    """model(normalize(x)) for x in [0, 1]."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """x + eps * sign(grad_x loss), clipped to [0, 1]."""
    if eps == 0:
        return x.clone()
    return (x + eps * _input_gradient(model, x, y).sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        step_size: float | None = None, *, random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` signed-gradient steps of ``step_size`` (default 2.5 eps / steps), each
    projected back onto the eps-ball around x and onto [0, 1]."""
    if eps == 0 or steps == 0:
        return x.clone()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adv = (x + (2 * noise - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv + step_size * _input_gradient(model, adv, y).sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1).detach()
    return adv


def attack_accuracy(model: nn.Module, images, labels, epsilons, *, mean, std, attack: str = "fgsm",
                    steps: int = 10, seed: int = 0, device: torch.device | str = "cpu",
                    batch_size: int = 500) -> dict[float, float]:
    """Top-1 accuracy under ``attack`` ("fgsm" or "pgd") at each epsilon (pixel units, 0..1)."""
    if attack not in ("fgsm", "pgd"):
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
    device = torch.device(device)
    was_training = model.training
    wrapped = Normalized(model, mean, std).to(device).eval()
    generator = torch.Generator(device=device)
    correct = {float(e): 0 for e in epsilons}
    labels = torch.as_tensor(np.asarray(labels))
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(np.asarray(images[start:start + batch_size])).to(device).float() / 255
        y = labels[start:start + batch_size].to(device)
        for eps in correct:
            generator.manual_seed(seed + start)
            adv = (fgsm(wrapped, x, y, eps) if attack == "fgsm" else
                   pgd(wrapped, x, y, eps, steps, generator=generator))
            with torch.no_grad():
                correct[eps] += int((wrapped(adv).argmax(1) == y).sum())
    model.train(was_training)
    return {e: c / len(labels) for e, c in correct.items()}
