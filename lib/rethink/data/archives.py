"""Find, verify, download and safely extract dataset archives.

``ensure_extracted(name)`` returns the dataset's folder, unpacked under
``cache_root()/extracted/`` (so the data root may be read-only):

1. look in the data root for the mirror archive, then the canonical one;
2. if neither is there, download the canonical URL into the data root;
3. verify the archive's digest (published, or recorded on first use);
4. extract it safely into a temp folder (refusing links, escaping paths, and
   more than ``MAX_MEMBERS`` members or ``max_extracted_bytes`` bytes), check that
   every split of the dataset's spec is there, then rename it into place;
5. for an archive trusted on first use, decode a sample of its images before
   recording its digest.

A stamp (archive path, size, mtime) lets later calls skip hashing and
extraction; the extracted folder carries a marker with the archive's SHA-256.
Temp files and folders carry their writer's pid and are removed at the next
call once that process is gone (see rethink.files).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from rethink import paths
from rethink.data.registry import (CIFAR_PICKLE, COCO, IMAGE_FOLDERS, TINY_IMAGENET, Archive, DatasetSpec,
                                   get_spec)
from rethink.errors import RethinkError
from rethink.files import progress_off
from rethink.files import check_free_space, disk_full_error, is_disk_full, mkstemp, remove_stale_temps, temp_prefix

CHUNK = 1 << 20
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
MARKER = "rethink-extracted.json"
FIX_HINT = (
    "Put the archive in a folder and set RETHINK_DATA=/path/to/folder-with-archives, "
    "or pass data_root=... explicitly."
)


class DataError(RethinkError):
    """Base class of the data layer's errors."""


class DatasetNotFoundError(DataError):
    """No archive in the data root and none could be downloaded."""


class ChecksumError(DataError):
    """An archive's digest differs from the expected one."""


class UnsafeArchiveError(DataError):
    """An archive member would escape the target folder or is not a plain file/folder."""


class CorruptImageError(DataError):
    """An image file could not be read or decoded."""


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive holds more members or expands to more bytes than the extraction limits."""


class IncompleteArchiveError(DataError):
    """An archive lacks a split (or a file of one) that its dataset's spec lists."""


# Extraction limits (an archive bomb is refused before it fills the disk). The book's
# largest archive, Tiny ImageNet's zip, has ~120k members and expands to ~1.1x its size.
MAX_MEMBERS = 500_000
MAX_EXPANSION = 20  # extracted bytes per archive byte...
MIN_EXTRACT_BUDGET = 16 * 2**20  # ...but always at least this many
MAX_EXTRACT_BYTES = 64 * 2**30  # and never more than this


def max_extracted_bytes(archive_size: int) -> int:
    """How many bytes an archive of `archive_size` bytes may expand to."""
    return min(MAX_EXTRACT_BYTES, max(MIN_EXTRACT_BUDGET, MAX_EXPANSION * archive_size))


# ---------------------------------------------------------------- digests


def parse_digest(digest: str) -> tuple[str, str]:
    """'sha256:<hex>' or 'md5:<hex>' -> (algorithm, lower-case hex)."""
    algo, sep, hexdigest = digest.partition(":")
    if not sep or algo not in ("sha256", "md5") or not hexdigest:
        raise ValueError(f"digest must look like 'sha256:<hex>' or 'md5:<hex>', got {digest!r}")
    return algo, hexdigest.lower()


