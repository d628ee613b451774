"""Self-supervised pre-training: SimCLR (Chen et al. 2020), Zoph et al. 2020's "SimCLR Init"."""
from .simclr import ProjectionHead, SimCLRAugment, SimCLRParams, linear_probe, nt_xent, pretrain_simclr

__all__ = ["ProjectionHead", "SimCLRAugment", "SimCLRParams", "linear_probe", "nt_xent", "pretrain_simclr"]
