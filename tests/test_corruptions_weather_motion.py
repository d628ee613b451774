"""motion_blur, snow, frost, fog, spatter vs the imagecorruptions package and make_cifar_c.py.

Where the randomness can be shared (the references draw from numpy's global RNG), the torch
code is fed the reference's own draws and must reproduce its output to one grey level (our
``to_uint8`` keeps exact levels that float64 truncation drops: that is the one level). The
corruptions as run from a torch.Generator are compared in distribution.
"""
import functools
import shutil
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import zoom as scizoom
from skimage import data
from skimage.filters import gaussian

from rethink.robustness.corruptions import CORRUPTIONS, to_uint8
from rethink.robustness.corruptions import motion, weather as W

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # imagecorruptions imports the deprecated pkg_resources
    import imagecorruptions.corruptions as icc

NAMES = ("motion_blur", "snow", "frost", "fog", "spatter")


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    """imagecorruptions' plasma_fractal uses np.float_, removed in NumPy 2; and one torch thread:
    these small tensors gain nothing from more, and on a busy machine OpenMP's waits cost seconds."""
    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _source(name):
    return getattr(data, name)()


def _image(name, size, box=None):
    """A skimage.data picture (optionally a crop box) resized to size (w, h), uint8 H x W x 3."""
    im = Image.fromarray(_source(name)).convert("RGB")
    if box is not None:
        im = im.crop(box)
    return np.array(im.resize(size, Image.BILINEAR))


def _images(size=(64, 64)):
    return [_image(n, size) for n in ("astronaut", "chelsea", "coffee")]


def _natural_batch(size=(32, 32)):
    """48 natural images: six pictures whole and in seven crops each."""
    out = []
    for k, name in enumerate(("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")):
        h, w = _source(name).shape[:2]
        rng = np.random.default_rng(k)
        out.append(_image(name, size))
        for _ in range(7):
            s = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
            t, l = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
            out.append(_image(name, size, (l, t, l + s, t + s)))
    return np.stack(out)


