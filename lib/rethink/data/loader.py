"""GPU-resident data loader: a whole split lives on the device, batches never leave it.

Seeding scheme
--------------
Everything random in an epoch is a pure function of ``(seed, epoch)``:

* the shuffle permutation comes from a CPU ``torch.Generator`` seeded with
  ``SeedSequence([seed, epoch, 0])``;
* the augmentation parameters for the whole epoch come from a second CPU generator
  seeded with ``SeedSequence([seed, epoch, 1])``, drawn in one call for all samples
  in iteration order (sample ``k`` of the epoch gets row ``k``), then moved to the
  device once and sliced per batch.

So a run resumed at epoch ``k`` (``loader.set_epoch(k)``) sees exactly the batches of
an uninterrupted run, and CPU and CUDA see the same samples with the same
augmentation. Independent streams mean turning shuffling on/off does not change the
augmentation draws. The epoch counter advances by one after each *complete* pass;
``set_epoch`` overrides it (calling it at the top of every epoch is the safe style).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from rethink.augment import Augment, normalize

__all__ = ["GPULoader", "epoch_generator"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """CPU generator for ``(seed, epoch, stream)``; well-mixed, so nearby seeds are unrelated."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


def _to_tensor(array: np.ndarray | Tensor, indices: Sequence[int] | np.ndarray | Tensor | None) -> Tensor:
    """Host array/memmap/tensor (optionally subset) -> tensor; reads only the subset from a memmap."""
    if isinstance(array, Tensor):
        if indices is not None:
            array = array[torch.as_tensor(np.asarray(indices), dtype=torch.int64, device=array.device)]
        return array
    if indices is not None:
        array = array[np.asarray(indices)]  # fancy indexing copies into RAM
    else:
        array = np.array(array, order="C", copy=True)  # detach from a (read-only) memmap
    return torch.from_numpy(array)


class GPULoader:
    """Iterate ``(x, y)`` batches of a split held on ``device``.

    Args:
        images: uint8 N x C x H x W (numpy array, memmap or tensor).
        labels: N integer labels (stored as int64).
        batch_size: samples per batch.
        device: where the split lives and batches are made (default: CUDA if available).
        augment: an :class:`~rethink.augment.Augment` for training, or None (eval).
        mean, std: per-channel normalisation in 0..1 units (see :func:`rethink.augment.normalize`).
        shuffle: reshuffle every epoch (permutation from ``(seed, epoch)``).
        drop_last: drop the last incomplete batch.
        seed: base seed of the shuffle and augmentation streams.
        indices: optional subset of the split (applied on the host, before the copy).
        dtype: float dtype of ``x`` (float32; the training loop autocasts).
        channels_last: return ``x`` in ``torch.channels_last`` memory format.

    ``x`` is normalised float (N x C x H x W), ``y`` int64, both on ``device``. The only
    host->device copies are the split (once, at construction) and, per epoch, the
    permutation and augmentation parameters.
    """

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor | Sequence[int],
                 batch_size: int, *, device: torch.device | str | None = None,
                 augment: Augment | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 indices: Sequence[int] | np.ndarray | Tensor | None = None,
                 dtype: torch.dtype = torch.float32, channels_last: bool = True):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        images_t = _to_tensor(images, indices)
        if not isinstance(labels, (np.ndarray, Tensor)):
            labels = np.asarray(labels)
        labels_t = _to_tensor(labels, indices)
        if images_t.dim() != 4 or images_t.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 N x C x H x W, got {images_t.dtype} {tuple(images_t.shape)}")
        if labels_t.shape[0] != images_t.shape[0]:
            raise ValueError(f"{images_t.shape[0]} images but {labels_t.shape[0]} labels")
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        # the one host->device copy (a no-op if already there)
        self.images = images_t.to(self.device).contiguous()
        self.labels = labels_t.to(self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.augment = None if augment is None or augment.is_identity else augment
        self.mean, self.std = tuple(mean), tuple(std)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)
        self.dtype = dtype
        self.channels_last = channels_last
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples in the split (not the number yielded per epoch when ``drop_last``)."""
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = int(epoch)

    def epoch_order(self, epoch: int | None = None) -> Tensor:
        """Sample order (CPU int64) of ``epoch`` (default: current), before ``drop_last``."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch, 0))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch = self.epoch
        n_used = len(self) * self.batch_size if self.drop_last else self.num_samples
        order = self.epoch_order(epoch)[:n_used].to(self.device)
        params = None
        if self.augment is not None:
            _, h, w = self.image_shape
            params = self.augment.sample_params(n_used, h, w, epoch_generator(self.seed, epoch, 1))
            params = params.to(self.device)
        for start in range(0, n_used, self.batch_size):
            stop = min(start + self.batch_size, n_used)
            idx = order[start:stop]
            x = self.images.index_select(0, idx)
            if params is not None:
                x = self.augment.apply(x, params[start:stop])
            x = normalize(x, self.mean, self.std, dtype=self.dtype, channels_last=self.channels_last)
            yield x, self.labels.index_select(0, idx)
        self.epoch = epoch + 1  # only after a complete pass

    def eval_loader(self, batch_size: int | None = None) -> "GPULoader":
        """Un-augmented, unshuffled loader over the same device tensors (no copy)."""
        return GPULoader(self.images, self.labels, batch_size or self.batch_size, device=self.device,
                         augment=None, mean=self.mean, std=self.std, shuffle=False, drop_last=False,
                         seed=self.seed, dtype=self.dtype, channels_last=self.channels_last)

    def __repr__(self) -> str:
        return (f"GPULoader(num_samples={self.num_samples}, batch_size={self.batch_size}, "
                f"device={self.device}, augment={self.augment}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch})")
