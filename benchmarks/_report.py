"""Shared output of the benchmark scripts: the device's name and the one-line JSON result."""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import torch


def device_label(device: str | torch.device) -> str:
    """The GPU's name, or 'cpu (N threads)'."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


def today() -> str:
    """The UTC date, as results files record it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def emit(result: dict, out: Path | None) -> dict:
    """Print `result` (with today's date added) as one JSON line and write it to `out` (if given)."""
    result.setdefault("date", today())
    line = json.dumps(result)
    print(line)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n")
    return result


def add_device_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--threads (torch CPU threads), --device (default: CUDA if available) and --out (the JSON result)."""
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path)
    return p


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """p.parse_args(argv), with --threads applied."""
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
