"""Training throughput of every zoo architecture on synthetic 64px data.

Used to size the `full` profile: images/s per model for one optimizer step with
the book's recipe (bf16 autocast on CUDA, channels_last, fused SGD).

    python benchmarks/zoo_throughput.py --batch-size 512 --steps 30 [--compile resnet18]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from rethink.models.zoo import ARCHITECTURES, create_model  # noqa: E402


def throughput(arch: str, batch_size: int, steps: int, device: str, compile_model: bool) -> dict:
    model = create_model(arch, 200).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=5e-5, **({"fused": True} if device == "cuda" else {}))
    x = torch.randn(batch_size, 3, 64, 64, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 200, (batch_size,), device=device)
    step_model = torch.compile(model) if compile_model else model
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step():
        with amp:
            loss = torch.nn.functional.cross_entropy(step_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"arch": arch, "compiled": compile_model, "batch_size": batch_size,
            "images_per_s": round(batch_size * steps / dt, 1), "warmup_s": round(warmup, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--archs", nargs="*", default=list(ARCHITECTURES))
    p.add_argument("--compile", nargs="*", default=[], help="archs to also time with torch.compile")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    rows = []
    for arch in args.archs:
        rows.append(throughput(arch, args.batch_size, args.steps, device, False))
        print(json.dumps(rows[-1]), flush=True)
    for arch in args.compile:
        rows.append(throughput(arch, args.batch_size, args.steps, device, True))
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                        "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
