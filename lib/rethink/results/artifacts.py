"""Reading and writing a cell's artifacts (checkpoints, final weights) under the user cache.

Every ``torch.load`` of the library goes through ``load_weights``: always
``weights_only=True``, and a truncated, empty or garbage file becomes one
``CorruptFileError`` naming the file (torch's own advice to retry with
``weights_only=False`` is never repeated: that would run code from the file).
What then happens depends on the file:

* the resume checkpoint of an unfinished cell: moved aside (``<name>.corrupt``) and
  the cell restarts from scratch, with a warning (``train.callbacks.Checkpoint``);
* the final weights of a finished cell: ``usable_weights`` moves them aside and says
  they are missing, so the caller's retrain-if-missing path retrains them;
* anything else: the error says which file to delete.

``save_torch`` writes atomically and turns a full disk into a ``DiskFullError``
naming the folder. ``remove_resume_files`` is what ``ResultsStore.run`` calls once a
cell's record is stored: the final weights stay, the checkpoints go.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import RethinkError
from ..files import disk_full_error, is_disk_full, mkstemp, remove_stale_temps

CHECKPOINT_FILE = "checkpoint.pt"  # resume state of an unfinished cell (train.callbacks.Checkpoint)
WEIGHTS_FILE = "weights.pt"  # final weights of a finished cell
RESUME_FILES = (CHECKPOINT_FILE, CHECKPOINT_FILE + ".corrupt")
# torch's stream writer fails like this when the disk fills up mid-save
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")


class CorruptFileError(RethinkError):
    """A checkpoint or weights file cannot be read (truncated, empty, garbage)."""

    def __init__(self, what: str, path: Path, reason: str,
                 fix: str = "delete it and run again to recompute it"):
        self.what, self.path, self.reason = what, path, reason
        super().__init__(f"{self.problem}: {fix}")

    @property
    def problem(self) -> str:
        return f"{self.what} {self.path} is corrupt ({self.reason})"


def _reason(e: BaseException, size: int) -> str:
    """Why torch could not read the file, without torch's advice to disable weights_only."""
    first = (str(e).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")  # its first sentence
    detail = f": {first}" if first and "weights_only" not in first and len(first) < 120 else ""
    kind = type(e).__name__
    if kind.islower():  # struct.error, zlib.error: say whose
        kind = f"{type(e).__module__}.{kind}"
    return f"{size} bytes; {kind}{detail}"


def load_weights(path: str | os.PathLike, *, what: str = "weights file", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; an unreadable file raises CorruptFileError
    (a missing one FileNotFoundError)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # EOFError, UnpicklingError, RuntimeError (bad zip), ...
        size = path.stat().st_size if path.exists() else 0
        raise CorruptFileError(what, path, _reason(e, size)) from None


def move_aside(path: Path) -> Path:
    """Rename an unreadable file to ``<name>.corrupt`` (replacing an older one); returns the new path."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    return aside


def usable_weights(path: str | os.PathLike, *, what: str = "weights") -> bool:
    """Whether final weights exist and load. Corrupt ones are moved aside with a warning and
    count as missing, so the caller retrains them (``if not usable_weights(p): retrain()``)."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        load_weights(path, what=what)
    except CorruptFileError as e:
        aside = move_aside(path)
        print(f"warning: {e.problem}: moved it to {aside.name}; retraining it",
              file=sys.stderr, flush=True)
        return False
    return True


def _is_torch_write_failure(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILURES)


def save_torch(obj: Any, path: str | os.PathLike, *, what: str = "checkpoint") -> None:
    """torch.save to a temp file beside `path`, then rename it into place. A full disk
    (ENOSPC, or torch's 'enforce fail at inline_container.cc') raises DiskFullError."""
    import torch

    path = Path(path)
    fd, tmp = mkstemp(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e) or _is_torch_write_failure(e):
            raise disk_full_error(path.parent, f"{what} {path}") from None
        raise


def remove_resume_files(artifact_dir: Path) -> None:
    """Delete a finished cell's checkpoints and stale temps; its final weights stay."""
    for name in RESUME_FILES:
        (artifact_dir / name).unlink(missing_ok=True)
    remove_stale_temps(artifact_dir)
