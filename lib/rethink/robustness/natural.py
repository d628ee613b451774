"""A CIFAR-10 stand-in of ImageNet-A (Hendrycks et al. 2021): natural images, adversarially filtered.

ImageNet-A is real photographs of 200 ImageNet classes kept only if a fixed ResNet-50
misclassifies them; models are scored on the 200-class subset of their logits. Here:

1. *natural shift*: Tiny ImageNet **validation** images (never in any training or
   unlabeled pool of the book: the Noisy Student chapter's out-of-domain pool is Tiny
   ImageNet *train*) of the Tiny ImageNet classes that are CIFAR-10 classes
   (:data:`TINY_TO_CIFAR`), resized to 32 px;
2. scoring on the CIFAR-10 classes that occur (argmax over those logits only);
3. *-A*: the images a fixed, separately trained baseline misclassifies.

By construction the filtering model scores 0% on -A, and models that err like it are
penalised: the set is biased against the filtering model's family, as ImageNet-A is
against ResNet-50.
"""
from __future__ import annotations

import numpy as np
import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")

# Tiny ImageNet wnid -> CIFAR-10 class. CIFAR-10's "cat" is the domestic cat (not cougar or
# lion), "automobile" excludes vans and buses, "truck" is big trucks only (not police vans),
# "ship" includes boats. Tiny ImageNet has no airplane, deer or horse class.
TINY_TO_CIFAR = {
    "n02814533": "automobile",   # beach wagon
    "n03100240": "automobile",   # convertible
    "n03670208": "automobile",   # limousine
    "n04285008": "automobile",   # sports car
    "n01855672": "bird",         # goose
    "n02002724": "bird",         # black stork
    "n02056570": "bird",         # king penguin
    "n02058221": "bird",         # albatross
    "n02123045": "cat",          # tabby cat
    "n02123394": "cat",          # Persian cat
    "n02124075": "cat",          # Egyptian cat
    "n02085620": "dog",          # Chihuahua
    "n02094433": "dog",          # Yorkshire terrier
    "n02099601": "dog",          # golden retriever
    "n02099712": "dog",          # Labrador retriever
    "n02106662": "dog",          # German shepherd
    "n02113799": "dog",          # standard poodle
    "n01641577": "frog",         # bullfrog
    "n01644900": "frog",         # tailed frog
    "n03447447": "ship",         # gondola
    "n03662601": "ship",         # lifeboat
    "n03796401": "truck",        # moving van
}


def present_classes(mapping: dict[str, str] = TINY_TO_CIFAR) -> list[int]:
    """CIFAR-10 class indices that occur in the mapping, sorted."""
    return sorted({CIFAR10_CLASSES.index(c) for c in mapping.values()})


def natural_shift_set(data_root=None, split: str = "val", size: int = 32,
                      mapping: dict[str, str] = TINY_TO_CIFAR) -> dict:
    """Tiny ImageNet images of the mapped classes: uint8 N x 3 x size x size, CIFAR-10 labels.

    Returns {"images", "labels" (CIFAR-10 indices), "wnids", "index" (rows of the split)}.
    """
    from ..data.cache import load_split

    tiny = load_split("tiny-imagenet", split, size, data_root=data_root)
    missing = sorted(set(mapping) - set(tiny.classes))
    if missing:
        raise KeyError(f"wnids {missing} are not Tiny ImageNet classes")
    wnid_of = np.asarray(tiny.classes)[np.asarray(tiny.labels)]
    index = np.flatnonzero(np.isin(wnid_of, list(mapping)))
    labels = np.array([CIFAR10_CLASSES.index(mapping[w]) for w in wnid_of[index]], np.int64)
    return {"images": np.asarray(tiny.images[index]), "labels": labels,
            "wnids": wnid_of[index].tolist(), "index": index}


def restricted_predictions(logits: torch.Tensor | np.ndarray, classes: list[int]) -> np.ndarray:
    """Argmax over the logits of ``classes`` only (as ImageNet-A scores a 200-class subset)."""
    logits = torch.as_tensor(logits)
    cls = torch.as_tensor(classes)
    return cls[logits[:, cls].argmax(1)].numpy()


def adversarial_filter(baseline_predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices of the images the fixed baseline misclassifies (the -A set)."""
    return np.flatnonzero(np.asarray(baseline_predictions) != np.asarray(labels))
