"""Batched inference over uint8 images: eval mode, normalised on the device, bf16 on CUDA."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..augment import normalize


@torch.no_grad()
def eval_batches(model: nn.Module, images, fn, *, mean, std, device: torch.device,
                 batch_size: int, empty: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """fn(model, x) over normalised batches of uint8 images in eval mode (bf16 on CUDA),
    concatenated; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        part = images[start:start + batch_size]
        # a copy: memory-mapped arrays are read-only (a tensor is sliced as is: numpy 2 warns on np.array(tensor))
        x = (part if isinstance(part, torch.Tensor) else torch.as_tensor(np.array(part))).to(device)
        x = normalize(x, mean, std, channels_last=channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(fn(model, x))
    model.train(was_training)
    return torch.cat(out) if out else empty


def predict_logits(model: nn.Module, images, *, mean, std, device: torch.device | str = "cpu",
                   batch_size: int = 1024) -> torch.Tensor:
    """Logits (float32, CPU) of uint8 N x 3 x H x W images."""
    device = torch.device(device)
    model.to(device)
    return eval_batches(model, images, lambda m, x: m(x).float().cpu(), mean=mean, std=std,
                        device=device, batch_size=batch_size, empty=torch.zeros(0, 0),
                        channels_last=device.type == "cuda")
