"""Where things live: data root, cache, results store. Each is overridable by env var."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rethink"


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Folder holding dataset archives (and their extracted copies).

    Order: the explicit argument, $RETHINK_DATA, then ~/.cache/rethink/data.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get("RETHINK_DATA"):
        return Path(os.environ["RETHINK_DATA"]).expanduser().resolve()
    return _user_cache() / "data"


def cache_root() -> Path:
    """Decoded arrays, extracted archives, checkpoints and weights: never committed.

    $RETHINK_CACHE, else ~/.cache/rethink.
    """
    if os.environ.get("RETHINK_CACHE"):
        return Path(os.environ["RETHINK_CACHE"]).expanduser().resolve()
    return _user_cache()


def results_root() -> Path:
    """The results store (small JSON records, committed). $RETHINK_RESULTS, else <repo>/results."""
    if os.environ.get("RETHINK_RESULTS"):
        return Path(os.environ["RETHINK_RESULTS"]).expanduser().resolve()
    return REPO_ROOT / "results"
