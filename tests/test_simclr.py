"""SimCLR (rethink.selfsup.simclr): the NT-Xent loss against a literal loop over pairs and its
closed-form values, the view augmentation against torchvision v2 image by image, the
training loop (loss decreases, determinism) and the linear probe."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from rethink.models.cifar import create_cifar_model
from rethink.models.zoo import create_model
from rethink.selfsup import SimCLRAugment, linear_probe, nt_xent, pretrain_simclr
from rethink.transfer.features import extract_features
from rethink.transfer.logistic import accuracy, fit_logistic, predict, standardize


@pytest.fixture(autouse=True)
def _threads(one_thread):
    yield


def nt_xent_reference(z1, z2, tau):
    """Chen et al. 2020, Algorithm 1, literally: l(i, j) over all 2N anchors, sums over k != i."""
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n = len(z1)

    def sim(a, b):
        return float(z[a] @ z[b]) / tau

    def ell(i, j):
        den = sum(math.exp(sim(i, k)) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim(i, j)) / den)

    return sum(ell(k, k + n) + ell(k + n, k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_nt_xent_matches_literal_reference(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(nt_xent_reference(z1, z2, tau), rel=1e-5)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(float(nt_xent(z2, z1, tau)), rel=1e-6)
    assert float(nt_xent(3 * z1, 0.5 * z2, tau)) == pytest.approx(float(nt_xent(z1, z2, tau)), rel=1e-5)


def test_nt_xent_known_values():
    tau, n = 0.5, 4
    # aligned views, the N samples on a regular simplex (pairwise cosine -1/(N-1)): the minimum
    simplex = torch.eye(n) - 1.0 / n
    aligned = float(nt_xent(simplex, simplex, tau))
    expected = math.log(1 + 2 * (n - 1) * math.exp(-(1 + 1 / (n - 1)) / tau))
    assert aligned == pytest.approx(expected, rel=1e-5)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):  # any perturbation of the optimum costs
        noisy = simplex + 0.05 * torch.randn(n, n, generator=g)
        assert float(nt_xent(noisy, simplex, tau)) > aligned
    # independent random views in high dimension: every similarity ~ 0, loss ~ log(2N - 1)
    z1, z2 = torch.randn(8, 20000, generator=g), torch.randn(8, 20000, generator=g)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(math.log(15), abs=0.02)


def test_nt_xent_gradient_matches_reference():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    loss = nt_xent(z1, z2, 0.5)
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    assert torch.isfinite(g1).all() and g1.abs().sum() > 0 and g2.abs().sum() > 0
    eps = 1e-4  # central differences of the literal reference
    for which, grad in ((0, g1), (1, g2)):
        for idx in [(0, 0), (2, 3), (4, 1)]:
            zs = [z1.detach().clone(), z2.detach().clone()]
            zs[which][idx] += eps
            up = nt_xent_reference(*zs, 0.5)
            zs[which][idx] -= 2 * eps
            down = nt_xent_reference(*zs, 0.5)
            assert float(grad[idx]) == pytest.approx((up - down) / (2 * eps), rel=1e-3, abs=1e-6)


# ------------------------------------------------------------------ augmentation vs torchvision


def _images(n=6, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 5, generator=g) * 255
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).round().to(torch.uint8)


def reference_view(image, p, kernel):
    """torchvision v2 functional, image by image, in the same op order."""
    x = image.float() / 255
    x = TF.resized_crop(x, int(p.top), int(p.left), int(p.height), int(p.width), [image.shape[-1]] * 2,
                        interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    if p.flip:
        x = TF.horizontal_flip(x)
    if p.jitter:
        for k in p.order.tolist():
            if k == 0:
                x = TF.adjust_brightness(x, float(p.brightness))
            elif k == 1:
                x = TF.adjust_contrast(x, float(p.contrast))
            elif k == 2:
                x = TF.adjust_saturation(x, float(p.saturation))
            else:
                x = TF.adjust_hue(x, float(p.hue))
    if p.gray:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur:
        x = TF.gaussian_blur(x, [kernel, kernel], [float(p.sigma)] * 2)
    return x


@pytest.mark.parametrize("kw", [dict(), dict(strength=1.0, blur_prob=0.5, gray_prob=0.5),
                                dict(scale=(0.2, 1.0), jitter_prob=1.0, strength=1.0)])
def test_augment_matches_torchvision_per_image(kw):
    images = _images(12)
    aug = SimCLRAugment(**kw)
    params = aug.sample_params(12, 24, 24, torch.Generator().manual_seed(2))
    views = aug.apply(images, params)
    assert views.shape == (12, 3, 24, 24) and views.dtype == torch.float32
    for i in range(12):
        ref = reference_view(images[i], _row(params, i), aug.kernel_size(24))
        torch.testing.assert_close(views[i], ref, atol=2e-5, rtol=0)
    assert bool(params.jitter.any()) and bool(params.flip.any())


def _row(params, i):
    p = params[i]
    return type(p)(**{f: getattr(p, f)[0] for f in p.__dataclass_fields__})


def test_crop_parameters_follow_torchvision_sampling():
    aug = SimCLRAugment()
    p = aug.sample_params(2000, 64, 64, torch.Generator().manual_seed(0))
    area = (p.height * p.width).float() / 64 ** 2
    ratio = p.width.float() / p.height.float()
    assert (p.top >= 0).all() and (p.top + p.height <= 64).all() and (p.left + p.width <= 64).all()
    assert area.min() >= 0.06 and area.max() <= 1.0  # scale (0.08, 1) up to rounding of the sides
    assert ratio.min() >= 0.7 and ratio.max() <= 1.43
    assert 0.45 < float(p.flip.float().mean()) < 0.55 and 0.77 < float(p.jitter.float().mean()) < 0.83
    assert 0.17 < float(p.gray.float().mean()) < 0.23 and not p.blur.any()


def test_two_views_differ_and_reproduce():
    images = _images(4)
    aug = SimCLRAugment()
    a1, a2 = aug.two_views(images, torch.Generator().manual_seed(0))
    b1, b2 = aug.two_views(images, torch.Generator().manual_seed(0))
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)


# ------------------------------------------------------------------ training and probing


def _weak():
    return SimCLRAugment(scale=(0.5, 1.0), jitter_prob=0.0, gray_prob=0.0)


def test_pretrain_decreases_loss_on_tiny_data():
    images = _images(16, size=16, seed=3)
    torch.manual_seed(0)
    model = create_cifar_model("resnet10_w16", num_classes=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model, hist = pretrain_simclr(model, images, steps=30, batch_size=16, lr=0.2, warmup_fraction=0, device="cpu",
                                  seed=0, augment=_weak())
    loss = hist["loss"]
    assert len(loss) == 30 and hist["steps"] == 30 and all(math.isfinite(v) for v in loss)
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # gradients reached the encoder


def test_pretrain_is_deterministic_under_a_seed():
    images = _images(16, size=16, seed=4)

    def run(seed):
        torch.manual_seed(0)
        m = create_cifar_model("resnet10_w16", num_classes=0)
        m, h = pretrain_simclr(m, images, steps=4, batch_size=8, lr=0.1, device="cpu", seed=seed)
        return m, h["loss"]

    m1, l1 = run(0)
    m2, l2 = run(0)
    _, l3 = run(1)
    assert l1 == l2 and l1 != l3
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_pretrain_runs_on_a_zoo_backbone():
    images = _images(8, size=16, seed=5)
    torch.manual_seed(0)
    model, hist = pretrain_simclr(create_model("resnet10t", num_classes=0), images, epochs=1, batch_size=8, lr=0.05,
                                  device="cpu", seed=0)
    assert hist["steps"] == 1 and math.isfinite(hist["loss"][0]) and hist["head"].net[-1].out_features == 128


def test_linear_probe_reuses_transfer_logistic():
    g = torch.Generator().manual_seed(0)
    n = 40
    labels = torch.arange(n) % 2
    base = torch.rand(n, 3, 1, 1, generator=g) * 60 + 40
    images = base.expand(n, 3, 12, 12).clone()
    images[:, 0] += 120 * labels.view(n, 1, 1)  # class 1 is red: linearly separable
    images = images.round().clamp(0, 255).to(torch.uint8)
    torch.manual_seed(0)
    model = create_cifar_model("resnet10_w16", num_classes=0)
    train, test = (images[:30], labels[:30]), (images[30:], labels[30:])
    out = linear_probe(model, train, test, l2=1e-3, device="cpu")
    ftr = extract_features(model, train[0].numpy(), mean=(0.480, 0.448, 0.398), std=(0.277, 0.269, 0.282))
    fte = extract_features(model, test[0].numpy(), mean=(0.480, 0.448, 0.398), std=(0.277, 0.269, 0.282))
    a, b = standardize(ftr.double(), fte.double())
    W, bias = fit_logistic(a, train[1], 2, 1e-3)
    assert out["test_top1"] == accuracy(predict(b, W, bias), test[1]) == 1.0
    assert out["num_features"] == 128
    grid_out = linear_probe(model, train, test, grid=[1e-2, 1.0, 1e2], device="cpu")
    assert grid_out["test_top1"] == 1.0 and grid_out["val_top1"] == 1.0
