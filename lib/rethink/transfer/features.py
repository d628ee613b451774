"""Fixed penultimate features of a pre-trained network (Kornblith et al. regime (a))."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..augment import normalize
from ..models.zoo import penultimate_features


@torch.no_grad()
def _eval_batches(model: nn.Module, images, fn, *, mean, std, device: torch.device,
                  batch_size: int, empty: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """fn(model, x) over normalised batches of uint8 images in eval mode (bf16 on CUDA),
    concatenated; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.as_tensor(np.asarray(images[start:start + batch_size])).to(device)
        x = normalize(x, mean, std, channels_last=channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(fn(model, x))
    model.train(was_training)
    return torch.cat(out) if out else empty


def extract_features(model: nn.Module, images: np.ndarray | torch.Tensor, *, mean, std,
                     device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Pooled pre-classifier features of uint8 N x 3 x S x S images, float32 on `device`.

    Eval mode (BN running statistics, no dropout), no augmentation, as the paper's
    fixed-feature regime; bf16 autocast on CUDA.
    """
    device = torch.device(device)
    model.to(device)
    return _eval_batches(model, images, lambda m, x: penultimate_features(m, x).float(), mean=mean,
                         std=std, device=device, batch_size=batch_size, empty=torch.zeros(0),
                         channels_last=device.type == "cuda")


def predict_classes(model: nn.Module, images: np.ndarray | torch.Tensor, *, mean, std,
                    device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Arg-max class of each image (eval mode), int64 on the CPU."""
    return _eval_batches(model, images, lambda m, x: m(x).float().argmax(1).cpu(), mean=mean, std=std,
                         device=torch.device(device), batch_size=batch_size,
                         empty=torch.zeros(0, dtype=torch.int64))
