"""Datasets: registry (what and where), archives (find, verify, download, extract), cache (decoded arrays)."""
from rethink.data.archives import (
    ChecksumError,
    DataError,
    DatasetNotFoundError,
    UnsafeArchiveError,
    ensure_extracted,
    safe_extract,
)
from rethink.data.cache import CorruptImageError, Split, load_split, subset_per_class
from rethink.data.registry import DATASETS, Archive, DatasetSpec, get_spec

__all__ = [
    "DATASETS", "Archive", "DatasetSpec", "get_spec",
    "DataError", "DatasetNotFoundError", "ChecksumError", "UnsafeArchiveError", "CorruptImageError",
    "ensure_extracted", "safe_extract",
    "Split", "load_split", "subset_per_class",
]  # fmt: skip
