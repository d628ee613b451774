"""`python -m rethink.book ARGS` in a fresh process, on the fake datasets of tests/test_pieces.py.

    python tests/piece_child.py piece --profile smoke --id 1 ...

A subprocess does not see the test's monkeypatches, so the fake CIFAR-10 and Tiny ImageNet
archives under $RETHINK_DATA are registered here. KILL_AT_TRAIN=n: the process kills itself
(SIGKILL, as a job limit would) when the n-th cell starts training.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def fake_specs() -> dict:
    """The registry entries of the fake archives (written by tests/test_pieces.py's fixture)."""
    from rethink.data import registry

    cifar = registry.DatasetSpec(
        name="cifar10", title="fake CIFAR-10", num_classes=10, splits=("train", "test"), license="none",
        homepage="", default_image_size=32, canonical=None,
        mirror=registry.Archive("fake-cifar.tar.gz", None, "fake-cifar", registry.IMAGE_FOLDERS),
        classes=registry.CIFAR10_CLASSES, class_names=registry.CIFAR10_CLASSES)
    tiny = registry.DatasetSpec(
        name="tiny-imagenet", title="fake", num_classes=3, splits=("train", "val"), license="none",
        homepage="", default_image_size=64, canonical=None,
        mirror=registry.Archive("fake-tiny.tar.gz", None, "tiny-imagenet-200", registry.TINY_IMAGENET))
    return {"cifar10": cifar, "tiny-imagenet": tiny}


def main(argv: list[str]) -> int:
    import torch

    from rethink import book, experiments
    from rethink.data import registry

    torch.set_num_threads(1)
    registry.DATASETS.update(fake_specs())
    kill_at = int(os.environ.get("KILL_AT_TRAIN", "0"))
    calls = [0]
    for module in experiments.all_modules():
        def train(*args, _train=module.train, **kwargs):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return _train(*args, **kwargs)
        module.train = train
    return book.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
