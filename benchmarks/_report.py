"""Shared output of the benchmark scripts: the device's name and the one-line JSON result."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def device_label(device: str | torch.device) -> str:
    """The GPU's name, or 'cpu (N threads)'."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


def emit(result: dict, out: Path | None) -> dict:
    """Print `result` as one JSON line and write it to `out` (if given)."""
    line = json.dumps(result)
    print(line)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n")
    return result
