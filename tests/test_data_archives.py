"""Finding, verifying, downloading and safely extracting archives (no network: a local HTTP server)."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from rethink.data import archives, registry
from rethink.data.archives import (
    ChecksumError,
    DatasetNotFoundError,
    UnsafeArchiveError,
    ensure_extracted,
    parse_digest,
    safe_extract,
)


def _spec(name: str, mirror: registry.Archive | None = None, canonical: registry.Archive | None = None):
    return registry.DatasetSpec(
        name=name, title=name, num_classes=1, splits=("train",), license="none", homepage="",
        default_image_size=8, mirror=mirror, canonical=canonical,
    )  # fmt: skip


def _register(monkeypatch, spec) -> str:
    monkeypatch.setitem(registry.DATASETS, spec.name, spec)
    return spec.name


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data_small_tar(data_env, data_make_tar) -> Path:
    """A small valid archive `small.tar.gz` holding small/train/a/x.txt, in the data root."""
    return data_make_tar(data_env / "small.tar.gz", {"small/train/a/x.txt": b"hello"})


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base URL, folder, list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, requests
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- registry


def test_registry_specs_are_complete():
    assert set(registry.DATASETS) >= {"tiny-imagenet", "cifar10", "imagenette", "clothing", "coco128"}
    for spec in registry.DATASETS.values():
        assert spec.mirror is not None and spec.mirror.digest.startswith("sha256:")
        for a in spec.archives:
            if a.digest:
                parse_digest(a.digest)
    assert registry.get_spec("cifar10").canonical.digest == "md5:c58f30108f718f92721af3b95e74349a"
    assert registry.get_spec("tiny-imagenet").num_classes == 200
    with pytest.raises(KeyError, match="known"):
        registry.get_spec("nope")


def test_parse_digest():
    assert parse_digest("md5:ABC") == ("md5", "abc")
    assert parse_digest("sha256:AB") == ("sha256", "ab")
    with pytest.raises(ValueError):
        parse_digest("abc")
    with pytest.raises(ValueError):
        parse_digest("sha1:abc")


# ---------------------------------------------------------------- safe extraction


def test_zip_with_dotdot_member_is_rejected(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("good/ok.txt", "ok")
        zf.writestr("../evil", "pwned")
    out = tmp_path / "a" / "out"
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil"):
        safe_extract(evil, out)
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not list(tmp_path.rglob("evil"))


def _tar_with(path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("top/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        tf.addfile(info, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    "info",
    [
        _member("top/link", tarfile.SYMTYPE, "/etc/passwd"),
        _member("top/inner", tarfile.SYMTYPE, "ok.txt"),  # even a harmless-looking one
        _member("top/hard", tarfile.LNKTYPE, "top/ok.txt"),
        _member("top/dev", tarfile.CHRTYPE),
        _member("top/fifo", tarfile.FIFOTYPE),
    ],
    ids=["symlink-out", "symlink-in", "hardlink", "device", "fifo"],
)
def test_tar_with_links_or_special_files_is_rejected(tmp_path, info):
    path = _tar_with(tmp_path / "bad.tar.gz", info)
    with pytest.raises(UnsafeArchiveError, match=info.name):
        safe_extract(path, tmp_path / "out")


@pytest.mark.parametrize("name", ["/abs/file", "top/../../escape", "..", "a\\..\\b"])
def test_tar_with_escaping_names_is_rejected(tmp_path, name):
    info = tarfile.TarInfo(name)
    info.size = 1
    path = _tar_with(tmp_path / "bad.tar.gz", info, b"x")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "escape").exists() and not Path("/abs/file").exists()


def test_zip_symlink_is_rejected(tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="top/link"):
        safe_extract(path, tmp_path / "out")


def test_unsafe_archive_leaves_no_extraction(data_env, monkeypatch, tmp_path):
    evil = data_env / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("evil/ok.txt", "ok")
        zf.writestr("evil/../../../evil", "pwned")
    name = _register(monkeypatch, _spec("evil", registry.Archive("evil.zip", None, "evil", "image-folders")))
    with pytest.raises(UnsafeArchiveError, match="evil/../../../evil"):
        ensure_extracted(name)
    extracted = tmp_path / "cache" / "extracted"
    assert [p.name for p in extracted.iterdir() if p.is_dir()] == []  # temp folder removed
    assert [p.name for p in tmp_path.rglob("*evil*")] == ["evil.zip"]  # nothing escaped


# ---------------------------------------------------------------- ensure_extracted


def test_extracts_into_cache_and_skips_second_time(data_small_tar, monkeypatch, tmp_path):
    digest = "sha256:" + _sha256(data_small_tar)
    name = _register(monkeypatch, _spec("small", registry.Archive("small.tar.gz", digest, "small", "image-folders")))
    folder = ensure_extracted(name, progress=False)
    assert folder.name == "small" and (folder / "train/a/x.txt").read_bytes() == b"hello"
    assert folder.is_relative_to(tmp_path / "cache" / "extracted")
    info = archives.extraction_info(folder)
    assert info["sha256"] == digest.split(":")[1] and info["source"] == "mirror"

    def boom(*a, **kw):
        raise AssertionError("should not hash or extract again")

    monkeypatch.setattr(archives, "safe_extract", boom)
    monkeypatch.setattr(archives, "file_digests", boom)
    assert ensure_extracted(name) == folder


def test_md5_digest_is_accepted(data_small_tar, monkeypatch):
    md5 = "md5:" + hashlib.md5(data_small_tar.read_bytes()).hexdigest()
    name = _register(monkeypatch, _spec("small", registry.Archive("small.tar.gz", md5, "small", "image-folders")))
    assert (ensure_extracted(name) / "train/a/x.txt").exists()


def test_checksum_mismatch_names_file_expected_and_actual(data_small_tar, monkeypatch):
    wrong = "sha256:" + "0" * 64
    name = _register(monkeypatch, _spec("small", registry.Archive("small.tar.gz", wrong, "small", "image-folders")))
    with pytest.raises(ChecksumError) as e:
        ensure_extracted(name)
    msg = str(e.value)
    assert str(data_small_tar) in msg and "0" * 64 in msg and _sha256(data_small_tar) in msg
    assert "delete" in msg


def test_missing_dataset_names_dataset_url_and_fix(data_env, monkeypatch):
    url = "http://127.0.0.1:9/nothing-here.tar.gz"  # discard port: connection refused
    canonical = registry.Archive("nothing-here.tar.gz", None, "x", "image-folders", url)
    name = _register(monkeypatch, _spec("ghost-set", canonical=canonical))
    with pytest.raises(DatasetNotFoundError) as e:
        ensure_extracted(name, progress=False)
    msg = str(e.value)
    for part in ("ghost-set", url, "RETHINK_DATA", "data_root", str(data_env), "nothing-here.tar.gz"):
        assert part in msg
    assert not list(data_env.iterdir())  # no partial download left


def test_no_download_url_is_reported(data_env, monkeypatch):
    name = _register(monkeypatch, _spec("local-only", registry.Archive("local.tar.gz", None, "x", "coco")))
    with pytest.raises(DatasetNotFoundError, match="local-only.*no download URL.*RETHINK_DATA"):
        ensure_extracted(name)


def test_download_then_verify_and_extract(data_env, http_server, data_make_tar, monkeypatch):
    base, www, requests = http_server
    served = data_make_tar(www / "remote.tar.gz", {"remote/train/a/x.txt": b"fetched"})
    digest = "md5:" + hashlib.md5(served.read_bytes()).hexdigest()
    canonical = registry.Archive("remote.tar.gz", digest, "remote", "image-folders", f"{base}/remote.tar.gz")
    name = _register(monkeypatch, _spec("remote", registry.Archive("mirror.tar.gz", None, "m", "x"), canonical))

    folder = ensure_extracted(name, progress=True)  # exercises the progress bar too
    assert (folder / "train/a/x.txt").read_bytes() == b"fetched"
    assert (data_env / "remote.tar.gz").read_bytes() == served.read_bytes()
    assert [p.name for p in data_env.iterdir()] == ["remote.tar.gz"]  # no temp file left
    assert archives.extraction_info(folder)["source"] == "canonical"
    assert ensure_extracted(name) == folder and requests == ["/remote.tar.gz"]  # downloaded once


def test_download_with_bad_checksum_keeps_nothing(data_env, http_server, data_make_tar, monkeypatch):
    base, www, _ = http_server
    data_make_tar(www / "remote.tar.gz", {"remote/x.txt": b"tampered"})
    canonical = registry.Archive("remote.tar.gz", "md5:" + "1" * 32, "remote", "x", f"{base}/remote.tar.gz")
    name = _register(monkeypatch, _spec("remote", canonical=canonical))
    with pytest.raises(ChecksumError, match=f"remote.tar.gz.*{'1' * 32}.*{base}"):
        ensure_extracted(name, progress=False)
    assert not list(data_env.iterdir())


def test_http_error_is_reported(data_env, http_server, monkeypatch):
    base, _, _ = http_server
    canonical = registry.Archive("absent.zip", None, "absent", "x", f"{base}/absent.zip")
    name = _register(monkeypatch, _spec("absent", canonical=canonical))
    with pytest.raises(DatasetNotFoundError, match="404"):
        ensure_extracted(name, progress=False)


def test_trust_on_first_use(data_env, http_server, data_make_tar, monkeypatch):
    base, www, _ = http_server
    served = data_make_tar(www / "tofu.tar.gz", {"tofu/x.txt": b"v1"})
    canonical = registry.Archive("tofu.tar.gz", None, "tofu", "x", f"{base}/tofu.tar.gz")
    name = _register(monkeypatch, _spec("tofu", canonical=canonical))
    ensure_extracted(name, progress=False)
    record = data_env / "tofu.tar.gz.sha256"
    assert record.read_text().split()[0] == _sha256(served)

    data_make_tar(data_env / "tofu.tar.gz", {"tofu/x.txt": b"v2, not what we saw first"})
    with pytest.raises(ChecksumError, match="recorded on first use.*delete that record"):
        ensure_extracted(name, progress=False)


# ---------------------------------------------------------------- every split, limits, temps


def test_archive_without_a_split_is_refused_at_extraction(data_env, data_make_tar, monkeypatch, tmp_path):
    path = data_make_tar(data_env / "halves.tar.gz", {"halves/train/a/x.jpg": b"x"})
    spec = registry.DatasetSpec(
        name="halves", title="halves", num_classes=1, splits=("train", "validation"), license="none",
        homepage="https://example.org/halves", default_image_size=8, canonical=None,
        mirror=registry.Archive("halves.tar.gz", "sha256:" + _sha256(path), "halves", registry.IMAGE_FOLDERS),
    )  # fmt: skip
    name = _register(monkeypatch, spec)
    with pytest.raises(archives.IncompleteArchiveError) as e:
        ensure_extracted(name, progress=False)
    assert str(e.value) == (f"archive {path} has no 'validation' split of dataset 'halves' (missing "
                            f"halves/validation): it is incomplete or another dataset; replace it with a "
                            f"complete copy (https://example.org/halves)")
    assert not [p for p in (tmp_path / "cache" / "extracted").iterdir() if p.is_dir()]  # nothing kept


def test_tiny_imagenet_without_val_names_the_missing_file(data_env, data_make_tar, monkeypatch):
    files = {f"tiny-imagenet-200/{f}": b"n01\n" for f in ("wnids.txt", "words.txt")}
    files["tiny-imagenet-200/train/n01/images/n01_0.JPEG"] = b"x"
    path = data_make_tar(data_env / "t.tar.gz", files)
    spec = registry.DatasetSpec(
        name="t", title="t", num_classes=1, splits=("train", "val"), license="none", homepage="",
        default_image_size=8, canonical=None,
        mirror=registry.Archive("t.tar.gz", "sha256:" + _sha256(path), "tiny-imagenet-200", registry.TINY_IMAGENET),
    )  # fmt: skip
    with pytest.raises(archives.IncompleteArchiveError, match=r"has no 'val' split of dataset 't' \(missing "
                       r"tiny-imagenet-200/val/images\): it is incomplete or another dataset; replace it "
                       r"with a complete copy$"):
        ensure_extracted(_register(monkeypatch, spec), progress=False)


def test_too_many_members_is_refused(tmp_path, data_make_tar):
    path = data_make_tar(tmp_path / "many.tar.gz", {f"many/{i}.txt": b"x" for i in range(5)})
    with pytest.raises(archives.ArchiveTooLargeError) as e:
        safe_extract(path, tmp_path / "out", max_members=3)
    assert str(e.value) == (f"archive {path} has more than 3 members (at 'many/3.txt'): refused as a possible "
                            f"archive bomb; if it is a genuine dataset archive, raise "
                            f"rethink.data.archives.MAX_MEMBERS")


def test_archive_bomb_is_refused(tmp_path):
    """The reviewer's case: a 65 KB archive expanding to 64 MB stops at the 16 MB floor."""
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        info = tarfile.TarInfo("bomb/zeros")
        info.size = 64 * 2**20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    assert path.stat().st_size < 2**20
    with pytest.raises(archives.ArchiveTooLargeError) as e:
        safe_extract(path, tmp_path / "out")
    assert str(e.value).startswith(f"archive {path} expands to more than 16 MB (at 'bomb/zeros'; the limit "
                                   f"is 20x its size, at least 16 MB): refused as a possible archive bomb")
    assert (tmp_path / "out" / "bomb" / "zeros").stat().st_size <= 16 * 2**20


