"""The book's datasets, as data: where each comes from and what is inside.

Every dataset has up to two archives that unpack to folders the decoders in
``cache.py`` understand:

* ``mirror``: the book's local copy (a gzipped tar, SHA-256 from the mirror's
  SHA256SUMS). Looked for first in the data root; never downloaded.
* ``canonical``: the upstream download. Looked for in the data root, else
  downloaded from ``url``. Its digest is the one published by torchvision or
  the libraries cited below; where none is published, ``digest`` is None and
  the archive is trusted on first use: ``archives.py`` records the SHA-256 of
  the first copy it sees in ``<data root>/<filename>.sha256`` -- only once it has
  extracted, has every split, and a sample of its images decodes -- and checks
  every later copy against it.

Digests are written ``"sha256:<hex>"`` or ``"md5:<hex>"``.

Trust model (also in book/reproduce.md, "Data: checksums and trust"): every archive
is checked against its digest before it is extracted, whether it was downloaded or
found in the data root, so a local copy is trusted exactly as much as a download.
SHA-256 digests (the mirrors) resist tampering. The md5 digests (Tiny ImageNet,
CIFAR-10, Imagenette canonical downloads) catch corruption and a wrong version, not
a deliberate forgery: md5 collisions are cheap, and Tiny ImageNet's URL is plain
http. Extraction never trusts an archive's contents (no links, no paths out of the
target, capped member count and size), and only CIFAR's pickles are unpickled,
after their md5 check. ``data_version`` names the archive a dataset actually comes
from, for records to say what data they were computed on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Folder layouts the decoders know (see cache.py).
TINY_IMAGENET = "tiny-imagenet"  # wnids.txt, words.txt, train/<wnid>/images, val/val_annotations.txt
IMAGE_FOLDERS = "image-folders"  # <split>/<class>/<image>
CIFAR_PICKLE = "cifar-pickle"  # data_batch_1..5, test_batch, batches.meta
COCO = "coco"  # train2017/*.jpg, annotations/instances_train2017.json


@dataclass(frozen=True)
class Archive:
    filename: str  # name of the archive file in the data root
    digest: str | None  # "sha256:<hex>" / "md5:<hex>", None = trust on first use
    folder: str  # top-level folder the archive unpacks to
    layout: str  # one of the layouts above
    url: str | None = None  # where to download it; None = not downloadable


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    num_classes: int
    splits: tuple[str, ...]
    license: str
    homepage: str
    default_image_size: int  # side of the cached square images when none is asked for
    mirror: Archive | None
    canonical: Archive | None
    # Label order when it is not the sorted class folders / wnids.txt.
    classes: tuple[str, ...] | None = None
    # Human-readable names, parallel to `classes` (tiny-imagenet reads words.txt).
    class_names: tuple[str, ...] | None = None
    notes: str = ""

    @property
    def archives(self) -> tuple[Archive, ...]:
        """Archives in the order they are looked for: mirror, then canonical."""
        return tuple(a for a in (self.mirror, self.canonical) if a is not None)


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
IMAGENETTE_NAMES = (
    "tench", "English springer", "cassette player", "chain saw", "church",
    "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
)  # fmt: skip

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="tiny-imagenet",
            title="Tiny ImageNet (200 classes, 64x64)",
            num_classes=200,
            splits=("train", "val"),
            license="ImageNet terms (non-commercial research and education)",
            homepage="http://cs231n.stanford.edu/",
            default_image_size=64,
            mirror=Archive(
                "tiny-imagenet-200-sub400.tar.gz",
                "sha256:ab5ff0cbb413ee4e39240f1b74dfb8e4bbe2591e782bd59498e3fcfe62bd6a50",
                "tiny-imagenet-200",
                TINY_IMAGENET,
            ),
            # md5 as used by Avalanche and many torchvision-style loaders.
            canonical=Archive(
                "tiny-imagenet-200.zip",
                "md5:90528d7ca1a48142e341f4ef8d21d0de",
                "tiny-imagenet-200",
                TINY_IMAGENET,
                "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            ),
            notes="Mirror: 400 train images/class (<wnid>_0..399) + full val (10k), "
            "one box per image. Canonical: 500/class + val + unlabeled test.",
        ),
        DatasetSpec(
            name="cifar10",
            title="CIFAR-10",
            num_classes=10,
            splits=("train", "test"),
            license="as distributed with CIFAR-10",
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            default_image_size=32,
            mirror=Archive(
                "cifar10-jpg.tar.gz",
                "sha256:79f295956b4f7a94ddfd1d8daef1ee068abe12132fd636bbf3c11d433d549554",
                "cifar10-jpg",
                IMAGE_FOLDERS,
            ),
            # md5 from torchvision.datasets.CIFAR10.
            canonical=Archive(
                "cifar-10-python.tar.gz",
                "md5:c58f30108f718f92721af3b95e74349a",
                "cifar-10-batches-py",
                CIFAR_PICKLE,
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            ),
            classes=CIFAR10_CLASSES,
            class_names=CIFAR10_CLASSES,
            notes="Mirror: lossy JPEG re-encodes of the 32x32 images. Canonical: pickled batches.",
        ),
        DatasetSpec(
            name="imagenette",
            title="Imagenette (10 easy ImageNet classes)",
            num_classes=10,
            splits=("train", "val"),
            license="ImageNet terms",
            homepage="https://github.com/fastai/imagenette",
            default_image_size=64,
            mirror=Archive(
                "imagenette2-64.tar.gz",
                "sha256:9cdb632f96240eccd83720854740574de96d36a79669a49e6153fe9033d8e555",
                "imagenette2-64",
                IMAGE_FOLDERS,
            ),
            # md5 from torchvision.datasets.Imagenette ("160px").
            canonical=Archive(
                "imagenette2-160.tgz",
                "md5:e793b78cc4c9e9a4ccc0c1155377a412",
                "imagenette2-160",
                IMAGE_FOLDERS,
                "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
            ),
            classes=IMAGENETTE_WNIDS,
            class_names=IMAGENETTE_NAMES,
            notes="Mirror: short side 64px, JPEG q85. Canonical: short side 160px. No class "
            "in common with Tiny ImageNet.",
        ),
        DatasetSpec(
            name="clothing",
            title="Clothing dataset (small)",
            num_classes=10,
            splits=("train", "validation", "test"),
            license="CC0 1.0",
            homepage="https://github.com/alexeygrigorev/clothing-dataset-small",
            default_image_size=64,
            mirror=Archive(
                "clothing-small-64.tar.gz",
                "sha256:f44b3f08ead9eeda3d0d147d062af1aee133add70d6f45407b11e1ec1e5f831d",
                "clothing-small-64",
                IMAGE_FOLDERS,
            ),
            # GitHub's archive of the repository: no published digest (trust on first use).
            canonical=Archive(
                "clothing-dataset-small-master.zip",
                None,
                "clothing-dataset-small-master",
                IMAGE_FOLDERS,
                "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip",
            ),
            notes="Mirror: short side 64px. Canonical: the repository as a zip.",
        ),
        DatasetSpec(
            name="coco128",
            title="COCO train2017, first 128 images",
            num_classes=80,
            splits=("train2017",),
            license="annotations CC BY 4.0; images under their Flickr licenses",
            homepage="https://cocodataset.org",
            default_image_size=640,
            mirror=Archive(
                "coco128.tar.gz",
                "sha256:7168eeb03eab37b130eeeed6c1bd5cc14809369866882806fe2666fa6582619a",
                "coco128",
                COCO,
            ),
            canonical=None,
            notes="No upstream archive has this layout (it is cut from train2017 and "
            "annotations_trainval2017 at http://images.cocodataset.org): put coco128.tar.gz "
            "in the data root. 80 categories listed, 71 used, 939 boxes.",
        ),
    ]
}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; KeyError lists the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


# Per-channel mean and std of each pre-training dataset's training split (0..1 units): the
# input normalisation of every network trained on it, and so of every chapter that reuses one.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tiny-imagenet": ((0.480, 0.448, 0.398), (0.277, 0.269, 0.282)),   # measured on the 64px cache
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # the usual CIFAR-10 values
}


def stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a dataset's training images, 0..1 units."""
    if name not in STATS:
        raise KeyError(f"no normalisation statistics for dataset {name!r}; known: {', '.join(STATS)}")
    return STATS[name]
