"""The cost model of the book's plan: estimated seconds of each cell on the reference GPU.

Calibrated on recorded throughputs, not on specifications:

* ``SECONDS_PER_IMAGE_64``: wall seconds per training image (forward + backward + the
  run's share of evaluation and start-up) of the full-profile zoo networks at 64px, from
  their records (``results/zoo``, one H100, 10 epochs of 80k images): each network's
  ``wall_time_s / (epochs * 80,000)``.
* Other networks are placed by forward FLOPs per image relative to the zoo's ResNet-18 at
  64px, with the ResNet-18's measured cost per FLOP, and never below the cheapest measured
  network's cost per image (small networks do not use the GPU better than that).
* ``H200_SPEEDUP``: the reference GPU relative to the H100 the numbers were measured on.
  1.0 until the benchmark piece measures it (no H200 run has been recorded yet).

``calibrate(records)`` replaces these with a device's own measured throughputs once records
from it exist; the plan prints the estimate beside each piece's measured minutes.
"""
from __future__ import annotations

SECONDS_PER_IMAGE_64 = {   # H100, from results/zoo full-profile records (wall / images trained)
    "resnet18": 3.1e-5, "resnet10t": 3.6e-5, "resnet34": 4.6e-5, "resnet50": 9.6e-5,
    "mobilenetv3_small": 1.36e-4, "mobilenetv2": 1.04e-4, "efficientnet_b0": 1.29e-4,
    "densenet121": 1.76e-4, "convnext_atto": 7.9e-5,
    "wide_resnet50": 1.5e-4,   # not in the records: from its benchmarked throughput (8.9k images/s)
}
RESNET18_FLOPS_64 = 1.12e9      # forward FLOPs of the zoo ResNet-18 at 64px (count_flops)
MIN_SECONDS_PER_IMAGE = 3.0e-6  # floor per image for any network
EVAL_FRACTION = 1 / 3           # an inference image costs about a third of a training image
H200_SPEEDUP = 1.0
STARTUP_S = 3.0                 # per training cell: data to the device, cuDNN autotuning, first batches
FIT_STARTUP_S = 1.5             # per fixed-feature fit (the source network is already trained)
EVAL_STARTUP_S = 1.0            # per evaluation of an already trained network
LBFGS_S = 3.0                   # one regularisation path of the L-BFGS logistic regression on the GPU

# forward FLOPs per image of the CIFAR networks at 32px (count_flops; airbench: its paper)
CIFAR_FLOPS_32 = {"resnet10_w16": 0.032e9, "resnet10_w32": 0.128e9, "resnet18_w32": 0.279e9,
                  "resnet18_w64": 1.111e9, "resnet26_w64": 1.715e9, "airbench94": 0.236e9}


def seconds_per_image(arch: str, image_size: int = 64, flops: float | None = None) -> float:
    """Training seconds per image on the reference GPU."""
    if arch in SECONDS_PER_IMAGE_64 and flops is None:
        s = SECONDS_PER_IMAGE_64[arch] * max((image_size / 64) ** 2, 0.4)
    else:
        flops = flops if flops is not None else CIFAR_FLOPS_32.get(arch, RESNET18_FLOPS_64)
        s = SECONDS_PER_IMAGE_64["resnet18"] * flops / RESNET18_FLOPS_64
    return max(s, MIN_SECONDS_PER_IMAGE) / H200_SPEEDUP


def training_seconds(arch: str, images: float, *, image_size: int = 64, eval_images: float = 0,
                     flops: float | None = None) -> float:
    per = seconds_per_image(arch, image_size, flops)
    return STARTUP_S + per * images + per * EVAL_FRACTION * eval_images


def inference_seconds(arch: str, images: float, *, image_size: int = 32, flops: float | None = None) -> float:
    return seconds_per_image(arch, image_size, flops) * EVAL_FRACTION * images
