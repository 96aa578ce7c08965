"""Tests for cutmix.models: the seed's Keras ResNet v1, its init, padding and regularisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from cutmix.models import (
    SameConv2d,
    count_parameters,
    l2_penalty,
    param_groups,
    resnet_v1,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    return resnet_v1(20, generator=_gen(0))


def _images(n: int, seed: int = 1, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=_gen(seed))


# --- architecture ------------------------------------------------------------------------


def test_resnet20_parameter_counts_match_keras(resnet20):
    counts = count_parameters(resnet20)
    assert counts == {"trainable": 273_066, "bn_running_stats": 1_376, "total": 274_442}


def _expected_counts(depth: int, num_classes: int, shortcut_bn: bool) -> tuple[int, int]:
    """(trainable, bn running stats) derived from the architecture description by hand."""
    n = (depth - 2) // 6

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout  # kernel + bias

    trainable = conv(3, 16, 3) + 2 * 16
    bn_channels = 16
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(n):
            trainable += conv(cin, width, 3) + 2 * width + conv(width, width, 3) + 2 * width
            bn_channels += 2 * width
            if stage > 0 and block == 0:
                trainable += conv(cin, width, 1)
                if shortcut_bn:
                    trainable += 2 * width
                    bn_channels += width
            cin = width
    trainable += 64 * num_classes + num_classes
    return trainable, 2 * bn_channels


@pytest.mark.parametrize(
    ("depth", "num_classes", "shortcut_bn"),
    [(20, 10, False), (32, 10, False), (56, 10, False), (32, 100, True), (20, 10, True)],
)
def test_parameter_count_formula(depth, num_classes, shortcut_bn):
    model = resnet_v1(depth, num_classes, shortcut_bn, generator=_gen(0))
    trainable, stats_ = _expected_counts(depth, num_classes, shortcut_bn)
    assert count_parameters(model) == {
        "trainable": trainable,
        "bn_running_stats": stats_,
        "total": trainable + stats_,
    }


def test_count_parameters_counts_frozen_params_in_total_only():
    model = resnet_v1(20, generator=_gen(0))
    model.fc.requires_grad_(False)
    counts = count_parameters(model)
    assert counts["trainable"] == 273_066 - 650
    assert counts["total"] == 274_442


def test_output_is_logits_of_shape_batch_by_classes(resnet20):
    out = resnet20.eval()(_images(5))
    assert out.shape == (5, 10)
    assert out.dtype == torch.float32
    # Logits, not probabilities: rows do not sum to one.
    assert not torch.allclose(out.sum(1), torch.ones(5), atol=1e-3)
    model100 = resnet_v1(20, 100, generator=_gen(0)).eval()
    assert model100(_images(2)).shape == (2, 100)


def test_shortcut_bn_variant_puts_batchnorm_on_projection():
    plain = resnet_v1(20, generator=_gen(0))
    with_bn = resnet_v1(20, shortcut_bn=True, generator=_gen(0))
    assert isinstance(plain.stages[1][0].shortcut, nn.Conv2d)
    bns = [m for m in with_bn.stages[1][0].shortcut.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 and bns[0].num_features == 32
    assert isinstance(plain.stages[0][0].shortcut, nn.Identity)
    assert with_bn.eval()(_images(2)).shape == (2, 10)


@pytest.mark.parametrize("depth", [21, 19, 2, 0, -4, 25])
def test_bad_depth_raises_seed_message(depth):
    with pytest.raises(ValueError, match=rf"^depth should be 6n\+2 \(e\.g\. 20, 32, 44\), got {depth}$"):
        resnet_v1(depth)


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_bad_num_classes_raises(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        resnet_v1(20, num_classes)


def test_forward_rejects_wrong_input_shape(resnet20):
    with pytest.raises(ValueError, match=r"expected x of shape"):
        resnet20(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"32x32"):
        resnet20.eval()(torch.zeros(1, 3, 64, 64))


# --- TensorFlow 'same' padding -----------------------------------------------------------


def test_strided_conv_pads_bottom_right_like_keras(resnet20):
    conv = resnet20.stages[1][0].conv1[0]
    assert conv.stride == (2, 2) and conv.kernel_size == (3, 3)
    x = torch.randn(2, 16, 32, 32, generator=_gen(3))
    with torch.no_grad():
        got = conv(x)
        keras = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
        pytorch_symmetric = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert got.shape == (2, 32, 16, 16)
    torch.testing.assert_close(got, keras)
    assert not torch.allclose(got, pytorch_symmetric, atol=1e-3)


def test_projection_shortcut_is_unpadded_strided_1x1_conv_with_bias(resnet20):
    shortcut = resnet20.stages[2][0].shortcut
    assert shortcut.kernel_size == (1, 1) and shortcut.stride == (2, 2)
    assert shortcut.bias is not None
    x = torch.randn(2, 32, 16, 16, generator=_gen(4))
    with torch.no_grad():
        torch.testing.assert_close(shortcut(x), F.conv2d(x, shortcut.weight, shortcut.bias, stride=2))


def test_stride1_conv_pads_symmetrically(resnet20):
    conv = resnet20.stages[0][0].conv2[0]
    x = torch.randn(1, 16, 32, 32, generator=_gen(5))
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(F.pad(x, (1, 1, 1, 1)), conv.weight, conv.bias))


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # The formula from TensorFlow's convolution documentation.
    pad = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 3),
)
def test_same_conv_matches_tensorflow_padding(height, width, kernel, stride):
    conv = SameConv2d(2, 3, kernel, stride)
    nn.init.normal_(conv.weight, generator=_gen(height * 100 + width))
    nn.init.normal_(conv.bias, generator=_gen(7))
    x = torch.randn(1, 2, height, width, generator=_gen(8))
    top, bottom = _tf_same_pads(height, kernel, stride)
    left, right = _tf_same_pads(width, kernel, stride)
    with torch.no_grad():
        got = conv(x)
        want = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride=stride)
    assert got.shape[-2:] == (math.ceil(height / stride), math.ceil(width / stride))
    torch.testing.assert_close(got, want)


# --- initialisation ----------------------------------------------------------------------


def _kernels(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_he_normal_init_statistics(resnet20):
    normalised = []
    for w in _kernels(resnet20):
        fan_in = w[0].numel()
        target = math.sqrt(2.0 / fan_in)
        untruncated = target / 0.87962566103423978
        assert w.abs().max() <= 2 * untruncated * (1 + 1e-6)
        normalised.append((w / target).flatten())
    z = torch.cat(normalised).double()
    assert z.numel() > 250_000
    assert abs(z.std().item() - 1.0) < 0.02
    assert abs(z.mean().item()) < 0.01
    # Shape of the distribution: Keras' truncated normal, in units of the target std.
    scale = 1 / 0.87962566103423978
    result = stats.kstest(z.numpy(), stats.truncnorm(-2, 2, scale=scale).cdf)
    assert result.pvalue > 1e-3, result


def test_biases_zero_and_batchnorm_identity(resnet20):
    model = resnet_v1(20, generator=_gen(0))
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            assert m.bias is not None and torch.count_nonzero(m.bias) == 0
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)


def test_init_reproducible_with_generator_and_leaves_global_rng_alone():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = resnet_v1(20, generator=_gen(11)).state_dict()
    b = resnet_v1(20, generator=_gen(11)).state_dict()
    c = resnet_v1(20, generator=_gen(12)).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem.0.weight"], c["stem.0.weight"])
    assert not torch.equal(a["fc.weight"], c["fc.weight"])
    # Without a generator: fresh entropy, still not the global RNG.
    resnet_v1(20)
    assert torch.equal(torch.get_rng_state(), before)


def test_batchnorm_uses_keras_momentum_and_epsilon():
    model = resnet_v1(20, generator=_gen(0))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 19
    assert all(bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3) for bn in bns)
    # Behaviour, not just attributes: one training step moves the running mean 1 % of the way.
    stem_conv, stem_bn = model.stem[0], model.stem[1]
    x = _images(4) + 3.0
    with torch.no_grad():
        batch_mean = stem_conv(x).mean(dim=(0, 2, 3))
        model.train()(x)
    torch.testing.assert_close(stem_bn.running_mean, 0.01 * batch_mean)


# --- regularisation ----------------------------------------------------------------------


def test_l2_penalty_matches_hand_sum_over_conv_kernels(resnet20):
    hand = sum(
        (p.detach().double() ** 2).sum().item()
        for name, p in resnet20.named_parameters()
        if p.ndim == 4 and name.endswith("weight")
    )
    assert l2_penalty(resnet20).item() == pytest.approx(1e-4 * hand, rel=1e-5)
    assert l2_penalty(resnet20, weight=0.5).item() == pytest.approx(0.5 * hand, rel=1e-5)


def test_l2_penalty_ignores_dense_bias_and_batchnorm():
    model = resnet_v1(20, generator=_gen(0))
    before = l2_penalty(model).item()
    with torch.no_grad():
        model.fc.weight.mul_(10)
        model.stem[0].bias.fill_(5)
        model.stem[1].weight.fill_(3)
    assert l2_penalty(model).item() == before
    with torch.no_grad():
        model.stages[2][0].shortcut.weight.mul_(2)
    assert l2_penalty(model).item() > before


def test_l2_penalty_rejects_negative_weight(resnet20):
    with pytest.raises(ValueError, match="weight"):
        l2_penalty(resnet20, weight=-1.0)


def test_param_groups_split_and_match_keras_l2():
    model = resnet_v1(20, generator=_gen(0))
    decay, no_decay = param_groups(model, weight_decay=2e-4)
    assert decay["weight_decay"] == 2e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 4 for p in decay["params"])
    assert len(decay["params"]) == 21  # stem + 2 per block x 9 + 2 projections
    ids = {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]}
    assert ids == {id(p) for p in model.parameters()}
    assert len(ids) == len(decay["params"]) + len(no_decay["params"])

    # SGD weight_decay=2e-4 on the decay group == plain SGD on loss + L2(1e-4) in the loss.
    # Depth 8 has every kind of layer ResNet-20 has, at a third of the cost.
    model, twin = resnet_v1(8, generator=_gen(0)), resnet_v1(8, generator=_gen(0))
    x, y = _images(2), torch.tensor([0, 1])
    opt_a = torch.optim.SGD(param_groups(model, 2e-4), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt_a.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt_a.step()
        opt_b.zero_grad()
        (F.cross_entropy(twin(x), y) + l2_penalty(twin, 1e-4)).backward()
        opt_b.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


# --- execution modes ---------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_channels_last_matches_contiguous(train):
    model = resnet_v1(20, generator=_gen(0)).train(train)
    x = _images(4)
    with torch.no_grad():
        want = model(x)
        model_cl = resnet_v1(20, generator=_gen(0)).train(train).to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_forward_and_backward():
    model = resnet_v1(8, generator=_gen(0))
    x = _images(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = F.cross_entropy(out, torch.tensor([0, 1, 2, 3])) + l2_penalty(model)
    assert out.shape == (4, 10) and out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        ref = model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    # bf16 has ~3 significant digits; the logits should still agree roughly.
    assert (low - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_few_sgd_steps_overfit_a_tiny_batch():
    model = resnet_v1(20, generator=_gen(0)).train()
    x = _images(4, seed=21)
    y = torch.arange(4)
    opt = torch.optim.SGD(param_groups(model, 2e-4), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
