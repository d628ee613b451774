"""Object detection for He et al. 2019 (and Zoph et al. 2020): a COCO stand-in composed from
real ImageNet instances, a one-stage ResNet-FPN detector with selectable normalisation,
COCO evaluation with pycocotools, and the training loop."""
