"""Batched augmentation vs the per-image torchvision reference, on CPU (and CUDA if present)."""
import pytest
import torch

from rethink.augment import Augment, AugmentParams, apply_params, normalize, reference_apply

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def _images(n=16, c=3, h=12, w=10, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


CONFIGS = [
    dict(translate=3),
    dict(translate=3, padding_mode="zeros"),
    dict(flip=True),
    dict(cutout=5),
    dict(cutout=4, cutout_fill=7.0),
    dict(translate=4, flip=True, cutout=6),
    dict(translate=2, flip=True, cutout=5, padding_mode="zeros", cutout_fill=(10.0, 20.0, 30.0)),
    dict(translate=9, flip=True, cutout=13),  # padding close to image size, cutout larger than image
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_torchvision_reference(config, dtype, device):
    aug = Augment(**config)
    x = _images(dtype=dtype)
    for seed in range(3):
        params = aug.sample_params(len(x), 12, 10, torch.Generator().manual_seed(seed))
        out = aug.apply(x.to(device), params).cpu()
        assert out.dtype == dtype and out.shape == x.shape
        for i in range(len(x)):
            assert torch.equal(out[i], reference_apply(x[i], params[i])), (config, seed, i)


def test_flip_flips_chosen_samples_only():
    x = _images(n=64)
    params = Augment(flip=True).sample_params(64, 12, 10, torch.Generator().manual_seed(1))
    assert 0 < params.flip.sum() < 64
    out = apply_params(x, params)
    assert torch.equal(out[params.flip], x[params.flip].flip(-1))
    assert torch.equal(out[~params.flip], x[~params.flip])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_identity_when_all_ops_off(dtype):
    x = _images(dtype=dtype)
    aug = Augment()
    assert aug.is_identity
    assert torch.equal(aug(x, torch.Generator().manual_seed(0)), x)
    assert torch.equal(aug.apply(x, aug.sample_params(len(x), 12, 10)), x)


def test_translate_zero_offset_centre_is_identity():
    x = _images()
    params = Augment(translate=3, flip=True).sample_params(len(x), 12, 10, torch.Generator().manual_seed(0))
    centred = AugmentParams(torch.full_like(params.offset_y, 3), torch.full_like(params.offset_x, 3),
                            torch.zeros_like(params.flip), params.cutout_cy, params.cutout_cx, padding=3)
    assert torch.equal(apply_params(x, centred), x)


def test_cutout_zeroes_exactly_the_expected_area():
    n, h, w, s = 32, 12, 10, 5
    x = torch.full((n, 3, h, w), 200, dtype=torch.uint8)
    params = Augment(cutout=s).sample_params(n, h, w, torch.Generator().manual_seed(2))
    out = apply_params(x, params)
    for i in range(n):
        cy, cx = int(params.cutout_cy[i]), int(params.cutout_cx[i])
        y0, y1 = max(cy - s // 2, 0), min(cy - s // 2 + s, h)
        x0, x1 = max(cx - s // 2, 0), min(cx - s // 2 + s, w)
        expected = torch.full((h, w), 200, dtype=torch.uint8)
        expected[y0:y1, x0:x1] = 0
        assert torch.equal(out[i], expected.expand(3, h, w)), i
        assert (out[i, 0] == 0).sum() == (y1 - y0) * (x1 - x0) > 0


def test_params_ranges_and_determinism():
    aug = Augment(translate=4, flip=True, cutout=8)
    a = aug.sample_params(1000, 32, 24, torch.Generator().manual_seed(5))
    b = aug.sample_params(1000, 32, 24, torch.Generator().manual_seed(5))
    c = aug.sample_params(1000, 32, 24, torch.Generator().manual_seed(6))
    for name in AugmentParams._PER_SAMPLE:
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.offset_y, c.offset_y)
    assert a.offset_y.min() == 0 and a.offset_y.max() == 8 and a.offset_x.max() == 8
    assert a.cutout_cy.min() == 0 and a.cutout_cy.max() == 31 and a.cutout_cx.max() == 23
    assert 400 < a.flip.sum() < 600


def test_reflect_padding_must_be_smaller_than_image():
    with pytest.raises(ValueError):
        Augment(translate=10).sample_params(2, 10, 12)
    Augment(translate=10, padding_mode="zeros").sample_params(2, 10, 12)


def test_normalize():
    x = _images()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = normalize(x, mean, std, channels_last=True)
    ref = (x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1).double()) / torch.tensor(std).view(1, 3, 1, 1).double()
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(normalize(x.float() / 255, mean, std), ref.float(), rtol=1e-5, atol=1e-5)
    assert normalize(x, mean, std, dtype=torch.bfloat16).dtype == torch.bfloat16


@needs_cuda
def test_cpu_and_cuda_params_and_outputs_identical():
    aug = Augment(translate=4, flip=True, cutout=6)
    x = _images(n=64)
    torch.manual_seed(0)
    cpu = aug(x, torch.Generator().manual_seed(3))
    torch.cuda.manual_seed(123)  # the CUDA global RNG must not matter
    gpu = aug(x.cuda(), torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda"
    assert torch.equal(cpu, gpu.cpu())
    p_cpu = aug.sample_params(64, 12, 10, torch.Generator().manual_seed(3))
    p_gpu = aug.sample_params(64, 12, 10, torch.Generator().manual_seed(3)).to("cuda")
    for name in AugmentParams._PER_SAMPLE:
        assert torch.equal(getattr(p_cpu, name), getattr(p_gpu, name).cpu())


def test_normalize_scalar_mean_std():
    x = _images()
    torch.testing.assert_close(normalize(x, 0.5, 0.25), (x.float() / 255 - 0.5) / 0.25)