def file_digests(path: Path, algos: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file for each algorithm, read once in chunks."""
    hashes = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def verify_file(path: Path, expected: str | None, hint: str = "", shown_as: str | None = None) -> str:
    """Check `path` against `expected` (None: no check). Returns its SHA-256 hex.

    The error names `shown_as` (default: `path`)."""
    algos = ("sha256",)
    if expected:
        algo, want = parse_digest(expected)
        algos = tuple(dict.fromkeys(("sha256", algo)))
    got = file_digests(path, algos)
    if expected and got[algo] != want:
        raise ChecksumError(
            f"checksum mismatch for {shown_as or path}: expected {algo}:{want}, actual {algo}:{got[algo]}. "
            f"The file is corrupt, incomplete or another version: delete it and run again to "
            f"re-download it, or replace it with a good copy.{hint}"
        )
    return got["sha256"]


def _tofu_record(root: Path, archive: Archive) -> Path:
    return root / f"{archive.filename}.sha256"


def _expected_digest(root: Path, archive: Archive) -> str | None:
    """The published digest, else the one recorded on first use, else None."""
    if archive.digest:
        return archive.digest
    record = _tofu_record(root, archive)
    if record.is_file():
        return "sha256:" + record.read_text().split()[0]
    return None


def _verify_archive(root: Path, archive: Archive, path: Path) -> tuple[str, bool]:
    """Verify an archive in `root`. Returns its SHA-256 and whether it is seen for the
    first time (no published or recorded digest: record it once extraction succeeds)."""
    expected = _expected_digest(root, archive)
    record = _tofu_record(root, archive)
    hint = "" if archive.digest else (
        f" Its digest was recorded on first use in {record}: delete that record too if the "
        f"new file is the one to trust."
    )  # fmt: skip
    return verify_file(path, expected, hint), expected is None


def _record_first_use(root: Path, archive: Archive, sha: str) -> None:
    try:
        _tofu_record(root, archive).write_text(f"{sha}  {archive.filename}\n")
    except OSError as e:
        warnings.warn(f"could not record the digest of {root / archive.filename} ({e}); it is trusted as is")


# ---------------------------------------------------------------- finding and downloading


def locate_archive(spec: DatasetSpec, root: Path) -> tuple[Archive, Path] | None:
    """The first of the dataset's archives (mirror, canonical) present in `root`."""
    for archive in spec.archives:
        if (root / archive.filename).is_file():
            return archive, root / archive.filename
    return None


def download(url: str, dest: Path, expected: str | None = None, progress: bool = True) -> Path:
    """Download `url` to a temp file beside `dest`, verify it, then rename it to `dest`."""
    fd, tmp = mkstemp(dest, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress or progress_off()) as bar:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_file(Path(tmp), expected, f" (downloaded from {url})", shown_as=str(dest))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _download_canonical(spec: DatasetSpec, root: Path, progress: bool) -> tuple[Archive, Path]:
    names = ", ".join(a.filename for a in spec.archives)
    where = f"Looked in the data root {root} for: {names}."
    archive = spec.canonical
    if archive is None or archive.url is None:
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} not found. {where} It has no download URL. {FIX_HINT}"
        )
    dest = root / archive.filename
    try:
        download(archive.url, dest, _expected_digest(root, archive), progress)
    except ChecksumError:
        raise
    except Exception as e:  # network, HTTP, or an unwritable data root
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} not found. {where} Tried to download {archive.url} "
            f"into {dest}: {type(e).__name__}: {e}. {FIX_HINT}"
        ) from e
    return archive, dest


# ---------------------------------------------------------------- safe extraction


def _safe_target(dest: Path, name: str) -> Path:
    """Where member `name` goes under `dest` (an absolute, resolved folder); raises if
    it could land anywhere else. The check is lexical: extraction never creates links."""
    if not name or name.startswith("/") or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"unsafe archive member {name!r}: absolute or non-POSIX path")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"unsafe archive member {name!r}: contains '..'")
    target = os.path.normpath(os.path.join(dest, *parts))
    if target != str(dest) and not target.startswith(str(dest) + os.sep):
        raise UnsafeArchiveError(f"unsafe archive member {name!r}: resolves outside {dest}")
    return Path(target)


class _Writer:
    """Writes members' files, creating each parent folder once, within the limits."""

    def __init__(self, archive: Path, max_members: int, max_bytes: int) -> None:
        self.made: set[Path] = set()
        self.archive, self.max_members, self.max_bytes = archive, max_members, max_bytes
        self.members = self.written = 0

    def count(self, name: str) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ArchiveTooLargeError(
                f"archive {self.archive} has more than {self.max_members:,} members (at {name!r}): "
                f"refused as a possible archive bomb; if it is a genuine dataset archive, raise "
                f"rethink.data.archives.MAX_MEMBERS")

    def mkdir(self, folder: Path) -> None:
        if folder not in self.made:
            folder.mkdir(parents=True, exist_ok=True)
            self.made.add(folder)

    def write(self, target: Path, src: IO[bytes], name: str) -> None:
        self.mkdir(target.parent)
        with open(target, "wb") as out:
            while chunk := src.read(CHUNK):
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise ArchiveTooLargeError(
                        f"archive {self.archive} expands to more than {self.max_bytes / 2**20:,.0f} MB "
                        f"(at {name!r}; the limit is {MAX_EXPANSION}x its size, at least "
                        f"{MIN_EXTRACT_BUDGET // 2**20} MB): refused as a possible archive bomb; if it "
                        f"is a genuine dataset archive, raise rethink.data.archives.MAX_EXPANSION")
                out.write(chunk)


