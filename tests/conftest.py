"""Shared pytest fixtures. Data-layer fixtures are prefixed `data_`."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root ($RETHINK_DATA) and cache ($RETHINK_CACHE) under tmp_path; returns the data root."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("RETHINK_DATA", str(root))
    monkeypatch.setenv("RETHINK_CACHE", str(tmp_path / "cache"))
    return root


def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    """A solid-colour JPEG (w, h) as bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), color, np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    """Write a .tar.gz holding `files` (member name -> content), byte-identical for the same
    files (gzip and tar times fixed at 0), so that its digest, and the data id in every
    config made from it, does not change from one test to the next."""
    import gzip

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture
def data_make_jpeg():
    """Factory: solid-colour JPEG bytes, `data_make_jpeg(color, (w, h))`."""
    return _jpeg


@pytest.fixture
def data_make_tar():
    """Factory: `data_make_tar(path, {member name: bytes})` writes a .tar.gz."""
    return _tar


FAKE_WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted in wnids.txt


@pytest.fixture
def data_fake_tiny(data_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 3-class fake Tiny ImageNet (4 train images/class, 6 val) registered as 'fake-tiny'.

    Class i (sorted wnids) has colour (80*i, 40, 200); train image k of a class has box
    (k, 2k, 32+k, 40+2k); val image j is of class j % 3 with box (j, j, 60, 50)."""
    from rethink.data import registry

    top = "tiny-imagenet-200"
    files = {
        f"{top}/wnids.txt": ("\n".join(FAKE_WNIDS) + "\n").encode(),
        f"{top}/words.txt": b"n00\tentity\nn01\tgoldfish\nn02\tsalamander, newt\nn03\tfrog\n",
    }
    for i, wnid in enumerate(sorted(FAKE_WNIDS)):
        boxes = []
        for k in range(4):
            files[f"{top}/train/{wnid}/images/{wnid}_{k}.JPEG"] = _jpeg((80 * i, 40, 200))
            boxes.append(f"{wnid}_{k}.JPEG\t{k}\t{2 * k}\t{32 + k}\t{40 + 2 * k}")
        files[f"{top}/train/{wnid}/{wnid}_boxes.txt"] = ("\n".join(boxes) + "\n").encode()
    ann = []
    for j in range(6):
        files[f"{top}/val/images/val_{j}.JPEG"] = _jpeg((80 * (j % 3), 40, 200))
        ann.append(f"val_{j}.JPEG\t{sorted(FAKE_WNIDS)[j % 3]}\t{j}\t{j}\t60\t50")
    files[f"{top}/val/val_annotations.txt"] = ("\n".join(ann) + "\n").encode()
    _tar(data_env / "fake-tiny.tar.gz", files)

    spec = registry.DatasetSpec(
        name="fake-tiny", title="fake", num_classes=3, splits=("train", "val"), license="none",
        homepage="", default_image_size=64, canonical=None,
        mirror=registry.Archive("fake-tiny.tar.gz", None, top, registry.TINY_IMAGENET),
    )  # fmt: skip
    monkeypatch.setitem(registry.DATASETS, spec.name, spec)
    return spec.name


MYST_NOTEBOOK = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# {title}

```{{code-cell}} ipython3
:tags: [parameters]

{params}
```
"""


@pytest.fixture
def myst_notebook():
    """Write a MyST notebook with one parameters cell (and optional further cells)."""
    def write(path, params: str, extra_cells: str = "", title: str = "A test notebook"):
        path.write_text(MYST_NOTEBOOK.format(title=title, params=params) + extra_cells)
        return path
    return write


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs gain nothing from intra-op threads, and lose a lot when the cores are busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
