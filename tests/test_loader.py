"""GPULoader: determinism, resume, coverage, eval loader; CPU (and CUDA if present)."""
import numpy as np
import pytest
import torch

from rethink.augment import Augment, normalize
from rethink.data.loader import GPULoader

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
N, H, W = 50, 8, 8


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 3, H, W), dtype=np.uint8)
    # label = sample id, so batches reveal which samples they hold
    return images, np.arange(N)


def make(split, device="cpu", **kw):
    kw = {"batch_size": 16, "augment": Augment(translate=2, flip=True, cutout=3), "seed": 7} | kw
    return GPULoader(*split, device=device, **kw)


def epoch_batches(loader, epoch=None):
    if epoch is not None:
        loader.set_epoch(epoch)
    return [(x.cpu(), y.cpu()) for x, y in loader]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


@pytest.mark.parametrize("device", DEVICES)
def test_batch_format(split, device):
    loader = make(split, device)
    x, y = next(iter(loader))
    assert x.shape == (16, 3, H, W) and x.dtype == torch.float32 and x.device.type == device
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == torch.int64 and y.shape == (16,)
    assert loader.num_samples == N and loader.batch_size == 16 and len(loader) == 4


def test_same_seed_and_epoch_identical(split):
    assert same(epoch_batches(make(split), 1), epoch_batches(make(split), 1))


def test_different_epoch_or_seed_differs(split):
    base = make(split)
    e0, e1 = epoch_batches(base, 0), epoch_batches(base, 1)
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in e1]))
    other_seed = epoch_batches(make(split, seed=8), 0)
    assert not torch.equal(torch.cat([y for _, y in e0]), torch.cat([y for _, y in other_seed]))


def test_resume_equals_uninterrupted(split):
    uninterrupted = make(split)
    run = [epoch_batches(uninterrupted) for _ in range(4)]  # epoch advances by itself
    assert uninterrupted.epoch == 4
    resumed = make(split)
    resumed.set_epoch(2)
    assert same(run[2], epoch_batches(resumed))
    assert same(run[3], epoch_batches(resumed))


def test_every_sample_once_per_epoch(split):
    loader = make(split)
    for epoch in range(3):
        batches = epoch_batches(loader, epoch)
        assert len(batches) == len(loader) == 4 and len(batches[-1][1]) == N % 16
        assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(N))


def test_drop_last(split):
    loader = make(split, drop_last=True)
    batches = epoch_batches(loader, 0)
    assert len(batches) == len(loader) == N // 16
    assert all(len(y) == 16 for _, y in batches)
    labels = torch.cat([y for _, y in batches])
    assert len(set(labels.tolist())) == len(labels)


def test_augmentation_applied_and_changes_per_epoch(split):
    images, _ = split
    loader = make(split)
    plain = normalize(torch.from_numpy(images), loader.mean, loader.std)
    x0, y0 = epoch_batches(loader, 0)[0]
    assert not torch.equal(x0, plain[y0])
    # same sample, two epochs -> (almost surely) different augmentation
    by_id = [dict(zip(torch.cat([y for _, y in b]).tolist(), torch.cat([x for x, _ in b])))
             for b in (epoch_batches(loader, 0), epoch_batches(loader, 1))]
    assert sum(not torch.equal(by_id[0][i], by_id[1][i]) for i in range(N)) > N // 2


def test_eval_loader_is_plain_and_ordered(split):
    images, labels = split
    train = make(split)
    evl = train.eval_loader(batch_size=20)
    assert evl.images is train.images  # shared, no second copy
    batches = epoch_batches(evl)
    assert [len(y) for _, y in batches] == [20, 20, 10]
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(torch.cat([y for _, y in batches]), torch.from_numpy(labels))
    torch.testing.assert_close(x, normalize(torch.from_numpy(images), train.mean, train.std))
    assert same(batches, epoch_batches(evl, 5))  # epoch irrelevant without shuffle/augment


def test_indices_subset_and_memmap(split, tmp_path):
    images, labels = split
    path = tmp_path / "images.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=images.shape)
    mm[:] = images
    mm.flush()
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    subset = np.arange(0, N, 3)
    loader = GPULoader(mm, labels, 8, device="cpu", indices=subset, shuffle=False)
    assert loader.num_samples == len(subset)
    y = torch.cat([y for _, y in loader])
    assert torch.equal(y, torch.from_numpy(subset))
    # memmap and in-memory arrays give the same batches
    assert same(epoch_batches(make((mm, labels))), epoch_batches(make(split)))


@needs_cuda
def test_cpu_and_cuda_batches_identical(split):
    cpu, gpu = make(split, "cpu"), make(split, "cuda")
    for epoch in range(2):
        for (xc, yc), (xg, yg) in zip(epoch_batches(cpu, epoch), epoch_batches(gpu, epoch)):
            assert torch.equal(yc, yg)
            torch.testing.assert_close(xc, xg, rtol=0, atol=1e-6)  # same uint8 pixels, FMA rounding only


@needs_cuda
@pytest.mark.filterwarnings("ignore:Synchronization debug mode")
def test_no_host_sync_inside_an_epoch(split):
    loader = make(split, "cuda")
    batches = iter(loader)
    next(batches)  # epoch setup (permutation + params upload) happens here
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(rest) == len(loader) - 1
