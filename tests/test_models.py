"""The model zoo: timm architectures with small-input stems, BN-scale removal, counters."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from rethink.models.zoo import (ARCHITECTURES, adapt_stem, count_flops, count_parameters,
                                create_model, penultimate_features, remove_bn_scale)
from rethink.train.loop import Recipe, make_optimizer

# wide_resnet50 (69M params) is slow on a CPU: it gets one 32px check of its own below.
SLOW = {"wide_resnet50"}
FAST = [a for a in ARCHITECTURES if a not in SLOW]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def _adapted(arch: str) -> nn.Module:
    """create_model(arch, 200) in eval mode, built once per module (tests must not modify it)."""
    torch.manual_seed(0)
    return create_model(arch, 200).eval()


@pytest.fixture(autouse=True, scope="module")
def _free_cached_models():
    yield
    _adapted.cache_clear()


def _spatial(model: nn.Module, size: int) -> tuple[int, int]:
    """Spatial size of forward_features on a size x size input (the model may be on 'meta')."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return tuple(model.forward_features(torch.zeros(1, 3, size, size, device=device)).shape[-2:])


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]


def test_architecture_registry():
    assert len(ARCHITECTURES) == 10 and set(SLOW) <= set(ARCHITECTURES)
    for name, spec in ARCHITECTURES.items():
        assert spec.name == name and spec.timm_name and spec.family


def test_unknown_architecture_names_it_and_choices():
    with pytest.raises(KeyError, match="resnet9000") as e:
        create_model("resnet9000", 10)
    assert "resnet18" in str(e.value)


# --------------------------------------------------------------------------- shapes and stride

# Stride checks run on the 'meta' device: shapes only, no arithmetic, so every architecture
# (wide_resnet50 included) is checked at 32 and 64 px in well under a second each.

@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_adapted_stem_has_total_stride_16(arch):
    with torch.device("meta"):
        model = create_model(arch, 200).eval()
        assert _spatial(model, 64) == (4, 4)
        assert _spatial(model, 32) == (2, 2)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_unadapted_timm_model_has_stride_32(arch):
    with torch.device("meta"):
        model = create_model(arch, 200, small_input=False).eval()
        assert _spatial(model, 64) == (2, 2)
        assert _spatial(model, 32) == (1, 1)


@pytest.mark.parametrize("arch", FAST)
def test_logits_at_32px(arch):
    model = _adapted(arch)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 200) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_penultimate_features_shape(arch):
    with torch.device("meta"):
        model = create_model(arch, 200).eval()
        feats = penultimate_features(model, torch.zeros(2, 3, 32, 32))
    # The pre-logits width is timm's head_hidden_size; it equals num_features except where the
    # head has its own layer (MobileNetV3: conv_head 576 -> 1024), see the next test.
    assert feats.shape == (2, model.head_hidden_size)


def test_penultimate_features_feed_the_classifier():
    model = _adapted("mobilenetv3_small")  # the architecture whose head has a layer of its own
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = penultimate_features(model, x)
        torch.testing.assert_close(model.get_classifier()(feats), model(x), rtol=1e-4, atol=1e-4)


def test_penultimate_width_vs_num_features():
    """Pins a pitfall: size a probe on penultimate_features with head_hidden_size, not num_features."""
    with torch.device("meta"):
        widths = {a: (m.num_features, m.head_hidden_size)
                  for a in FAST for m in [create_model(a, 10)]}
    assert {a for a, (nf, hh) in widths.items() if nf != hh} == {"mobilenetv3_small"}
    assert widths["mobilenetv3_small"] == (576, 1024)


def test_wide_resnet50_forward_once_at_32px():
    model = create_model("wide_resnet50", 200).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
    assert feats.shape == (2, model.num_features, 2, 2)  # 32 / 16
    assert logits.shape == (2, 200) and torch.isfinite(logits).all()


# --------------------------------------------------------------------------- adapt_stem rules

def test_adapt_stem_7x7_stride2_becomes_3x3_stride1():
    model = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))
    second = model[2]
    assert adapt_stem(model) is model
    conv = model[0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert (conv.in_channels, conv.out_channels, conv.bias) == (3, 8, None)
    assert model[2] is second  # only the first conv changes
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 8, 8, 8)


def test_adapt_stem_3x3_stride2_keeps_bias():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=True)))  # nested, like resnet10t
    adapt_stem(model)
    conv = model[0][0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert conv.bias is not None


def test_adapt_stem_patchify_4_becomes_2():
    model = nn.Sequential(nn.Conv2d(3, 16, 4, 4))
    adapt_stem(model)
    conv = model[0]
    assert (conv.kernel_size, conv.stride, conv.padding) == ((2, 2), (2, 2), (0, 0))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 16, 32, 32)


def test_adapt_stem_rejects_stride_1_first_conv():
    with pytest.raises(ValueError, match="stride=1"):
        adapt_stem(nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 2, 1)))


