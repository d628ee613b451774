"""Batched on-device augmentation with per-sample parameters drawn on the CPU.

* :mod:`.basic`: translate / flip / cutout (:class:`Augment`) and :func:`normalize`;
* :mod:`.randaugment`: :class:`RandAugment` (torchvision's op set, per sample);
* :mod:`.compose`: :class:`Compose` chains augmenters with the same protocol
  (``is_identity``, ``sample_params(n, h, w, generator)``, ``apply(images, params)``).
"""
from .basic import (PADDING_MODES, Augment, AugmentParams, apply_params, cutout_box, normalize,
                    reference_apply)
from .compose import Compose, ComposeParams
from .randaugment import (RANDAUGMENT_OPS, RandAugment, RandAugmentParams, op_magnitudes,
                          randaugment_apply, signed_magnitude)
from .randaugment import reference_apply as randaugment_reference_apply

__all__ = [
    "PADDING_MODES", "Augment", "AugmentParams", "apply_params", "cutout_box", "normalize", "reference_apply",
    "Compose", "ComposeParams",
    "RANDAUGMENT_OPS", "RandAugment", "RandAugmentParams", "op_magnitudes", "randaugment_apply",
    "randaugment_reference_apply", "signed_magnitude",
]
