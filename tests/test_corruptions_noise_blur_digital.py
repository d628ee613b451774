"""Noise, blur and digital corruptions vs imagecorruptions (ImageNet-C) and CIFAR-10-C's formulas.

Deterministic corruptions must agree within one grey level; random ones are compared in
distribution, and glass blur / elastic transform also exactly, fed the reference's own
random numbers. Test images are crops of skimage.data photographs.
"""
from __future__ import annotations

import functools
import io
import warnings

import cv2
import numpy as np
import pytest
import skimage.color
import skimage.filters
import skimage.util
import torch
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage import data

from rethink.robustness.corruptions import CORRUPTIONS, corrupt, get, to_uint8
from rethink.robustness.corruptions.blur import glass_blur_with
from rethink.robustness.corruptions.digital import elastic_with

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import imagecorruptions.corruptions as icc
    from imagecorruptions import corrupt as ic_corrupt

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
RANDOM = NOISE + ("glass_blur", "elastic_transform")
DETERMINISTIC = ("contrast", "brightness", "saturate", "pixelate", "jpeg_compression",
                 "defocus_blur", "zoom_blur", "gaussian_blur")
MINE = RANDOM + DETERMINISTIC
FAMILY = {"brightness": "weather", "gaussian_noise": "noise", "shot_noise": "noise",
          "impulse_noise": "noise", "speckle_noise": "noise", "glass_blur": "blur",
          "defocus_blur": "blur", "zoom_blur": "blur", "gaussian_blur": "blur"}
K_SE = 5  # distribution checks: differences allowed up to 5 standard errors