def test_adapt_stem_twice_raises():
    model = create_model("resnet18", 10)  # already adapted: first conv is 3x3/1
    with pytest.raises(ValueError, match="stride=1"):
        adapt_stem(model)


def test_adapt_stem_without_conv_raises():
    with pytest.raises(ValueError, match="no Conv2d"):
        adapt_stem(nn.Sequential(nn.Linear(3, 3)))


@pytest.mark.parametrize("arch, attr, before, after", [
    ("resnet18", "conv1", ((7, 7), (2, 2)), ((3, 3), (1, 1))),
    ("convnext_atto", "stem.0", ((4, 4), (4, 4)), ((2, 2), (2, 2))),
    ("resnet10t", "conv1.0", ((3, 3), (2, 2)), ((3, 3), (1, 1))),
])
def test_real_stems(arch, attr, before, after):
    raw = create_model(arch, 10, small_input=False).get_submodule(attr)
    new = create_model(arch, 10).get_submodule(attr)
    assert (raw.kernel_size, raw.stride) == before
    assert (new.kernel_size, new.stride) == after


# --------------------------------------------------------------------------- BN scale

@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv3_small", "efficientnet_b0", "densenet121"])
def test_remove_bn_scale_fixes_gamma(arch):
    model = create_model(arch, 10, bn_scale=False)
    bns = _bn_layers(model)
    assert bns
    for m in bns:
        assert torch.equal(m.weight, torch.ones_like(m.weight))
        assert not m.weight.requires_grad
        assert m.bias.requires_grad  # beta still trains
    assert all(m.weight.requires_grad for m in _bn_layers(create_model(arch, 10)))  # the default


def test_remove_bn_scale_after_init_changes():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    remove_bn_scale(model)
    assert model[1].weight.tolist() == [1.0] * 4 and not model[1].weight.requires_grad


def _sgd_step(model: nn.Module) -> None:
    opt = make_optimizer(model, Recipe(lr=0.5, weight_decay=0.1), CPU)
    model.train()
    loss = model(torch.randn(2, 3, 16, 16)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_bn_scale_stays_one_after_sgd_with_weight_decay():
    model = create_model("resnet10t", 10, bn_scale=False)
    frozen = {id(m.weight) for m in _bn_layers(model)}
    opt = make_optimizer(model, Recipe(weight_decay=0.1), CPU)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not frozen & in_opt  # requires_grad False: never handed to the optimizer
    _sgd_step(model)
    for m in _bn_layers(model):
        assert torch.equal(m.weight, torch.ones_like(m.weight))


def test_bn_scale_trains_by_default():  # the control: the same step does move gamma
    model = create_model("resnet10t", 10)
    _sgd_step(model)
    assert any(not torch.equal(m.weight, torch.ones_like(m.weight)) for m in _bn_layers(model))


# --------------------------------------------------------------------------- regularizer kwargs

def test_dropout_reaches_timm():
    assert create_model("resnet18", 10).drop_rate == 0.0
    assert create_model("resnet18", 10, dropout=0.5).drop_rate == 0.5
    assert create_model("efficientnet_b0", 10, dropout=0.5).drop_rate == 0.5
    dense = create_model("densenet121", 10, dropout=0.5)  # DenseNet: nn.Dropout before the classifier
    assert dense.head_drop.p == 0.5


def _two_train_passes(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two forward passes in training mode, BatchNorm on its running statistics."""
    model.train()
    for m in _bn_layers(model):
        m.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        return model(x), model(x)


def test_dropout_is_random_in_training():
    a, b = _two_train_passes(create_model("resnet10t", 10, dropout=0.5))
    assert not torch.equal(a, b)
    a, b = _two_train_passes(create_model("resnet10t", 10))  # control: no dropout, same outputs
    torch.testing.assert_close(a, b)


def test_drop_path_reaches_timm():
    model = create_model("resnet18", 10, drop_path=0.1)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)
    assert not any(type(m).__name__ == "DropPath" for m in create_model("resnet18", 10).modules())


# --------------------------------------------------------------------------- counters

def test_count_parameters():
    assert count_parameters(nn.Linear(3, 4)) == 16
    model = _adapted("resnet10t")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    # frozen BN scales are still parameters of the model
    assert count_parameters(create_model("resnet10t", 200, bn_scale=False)) == count_parameters(model)


def test_count_flops_hand_computed():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    model.train()
    conv_macs = (4 * 8 * 8) * (3 * 3 * 3)  # output elements x kernel volume
    linear_macs = (4 * 8 * 8) * 5
    assert count_flops(model, 8) == 2 * (conv_macs + linear_macs) == 16384
    assert model.training  # mode restored


def test_count_flops_scales_with_pixels():
    model = _adapted("resnet18")
    f32, f64 = count_flops(model, 32), count_flops(model, 64)
    assert f32 > 0
    assert 3.9 < f64 / f32 <= 4.0  # all but the classifier scale with the pixel count
    # the adapted stem costs more than timm's original (stride 16 instead of 32)
    assert count_flops(create_model("resnet18", 200, small_input=False), 64) < f64 / 3
