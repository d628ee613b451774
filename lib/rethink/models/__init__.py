"""The book's networks: the zoo (Tiny ImageNet), the CIFAR ResNets, airbench."""
from __future__ import annotations

import re


def arch_family(arch: str) -> str:
    """'resnet18_w64' -> 'resnet', 'airbench94' -> 'airbench': the family of a network."""
    m = re.match(r"[a-z]+", arch)
    return m.group(0) if m else arch
