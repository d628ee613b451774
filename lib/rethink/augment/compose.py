"""Sequential composition of batched augmenters with the ``sample_params``/``apply`` protocol."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["Compose", "ComposeParams"]


class ComposeParams:
    """Parameters of a :class:`Compose`: one params object per part, all for the same N samples.

    ``params[start:stop]`` (or any sample index) indexes every part; ``.parts`` is the tuple.
    """

    def __init__(self, parts: Sequence[Any]):
        self.parts = tuple(parts)
        lengths = {len(p) for p in self.parts}
        if len(lengths) > 1:
            raise ValueError(f"parts are for different numbers of samples: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(self.parts[0]) if self.parts else 0

    def __getitem__(self, index: int | slice | Tensor) -> "ComposeParams":
        return ComposeParams(p[index] for p in self.parts)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ComposeParams":
        return ComposeParams(p.to(device, non_blocking=non_blocking) for p in self.parts)

    @property
    def device(self) -> torch.device:
        return self.parts[0].device if self.parts else torch.device("cpu")

    def __repr__(self) -> str:
        return f"ComposeParams({len(self)} samples, {len(self.parts)} parts)"


class Compose:
    """Apply augmenters in order, e.g.
    ``Compose([Augment(translate=4, flip=True), RandAugment(2, 10), Augment(cutout=16)])``.

    Each part needs ``is_identity``, ``sample_params(n, h, w, generator)`` and
    ``apply(images, params)``; parts are sampled in order from the one generator.
    """

    def __init__(self, augments: Sequence[Any]):
        self.augments = tuple(augments)

    def __repr__(self) -> str:
        return f"Compose([{', '.join(map(repr, self.augments))}])"

    @property
    def is_identity(self) -> bool:
        return all(a.is_identity for a in self.augments)

    def sample_params(self, n: int, h: int, w: int, generator: torch.Generator | None = None) -> ComposeParams:
        """Draw every part's parameters (on the CPU), part by part."""
        return ComposeParams(a.sample_params(n, h, w, generator) for a in self.augments)

    def apply(self, images: Tensor, params: ComposeParams) -> Tensor:
        if len(params.parts) != len(self.augments):
            raise ValueError(f"{len(params.parts)} params for {len(self.augments)} augmenters")
        x = images
        for augment, p in zip(self.augments, params.parts):
            if not augment.is_identity:
                x = augment.apply(x, p)
        return x

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.is_identity:
            return images
        n, _, h, w = images.shape
        return self.apply(images, self.sample_params(n, h, w, generator))