def test_zip_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/zeros", bytes(2**20))
    monkeypatch.setattr(archives, "MIN_EXTRACT_BUDGET", 0)
    with pytest.raises(archives.ArchiveTooLargeError, match=r"bomb\.zip expands to more than 0 MB"):
        safe_extract(path, tmp_path / "out")
    assert archives.max_extracted_bytes(10**8) == 20 * 10**8  # a real archive: 20x its size


def test_real_archives_fit_the_limits():
    """Tiny ImageNet's canonical zip, the largest, has ~120k members and barely compresses."""
    assert archives.MAX_MEMBERS >= 2 * 120_206
    assert archives.max_extracted_bytes(248_100_043) > 2 * 248_100_043  # zip size; JPEGs expand ~1.1x
    assert archives.max_extracted_bytes(6_566_735) > 16 * 2**20  # the smallest (clothing) archive


def test_stale_temps_of_killed_extractions_and_downloads_are_removed(data_small_tar, monkeypatch, tmp_path):
    from rethink import files

    digest = "sha256:" + _sha256(data_small_tar)
    name = _register(monkeypatch, _spec("small", registry.Archive("small.tar.gz", digest, "small", "image-folders")))
    extracted = tmp_path / "cache" / "extracted"
    dead = f"{files.host_tag()}-999999999"  # no such pid
    stale_dir = extracted / f".tmp-small.tar.gz.{dead}.x1y2"
    (stale_dir / "small").mkdir(parents=True)
    (stale_dir / "small" / "big.bin").write_bytes(b"0" * 1000)
    stale_part = data_small_tar.parent / f".remote.tar.gz.{dead}.abcd.part"
    stale_part.write_bytes(b"partial download")
    live = extracted / f".tmp-other.tar.gz.{files.writer_tag()}.zz"  # this process: still writing
    live.mkdir()
    ensure_extracted(name, progress=False)
    assert not stale_dir.exists() and not stale_part.exists() and live.exists()


