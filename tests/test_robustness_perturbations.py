"""ImageNet-P / CIFAR-10-P: perturbation sequences and the stability metrics.

Metric references are literal loops following hendrycks/robustness ImageNet-P/cifar-p-eval.py
(flip_prob, ranking_dist with cum_sum_top5). Sequence references: make_cifar_p.py's recipes
rebuilt with PIL, cv2, skimage, scipy and imagecorruptions (test-only dependencies).
"""
from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import zoom as scizoom
from scipy.stats import rankdata

from rethink.robustness import perturbations as P
from rethink.robustness.stability import (flip_probability, flip_rate, mfr, mt5d, predict_sequences,
                                          top5_distance)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from imagecorruptions.corruptions import _motion_blur


# --------------------------------------------------------------------------- references

def ref_flip_prob(predictions, noise, difficulty=1):
    result = 0
    step = 1 if noise else difficulty
    for vid in predictions:
        res = []
        for i in range(step):
            prev = vid[i]
            for pred in vid[i::step][1:]:
                res.append(int(prev != pred))
                if not noise:
                    prev = pred
        result += np.mean(res) / len(predictions)
    return result


def ref_ranking_dist(ranks, noise, difficulty=1):
    num_classes = ranks.shape[-1]
    cum_sum_top5 = np.cumsum(np.asarray([0] + [1] * 5 + [0] * (num_classes - 1 - 5)))

    def dist(sigma):
        return np.sum(np.abs(cum_sum_top5[:5] - cum_sum_top5[sigma - 1][:5]))

    result = 0
    step = 1 if noise else difficulty
    for vid in ranks:
        res = []
        for i in range(step):
            perm1 = vid[i]
            perm1_inv = np.argsort(perm1)
            for perm2 in vid[i::step][1:]:
                res.append(dist(perm2[perm1_inv]))
                if not noise:
                    perm1 = perm2
                    perm1_inv = np.argsort(perm1)
        result += np.mean(res) / len(ranks)
    return result


def ranks_of(logits):
    return np.asarray([[rankdata(-f, method="ordinal") for f in vid] for vid in logits], dtype=np.int64)


def images(n=4, size=32, seed=0):
    """Smooth random uint8 images N x 3 x H x W (bicubic-upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand((n, 3, size // 4, size // 4), generator=g)
    x = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).to(torch.uint8)


def hwc(x):
    return x.permute(0, 2, 3, 1).numpy()


def diff(a, b):
    return np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64))


def legacy_matrix(center, angle, translate, scale, shear):
    """torchvision 0.2's _get_inverse_affine_matrix, written from its formula."""
    a, sh, s = math.radians(angle), math.radians(shear), 1.0 / scale
    d = math.cos(a + sh) * math.cos(a) + math.sin(a + sh) * math.sin(a)
    m = [s / d * v for v in (math.cos(a + sh), math.sin(a + sh), 0, -math.sin(a), math.cos(a), 0)]
    m[2] += m[0] * (-center[0] - translate[0]) + m[1] * (-center[1] - translate[1]) + center[0]
    m[5] += m[3] * (-center[0] - translate[0]) + m[4] * (-center[1] - translate[1]) + center[1]
    return m


def pil_legacy_affine(img, resample=Image.BILINEAR, **kw):
    """torchvision 0.2's F.affine on a PIL image (centre at size / 2 + 0.5)."""
    w, h = img.size
    args = dict(angle=0, translate=(0, 0), scale=1.0, shear=0)
    args.update(kw)
    return img.transform((w, h), Image.AFFINE, legacy_matrix((w * 0.5 + 0.5, h * 0.5 + 0.5), **args), resample)


def cifar_tilt_matrix(i, w, h):
    phi, theta = np.deg2rad(0.75 * (i - 15)), np.deg2rad(0.75 * (i - 15))
    f = np.sqrt(w ** 2 + h ** 2)
    P1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    RX = np.array([[1, 0, 0, 0], [0, np.cos(theta), -np.sin(theta), 0],
                   [0, np.sin(theta), np.cos(theta), 0], [0, 0, 0, 1]])
    RY = np.array([[np.cos(phi), 0, -np.sin(phi), 0], [0, 1, 0, 0],
                   [np.sin(phi), 0, np.cos(phi), 0], [0, 0, 0, 1]])
    T = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    P2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    return P2 @ T @ RX @ RY @ P1