_version_cache: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, this process


def _sha256_once(path: Path) -> str:
    """SHA-256 of a file, hashed once per process and file version."""
    from rethink.data.archives import file_digests

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _version_cache:
        _version_cache[key] = file_digests(path)["sha256"]
    return _version_cache[key]


def data_version(name: str, data_root: str | os.PathLike | None = None) -> str:
    """A short, stable id of the archive dataset `name` is read from:
    ``'<archive file name>:<first 12 hex digits of its digest>'``, e.g.
    ``'tiny-imagenet-200-sub400.tar.gz:ab5ff0cbb413'``.

    The archive is the one ``ensure_extracted`` uses (the mirror if it is in the data
    root, else the canonical one, present or to be downloaded). The digest is the
    registry's published one (SHA-256 for the mirrors, md5 for the canonical
    downloads), which every use of the archive is verified against, so the id names
    the bytes used without hashing anything; it is the same before and after a
    download and on every machine. Only an archive trusted on first use (the
    Clothing zip) has no published digest: its id uses the SHA-256 recorded on first
    use, else that of the file (hashed once per process); absent and not yet
    downloaded, it is downloaded first. Two records with different ids were computed
    on different data (the 400-per-class mirror and the 500-per-class zip of Tiny
    ImageNet, for instance).
    """
    from rethink import paths
    from rethink.data.archives import _expected_digest, _download_canonical, locate_archive, parse_digest

    spec = get_spec(name)
    root = paths.data_root(data_root)
    found = locate_archive(spec, root)
    if found is None and spec.canonical is None:
        _download_canonical(spec, root, progress=False)  # raises: not found, nothing to download
    archive = found[0] if found else spec.canonical
    digest = _expected_digest(root, archive)  # published, or recorded on first use
    if digest is None:
        path = found[1] if found else _download_canonical(spec, root, progress=True)[1]
        digest = "sha256:" + _sha256_once(path)
    return f"{archive.filename}:{parse_digest(digest)[1][:12]}"