def test_untagged_temps_are_removed_once_old(tmp_path):
    import os
    from rethink import files

    old, new = tmp_path / ".r.json.abc123.tmp", tmp_path / ".s.json.def456.tmp"
    old.write_text("x")
    new.write_text("y")
    os.utime(old, (0, 0))
    assert files.remove_stale_temps(tmp_path) == [old] and new.exists()


# ---------------------------------------------------------------- data_version


def test_data_version_uses_the_published_digest_without_hashing(data_env, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("hashed")

    monkeypatch.setattr(archives, "file_digests", boom)
    # no archive here: the canonical zip would be downloaded; its md5 names it already
    assert registry.data_version("tiny-imagenet") == "tiny-imagenet-200.zip:90528d7ca1a4"
    (data_env / "tiny-imagenet-200-sub400.tar.gz").write_bytes(b"")  # the mirror is looked for first
    assert registry.data_version("tiny-imagenet") == "tiny-imagenet-200-sub400.tar.gz:ab5ff0cbb413"
    assert registry.data_version("tiny-imagenet", data_root="/nonexistent") == "tiny-imagenet-200.zip:90528d7ca1a4"


def test_data_version_of_a_trusted_on_first_use_archive(data_small_tar, monkeypatch):
    name = _register(monkeypatch, _spec("small", registry.Archive("small.tar.gz", None, "small", "image-folders")))
    calls = []
    real = archives.file_digests
    monkeypatch.setattr(archives, "file_digests", lambda *a: calls.append(a) or real(*a))
    want = f"small.tar.gz:{_sha256(data_small_tar)[:12]}"
    assert registry.data_version(name) == want and registry.data_version(name) == want
    assert len(calls) == 1  # hashed once per process
    ensure_extracted(name, progress=False)  # records the digest on first use
    calls.clear()
    assert registry.data_version(name) == want and calls == []


def test_data_version_of_a_missing_local_only_dataset(data_env, monkeypatch):
    name = _register(monkeypatch, _spec("local-only", registry.Archive("local.tar.gz", None, "x", "coco")))
    with pytest.raises(DatasetNotFoundError, match="local-only.*no download URL"):
        registry.data_version(name)


def test_extraction_needing_more_than_the_free_space_is_refused(data_small_tar, monkeypatch, tmp_path):
    import shutil
    from rethink import files

    digest = "sha256:" + _sha256(data_small_tar)
    name = _register(monkeypatch, _spec("small", registry.Archive("small.tar.gz", digest, "small", "image-folders")))
    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 10))
    with pytest.raises(files.DiskFullError, match=f"^not enough disk space for extracting {data_small_tar}: "
                       f"it needs {data_small_tar.stat().st_size} B in {tmp_path / 'cache' / 'extracted'}, which has "
                       f"10 B free: free space there, or set RETHINK_CACHE to a folder on a disk with room$"):
        ensure_extracted(name, progress=False)