# --------------------------------------------------------------------------- flip probability

@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_flip_probability_matches_reference(noise, difficulty):
    rng = np.random.default_rng(difficulty)
    preds = rng.integers(0, 3, (40, 31))
    want = ref_flip_prob(preds, noise, difficulty)
    assert flip_probability(preds, noise, difficulty=difficulty) == pytest.approx(want, abs=1e-12)
    assert flip_probability(torch.as_tensor(preds), noise, difficulty=difficulty) == pytest.approx(want, abs=1e-12)


def test_flip_probability_hand_examples():
    assert flip_probability([[0, 0, 1, 1]], noise=True) == pytest.approx(2 / 3)
    assert flip_probability([[0, 0, 1, 1]], noise=False) == pytest.approx(1 / 3)
    # back and forth: every consecutive pair flips, half of the frames differ from the first
    assert flip_probability([[0, 1, 0, 1, 0]], noise=False) == pytest.approx(1.0)
    assert flip_probability([[0, 1, 0, 1, 0]], noise=True) == pytest.approx(0.5)
    assert flip_probability([[0, 1, 0, 1, 0]], noise=False, difficulty=2) == pytest.approx(0.0)
    # mean over sequences
    assert flip_probability([[0, 0, 0], [0, 1, 1]], noise=False) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        flip_probability([[0]], noise=False)


# --------------------------------------------------------------------------- top-5 distance

@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("difficulty", [1, 2])
@pytest.mark.parametrize("classes", [10, 100])
def test_top5_distance_matches_reference(noise, difficulty, classes):
    rng = np.random.default_rng(classes + difficulty)
    base = rng.normal(size=(20, 1, classes))
    logits = base + 0.7 * rng.normal(size=(20, 16, classes))     # related frames, some top-5 churn
    logits[:3] = np.round(logits[:3])                               # ties: ordinal rank by index
    ranks = ranks_of(logits)
    want = ref_ranking_dist(ranks, noise, difficulty)
    assert want > 0
    for arr in (logits, torch.as_tensor(logits, dtype=torch.float32), ranks):
        assert top5_distance(arr, noise, difficulty=difficulty) == pytest.approx(want, abs=1e-12)
    top5 = torch.as_tensor(np.argsort(ranks, axis=-1)[..., :5])
    assert top5_distance(top5, noise, difficulty=difficulty) == pytest.approx(want, abs=1e-12)


def _logits_for(orders, classes=10):
    """Logits N=1 x T x K whose top-5 (best first) are the given class lists."""
    out = np.zeros((1, len(orders), classes))
    for t, order in enumerate(orders):
        for j, c in enumerate(order):
            out[0, t, c] = 10 - j
    return out


def test_top5_distance_hand_examples():
    same = _logits_for([[0, 1, 2, 3, 4]] * 3)
    assert top5_distance(same, noise=False) == 0.0
    swap = _logits_for([[0, 1, 2, 3, 4], [1, 0, 2, 3, 4]])
    assert top5_distance(swap, noise=False) == pytest.approx(2.0)        # |0-1| + |1-0|
    # a new class enters at the top: 0..3 move down one place, 4 leaves (counts as place 5)
    enter = _logits_for([[0, 1, 2, 3, 4], [5, 0, 1, 2, 3]])
    assert top5_distance(enter, noise=False) == pytest.approx(5.0)
    # the benchmark's distance is not symmetric: reversed, 5 is new (5) and 0..3 move up (4 x 1)
    leave = _logits_for([[5, 0, 1, 2, 3], [0, 1, 2, 3, 4]])
    assert top5_distance(leave, noise=False) == pytest.approx(9.0)
    # noise rule compares with frame 0: (0, 2, 0) vs consecutive (2, 2, 2)... per pair means
    seq = _logits_for([[0, 1, 2, 3, 4], [1, 0, 2, 3, 4], [0, 1, 2, 3, 4]])
    assert top5_distance(seq, noise=True) == pytest.approx(1.0)          # (2 + 0) / 2
    assert top5_distance(seq, noise=False) == pytest.approx(2.0)         # (2 + 2) / 2


# --------------------------------------------------------------------------- FR / mFR