def _extract_tar(path: Path, dest: Path, writer: _Writer) -> None:
    with tarfile.open(path, "r|*") as tf:  # one streaming pass
        for m in tf:
            writer.count(m.name)
            target = _safe_target(dest, m.name)
            if m.isdir():
                writer.mkdir(target)
            elif m.isfile():
                src = tf.extractfile(m)
                assert src is not None
                writer.write(target, src, m.name)
            else:  # symlink, hardlink, device, fifo, ...
                raise UnsafeArchiveError(f"unsafe archive member {m.name!r}: not a regular file or folder")


def _extract_zip(path: Path, dest: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            writer.count(info.filename)
            target = _safe_target(dest, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip does not say
            if info.is_dir():
                writer.mkdir(target)
            elif kind not in (0, stat.S_IFREG):  # unix symlink, device, fifo
                raise UnsafeArchiveError(f"unsafe archive member {info.filename!r}: not a regular file")
            else:
                with zf.open(info) as src:
                    writer.write(target, src, info.filename)


def safe_extract(path: Path, dest: Path, max_members: int | None = None, max_bytes: int | None = None) -> None:
    """Extract a tar (any compression) or zip into `dest`, refusing anything unsafe:
    absolute paths, '..', links, devices, fifos, paths resolving outside `dest`, more
    than `max_members` members (default MAX_MEMBERS) or more than `max_bytes` extracted
    bytes (default max_extracted_bytes(archive size); counted as written, not as declared).
    On error `dest` may hold a partial extraction: extract into a temp folder."""
    path = Path(path)
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(path, MAX_MEMBERS if max_members is None else max_members,
                     max_extracted_bytes(path.stat().st_size) if max_bytes is None else max_bytes)
    if zipfile.is_zipfile(path):
        _extract_zip(path, dest, writer)
    else:
        _extract_tar(path, dest, writer)


# ---------------------------------------------------------------- what each split needs


def split_requirements(layout: str, split: str) -> list[str]:
    """Paths (relative to the dataset folder) that a split of a layout cannot do without."""
    if layout == TINY_IMAGENET:
        common = ["wnids.txt", "words.txt"]
        return common + (["train"] if split == "train" else [f"{split}/images", f"{split}/{split}_annotations.txt"])
    if layout == IMAGE_FOLDERS:
        return [split]
    if layout == CIFAR_PICKLE:
        batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        return ["batches.meta", *batches]
    if layout == COCO:
        return [f"annotations/instances_{split}.json"]
    return []  # a layout without rules (tests)


def check_splits(spec: DatasetSpec, archive: Archive, folder: Path, path: Path) -> None:
    """Raise IncompleteArchiveError if a split of `spec` is missing from the extracted `folder`."""
    for split in spec.splits:
        missing = [r for r in split_requirements(archive.layout, split) if not (folder / r).exists()]
        if missing:
            source = spec.canonical.url if spec.canonical and spec.canonical.url else spec.homepage
            raise IncompleteArchiveError(
                f"archive {path} has no {split!r} split of dataset {spec.name!r} (missing "
                f"{archive.folder}/{missing[0]}): it is incomplete or another dataset; replace it with a "
                f"complete copy" + (f" ({source})" if source else ""))


def _sample_images(folder: Path, layout: str, splits: tuple[str, ...]) -> list[Path]:
    """The first image of every class folder of every split (a decode check's sample)."""
    if layout == IMAGE_FOLDERS:
        class_dirs = [d for s in splits for d in sorted((folder / s).iterdir()) if d.is_dir()]
    elif layout == TINY_IMAGENET:
        class_dirs = [d / "images" for d in sorted((folder / "train").iterdir()) if d.is_dir()]
        class_dirs += [folder / s / "images" for s in splits if s != "train"]
    else:
        return []
    sample = []
    for d in class_dirs:
        first = next((p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS
                      and not p.name.startswith(".")), None)
        if first is not None:
            sample.append(first)
    return sample


def check_decodes(spec: DatasetSpec, archive: Archive, folder: Path, path: Path) -> None:
    """Decode a sample of the images (one per class folder and split); raise DataError if one fails."""
    from PIL import Image

    for image in _sample_images(folder, archive.layout, spec.splits):
        try:
            with Image.open(image) as im:
                im.convert("RGB")
        except Exception as e:  # PIL raises many kinds on bad files
            raise CorruptImageError(
                f"archive {path} does not hold decodable images ({image.relative_to(folder)}: "
                f"{type(e).__name__}: {e}); its digest was not recorded: replace it with a good copy "
                f"(delete it to download it again)") from None


# ---------------------------------------------------------------- ensure_extracted


def _archive_stem(filename: str) -> str:
    for ext in (".tar.gz", ".tgz", ".tar", ".zip"):
        if filename.endswith(ext):
            return filename[: -len(ext)]
    return filename


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    fd, tmp = mkstemp(path)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def extraction_info(folder: Path) -> dict:
    """The marker of a folder returned by ensure_extracted: dataset, archive, sha256, source, layout."""
    info = _read_json(Path(folder).parent / MARKER)
    if info is None:
        raise DataError(f"{folder} was not extracted by ensure_extracted (no {MARKER} beside it)")
    return info


def ensure_extracted(name: str, data_root: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """The extracted folder of dataset `name` (e.g. .../tiny-imagenet-200), unpacking it if needed."""
    spec = get_spec(name)
    root = paths.data_root(data_root)
    extracted = paths.cache_root() / "extracted"
    extracted.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(extracted)  # left by a killed extraction
    if root.is_dir():
        remove_stale_temps(root)  # a killed download (a no-op on a read-only data root)
    found = locate_archive(spec, root) or _download_canonical(spec, root, progress)
    archive, path = found

    # Fast path: same archive file as last time, already extracted.
    stamp_path = extracted / f"{archive.filename}.stamp.json"
    st = path.stat()
    stamp = {"archive": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    old = _read_json(stamp_path)
    if old and all(old.get(k) == v for k, v in stamp.items()) and (Path(old["folder"]).parent / MARKER).is_file():
        check_splits(spec, archive, Path(old["folder"]), path)
        return Path(old["folder"])

    sha, first_use = _verify_archive(root, archive, path)
    out = extracted / f"{_archive_stem(archive.filename)}-{sha[:16]}"
    if not (out / MARKER).is_file():
        _extract_into(spec, archive, path, sha, out)
    folder = out / archive.folder
    check_splits(spec, archive, folder, path)
    if first_use:  # trust on first use: remember this copy's digest once its images decode
        check_decodes(spec, archive, folder, path)
        _record_first_use(root, archive, sha)
    _write_json(stamp_path, {**stamp, "folder": str(folder), "sha256": sha})
    return folder


def _extract_into(spec: DatasetSpec, archive: Archive, path: Path, sha: str, out: Path) -> None:
    """Extract `path` into a temp folder beside `out`, check it, then rename it to `out`."""
    # an archive of JPEGs expands to about its own size: refuse to start what cannot finish
    check_free_space(out.parent, path.stat().st_size, f"extracting {path}")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=temp_prefix(f"tmp-{archive.filename}")))
    try:
        try:
            safe_extract(path, tmp)
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(out.parent, f"the extraction of {path}") from None
            raise
        if not (tmp / archive.folder).is_dir():
            raise IncompleteArchiveError(
                f"archive {path} does not contain the expected folder {archive.folder!r}: it is "
                f"another archive or a repacked one; replace it with the original")
        check_splits(spec, archive, tmp / archive.folder, path)
        source = "mirror" if archive == spec.mirror else "canonical"
        marker = {"dataset": spec.name, "archive": archive.filename, "sha256": sha,
                  "source": source, "layout": archive.layout, "folder": archive.folder}  # fmt: skip
        (tmp / MARKER).write_text(json.dumps(marker, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, out)  # atomic: `out` is complete or absent
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / MARKER).is_file():
            raise  # (otherwise another process finished the same extraction first)
