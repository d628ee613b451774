"""The in-memory form of a detection dataset, shared by scenes, COCO-format data, training
and evaluation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DetectionSet:
    images: np.ndarray                 # N x 3 x S x S uint8 (square; may be memory-mapped)
    boxes: list[np.ndarray]            # per image: (k, 4) float32 x0 y0 x1 y1 in pixels
    labels: list[np.ndarray]           # per image: (k,) int64 in 0 .. len(class_names) - 1
    class_names: list[str]
    image_ids: list[int] = field(default_factory=list)  # COCO image ids (default 1..N)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.images)
        if not (len(self.boxes) == len(self.labels) == n):
            raise ValueError(f"{n} images but {len(self.boxes)} box arrays and {len(self.labels)} label arrays")
        if not self.image_ids:
            self.image_ids = list(range(1, n + 1))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, n: int) -> "DetectionSet":
        """The first n images (scene sets are prefix-stable: the first 1k of 35k are the 1k set)."""
        return self.slice(0, n)

    def slice(self, start: int | None, stop: int | None = None) -> "DetectionSet":
        """Images [start:stop] with their boxes, labels and ids."""
        s = slice(start, stop)
        return DetectionSet(self.images[s], self.boxes[s], self.labels[s], self.class_names,
                            self.image_ids[s], dict(self.meta))
