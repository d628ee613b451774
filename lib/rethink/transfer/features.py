"""Fixed penultimate features of a pre-trained network (Kornblith et al. regime (a))."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.inference import eval_batches as _eval_batches
from ..models.zoo import penultimate_features


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
