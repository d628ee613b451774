"""What every chapter's experiment module shares: resumable pieces and the command line."""
from __future__ import annotations

import argparse
from typing import Callable, Hashable, Sequence, TypeVar

import torch

T = TypeVar("T")


def training_device() -> torch.device:
    """CUDA (with cuDNN autotuning) if there is a GPU, else the CPU."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    return torch.device("cpu")


def unique(items: Sequence[T], key: Callable[[T], Hashable]) -> list[T]:
    """`items` without later repeats of the same key, in order."""
    seen, out = set(), []
    for item in items:
        if (k := key(item)) not in seen:
            seen.add(k)
            out.append(item)
    return out


def split_piece(items: Sequence[T], piece: str,
                same_group: Callable[[T, T], bool] | None = None) -> list[T]:
    """'k/n': the k-th of n contiguous pieces of `items`, balanced by count.

    ``same_group(first_of_group, item)`` keeps a run of consecutive items together
    (e.g. a teacher and its students); by default every item is its own group.
    """
    k, n = (int(v) for v in piece.split("/"))
    if not 1 <= k <= n:
        raise ValueError(f"--piece {piece!r}: expected k/n with 1 <= k <= n")
    groups: list[list[T]] = []
    for item in items:
        if same_group and groups and same_group(groups[-1][0], item):
            groups[-1].append(item)
        else:
            groups.append([item])
    out, start = [], 0
    for group in groups:
        if start * n // len(items) == k - 1:
            out += group
        start += len(group)
    return out


def experiment_parser(prog: str, doc: str, only_help: str) -> argparse.ArgumentParser:
    """The options every experiment module takes: --profile, --data-root, --only, --piece, -p."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--only", nargs="*", help=only_help)
    ap.add_argument("--piece", help="k/n: run the k-th of n pieces (each resumable)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="override a notebook parameter (YAML value)")
    return ap
