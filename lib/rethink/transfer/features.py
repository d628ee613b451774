"""Fixed penultimate features of a pre-trained network (Kornblith et al. regime (a))."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..augment import normalize
from ..models.zoo import penultimate_features


@torch.no_grad()
def extract_features(model: nn.Module, images: np.ndarray | torch.Tensor, *, mean, std,
                     device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Pooled pre-classifier features of uint8 N x 3 x S x S images, float32 on `device`.

    Eval mode (BN running statistics, no dropout), no augmentation, as the paper's
    fixed-feature regime; bf16 autocast on CUDA.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(np.asarray(images[start:start + batch_size])).to(device)
        x = normalize(x, mean, std, channels_last=device.type == "cuda")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = penultimate_features(model, x)
        out.append(f.float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def predict_classes(model: nn.Module, images: np.ndarray | torch.Tensor, *, mean, std,
                    device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Arg-max class of each image (eval mode), int64 on the CPU."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(torch.as_tensor(np.asarray(images[start:start + batch_size])).to(device), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(x).float().argmax(1).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)
