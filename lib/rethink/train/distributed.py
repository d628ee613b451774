"""Multi-GPU (or multi-process CPU) training with DDP, started by torchrun.

`torchrun --nproc_per_node N -m rethink.experiments.zoo ...` sets RANK/WORLD_SIZE;
`Distributed.from_env()` then joins the process group (nccl on CUDA, gloo on CPU).
Every rank holds the whole split and draws the same global batch (same seed), then
keeps its slice: the run is the single-process run with the same global batch, up to
per-rank BatchNorm statistics (use SyncBN to share them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    sync_bn: bool = False

    @classmethod
    def from_env(cls, sync_bn: bool = False, backend: str | None = None) -> "Distributed | None":
        """None when not launched by torchrun (or with a single process)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return None
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, backend, sync_bn)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.sync_bn:
            if self.backend != "nccl":
                raise ValueError("SyncBN needs one GPU per process (nccl); torch has no CPU "
                                 "SyncBatchNorm. Drop --sync-bn / sync_bn=True on CPU.")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [self.local_rank] if self.backend == "nccl" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def shard(self, loader) -> "ShardedLoader":
        return ShardedLoader(loader, self.rank, self.world_size)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class ShardedLoader:
    """Each rank keeps rows rank, rank+W, ... of every global batch."""

    def __init__(self, loader, rank: int, world_size: int):
        self.loader, self.rank, self.world_size = loader, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield x[self.rank::self.world_size], y[self.rank::self.world_size]
