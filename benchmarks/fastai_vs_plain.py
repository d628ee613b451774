"""Overhead of fastai's Learner and of the book's Trainer against a plain PyTorch loop.

Same model (zoo resnet18 by default), same GPU-resident data and augmentation,
same optimizer (torch SGD, fused on CUDA), bf16 autocast on CUDA. Reports
training images/s of each and the ratios to the plain loop.

    python benchmarks/fastai_vs_plain.py [--real] [--epochs 2] [--out benchmarks/results/fastai_vs_plain-<device>.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from rethink.augment import Augment  # noqa: E402
from rethink.data.loader import GPULoader  # noqa: E402
from rethink.models.zoo import create_model  # noqa: E402
from rethink.train.loop import Recipe, Trainer, make_optimizer  # noqa: E402


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def data(args, device):
    if args.real:
        from rethink.data.cache import load_split
        s = load_split("tiny-imagenet", "train", args.image_size)
        images, labels = s.images, s.labels
        if args.n:
            images, labels = images[:args.n], labels[:args.n]
    else:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.n, 3, args.image_size, args.image_size), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 200, (args.n,), generator=g)
    return GPULoader(images, labels, args.batch_size, device=device, shuffle=True, drop_last=True,
                     augment=Augment(translate=4, flip=True), seed=0)


def plain_loop(model, loader, device, epochs):
    opt = make_optimizer(model, Recipe(), device)
    amp = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            with amp():
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)


def trainer_loop(model, loader, device, epochs):
    Trainer(model, loader, None, Recipe(epochs=epochs, warmup_epochs=0), device=device).fit()


def fastai_loop(model, loader, device, epochs):
    import fastai.callback.fp16  # noqa: F401  (Learner.to_bf16)
    import fastai.callback.progress  # noqa: F401  (Learner.no_bar)
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.optimizer import OptimWrapper

    class Epochs:  # fastai calls set_epoch-free iterables; advance our loader's epoch itself
        def __init__(self, loader):
            self.loader, self.device = loader, loader.device

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            yield from self.loader

    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt_func = partial(OptimWrapper, opt=torch.optim.SGD, momentum=0.9, nesterov=True,
                       weight_decay=5e-4, **impl)
    dls = DataLoaders(Epochs(loader), Epochs(loader.eval_loader()), device=device)
    learn = Learner(dls, model, loss_func=torch.nn.CrossEntropyLoss(), opt_func=opt_func, train_bn=True)
    if device.type == "cuda":
        learn.to_bf16()
    with learn.no_bar(), learn.no_logging():
        learn.fit(epochs, lr=0.4, cbs=[SkipValidation()])


def SkipValidation():
    from fastai.callback.core import Callback, CancelValidException

    class _Skip(Callback):
        def before_validate(self):
            raise CancelValidException()
    return _Skip()


def measure(name, fn, args, device):
    loader = data(args, device)
    torch.manual_seed(0)
    model = create_model(args.arch, 200).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    fn(model, loader, device, 1)  # warm-up epoch (cudnn autotuning, allocator)
    synchronize(device)
    t0 = time.perf_counter()
    fn(model, loader, device, args.epochs)
    synchronize(device)
    dt = time.perf_counter() - t0
    images = args.epochs * len(loader) * args.batch_size
    row = {"loop": name, "images_per_s": round(images / dt, 1), "seconds": round(dt, 3), "images": images}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("-n", type=int, default=20480, help="training images (synthetic, or first n real)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure each loop this many times, interleaved; report the best")
    ap.add_argument("--real", action="store_true", help="Tiny ImageNet from the data root instead of noise")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    loops = {"plain PyTorch": plain_loop, "rethink Trainer": trainer_loop, "fastai Learner": fastai_loop}
    runs = {name: [] for name in loops}
    for _ in range(args.repeats):  # interleaved, so a busy machine slows every loop alike
        for name, fn in loops.items():
            runs[name].append(measure(name, fn, args, device))
    rows = [max(rs, key=lambda r: r["images_per_s"]) for rs in runs.values()]
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio_to_plain"] = round(r["images_per_s"] / base, 3)
    import fastai
    result = {"benchmark": "fastai_vs_plain", "device": torch.cuda.get_device_name() if device.type == "cuda"
              else f"cpu ({torch.get_num_threads()} threads)", "torch": torch.__version__,
              "fastai": fastai.__version__, "arch": args.arch, "image_size": args.image_size,
              "batch_size": args.batch_size, "repeats": args.repeats, "data": "tiny-imagenet" if args.real else "synthetic uint8",
              "rows": rows}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
