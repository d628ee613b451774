"""Datasets: registry (what and where), archives (find, verify, download, extract), cache (decoded arrays)."""
from rethink.data.archives import (
    ArchiveTooLargeError,
    ChecksumError,
    CorruptImageError,
    DataError,
    DatasetNotFoundError,
    IncompleteArchiveError,
    UnsafeArchiveError,
    ensure_extracted,
    safe_extract,
)
from rethink.data.cache import LazyRows, Split, load_split, subset_per_class
from rethink.data.registry import DATASETS, Archive, DatasetSpec, data_version, get_spec

__all__ = [
    "DATASETS", "Archive", "DatasetSpec", "get_spec", "data_version",
    "DataError", "DatasetNotFoundError", "ChecksumError", "UnsafeArchiveError", "ArchiveTooLargeError",
    "IncompleteArchiveError", "CorruptImageError",
    "ensure_extracted", "safe_extract",
    "Split", "LazyRows", "load_split", "subset_per_class",
]  # fmt: skip
