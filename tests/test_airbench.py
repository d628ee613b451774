"""airbench94 network, whitening init, TTA, the speedrun recipe pieces and the time-to-94 benchmark."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rethink.models.airbench import TTA, AirbenchNet, airbench94, patches, whiten_init_
from rethink.train.speedrun import LookaheadState, SpeedrunRecipe, StepBudget, triangle

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: threads only add contention

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "cifar10_time_to_94.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("cifar10_time_to_94", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_output_shape_and_parameter_count():
    net = airbench94()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # airbench94 is a 1.97M-parameter network: whiten 3->24 (2x2, bias) 312, convs
    # 24*64*9 + 64*64*9 + 64*256*9 + 3 * 256*256*9 = 1,967,616, BN (weight+bias) 2 * 1152,
    # head 256*10 = 2,560.
    total = sum(p.numel() for p in net.parameters())
    assert total == 312 + 1_967_616 + 2_304 + 2_560 == 1_972_792
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == total - 288 - 1_152  # whitening weights and BN scales are frozen


def test_forward_flops_match_the_papers_036_pflops():
    """The paper's 0.36 PFLOPs per airbench94 run: 9.9 epochs x 50k images x (fwd + 2x bwd)
    plus 6 TTA views of the 10k test images."""
    net, macs = airbench94(), []

    def hook(m, _, out):
        if isinstance(m, torch.nn.Conv2d):
            macs.append(out[0].numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, torch.nn.Linear):
            macs.append(m.in_features * m.out_features)
    for m in net.modules():
        m.register_forward_hook(hook)
    net(torch.randn(1, 3, 32, 32))
    fwd = 2 * sum(macs)
    pflops = (3 * fwd * 50_000 * 9.9 + 6 * fwd * 10_000) / 1e15
    assert pflops == pytest.approx(0.36, rel=0.03)


def test_dirac_init_and_frozen_bn_scale():
    torch.manual_seed(0)
    net = AirbenchNet((8, 16, 16))
    w = net.blocks[1].conv1.weight  # 8 -> 16: the first 8 filters are identities
    eye = torch.zeros(8, 8, 3, 3)
    eye[torch.arange(8), torch.arange(8), 1, 1] = 1
    assert torch.equal(w[:8], eye) and not torch.equal(w[8:], torch.zeros_like(w[8:]))
    assert all(not m.weight.requires_grad and m.eps == 1e-12 and m.momentum == pytest.approx(0.4)
               for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("center", [False, True])
def test_whitening_gives_identity_covariance_over_patches(center):
    """With eps=0 the first 12 filters' outputs over all 2x2 patches have identity second
    moment (center=False, the paper) / covariance (center=True), computed in numpy."""
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.5, 0.4], [0.0, 0.0, 0.2]])
    images = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 12, 12, generator=g)) + 0.3
    images = F.avg_pool2d(images, 3, 1, 1)  # correlate neighbouring pixels
    net = AirbenchNet((8, 8, 8))
    whiten_init_(net, images, eps=0.0, center=center)
    conv = net.whiten
    out = conv(images).detach().double().numpy()           # (N, 24, H-1, W-1)
    y = out.transpose(0, 2, 3, 1).reshape(-1, 24)          # one row per patch
    half = y[:, :12]
    if center:
        assert np.abs(half.mean(0)).max() < 1e-4
        cov = np.cov(half, rowvar=False, bias=True)
    else:
        cov = half.T @ half / half.shape[0]
    np.testing.assert_allclose(cov, np.eye(12), atol=2e-3)
    np.testing.assert_allclose(y[:, 12:], -y[:, :12], atol=1e-5)  # [W; -W]
    assert not conv.weight.requires_grad

    # same filters from numpy's eigendecomposition of the patch matrix
    p = patches(images, 2).double().numpy()
    if center:
        p = p - p.mean(0)
    lam, vec = np.linalg.eigh(p.T @ p / p.shape[0])
    expected = (vec / np.sqrt(lam)).T[::-1]                 # largest eigenvalue first
    got = conv.weight[:12].reshape(12, -1).double().numpy()
    signs = np.sign((got * expected).sum(1))                # eigenvectors are defined up to sign
    np.testing.assert_allclose(got, expected * signs[:, None], rtol=1e-3, atol=1e-3)


def test_whitening_from_uint8_uses_the_normalisation():
    g = torch.Generator().manual_seed(1)
    u8 = torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    a, b = AirbenchNet((8, 8, 8)), AirbenchNet((8, 8, 8))
    whiten_init_(a, u8, mean=mean, std=std)
    norm = (u8.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    whiten_init_(b, norm)
    torch.testing.assert_close(a.whiten.weight, b.whiten.weight)


def test_tta_is_the_average_of_views():
    torch.manual_seed(0)
    net = AirbenchNet((8, 8, 8)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain, flipped = net(x), net(torch.flip(x, dims=[3]))
        assert torch.allclose(TTA(net, 0)(x), plain)
        assert torch.allclose(TTA(net, 1)(x), (plain + flipped) / 2, atol=1e-6)
        pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [x, pad[:, :, :32, :32], pad[:, :, 2:, 2:]]
        mirror = [(net(v) + net(torch.flip(v, dims=[3]))) / 2 for v in views]
        expected = 0.5 * mirror[0] + 0.25 * mirror[1] + 0.25 * mirror[2]
        assert torch.allclose(TTA(net, 2)(x), expected, atol=1e-6)
    t = TTA(net, 2).train()  # an nn.Module: train()/eval() reach the wrapped model
    assert net.training and t.eval() is t and not net.training


def test_recipe_pieces():
    s = SpeedrunRecipe().sgd()  # paper: lr 11.5 and wd 0.0153 per 1024 examples, momentum 0.85
    assert s["lr"] == pytest.approx(1.5) and s["bias_lr"] == pytest.approx(96.0)
    assert s["lr"] * s["weight_decay"] == pytest.approx(s["bias_lr"] * s["bias_weight_decay"])
    assert s["lr"] * s["weight_decay"] == pytest.approx(0.0153 / (1 + 1 / 0.15))
    f = [triangle(i, 100) for i in range(101)]
    assert f[0] == pytest.approx(0.2) and f[23] == pytest.approx(1.0) and f[100] == pytest.approx(0.07)
    assert max(f) == f[23]

    class L:
        def __init__(self):
            self.epoch = 0

        def __len__(self):
            return 10

        def set_epoch(self, e):
            self.epoch = e

        def __iter__(self):
            return iter(range(10))
    b = StepBudget(L(), 2.25)
    assert b.total_steps == 23 and b.num_epochs == 3 and [b.steps_in_epoch(e) for e in range(3)] == [10, 10, 3]
    b.set_epoch(2)
    assert list(b) == [0, 1, 2]

    m = torch.nn.BatchNorm1d(2)
    la = LookaheadState(m)
    with torch.no_grad():
        m.weight.fill_(3.0)
    la.update(0.75)  # average <- 0.75 * 1 + 0.25 * 3
    assert torch.allclose(m.weight, torch.full((2,), 1.5))


@pytest.fixture
def tiny_data():
    bench = load_bench()
    return bench, bench.synthetic_data(torch.device("cpu"), 96, 40)


def test_rethink_trainer_and_plain_loop_run_the_same_recipe(tiny_data):
    """Same seed, same batches: both loops end with the same weights (tiny net, every part of
    the recipe active: Lookahead and bias freeze from epoch 1, alternating flip, partial epoch)."""
    bench, data = tiny_data
    recipe = SpeedrunRecipe(epochs=3.5, batch_size=16, whiten_images=64, lookahead_start_epoch=1,
                            whiten_bias_epochs=1, lookahead_every=2)
    runs = {loop: bench.time_to_accuracy(*data, recipe=recipe, loop=loop, device="cpu", widths=(8, 16, 16),
                                         return_model=True) for loop in ("rethink", "plain")}
    a, b = runs["rethink"], runs["plain"]
    assert a["steps"] == b["steps"] == math.ceil(3.5 * (96 // 16)) == 21
    assert [e["steps"] for e in a["history"]] == [6, 6, 6, 3]
    for (k, va), vb in zip(a["model"].state_dict().items(), b["model"].state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-4, msg=k)
    assert [e["val_top1"] for e in a["history"]] == [e["val_top1"] for e in b["history"]]


def test_benchmark_quick_main_on_cpu(tmp_path):
    bench = load_bench()
    out = tmp_path / "t94.json"
    res = bench.main(["--quick", "--synthetic", "--device", "cpu", "--widths", "8", "16", "16",
                      "--n-train", "128", "--n-test", "40", "--no-warmup", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["anchor"]["airbench94"]["seconds"] == 2.59 and saved["anchor"]["airbench94"]["gpu"] == "A100"
    assert saved["device"].startswith("cpu") and saved["torch"] == torch.__version__
    for loop in ("rethink", "plain"):
        (run,) = saved["runs"][loop]
        assert run["time_to_target_s"] is None and 0 <= run["best_acc"] <= 1  # noise never reaches 94%
        assert run["epochs"] == pytest.approx(2.5) and run["images_per_s"] > 0
        assert saved["vs_anchor"][loop]["ratio"] is None  # not an A100, and below target
    assert set(res["ratio_rethink_to_plain"]) == {"time_to_target_s", "run_s", "images_per_s"}
    assert res["ratio_rethink_to_plain"]["time_to_target_s"] is None


def test_anchor_ratio_only_on_the_same_gpu_kind():
    bench = load_bench()
    summary = {"run_with_final_eval_s": {"mean": 5.18}, "mean_final_acc_reaches_target": True,
               "final_acc": {"mean": 0.9405}}
    a100 = bench.anchor_comparison(summary, "NVIDIA A100-SXM4-80GB")
    assert a100["ratio"] == pytest.approx(2.0)
    h100 = bench.anchor_comparison(summary, "NVIDIA H100 80GB HBM3")
    assert h100["ratio"] is None and "H100" in h100["note"] and h100["cross_gpu_quotient"] == pytest.approx(2.0)
    below = bench.anchor_comparison({**summary, "mean_final_acc_reaches_target": False}, "NVIDIA A100")
    assert below["ratio"] is None