@functools.lru_cache(maxsize=None)
def natural(h: int, w: int, n: int = 3, seed: int = 0) -> np.ndarray:
    """n x h x w x 3 uint8: random crops of astronaut / chelsea / coffee, PIL-resized."""
    rng = np.random.default_rng(seed)
    photos = (data.astronaut(), data.chelsea(), data.coffee())
    out = []
    for i in range(n):
        im = photos[i % 3]
        side = int(rng.integers(min(im.shape[:2]) // 4, min(im.shape[:2]) // 2))
        t, left = int(rng.integers(0, im.shape[0] - side)), int(rng.integers(0, im.shape[1] - side))
        crop = Image.fromarray(im[t:t + side, left:left + side])
        out.append(np.array(crop.resize((w, h), Image.BILINEAR)))
    return np.stack(out)


def to_torch(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous()


def ours(imgs: np.ndarray, name: str, severity: int, params: str = "cifar", seed: int = 0) -> np.ndarray:
    """Our corruption of N x H x W x 3 uint8 images, as N x H x W x 3 ints."""
    out = corrupt(to_torch(imgs), name, severity, params=params, seed=seed)
    return out.permute(0, 2, 3, 1).numpy().astype(np.int64)


def _skimage_gaussian(image, sigma=1, multichannel=None, **kw):
    """skimage >= 0.19 spells imagecorruptions' ``multichannel=True`` as ``channel_axis=-1``."""
    if multichannel:
        kw["channel_axis"] = -1
    return skimage.filters.gaussian(image, sigma=sigma, **kw)


@pytest.fixture
def ic(monkeypatch):
    """imagecorruptions.corrupt, with its gaussian blur call made to work on this skimage."""
    monkeypatch.setattr(icc, "gaussian", _skimage_gaussian)

    def run(imgs: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
        out = []
        for k, im in enumerate(imgs):
            np.random.seed(seed * 1000 + k)
            out.append(ic_corrupt(im, corruption_name=name, severity=severity))
        return np.stack(out).astype(np.int64)
    return run


def assert_same_distribution(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Means and variances of two samples of independent values agree within K_SE standard errors.

    SE of a mean: sqrt(var / n); of a variance: sqrt((m4 - var^2) / n) (large-sample).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()

    def se_var(v):
        return np.sqrt((np.mean((v - v.mean()) ** 4) - v.var() ** 2) / len(v))

    se_mean = np.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) <= K_SE * se_mean + 1e-9, (what, a.mean(), b.mean(), se_mean)
    se_v = np.hypot(se_var(a), se_var(b))
    assert abs(a.var() - b.var()) <= K_SE * se_v + 1e-9, (what, a.std(), b.std(), se_v)


# --- registry ---------------------------------------------------------------------------

def test_registered_with_family_and_five_params_per_set():
    for name in MINE:
        c = get(name)
        assert c.family == FAMILY.get(name, "digital"), name
        assert len(c.cifar) == 5 and len(c.imagenet) == 5


def test_params_are_the_references():
    """Spot checks against make_cifar_c.py and imagecorruptions' severity tables."""
    assert get("gaussian_noise").cifar == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert get("shot_noise").imagenet == (60, 25, 12, 5, 3)
    assert get("glass_blur").cifar[4] == (0.4, 1, 2) and get("glass_blur").imagenet[4] == (1.5, 4, 2)
    assert get("defocus_blur").imagenet[0] == (3, 0.1)
    assert get("zoom_blur").cifar[0] == tuple(np.arange(1, 1.06, 0.01))  # 7 factors, 1.06 included
    assert get("zoom_blur").imagenet[4] == tuple(np.arange(1, 1.31, 0.03))
    assert get("jpeg_compression").imagenet == (25, 18, 15, 10, 7)
    assert get("saturate").imagenet[4] == (20, 0.2)
    assert get("elastic_transform").cifar[1] == (32 * 0.05, 32 * 0.2, 32 * 0.07)
    assert get("elastic_transform").imagenet[4] == 250 * 0.12


# --- 1. fidelity vs imagecorruptions (ImageNet-C parameters) ----------------------------

@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_match_imagecorruptions_within_one_level(name, ic):
    """Max |ours - imagecorruptions| <= 1 grey level on square and non-square images.

    The remaining 1-level differences are float rounding at exact grey levels: the reference
    truncates float64 values like 50.99999999999999 to 50, ``to_uint8`` (float32 with a 1e-3
    guard) gives 51; JPEG is byte-identical (torchvision and PIL use the same libjpeg
    settings), and the PIL resizes are emulated in integer arithmetic.
    """
    for imgs in (natural(64, 64), natural(45, 67, n=2, seed=1)):
        for s in range(1, 6):
            diff = np.abs(ours(imgs, name, s, "imagenet") - ic(imgs, name, s))
            assert diff.max() <= 1, (name, s, imgs.shape, diff.max())
            assert (diff > 0).mean() < 0.15, (name, s, (diff > 0).mean())


def test_jpeg_is_byte_exact_on_cpu(ic):
    imgs = natural(64, 64)
    for s in range(1, 6):
        assert (ours(imgs, "jpeg_compression", s, "imagenet") == ic(imgs, "jpeg_compression", s)).all()


@pytest.mark.parametrize("name", NOISE)
def test_noise_matches_imagecorruptions_in_distribution(name, ic):
    """Per severity: mean and variance of (corrupted - clean) over 3 x 64 x 64 x 3 values.

    Both draw independent noise per value on the same images, so the values of the two
    differences are independent samples of the same distribution (given the images).
    """
    imgs = natural(64, 64)
    clean = imgs.astype(np.int64)
    for s in range(1, 6):
        a, b = ours(imgs, name, s, "imagenet", seed=s) - clean, ic(imgs, name, s, seed=s) - clean
        assert_same_distribution(a, b, (name, s))


def test_impulse_noise_salt_and_pepper_fractions(ic):
    """Among values strictly inside (0, 255), a fraction c/2 becomes 255 and c/2 becomes 0."""
    imgs = natural(64, 64)
    inside = (imgs > 0) & (imgs < 255)
    n = inside.sum()
    for s in range(1, 6):
        c = get("impulse_noise").params(s, "imagenet")
        for out in (ours(imgs, "impulse_noise", s, "imagenet", seed=s), ic(imgs, "impulse_noise", s)):
            for level in (255, 0):
                frac = (out[inside] == level).mean()
                se = np.sqrt(c / 2 * (1 - c / 2) / n)
                assert abs(frac - c / 2) <= K_SE * se, (s, level, frac, c / 2)
            untouched = (out[inside] == imgs[inside]).mean()
            assert abs(untouched - (1 - c)) <= K_SE * np.sqrt(c * (1 - c) / n)


def _per_image_change(imgs, outs):
    """Mean absolute change of each image (N,) in grey levels."""
    return np.abs(outs - imgs.astype(np.int64)).mean(axis=(1, 2, 3))


@pytest.mark.parametrize("name", ["glass_blur", "elastic_transform"])
def test_random_geometric_match_imagecorruptions_in_distribution(name, ic):
    """Per severity: per-image mean absolute change, R draws on each of 6 images (32 x 32).

    For each image the R values from each implementation are independent draws; the mean
    over images of the difference of their means must be within K_SE standard errors
    (estimated from the spread over draws), and so must every image's.
    """
    imgs, reps = natural(32, 32, n=6, seed=2), 6
    for s in range(1, 6):
        a = np.stack([_per_image_change(imgs, ours(imgs, name, s, "imagenet", seed=r)) for r in range(reps)], 1)
        b = np.stack([_per_image_change(imgs, ic(imgs, name, s, seed=r)) for r in range(reps)], 1)
        d = a.mean(1) - b.mean(1)
        se = np.sqrt(a.var(1, ddof=1) / reps + b.var(1, ddof=1) / reps)
        assert abs(d.mean()) <= K_SE * np.sqrt((se ** 2).sum()) / len(d) + 1e-9, (name, s, a.mean(), b.mean())
        assert (np.abs(d) <= K_SE * se + 0.05).all(), (name, s, d, se)


def test_glass_blur_exact_with_the_references_random_numbers(ic):
    """Fed numpy's randint stream, glass blur equals imagecorruptions within one grey level.

    This also checks the wavefront reordering of the sequential pixel moves (non-square too).
    """
    for imgs in (natural(48, 48, n=2), natural(40, 56, n=1, seed=3)):
        h, w = imgs.shape[1:3]
        for s in range(1, 6):
            c = get("glass_blur").params(s, "imagenet")
            _, d, iters = c
            ref = ic(imgs, "glass_blur", s, seed=7)
            for k, im in enumerate(imgs):
                np.random.seed(7000 + k)  # ic's seed for image k
                offs = np.random.randint(-d, d, size=iters * (h - 2 * d) * (w - 2 * d) * 2)
                offs = torch.from_numpy(offs.reshape(iters, 1, h - 2 * d, w - 2 * d, 2))
                out = to_uint8(glass_blur_with(to_torch(im[None]).float() / 255, c, offs))
                diff = np.abs(out[0].permute(1, 2, 0).numpy().astype(np.int64) - ref[k])
                assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (s, k, diff.max(), (diff > 0).mean())


def test_elastic_exact_with_the_references_random_numbers(ic):
    """Fed numpy's two uniform fields, elastic transform equals imagecorruptions within one level."""
    imgs = natural(45, 67, n=2, seed=4)
    h, w = imgs.shape[1:3]
    for s in range(1, 6):
        c = get("elastic_transform").params(s, "imagenet")
        ref = ic(imgs, "elastic_transform", s, seed=3)
        for k, im in enumerate(imgs):
            np.random.seed(3000 + k)
            m = 0.005 * h
            ux, uy = np.random.uniform(-m, m, (h, w)), np.random.uniform(-m, m, (h, w))
            draws = (torch.from_numpy(ux)[None], torch.from_numpy(uy)[None])
            out = to_uint8(elastic_with(to_torch(im[None]).float() / 255, c, draws))
            diff = np.abs(out[0].permute(1, 2, 0).numpy().astype(np.int64) - ref[k])
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (s, k, diff.max())


# --- 2. CIFAR-10-C parameters vs make_cifar_c.py's formulas ------------------------------

def _hsv_op(x, channel, fn):
    hsv = skimage.color.rgb2hsv(x)
    hsv[..., channel] = fn(hsv[..., channel])
    return skimage.color.hsv2rgb(hsv)


def _cifar_clipped_zoom(img, z):
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (z, z, 1), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim:trim + h, trim:trim + h]


def _pil(im, fn):
    return np.asarray(fn(Image.fromarray(im)), dtype=np.float64)


def cifar_reference(name: str, im: np.ndarray, c) -> np.ndarray:
    """make_cifar_c.py's deterministic corruptions on one 32 x 32 image (float, 0..255)."""
    x = im / 255.0
    if name == "gaussian_blur":
        return np.clip(skimage.filters.gaussian(x, sigma=c, channel_axis=-1), 0, 1) * 255
    if name == "defocus_blur":
        k = icc.disk(radius=c[0], alias_blur=c[1])  # make_cifar_c.py's disk, verbatim in the package
        return np.clip(np.stack([cv2.filter2D(x[..., d], -1, k) for d in range(3)], -1), 0, 1) * 255
    if name == "zoom_blur":
        x = x.astype(np.float32)
        out = sum(_cifar_clipped_zoom(x, z) for z in c)
        return np.clip((x + out) / (len(c) + 1), 0, 1) * 255
    if name == "brightness":
        return np.clip(_hsv_op(x, 2, lambda v: np.clip(v + c, 0, 1)), 0, 1) * 255
    if name == "saturate":
        return np.clip(_hsv_op(x, 1, lambda v: np.clip(v * c[0] + c[1], 0, 1)), 0, 1) * 255
    if name == "contrast":
        m = x.mean(axis=(0, 1), keepdims=True)
        return np.clip((x - m) * c + m, 0, 1) * 255
    if name == "pixelate":
        n = int(32 * c[0])
        return _pil(im, lambda p: p.resize((n, n), Image.BOX).resize((32, 32), Image.BOX))
    if name == "jpeg_compression":
        def roundtrip(p):
            buf = io.BytesIO()
            p.save(buf, "JPEG", quality=c)
            return Image.open(buf)
        return _pil(im, roundtrip)
    raise KeyError(name)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_cifar_deterministic_match_make_cifar_c_within_one_level(name):
    imgs = natural(32, 32, n=4, seed=5)
    for s in range(1, 6):
        c = get(name).params(s, "cifar")
        ref = np.stack([np.uint8(cifar_reference(name, im, c)) for im in imgs]).astype(np.int64)
        diff = np.abs(ours(imgs, name, s) - ref)
        assert diff.max() <= 1, (name, s, diff.max())


def cifar_noise_reference(name: str, x: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's noise formulas (x in [0, 1]) with numpy's generator."""
    if name == "gaussian_noise":
        out = x + rng.normal(size=x.shape, scale=c)
    elif name == "shot_noise":
        out = rng.poisson(x * c) / c
    elif name == "impulse_noise":
        out = skimage.util.random_noise(x, mode="s&p", amount=c, rng=rng)
    else:
        out = x + x * rng.normal(size=x.shape, scale=c)
    return np.uint8(np.clip(out, 0, 1) * 255).astype(np.int64)


@pytest.mark.parametrize("name", NOISE)
def test_cifar_noise_matches_formula_in_distribution(name):
    imgs = natural(32, 32, n=8, seed=6)
    clean = imgs.astype(np.int64)
    rng = np.random.default_rng(0)
    for s in range(1, 6):
        c = get(name).params(s, "cifar")
        ref = cifar_noise_reference(name, imgs / 255.0, c, rng)
        assert_same_distribution(ours(imgs, name, s, seed=s) - clean, ref - clean, (name, s))


def _cifar_glass(im, c, offsets):
    """make_cifar_c.py's glass blur, its randint draws replaced by ``offsets`` (in draw order)."""
    sigma, d, iters = c
    x = np.uint8(skimage.filters.gaussian(im / 255.0, sigma=sigma, channel_axis=-1) * 255)
    it = iter(offsets.reshape(-1, 2))
    for _ in range(iters):
        for h in range(32 - d, d, -1):
            for w in range(32 - d, d, -1):
                dx, dy = next(it)
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(skimage.filters.gaussian(x / 255.0, sigma=sigma, channel_axis=-1), 0, 1) * 255


def test_cifar_glass_blur_exact_with_shared_random_numbers():
    imgs = natural(32, 32, n=2, seed=7)
    rng = np.random.default_rng(1)
    for s in range(1, 6):
        c = get("glass_blur").params(s, "cifar")
        _, d, iters = c
        for im in imgs:
            offs = rng.integers(-d, d, size=(iters, 1, 32 - 2 * d, 32 - 2 * d, 2))
            ref = np.uint8(_cifar_glass(im, c, offs)).astype(np.int64)
            out = to_uint8(glass_blur_with(to_torch(im[None]).float() / 255, c, torch.from_numpy(offs)))
            diff = np.abs(out[0].permute(1, 2, 0).numpy().astype(np.int64) - ref)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (s, diff.max(), (diff > 0).mean())


def _cifar_elastic(im, c, jitter, ux, uy):
    """make_cifar_c.py's elastic transform, its uniform draws replaced by the given arrays."""
    image = np.array(im, dtype=np.float32) / 255.0
    shape = image.shape
    center = np.float32(shape[:2]) // 2
    size = min(shape[:2]) // 3
    pts1 = np.float32([center + size, [center[0] + size, center[1] - size], center - size])
    pts2 = pts1 + jitter.astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), shape[:2][::-1],
                           borderMode=cv2.BORDER_REFLECT_101)
    dx = (skimage.filters.gaussian(ux, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (skimage.filters.gaussian(uy, c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    idx = (np.reshape(y + dy[..., None], (-1, 1)), np.reshape(x + dx[..., None], (-1, 1)), np.reshape(z, (-1, 1)))
    return np.clip(map_coordinates(image, idx, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def test_cifar_elastic_exact_with_shared_random_numbers():
    """OpenCV >= 4.11 interpolates warpAffine at exact float positions, as we do (older
    versions rounded positions to 1/32 pixel, a change of < 1/64 pixel)."""
    imgs = natural(32, 32, n=2, seed=8)
    rng = np.random.default_rng(2)
    for s in range(1, 6):
        c = get("elastic_transform").params(s, "cifar")
        for im in imgs:
            jitter = rng.uniform(-c[2], c[2], size=(3, 2))
            ux, uy = rng.uniform(-1, 1, size=(32, 32)), rng.uniform(-1, 1, size=(32, 32))
            ref = np.uint8(_cifar_elastic(im, c, jitter, ux, uy)).astype(np.int64)
            draws = tuple(torch.from_numpy(a)[None] for a in (jitter, ux, uy))
            out = to_uint8(elastic_with(to_torch(im[None]).float() / 255, c, draws))
            diff = np.abs(out[0].permute(1, 2, 0).numpy().astype(np.int64) - ref)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (s, diff.max())


# --- 3. severity monotonicity (CIFAR parameters) ----------------------------------------

def _mean_change(imgs, name, seed=0):
    return [float(np.abs(ours(imgs, name, s, seed=seed) - imgs.astype(np.int64)).mean()) for s in range(1, 6)]


def _nondecreasing(v):
    return all(b >= a for a, b in zip(v, v[1:]))


MONOTONE = tuple(n for n in MINE if n not in ("saturate", "glass_blur", "elastic_transform"))


@pytest.mark.parametrize("name", MONOTONE)
def test_cifar_severity_monotone(name):
    imgs = natural(32, 32, n=24, seed=9)
    change = _mean_change(imgs, name)
    assert _nondecreasing(change), (name, change)


def test_cifar_saturate_monotone_in_each_direction():
    """CIFAR-10-C saturate: severities 1-2 desaturate (s * 0.3, s * 0.1), 3-5 oversaturate
    (s * 1.5, s * 2 + 0.1, s * 2.5 + 0.2): the change from clean grows within each group,
    but severity 3 changes less than 2."""
    change = _mean_change(natural(32, 32, n=24, seed=9), "saturate")
    assert change[0] < change[1] and change[2] < change[3] < change[4], change
    assert change[2] < change[1], change  # documents the parameters' non-monotone step


def test_cifar_glass_blur_monotone_in_each_direction():
    """CIFAR-10-C glass blur's parameters (sigma, d, passes) are (0.05,1,1), (0.25,1,1),
    (0.4,1,1), (0.25,1,2), (0.4,1,2). The change from clean is driven by the pixel moves:
    it grows with the number of passes (2 vs 1 at the same sigma), while the extra blur at a
    fixed number of passes barely changes it or lowers it (blurring the shuffled image pulls
    it back toward the clean one), so severity 5 changes less than 4. The blur alone (no
    moves) grows with sigma."""
    imgs = natural(32, 32, n=24, seed=9)
    change = _mean_change(imgs, "glass_blur")
    assert change[1] < change[3] and change[2] < change[4], change          # more passes
    assert max(change[:3]) < min(change[3:]), change
    assert change[4] < change[3], change  # documents the parameters' non-monotone step
    x = to_torch(imgs).float() / 255
    blur_only = []
    for s in range(1, 6):
        c = get("glass_blur").params(s, "cifar")
        no_moves = torch.zeros((c[2], len(imgs), 30, 30, 2), dtype=torch.long)  # dx = dy = 0
        out = to_uint8(glass_blur_with(x, c, no_moves)).permute(0, 2, 3, 1).numpy().astype(np.int64)
        blur_only.append(float(np.abs(out - imgs).mean()))
    assert blur_only[0] < blur_only[1] == blur_only[3] < blur_only[2] == blur_only[4], blur_only


def test_cifar_elastic_monotone_in_each_direction():
    """CIFAR-10-C elastic (alpha, sigma, affine jitter) x 32: (0, 0, .08), (.05, .2, .07),
    (.08, .06, .06), (.1, .04, .05), (.1, .03, .03): the random affine shrinks with severity
    while the smoothed displacement field grows. The affine dominates the change from clean,
    so the total change decreases with severity; each part alone is monotone."""
    imgs = natural(32, 32, n=24, seed=9)
    x = to_torch(imgs).float() / 255
    n = len(imgs)
    g = torch.Generator().manual_seed(0)
    affine, field = [], []
    for s in range(1, 6):
        c = get("elastic_transform").params(s, "cifar")
        jitter = (torch.rand((n, 3, 2), generator=g, dtype=torch.float64) * 2 - 1) * c[2]
        ux, uy = (torch.rand((2, n, 32, 32), generator=g, dtype=torch.float64) * 2 - 1)
        zero = torch.zeros_like(ux)
        for parts, acc in (((jitter, zero, zero), affine), ((torch.zeros_like(jitter), ux, uy), field)):
            out = to_uint8(elastic_with(x, c, parts)).permute(0, 2, 3, 1).numpy().astype(np.int64)
            acc.append(float(np.abs(out - imgs).mean()))
    assert _nondecreasing(field) and field[0] == 0, field
    assert _nondecreasing(affine[::-1]), affine
    total = _mean_change(imgs, "elastic_transform")
    assert _nondecreasing(total[::-1]), total  # documents: CIFAR-10-C's elastic severities shrink the change


# --- 4. determinism ---------------------------------------------------------------------

@pytest.mark.parametrize("name", MINE)
def test_same_seed_same_output(name):
    x = to_torch(natural(32, 32, n=4, seed=10))
    for params in ("cifar", "imagenet"):
        a = corrupt(x, name, 3, params=params, seed=5)
        assert a.dtype == torch.uint8 and a.shape == x.shape
        assert torch.equal(a, corrupt(x, name, 3, params=params, seed=5))
        if name in RANDOM:
            assert not torch.equal(a, corrupt(x, name, 3, params=params, seed=6))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_equals_one_by_one(name):
    x = to_torch(natural(32, 32, n=4, seed=11))
    for params in ("cifar", "imagenet"):
        batch = corrupt(x, name, 4, params=params)
        single = torch.cat([corrupt(x[i:i + 1], name, 4, params=params) for i in range(len(x))])
        assert torch.equal(batch, single), name


def test_explicit_generator_is_used():
    x = to_torch(natural(32, 32, n=2, seed=12))
    for name in RANDOM:
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        assert torch.equal(corrupt(x, name, 2, generator=g1), corrupt(x, name, 2, generator=g2))
    assert all(n in CORRUPTIONS for n in MINE)
