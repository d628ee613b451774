"""Batched RandAugment vs torchvision op by op, determinism, Compose; CPU (and CUDA if present)."""
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from rethink.augment import (RANDAUGMENT_OPS, Augment, Compose, ComposeParams, RandAugment, RandAugmentParams,
                             normalize, op_magnitudes, randaugment_apply, randaugment_reference_apply)
from rethink.data.loader import GPULoader, epoch_generator

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
ENHANCE = ["Brightness", "Color", "Contrast", "Sharpness"]
# H x W with H * W a multiple of 32, so torchvision's CPU kernels take their vectorised path throughout
SIZES = [(32, 32), (24, 20)]
BINS = [0, 15, 30]  # magnitude 0, middle, max


def _images(n=8, h=32, w=32, seed=0):
    """Random images plus the edge cases of the colour ops."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)
    x[0] = x[0] // 64 * 60  # few levels (equalize, posterize)
    x[1] = x[1, :1]  # grey (r = g = b)
    x[2, 1] = 7  # a constant channel (autocontrast, equalize)
    x[3] = x[3] // 4 + 100  # low contrast
    return x


def _fixed(op, bin, negate, n, fill=0):
    """Params applying one op (one slot) with the same bin and sign to all n samples."""
    full = lambda v: torch.full((n, 1), v)  # noqa: E731
    return RandAugmentParams(full(RANDAUGMENT_OPS.index(op)), full(bin), full(negate), fill=fill)


def test_op_set_and_magnitude_tables_are_torchvision():
    space = T.RandAugment._AUGMENTATION_SPACE
    assert RANDAUGMENT_OPS == tuple(space)
    for op, (table, _) in space.items():
        for h, w in SIZES:
            ours, theirs = op_magnitudes(op, 31, h, w), table(31, h, w)
            assert (ours is None) == (theirs is None), op
            if ours is not None:
                assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), op


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", RANDAUGMENT_OPS)
def test_op_matches_torchvision(op, size):
    h, w = size
    x = _images(h=h, w=w)
    for bin in BINS:
        for negate in (False, True):
            params = _fixed(op, bin, negate, len(x))
            out = randaugment_apply(x, params)
            assert out.dtype == torch.uint8 and out.shape == x.shape
            assert torch.equal(randaugment_apply(x, params, subsets=False), out)
            for i in range(len(x)):
                ref = randaugment_reference_apply(x[i], params[i])
                if op in GEOMETRIC:
                    # We rebuild torchvision's float32 sampling grid (its bmm and grid_sample
                    # unnormalisation) with the same float32 steps, which matches exactly here.
                    # Source points exactly half-way between pixels (e.g. ShearX 0.2 at y = 2.5)
                    # round by the last bit, and torchvision's bmm may round differently with
                    # another BLAS/CPU: allow 0.5% of pixels to pick a neighbour there.
                    same = (out[i] == ref).all(0).float().mean().item()
                    assert same >= 0.995, (op, bin, negate, i, same)
                else:
                    assert torch.equal(out[i], ref), (op, bin, negate, i)


@pytest.mark.parametrize("op", ENHANCE)
def test_blend_ops_within_one_level_at_any_size(op):
    # torchvision's CPU kernels round `x + alpha * y` unfused in their scalar tail
    # (sizes that are no multiple of the SIMD width) and fused (FMA) elsewhere; we always
    # fuse, so a value a hair from an integer can truncate one grey level apart.
    x = _images(h=17, w=23)
    for bin in BINS:
        for negate in (False, True):
            params = _fixed(op, bin, negate, len(x))
            out = randaugment_apply(x, params)
            for i in range(len(x)):
                diff = (out[i].int() - randaugment_reference_apply(x[i], params[i]).int()).abs()
                assert diff.max() <= 1, (op, bin, negate, i)


def test_reference_mirrors_torchvision_randaugment_dispatch():
    tv = T.RandAugment(fill=(10, 20, 30))
    if not hasattr(tv, "_apply_image_or_video_transform"):
        pytest.skip("torchvision internals changed")
    x = _images(n=4, h=24, w=20)
    for op in RANDAUGMENT_OPS:
        for bin in BINS:
            for negate in (False, True):
                params = _fixed(op, bin, negate, 4, fill=(10.0, 20.0, 30.0))[1]
                table, signed = T.RandAugment._AUGMENTATION_SPACE[op]
                values = table(31, 24, 20)
                m = 0.0 if values is None else float(values[bin]) * (-1 if signed and negate else 1)
                expected = tv._apply_image_or_video_transform(
                    x[1], op, m, interpolation=TF.InterpolationMode.NEAREST, fill=tv._fill)
                assert torch.equal(randaugment_reference_apply(x[1], params), expected), (op, bin, negate)


@pytest.mark.parametrize("config", [
    dict(num_ops=2, magnitude=30),
    dict(num_ops=3, magnitude=9, fill=(0, 128, 255.0)),
    dict(num_ops=1, magnitude=20, random_magnitude=False, fill=77),
], ids=["2ops-m30", "3ops-m9-fill3", "1op-fixed-fill"])
def test_full_randaugment_matches_reference(config):
    aug = RandAugment(**config)
    x = torch.cat([_images(n=8, seed=s) for s in range(8)])
    params = aug.sample_params(64, 32, 32, torch.Generator().manual_seed(1))
    out = aug.apply(x, params)
    assert torch.equal(randaugment_apply(x, params, subsets=False), out)
    geometric = {RANDAUGMENT_OPS.index(op) for op in GEOMETRIC}
    for i in range(64):
        ref = randaugment_reference_apply(x[i], params[i])
        if geometric & set(params.op[i].tolist()):  # see test_op_matches_torchvision
            assert (out[i] == ref).all(0).float().mean() >= 0.995, i
        else:
            assert torch.equal(out[i], ref), i
    assert not torch.equal(out, x)


def test_determinism_and_seeds():
    aug = RandAugment(num_ops=2, magnitude=15)
    x = _images(n=32)
    a = aug.sample_params(32, 32, 32, torch.Generator().manual_seed(5))
    b = aug.sample_params(32, 32, 32, torch.Generator().manual_seed(5))
    c = aug.sample_params(32, 32, 32, torch.Generator().manual_seed(6))
    for name in RandAugmentParams._PER_SAMPLE:
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.op, c.op)
    torch.manual_seed(0)  # the global RNG must not matter
    out_a = aug(x, torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    assert torch.equal(out_a, aug(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(out_a, aug(x, torch.Generator().manual_seed(6)))


def test_per_sample_variety_and_ranges():
    params = RandAugment(num_ops=2, magnitude=12).sample_params(1000, 32, 32, torch.Generator().manual_seed(0))
    assert params.op.shape == params.magnitude.shape == params.negate.shape == (1000, 2)
    for slot in range(2):
        assert set(params.op[:, slot].tolist()) == set(range(len(RANDAUGMENT_OPS)))
        assert set(params.magnitude[:, slot].tolist()) == set(range(13))
        assert 400 < params.negate[:, slot].sum() < 600
    assert not torch.equal(params.op[:, 0], params.op[:, 1])


def test_fixed_magnitude_and_draw_order():
    fixed = RandAugment(num_ops=2, magnitude=7, random_magnitude=False)
    rand = RandAugment(num_ops=2, magnitude=7)
    p = fixed.sample_params(200, 32, 32, torch.Generator().manual_seed(3))
    q = rand.sample_params(200, 32, 32, torch.Generator().manual_seed(3))
    assert (p.magnitude == 7).all()
    # documented order: op, sign, then magnitude (drawn last, only when random)
    assert torch.equal(p.op, q.op) and torch.equal(p.negate, q.negate)


def test_validation():
    with pytest.raises(ValueError, match=r"\[0, 30\]"):
        RandAugment(magnitude=31)
    with pytest.raises(ValueError, match=r"\[0, 30\]"):
        RandAugment(magnitude=-1)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        RandAugment(magnitude=11, num_magnitude_bins=11)
    with pytest.raises(ValueError, match="ShearX") as err:
        RandAugment(ops=["Rotate", "Invert"])
    assert "Invert" in str(err.value)
    with pytest.raises(ValueError):
        RandAugment(num_ops=-1)
    with pytest.raises(ValueError):
        RandAugment(fill=300)
    aug = RandAugment()
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 8, 8))


def test_identity_and_op_subset():
    x = _images(n=16)
    assert RandAugment(num_ops=0).is_identity and RandAugment(ops=["Identity"]).is_identity
    assert not RandAugment().is_identity
    out = RandAugment(ops=["Identity"]).apply(x, RandAugment(ops=["Identity"]).sample_params(16, 32, 32))
    assert torch.equal(out, x) and out is not x
    aug = RandAugment(num_ops=1, magnitude=30, random_magnitude=False, ops=["Posterize"])
    assert torch.equal(aug(x), x & 0xF0)  # bin 30: 4 bits


def test_compose_params_slice_every_part():
    comp = Compose([Augment(translate=4, flip=True), RandAugment(num_ops=2, magnitude=10), Augment(cutout=16)])
    assert not comp.is_identity and Compose([Augment(), RandAugment(num_ops=0)]).is_identity
    params = comp.sample_params(50, 32, 32, torch.Generator().manual_seed(0))
    assert isinstance(params, ComposeParams) and len(params) == 50 and len(params.parts) == 3
    part = params[10:20]
    assert len(part) == 10 and all(len(p) == 10 for p in part.parts)
    assert torch.equal(part.parts[0].offset_x, params.parts[0].offset_x[10:20])
    assert torch.equal(part.parts[1].op, params.parts[1].op[10:20])
    assert torch.equal(part.parts[2].cutout_cy, params.parts[2].cutout_cy[10:20])
    assert params.to("cpu").device.type == "cpu"
    x = _images(n=50)
    whole = comp.apply(x, params)
    assert torch.equal(torch.cat([comp.apply(x[s:s + 16], params[s:s + 16]) for s in range(0, 50, 16)]), whole)
    expected = x
    for aug, p in zip(comp.augments, params.parts):
        expected = aug.apply(expected, p)
    assert torch.equal(whole, expected)


def test_compose_in_gpu_loader():
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (50, 3, 16, 16), dtype=np.uint8), np.arange(50)
    comp = Compose([Augment(translate=2, flip=True), RandAugment(num_ops=2, magnitude=10), Augment(cutout=4)])
    loader = GPULoader(images, labels, 16, device="cpu", augment=comp, shuffle=False, seed=3)
    loader.set_epoch(2)
    xs = torch.cat([x for x, _ in loader])
    params = comp.sample_params(50, 16, 16, epoch_generator(3, 2, 1))
    expected = normalize(comp.apply(torch.from_numpy(images), params), loader.mean, loader.std)
    torch.testing.assert_close(xs, expected, rtol=0, atol=0)


@needs_cuda
def test_cpu_and_cuda_identical():
    aug = Compose([Augment(translate=4, flip=True), RandAugment(num_ops=3, magnitude=30, fill=(0, 128, 255))])
    x = torch.cat([_images(n=8, h=24, w=20, seed=s) for s in range(16)])
    params = aug.sample_params(len(x), 24, 20, torch.Generator().manual_seed(7))
    cpu = aug.apply(x, params)
    gpu = aug.apply(x.cuda(), params.to("cuda"))
    assert gpu.device.type == "cuda" and torch.equal(cpu, gpu.cpu())
    ra = aug.augments[1]
    p = ra.sample_params(len(x), 24, 20, torch.Generator().manual_seed(8))
    for subsets in (True, False):
        assert torch.equal(randaugment_apply(x.cuda(), p.to("cuda"), subsets=subsets).cpu(), ra.apply(x, p))


def test_translate_and_rotate_conventions():
    """Sign conventions, independent of the reference: TranslateX by +m moves content
    right, Rotate by +30 degrees turns it counter-clockwise (torchvision's conventions)."""
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    x[..., 10, 5] = 255
    out = randaugment_apply(x, _fixed("TranslateX", 30, False, 1))
    assert out[0, 0, 10, 5 + int(150 / 331 * 32)] == 255 and out.sum() == 3 * 255
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    x[..., 9:12, 19:22] = 255  # a blob around (y, x) = (10, 20)
    out = randaugment_apply(x, _fixed("Rotate", 30, False, 1))
    ys, xs = torch.nonzero(out[0, 0], as_tuple=True)
    cy, cx = ys.float().mean().item() - 15.5, xs.float().mean().item() - 15.5
    before = math.degrees(math.atan2(-(10 - 15.5), 20 - 15.5))  # y axis points down
    assert abs(math.degrees(math.atan2(-cy, cx)) - (before + 30)) < 3