def test_flip_rate_and_means():
    assert flip_rate(0.02, 0.04) == pytest.approx(0.5)
    fp = {"rotate": 0.1, "translate": 0.3}
    base = {"rotate": 0.2, "translate": 0.2, "scale": 0.5}
    assert mfr(fp, base) == pytest.approx((0.5 + 1.5) / 2)
    assert mfr(fp, base, names=["rotate"]) == pytest.approx(0.5)
    assert mt5d({"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 1.0}) == pytest.approx((0.5 + 3.0) / 2)
    with pytest.raises(ValueError):
        flip_rate(0.1, 0.0)
    with pytest.raises(ValueError):
        mfr({"a": 0.1}, {"a": 0.0})
    with pytest.raises(KeyError):
        mfr({"scale": 0.1, "tilt": 0.2}, base)


# --------------------------------------------------------------------------- sequences: registry

FRAMES = {"gaussian_noise": 31, "shot_noise": 31, "motion_blur": 21, "zoom_blur": 31, "snow": 31,
          "brightness": 31, "translate": 16, "rotate": 31, "tilt": 31, "scale": 31,
          "speckle_noise": 31, "gaussian_blur": 31, "shear": 31}


def test_registry():
    assert set(P.BENCHMARK_P) | set(P.HELD_OUT_P) == set(P.PERTURBATIONS) == set(FRAMES)
    for name, t in FRAMES.items():
        spec = P.PERTURBATIONS[name]
        assert spec.frames == t
        assert spec.noise == ("noise" in name)
        assert spec.kind in P.KINDS
    with pytest.raises(KeyError):
        P.sequences(images(1), "spatter")
    # non-noise: the difficulty is the metrics' step size, the frames are the same
    x = images(2)
    assert torch.equal(P.sequences(x, "translate", difficulty=3), P.sequences(x, "translate"))
    with pytest.raises(ValueError):
        P.sequences(x, "translate", difficulty=0)
    with pytest.raises(ValueError):
        P.sequences(x.float(), "translate")


@pytest.mark.parametrize("name", list(FRAMES))
def test_shapes_and_determinism(name):
    x = images(3)
    a = P.sequences(x, name, seed=1)
    assert a.shape == (3, FRAMES[name], 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, P.sequences(x, name, seed=1))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(a, P.sequences(x, name, generator=g))
    random = name in ("gaussian_noise", "shot_noise", "speckle_noise", "snow")
    assert torch.equal(a, P.sequences(x, name, seed=2)) != random
    # batched: each image's sequence does not depend on its batch-mates (deterministic ones)
    if not random:
        assert torch.equal(a[1:2], P.sequences(x[1:2], name))


# --------------------------------------------------------------------------- noise

@pytest.mark.parametrize("name,level_std", [("gaussian_noise", lambda v: 0.02 * 255 * 1),
                                            ("shot_noise", lambda v: 255 * math.sqrt(v / 700)),
                                            ("speckle_noise", lambda v: 0.05 * 255 * v)])
def test_noise_sequences(name, level_std):
    x = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    s = P.sequences(x, name, seed=0)
    assert torch.equal(s[:, 0], x)
    d = s[:, 1:].double() - x[:, None].double()                       # N x 30 x ...
    assert (d != 0).flatten(2).any(-1).all()                            # every frame perturbed
    assert not torch.equal(s[:, 1], s[:, 2])
    v = 128 / 255
    # truncation to uint8 lowers the mean by ~0.5 level
    assert abs(d.std().item() / level_std(v) - 1) < 0.08
    # independent draws: noise of different frames uncorrelated
    flat = d.transpose(0, 1).reshape(30, -1)
    corr = torch.corrcoef(flat)
    assert corr[~torch.eye(30, dtype=torch.bool)].abs().max() < 0.08
    # difficulty 3 is noisier
    s3 = P.sequences(x, name, difficulty=3, seed=0)
    assert (s3[:, 1:].double() - x[:, None].double()).std() > 1.5 * d.std()
    with pytest.raises(ValueError):
        P.sequences(x, name, difficulty=4)


# --------------------------------------------------------------------------- geometric

def test_translate_is_exact_shift():
    x = images(3)
    s = P.sequences(x, "translate")
    for k in range(16):
        t = k - 7
        want = torch.zeros_like(x)
        if t >= 0:
            want[..., t:] = x[..., :32 - t]
        else:
            want[..., :32 + t] = x[..., -t:]
        assert torch.equal(s[:, k], want), k
        # torchvision 0.2's F.affine(translate=(t, 0)) default resample: PIL nearest
        pil = np.stack([np.array(pil_legacy_affine(Image.fromarray(im), resample=Image.NEAREST,
                                                   translate=(t, 0))) for im in hwc(x)])
        assert np.array_equal(hwc(s[:, k]), pil)


def test_identity_frames():
    x = images(3)
    assert diff(P.sequences(x, "rotate")[:, 15], x).max() <= 1       # 0 degrees
    assert diff(P.sequences(x, "scale")[:, 15], x).max() <= 1        # scale 1.0
    assert diff(P.sequences(x, "shear")[:, 15], x).max() <= 1        # shear 0
    assert torch.equal(P.warp_perspective(x, np.eye(3)), x)


def test_tilt_matrix_and_cv2():
    """Tilt follows make_cifar_p.py's homography; at 0 degrees it is a ~0.978 shrink, not the identity."""
    for i in (0, 7, 15, 30):
        assert np.allclose(P.tilt_homography(i, 32, 32), cifar_tilt_matrix(i, 32, 32))
    m = P.tilt_homography(15, 32, 32)
    k = math.sqrt(2) * 32 / (1 + math.sqrt(2) * 32)                 # f / (1 + f)
    shrink = np.array([[k, 0, 16 * (1 - k)], [0, k, 16 * (1 - k)], [0, 0, 1]])
    assert np.allclose(m / m[2, 2], shrink) and k == pytest.approx(0.9784, abs=1e-4)
    x = images(4)
    s = P.sequences(x, "tilt")
    for i in range(0, 31, 3):
        ref = np.stack([cv2.warpPerspective(im, cifar_tilt_matrix(i, 32, 32), (32, 32)) for im in hwc(x)])
        d = diff(hwc(s[:, i]), ref)
        # OpenCV's fixed-point bilinear: at most one grey level on under 1% of the values
        assert d.max() <= 1 and (d > 0).mean() < 0.01, i


@pytest.mark.parametrize("name,kw", [("rotate", lambda i: {"angle": i - 15}),
                                     ("scale", lambda i: {"scale": (i * 2 + 70) / 100}),
                                     ("shear", lambda i: {"shear": i - 15})])
def test_affine_sequences_match_pil(name, kw):
    """Against torchvision 0.2's F.affine on PIL (PIL bilinear): one grey level on < 0.5% of values."""
    x = images(4)
    s = P.sequences(x, name)
    for i in range(0, 31, 3):
        ref = np.stack([np.array(pil_legacy_affine(Image.fromarray(im), **kw(i))) for im in hwc(x)])
        d = diff(hwc(s[:, i]), ref)
        assert d.max() <= 1 and (d > 0).mean() < 0.005, i


def test_rotate_matches_torchvision_on_pil():
    """Today's torchvision on PIL with the 0.2 centre (size / 2 + 0.5): same tolerance."""
    import torchvision.transforms.v2.functional as TF
    x = images(4)
    s = P.sequences(x, "rotate")
    for i in range(0, 31, 5):
        ref = np.stack([np.array(TF.affine(Image.fromarray(im), angle=i - 15, translate=[0, 0], scale=1.0,
                                           shear=[0.0], center=[16.5, 16.5],
                                           interpolation=TF.InterpolationMode.BILINEAR)) for im in hwc(x)])
        d = diff(hwc(s[:, i]), ref)
        assert d.max() <= 1 and (d > 0).mean() < 0.005, i


# --------------------------------------------------------------------------- blur

def test_zoom_blur_matches_reference():
    x = images(2)
    s = P.sequences(x, "zoom_blur")
    for im, seq in zip(hwc(x), s):
        avg = torch.from_numpy(im).permute(2, 0, 1).float() / 255
        assert np.array_equal(hwc(seq[:1])[0], im)
        for i in range(1, 31):
            z = np.array(pil_legacy_affine(Image.fromarray(im), scale=1 + 0.004 * i))
            avg += torch.from_numpy(z).permute(2, 0, 1).float() / 255
            want = (avg / (i + 1)).mul(255).byte().permute(1, 2, 0).numpy()     # ToPILImage
            assert diff(seq[i].permute(1, 2, 0).numpy(), want).max() <= 1


def test_gaussian_blur_matches_skimage():
    from skimage.filters import gaussian
    x = images(3)
    s = P.sequences(x, "gaussian_blur")
    for i in (0, 10, 30):
        ref = np.stack([np.uint8(255 * gaussian(im / 255., sigma=0.3 + 0.015 * i, channel_axis=-1,
                                                truncate=7.0)) for im in hwc(x)])
        assert diff(hwc(s[:, i]), ref).max() <= 1


def test_motion_blur_matches_imagecorruptions():
    x = images(3)
    s = P.sequences(x, "motion_blur")
    for i in range(0, 21, 4):
        # ImageMagick's output read back as 8 bits: rounded
        ref = np.stack([np.uint8(np.round(np.clip(_motion_blur(im, 6, 1.8, (i - 20) * 9), 0, 255)))
                        for im in hwc(x)])
        assert diff(hwc(s[:, i]), ref).max() <= 1


def test_snow_matches_reference_given_layer():
    x = images(3)
    g = torch.Generator().manual_seed(0)
    raw = torch.randn((3, 1, 32, 32), generator=g, dtype=torch.float64) * 0.3 + 0.05
    s = P.snow_from_layer(x, raw.float())
    for im, r, seq in zip(hwc(x), raw[:, 0].numpy(), s):
        xf = im / 255.
        ch = int(np.ceil(32 / 2))
        top = (32 - ch) // 2
        layer = scizoom(r[top:top + ch, top:top + ch, None], (2, 2, 1), order=1)
        trim = (layer.shape[0] - 32) // 2
        layer = layer[trim:trim + 32, trim:trim + 32]
        layer[layer < 0.5] = 0
        layer8 = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
        gray = cv2.cvtColor(np.float32(xf), cv2.COLOR_RGB2GRAY).reshape(32, 32, 1)
        for i in range(0, 31, 5):
            snow = np.round(np.clip(_motion_blur(layer8, 10, 2, i * 4 - 150), 0, 255))[..., None] / 255.
            z = 0.85 * xf + (1 - 0.85) * np.maximum(xf, gray * 1.5 + 0.5)
            want = np.uint8(np.clip(z + snow + np.rot90(snow, k=2), 0, 1) * 255)
            d = diff(seq[i].permute(1, 2, 0).numpy(), want)
            assert d.max() <= 2 and (d > 0).mean() < 0.05, i


# --------------------------------------------------------------------------- brightness

def test_brightness_matches_skimage():
    from skimage import color
    x = images(3)
    s = P.sequences(x, "brightness")
    assert diff(s[:, 15], x).max() <= 1
    for i in range(0, 31, 5):
        ref = []
        for im in hwc(x):
            hsv = color.rgb2hsv(im / 255.)
            hsv[:, :, 2] = np.clip(hsv[:, :, 2] + (i - 15) * 1.5 / 100, 0, 1)
            ref.append(np.uint8(color.hsv2rgb(hsv) * 255))
        assert diff(hwc(s[:, i]), np.stack(ref)).max() <= 1, i


# --------------------------------------------------------------------------- predictions

def test_predict_sequences_matches_per_frame_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 10))
    model.train()
    seqs = P.sequences(images(5), "rotate")[:, :7]
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = predict_sequences(model, seqs, mean, std, batch_size=6, device="cpu")
    assert model.training                                       # mode restored
    assert out.predictions.shape == (5, 7) and out.top5.shape == (5, 7, 5)
    m, sd = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    logits = torch.zeros(5, 7, 10)
    model.eval()
    with torch.no_grad():
        for n in range(5):
            for t in range(7):
                logits[n, t] = model(((seqs[n, t].float() / 255 - m) / sd)[None])[0]
    assert torch.equal(out.predictions, logits.argmax(-1))
    assert torch.equal(out.top5, torch.topk(logits, 5, dim=-1).indices)
    for noise in (True, False):
        assert top5_distance(out.top5, noise) == pytest.approx(top5_distance(logits, noise), abs=1e-12)
        assert flip_probability(out.predictions, noise) == pytest.approx(
            ref_flip_prob(logits.argmax(-1).numpy(), noise), abs=1e-12)