def _t(a, dtype=torch.float32):
    """uint8 H x W x 3 (or N x H x W x 3) -> float N x 3 x H x W in [0, 1]."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[None]
    return torch.as_tensor(a).permute(0, 3, 1, 2).to(dtype) / 255


def _np(x):
    """float N x 3 x H x W in [0, 1] -> uint8 grey levels as int N x H x W x 3 (our to_uint8)."""
    return to_uint8(x).permute(0, 2, 3, 1).numpy().astype(int)


def _run(images_u8, name, severity, params="cifar", seed=0):
    """What corrupt() does, via the registry (sibling modules need not exist): int N x H x W x 3."""
    c = CORRUPTIONS[name]
    g = torch.Generator().manual_seed(seed)
    return _np(c.fn(_t(images_u8), c.params(severity, params), g))


def _ic(name, img, severity, seed):
    np.random.seed(seed)
    return np.uint8(getattr(icc, name)(Image.fromarray(img), severity)).astype(int)


def _assert_one_level(ours, ref, frac=0.01):
    d = np.abs(np.asarray(ours) - np.asarray(ref))
    assert d.max() <= 1, d.max()
    assert (d > 0).mean() <= frac, (d > 0).mean()


# ------------------------------------------------------------------ 1. motion blur kernel
@pytest.mark.parametrize("radius,sigma", [(6, 1), (10, 3), (15, 8), (20, 15), (40, 10)])
def test_apply_motion_blur_matches_reference(radius, sigma):
    img = _image("astronaut", (64, 48))
    x = _t(img, torch.float64)
    for angle in (-45, -10.5, 0, 30, 45, 90, -120, 170, 33.3):
        ref = icc._motion_blur(img, radius=radius, sigma=sigma, angle=angle)
        ours = motion.apply_motion_blur(x, radius, sigma, angle)[0].permute(1, 2, 0).numpy() * 255
        # deterministic given the angle: same shifts and weights, float64 rounding only
        assert np.abs(ours - ref).max() < 1e-6
        # float32 (the corruption's dtype): float rounding of ~1e-4 grey levels
        ours32 = motion.apply_motion_blur(_t(img), radius, sigma, angle)
        _assert_one_level(_np(ours32.clamp(0, 1))[0], np.uint8(np.clip(ref, 0, 255)), frac=0.02)
        assert np.abs(ours32[0].permute(1, 2, 0).double().numpy() * 255 - ref).max() < 1e-3


def test_apply_motion_blur_per_image_angles_one_channel_and_break():
    imgs = np.stack(_images((32, 32)))[..., 0]  # one channel, 32 x 32: radius 20 -> taps exceed the image
    angles = torch.tensor([-80.0, 12.5, 135.0], dtype=torch.float64)
    x = torch.as_tensor(imgs, dtype=torch.float64)[:, None] / 255
    out = motion.apply_motion_blur(x, 20, 15, angles)
    assert out.shape == (3, 1, 32, 32)
    for i in range(3):
        ref = icc._motion_blur(imgs[i].astype(np.float64) / 255, radius=20, sigma=15, angle=float(angles[i]))
        assert np.abs(out[i, 0].numpy() - ref).max() < 1e-9
    # the dropped taps are not renormalised: a constant image darkens, as in the reference
    ones = motion.apply_motion_blur(torch.ones(1, 1, 32, 32), 20, 15, 0.0)
    assert abs(ones.mean().item() - icc._motion_blur(np.ones((32, 32)), 20, 15, 0.0).mean()) < 1e-6
    assert ones.max() < 1


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_motion_blur_corruption_blurs_along_drawn_angle(params):
    imgs = np.stack(_images((48, 48)))
    ours = _run(imgs, "motion_blur", 4, params, seed=3)
    g = torch.Generator().manual_seed(3)
    angles = torch.rand(3, generator=g, dtype=torch.float64) * 90 - 45  # the corruption's first draw
    radius, sigma = CORRUPTIONS["motion_blur"].params(4, params)
    for i in range(3):
        ref = np.uint8(np.clip(icc._motion_blur(imgs[i], radius, sigma, float(angles[i])), 0, 255))
        _assert_one_level(ours[i], ref, frac=0.02)


# ----------------------------------------------- 2. same draws as imagecorruptions (ImageNet)
@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_snow_matches_imagecorruptions_given_its_draws(severity):
    c = CORRUPTIONS["snow"].params(severity, "imagenet")
    for img in _images((64, 48))[:2]:
        for seed in (0, 1):
            ref = _ic("snow", img, severity, seed)
            np.random.seed(seed)  # replay the reference's draws: the layer, then the angle
            noise = np.random.normal(size=img.shape[:2], loc=c.loc, scale=c.scale)
            angle = np.random.uniform(-135, -45)
            out = W.snow_from_noise(_t(img, torch.float64), torch.as_tensor(noise)[None, None],
                                    torch.tensor([angle]), c)
            assert np.abs(ref - img).mean() > 2  # it did something
            _assert_one_level(_np(out)[0], ref)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_spatter_matches_imagecorruptions_given_its_draws(severity):
    c = CORRUPTIONS["spatter"].params(severity, "imagenet")
    changed = 0
    for img in _images((64, 64)):
        for seed in (0, 1, 2):
            ref = _ic("spatter", img, severity, seed)
            np.random.seed(seed)
            noise = np.random.normal(size=img.shape[:2], loc=c[0], scale=c[1])
            out = W.spatter_from_noise(_t(img, torch.float64), torch.as_tensor(noise)[None], c)
            _assert_one_level(_np(out)[0], ref)
            changed += np.abs(ref - img).mean() > 0.5
    assert changed >= 3


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_fog_matches_imagecorruptions_given_its_draws(severity, monkeypatch):
    img = _image("coffee", (64, 48))  # map size 64, cropped to 48 x 64
    c = CORRUPTIONS["fog"].params(severity, "imagenet")
    twin = torch.Generator().manual_seed(severity)

    def uniform(low, high, size):  # the reference draws the same numbers as our generator
        return low + (high - low) * torch.rand((1, *size), generator=twin)[0].double().numpy()

    monkeypatch.setattr(np.random, "uniform", uniform)
    ref = np.uint8(icc.fog(Image.fromarray(img), severity)).astype(int)
    monkeypatch.undo()
    out = CORRUPTIONS["fog"].fn(_t(img), c, torch.Generator().manual_seed(severity))
    assert np.abs(ref - img).mean() > 10
    _assert_one_level(_np(out)[0], ref)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_frost_matches_imagecorruptions_given_its_draws(severity):
    c = CORRUPTIONS["frost"].params(severity, "imagenet")
    img = _image("chelsea", (64, 48))
    for seed in range(3):
        ref = _ic("frost", img, severity, seed)
        np.random.seed(seed)
        idx = np.random.randint(5)
        ph, pw = W.frost_picture(idx, "imagenet", 48, 64).shape[:2]
        top, left = np.random.randint(0, ph - 48), np.random.randint(0, pw - 64)
        layer = W.frost_layer(torch.tensor([idx]), torch.tensor([top]), torch.tensor([left]), 48, 64, "imagenet")
        out = (c.image_weight * _t(img) + c.frost_weight * layer / 255).clamp(0, 1)
        # our bicubic resize is the fixed-point one of OpenCV's generic resize; the installed
        # OpenCV 5.0 differs by one level in ~5% of frost pixels (times frost_weight <= 0.75)
        _assert_one_level(_np(out)[0], ref, frac=0.06)


def test_frost_resize_emulates_opencv():
    for i, pic in enumerate(W.frost_images()[:5]):
        bgr = np.ascontiguousarray(pic[..., ::-1])
        assert (W.cv2_resize_linear(pic, 0.2) == cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)[..., ::-1]).all()
        h, w = pic.shape[:2]
        out_w, out_h = int(np.ceil(w * 1.1)), int(np.ceil(h * 1.1))
        d = np.abs(W.cv2_resize_cubic(pic, out_w, out_h).astype(int)
                   - cv2.resize(bgr, (out_w, out_h), interpolation=cv2.INTER_CUBIC)[..., ::-1])
        assert d.max() <= 1 and (d > 0).mean() < 0.06, (i, d.max(), (d > 0).mean())


@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_frost_is_the_formula_for_its_drawn_picture_and_crop(params):
    imgs = np.stack(_images((32, 32)))
    sev = 4
    c = CORRUPTIONS["frost"].params(sev, params)
    out = CORRUPTIONS["frost"].fn(_t(imgs, torch.float64), c, torch.Generator().manual_seed(7))
    idx, top, left = W.frost_draws(3, 32, 32, params, torch.Generator().manual_seed(7), "cpu")
    assert len(set(idx.tolist())) > 1 or len(set(top.tolist())) > 1
    for i in range(3):
        k, t, l = int(idx[i]), int(top[i]), int(left[i])
        bgr = cv2.imread(str(W.frost_dir() / W.FROST_FILES[k]))
        if params == "cifar":  # make_cifar_c.py: scaled by 0.2 with cv2's default (bilinear)
            pic = cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        else:
            pic = W.cv2_resize_cubic(bgr[..., ::-1], int(np.ceil(bgr.shape[1] * 1.1)), int(np.ceil(bgr.shape[0] * 1.1)))
        assert 0 <= t < pic.shape[0] - 32 and 0 <= l < pic.shape[1] - 32
        ref = np.clip(c[0] * imgs[i].astype(np.float64) + c[1] * pic[t:t + 32, l:l + 32], 0, 255)
        assert np.abs(out[i].permute(1, 2, 0).numpy() * 255 - ref).max() < 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_distribution_matches_imagecorruptions(name):
    """Per image, the mean and std over pixels of (corrupted - clean) per channel; the averages
    over 3 images x 8 draws must agree within 4 standard errors (both sides) + 1 grey level."""
    imgs = _images((64, 64))
    for sev in range(1, 6):
        ref, ours = [], []
        for r in range(8):
            out = _run(np.stack(imgs), name, sev, "imagenet", seed=r)
            for i, img in enumerate(imgs):
                for o, store in ((out[i], ours), (_ic(name, img, sev, 100 * r + i), ref)):
                    d = o - img.astype(int)
                    store.append(np.concatenate([d.mean((0, 1)), d.std((0, 1))]))
        ref, ours = np.array(ref), np.array(ours)
        se = np.sqrt(ref.var(0, ddof=1) / len(ref) + ours.var(0, ddof=1) / len(ours))
        gap = np.abs(ref.mean(0) - ours.mean(0))
        assert (gap <= 4 * se + 1).all(), (name, sev, ref.mean(0).round(2), ours.mean(0).round(2), se.round(2))


# --------------------------------------------------------------- spatter's OpenCV parts
def _liquid_layers():
    rng = np.random.default_rng(0)
    for t, (hw, c) in enumerate([((32, 32), (0.65, 0.3, 1, 0.69)), ((64, 48), (0.65, 0.3, 4, 0.69)),
                                 ((32, 32), (0.62, 0.1, 0.7, 0.7)), ((64, 64), (0.65, 0.3, 2, 0.68))] * 3):
        layer = gaussian(rng.normal(c[0], c[1], hw), sigma=c[2])
        layer[layer < c[3]] = 0
        yield (layer * 255).astype(np.uint8)
    yield rng.integers(0, 256, (40, 36)).astype(np.uint8)
    yield np.zeros((32, 32), np.uint8)


def test_spatter_opencv_steps_match_cv2():
    for u8 in _liquid_layers():
        edges = cv2.Canny(u8, 50, 150)
        assert (W.canny(torch.as_tensor(u8)[None])[0].numpy() == (edges > 0)).all()
        dist = cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        ours = W.chamfer_distance(torch.as_tensor(edges > 0)[None])[0]
        assert np.abs(ours.numpy() - dist).max() < 1e-5  # float32 sums along possibly other paths
        blurred = cv2.blur(dist, (3, 3)).astype(np.uint8)
        ours_b = torch.floor((W._box3_sum(ours[None].double()) * (1 / 9)).float())
        assert (ours_b[0].numpy() == blurred).all()
        assert (W.equalize_hist(torch.as_tensor(blurred)[None])[0].numpy() == cv2.equalizeHist(blurred)).all()


# --------------------------------------------------------------------- 3. CIFAR parameters
@pytest.mark.parametrize("name", NAMES)
def test_cifar_params_run_for_every_severity(name):
    x = _t(_natural_batch()[:6])
    c = CORRUPTIONS[name]
    assert c.family == ("blur" if name == "motion_blur" else "weather")
    for sev in range(1, 6):
        out = c.fn(x, c.params(sev, "cifar"), torch.Generator().manual_seed(sev))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        assert (out - x).abs().mean() > 1e-3


def _ref_spatter(img, noise, c):
    """make_cifar_c.py's spatter given its Gaussian draw, with numpy / skimage / cv2."""
    x = img.astype(np.float32) / 255
    liquid = gaussian(noise, sigma=c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        lu8 = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(lu8, 50, 150), cv2.DIST_L2, 5)
        dist = cv2.blur(np.minimum(dist, 20), (3, 3)).astype(np.uint8)
        dist = cv2.filter2D(cv2.equalizeHist(dist), cv2.CV_8U, np.float32([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        m = lu8 * cv2.blur(dist, (3, 3)).astype(np.float32)
        m = m / m.max() * c[4]
        return np.clip(x + m[..., None] * np.float32([175, 238, 238]) / 255, 0, 1) * 255
    m = gaussian((liquid > c[3]).astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    return np.clip(x * (1 - m[..., None]) + m[..., None] * np.float32([63, 42, 20]) / 255, 0, 1) * 255


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_cifar_spatter_matches_numpy_cv2_given_draws(severity):
    c = CORRUPTIONS["spatter"].params(severity, "cifar")
    imgs = _natural_batch()[:8]
    g = torch.Generator().manual_seed(severity)
    out = CORRUPTIONS["spatter"].fn(_t(imgs, torch.float64), c, g)
    noise = torch.randn(8, 32, 32, generator=torch.Generator().manual_seed(severity), dtype=torch.float64) * c[1] + c[0]
    ref = np.stack([_ref_spatter(imgs[i], noise[i].numpy(), c) for i in range(8)])
    assert np.abs(ref - imgs).mean() > 0.2
    _assert_one_level(_np(out), np.uint8(ref))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_cifar_snow_matches_numpy_given_draws(severity):
    """make_cifar_c.py's snow (centred clipped zoom, 8-bit layer) with imagecorruptions' blur for Wand's."""
    c = CORRUPTIONS["snow"].params(severity, "cifar")
    imgs = _natural_batch()[:4]
    out = CORRUPTIONS["snow"].fn(_t(imgs, torch.float64), c, torch.Generator().manual_seed(severity))
    g = torch.Generator().manual_seed(severity)
    noise = torch.randn(4, 1, 32, 32, generator=g, dtype=torch.float64) * c.scale + c.loc
    angles = torch.rand(4, generator=g, dtype=torch.float64) * 90 - 135
    for i in range(4):
        x = imgs[i].astype(np.float32) / 255
        ch = int(np.ceil(32 / c.zoom))
        top = (32 - ch) // 2
        layer = scizoom(noise[i, 0].numpy()[top:top + ch, top:top + ch], c.zoom, order=1)
        trim = (layer.shape[0] - 32) // 2
        layer = layer[trim:trim + 32, trim:trim + 32]
        layer[layer < c.threshold] = 0
        layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
        layer = np.round(icc._motion_blur(layer, c.radius, c.sigma, float(angles[i])))[..., None] / 255
        x = c.blend * x + (1 - c.blend) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None] * 1.5 + 0.5)
        ref = np.uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)
        _assert_one_level(_np(out[i:i + 1])[0], ref)


@pytest.mark.parametrize("severity", [1, 5])
def test_cifar_fog_is_the_blend_of_the_reference_fractal(severity, monkeypatch):
    c = CORRUPTIONS["fog"].params(severity, "cifar")
    imgs = _natural_batch()[:1]
    out = CORRUPTIONS["fog"].fn(_t(imgs, torch.float64), c, torch.Generator().manual_seed(severity))
    twin = torch.Generator().manual_seed(severity)
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: low + (high - low) * torch.rand(
        (1, *size), generator=twin, dtype=torch.float64)[0].numpy())
    frac = icc.plasma_fractal(mapsize=32, wibbledecay=c[1])  # make_cifar_c.py's map size
    x = imgs[0] / 255.0
    ref = np.clip((x + c[0] * frac[..., None]) * x.max() / (x.max() + c[0]), 0, 1)
    assert np.abs(out[0].permute(1, 2, 0).numpy() - ref).max() < 1e-9


