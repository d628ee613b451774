"""Files the library writes: temp names that say who wrote them, stale-temp cleanup,
per-cell locks and disk-full reporting.

Temp files and folders are named ``.<target>.<host>-<pid>.<random><suffix>`` (host: 6
hex digits of the host name's hash), so a temp whose writer is gone can be recognised
and removed at the next start-up instead of filling the disk forever:

* written on this host: stale when process <pid> no longer exists;
* written on another host (a shared cache): stale after ``STALE_AFTER_S``;
* an older, untagged temp (``.*.tmp``, ``.*.part``, ``.tmp-*``): stale after the same age.

``.gitignore`` ignores every such name, so a record's temp never shows in ``git status``.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import RethinkError

STALE_AFTER_S = 24 * 3600  # a temp of another host, or an untagged one, older than this is stale
_TAGGED = re.compile(r"\.([0-9a-f]{6})-(\d+)\.")
_UNTAGGED = ("*.tmp", "*.part", ".tmp-*")  # what temps looked like before they carried a tag
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(RethinkError):
    """No space left (or too little) on the disk holding a folder the library writes to."""


# ---------------------------------------------------------------- temp names


def host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def writer_tag() -> str:
    """``<host>-<pid>``: who is writing a temp file."""
    return f"{host_tag()}-{os.getpid()}"


def temp_prefix(name: str) -> str:
    """Prefix for tempfile.mkstemp/mkdtemp temps of the target file `name`."""
    return f".{name}.{writer_tag()}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: mkstemp's files are private (0600)


def mkstemp(target: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A tagged temp file beside `target` (same folder, so os.replace is atomic), with the
    permissions a plain open() would give it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=temp_prefix(target.name), suffix=suffix)
    os.fchmod(fd, _FILE_MODE)
    return fd, Path(tmp)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether a temp file or folder was left by a writer that is gone (see the module doc)."""
    now = time.time() if now is None else now
    m = _TAGGED.search(path.name)
    if m and m.group(1) == host_tag():
        return int(m.group(2)) != os.getpid() and not _process_exists(int(m.group(2)))
    try:
        return now - path.lstat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def _temp_candidates(folder: Path) -> set[Path]:
    found = {p for p in folder.iterdir() if p.name.startswith(".") and _TAGGED.search(p.name)}
    for pattern in _UNTAGGED:
        found.update(p for p in folder.glob(pattern) if p.name.startswith("."))
    return found


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the stale temps directly in `folder`; returns what was removed. Never raises
    (a read-only data root, or a temp another process removes first, is fine)."""
    removed = []
    try:
        candidates = _temp_candidates(Path(folder))
    except OSError:
        return removed
    for p in sorted(candidates):
        if not is_stale(p):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------- disk space


def human_size(n: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _free(folder: Path) -> str:
    try:
        return f"{human_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        return "free space unknown"


def disk_full_error(folder: Path, what: str) -> DiskFullError:
    folder = Path(folder)
    return DiskFullError(
        f"disk full: could not write {what}; the disk holding {folder} is full ({_free(folder)}): "
        f"free space there, or set RETHINK_CACHE to a folder on a disk with room")


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFullError before writing `needed` bytes under `folder` if they do not fit."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFullError(
            f"not enough disk space for {what}: it needs {human_size(needed)} in {folder}, "
            f"which has {human_size(free)} free: free space there, or set RETHINK_CACHE to a "
            f"folder on a disk with room")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL


# ---------------------------------------------------------------- locks

_local = threading.local()  # .held: the lock files this thread holds (re-entrant in a thread)


def _held() -> set[str]:
    if not hasattr(_local, "held"):
        _local.held = set()
    return _local.held


def _lock_owner(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def exclusive(lock_file: Path, waiting: str) -> Iterator[None]:
    """Hold an flock on `lock_file`. If another process holds it, print once
    ``waiting.format(pid=<its pid>)`` on stderr, then wait for it. Re-entrant within a thread."""
    key = str(Path(lock_file).resolve())
    if key in _held():
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_owner(fd)
            print(waiting.format(pid=pid or "unknown"), file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # who holds it, for the message of the next one waiting
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # e.g. a full disk: the lock works without it
            pass
        _held().add(key)
        try:
            yield
        finally:
            _held().discard(key)
    finally:
        os.close(fd)  # releases the lock


def atomic_write(path: Path, write, mode: str = "wb", fsync: bool = False) -> None:
    """``write(f)`` into a temp file (named after its writer) renamed onto ``path``: a reader
    never sees half a file; a full disk is a one-line error naming the folder."""
    fd, tmp = mkstemp(path)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full_error(path.parent, str(path)) from None
        raise


def progress_off() -> bool:
    """TQDM_DISABLE=1 (set by the book's runner for notebook kernels) turns every progress bar off,
    also those the library asks for explicitly: a page would show a bar's last state as stderr."""
    return os.environ.get("TQDM_DISABLE", "") not in ("", "0")