def test_cifar_frost_rejects_images_larger_than_its_pictures():
    with pytest.raises(ValueError, match="imagenet"):
        _run(np.stack(_images((96, 96))), "frost", 1, "cifar")


# --------------------------------------------------------------------- 4. monotonicity
def _changes(name):
    """Mean |corrupted - clean| (grey levels) and mean correlation with the clean image over 48
    natural 32 x 32 images for severities 1..5, all drawn from one seed (the same angles, frost
    crops, ... at every severity, so the severities differ only by their parameters)."""
    imgs = _natural_batch()
    outs = [_run(imgs, name, s, "cifar", seed=0) for s in range(1, 6)]
    change = np.array([np.abs(o - imgs).mean() for o in outs])
    corr = np.array([np.mean([np.corrcoef(o[i].ravel(), imgs[i].ravel())[0, 1] for i in range(len(imgs))])
                     for o in outs])
    return change, corr


@pytest.mark.parametrize("name", ["snow", "fog"])
def test_cifar_severity_monotone(name):
    change, _ = _changes(name)
    assert (np.diff(change) > 0).all(), change.round(2)


def test_cifar_motion_blur_severity_3_and_4_are_the_same_blur():
    # CIFAR-10-C's (radius, sigma) are (6, 2) at severity 3 and (8, 2) at 4: the one-sided Gaussian
    # weights of taps 13..16 that radius 8 adds are exp(-13^2 / 8) < 1e-9 of the total (the same
    # kernel as ImageMagick's), so the two severities blur identically given the angle.
    change, _ = _changes("motion_blur")
    assert abs(change[3] - change[2]) < 0.01, change.round(3)
    assert change[0] < change[1] < change[2] and change[3] < change[4], change.round(2)


def test_cifar_frost_severity_monotone_in_correlation_not_in_change():
    # Frost is (image_weight * x + frost_weight * frost): (1, .2), (1, .3), (.9, .4), (.85, .4),
    # (.75, .45). From severity 3 the image is dimmed while the frost brightens it; the two partly
    # cancel, so the mean absolute change is not monotone (severity 4 < 3). The frost-to-image
    # ratio (.2, .3, .44, .47, .6) does grow, and with it the loss of correlation with the clean image.
    change, corr = _changes("frost")
    assert change[0] < change[1] < change[2] and change[3] < change[2], change.round(2)
    assert (np.diff(corr) < 0).all(), corr.round(4)


def test_cifar_spatter_severity_monotone_within_each_branch():
    # Severities 1-3 are water drops (a pale turquoise shading over many pixels), 4-5 mud (few opaque
    # brown blobs): CIFAR-10-C's severity 4 changes the image less than its severity 3 in mean absolute
    # change (and in correlation). Each branch on its own is monotone.
    change, _ = _changes("spatter")
    assert change[0] < change[1] < change[2] and change[3] < change[4], change.round(2)
    assert change[3] < change[2], change.round(2)  # documents the break between the branches


# ------------------------------------------------- 5. determinism, independence, frost folder
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("params", ["cifar", "imagenet"])
def test_determinism_and_per_image_draws(name, params):
    img = _images((32, 32))[0]
    pair = np.stack([img, img])  # the same picture twice in one batch
    a = _run(pair, name, 3, params, seed=5)
    assert (a == _run(pair, name, 3, params, seed=5)).all()
    assert (a != _run(pair, name, 3, params, seed=6)).any()
    assert (a[0] != a[1]).any()  # each image gets its own draws


def test_corrupt_entry_point():
    corruptions = pytest.importorskip("rethink.robustness.corruptions")
    try:
        corruptions.get("fog")
    except ImportError:
        pytest.skip("the other corruption modules are not there yet")
    x = torch.as_tensor(np.stack(_images((32, 32)))).permute(0, 3, 1, 2).contiguous()
    for name in NAMES:
        out = corruptions.corrupt(x, name, 2, seed=1)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        assert (out.permute(0, 2, 3, 1).numpy().astype(int) == _run(x.permute(0, 2, 3, 1).numpy(), name, 2,
                                                                     seed=1)).all()


def test_frost_folder_sources(monkeypatch, tmp_path):
    monkeypatch.delenv("RETHINK_FROST_DIR", raising=False)
    assert (W.frost_dir() / "frost1.png").is_file()  # found in the installed imagecorruptions
    # RETHINK_FROST_DIR wins
    for f in W.FROST_FILES:
        shutil.copy(W.frost_dir() / f, tmp_path / f)
    monkeypatch.setenv("RETHINK_FROST_DIR", str(tmp_path))
    assert W.frost_dir() == tmp_path
    a = _run(np.stack(_images((32, 32))), "frost", 2, "imagenet", seed=0)
    monkeypatch.delenv("RETHINK_FROST_DIR")
    assert (a == _run(np.stack(_images((32, 32))), "frost", 2, "imagenet", seed=0)).all()
    # a folder without the pictures
    monkeypatch.setenv("RETHINK_FROST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="RETHINK_FROST_DIR"):
        W.frost_dir()
    # neither source
    monkeypatch.delenv("RETHINK_FROST_DIR")
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(FileNotFoundError, match=r"pip install imagecorruptions.*RETHINK_FROST_DIR"):
        _run(np.stack(_images((32, 32))), "frost", 1, "cifar")
