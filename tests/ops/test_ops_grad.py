"""Gradients flow through CutMix, MixUp and Cutout, as the pixels say (issue 10, item 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cutmix.ops.apply
from cutmix import CutMix, Cutout, MixUp, apply_mixup


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Item 9: gradients through the ops
# ----------------------------------------------------------------------------------------------


def _coded(shape: tuple[int, ...], dtype: torch.dtype, offset: int = 0) -> torch.Tensor:
    """Every element holds its own flat index (+ offset): an output element tells where it came from."""
    count = int(np.prod(shape))
    return (torch.arange(count, dtype=torch.float64) + offset).view(shape).to(dtype)


def _layout(images: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return images.contiguous(memory_format=memory_format).requires_grad_()


def _sources(out: torch.Tensor, count: int) -> torch.Tensor:
    """How many output elements carry each input element's code: d sum(out) / d input, read off the pixels."""
    codes = out.detach().to(torch.float64).round().long().flatten()
    return torch.bincount(codes, minlength=count).to(torch.float64)


LAYOUTS = [
    ("channels_first", torch.contiguous_format),
    ("channels_first", torch.channels_last),
    ("channels_last", torch.contiguous_format),
]


@pytest.fixture(params=["numeric", "bool"])
def mask_kind(request, monkeypatch):
    """The CPU blends with a 0/1 numeric mask; accelerators select with a boolean one (torch.where):
    forced here so that path is checked without a GPU."""
    if request.param == "bool":
        monkeypatch.setattr(cutmix.ops.apply, "_mask_dtype", lambda images: torch.bool)
    return request.param


@pytest.mark.parametrize(("data_format", "memory_format"), LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("paired", [False, True])
def test_cutmix_gradient_counts_the_output_pixels_each_input_pixel_feeds(
    data_format, memory_format, dtype, paired, mask_kind
):
    shape = (6, 3, 10, 12) if data_format == "channels_first" else (6, 10, 12, 3)
    count = int(np.prod(shape))  # codes stay below 2**24, exact in float32
    images = _layout(_coded(shape, dtype), memory_format)
    images2 = _layout(_coded(shape, dtype, offset=count), memory_format) if paired else None
    label_smoothing = 0.1
    labels = torch.softmax(torch.randn(6, 4, generator=gen(0)), dim=1).requires_grad_()
    labels2 = torch.softmax(torch.randn(6, 4, generator=gen(1)), dim=1).requires_grad_() if paired else None
    op = CutMix(label_smoothing=label_smoothing, data_format=data_format, generator=gen(2))
    mixed, targets, params = op(images, labels, images2, labels2, return_params=True)
    assert params.applied.any()
    assert mixed.dtype == dtype and mixed.is_contiguous(memory_format=memory_format)
    (mixed.sum() + targets.sum()).backward()

    expected = _sources(mixed, 2 * count)
    assert torch.equal(images.grad.to(torch.float64).flatten(), expected[:count])
    assert (expected[:count] == 0).any()  # some pixels were covered by a paste ...
    if paired:
        assert torch.equal(images2.grad.to(torch.float64).flatten(), expected[count:])
        assert (expected[count:] == 1).any()
    else:
        assert (expected[:count] == 2).any()  # ... and pasted into another sample
    # A label's share of the targets is its sample's share of the pixels, read off one channel.
    channel = mixed[:, 0] if data_format == "channels_first" else mixed[..., 0]
    per_sample = count // 6
    samples = channel.detach().to(torch.float64).round().long().flatten() // per_sample
    share = (1 - label_smoothing) * torch.bincount(samples, minlength=12).to(torch.float64) / (10 * 12)
    torch.testing.assert_close(labels.grad, share[:6, None].expand(6, 4).float(), rtol=0, atol=1e-6)
    if paired:
        torch.testing.assert_close(labels2.grad, share[6:, None].expand(6, 4).float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("data_format", "memory_format"), LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fill", [0.0, -1.0])
def test_cutout_gradient_is_one_where_the_pixel_survives(data_format, memory_format, dtype, fill, mask_kind):
    shape = (5, 3, 9, 11) if data_format == "channels_first" else (5, 9, 11, 3)
    images = _layout(_coded(shape, dtype, offset=1), memory_format)  # codes >= 1: never the fill
    mixed = Cutout(size=4, fill=fill, data_format=data_format, num_classes=3, generator=gen(0))(
        images, torch.zeros(5, dtype=torch.long)
    )[0]
    assert mixed.is_contiguous(memory_format=memory_format)
    mixed.sum().backward()
    survived = (mixed.detach() != fill).to(dtype)
    assert 0 < survived.sum() < survived.numel()
    assert torch.equal(images.grad, survived)


@pytest.mark.parametrize(("data_format", "memory_format"), LAYOUTS)
@pytest.mark.parametrize("paired", [False, True])
def test_mixup_gradient_is_the_sum_of_the_coefficients_each_input_gets(data_format, memory_format, paired):
    """MixUp is linear in the images: the coefficient sample j gets in output i is output i when only
    sample j holds ones (forward passes without grad, the fast path)."""
    shape = (6, 2, 5, 7) if data_format == "channels_first" else (6, 5, 7, 2)
    images = _layout(torch.rand(shape, dtype=torch.float64, generator=gen(0)), memory_format)
    images2 = (
        _layout(torch.rand(shape, dtype=torch.float64, generator=gen(1)), memory_format) if paired else None
    )
    labels = torch.softmax(torch.randn(6, 3, generator=gen(2)), dim=1).requires_grad_()
    op = MixUp(data_format=data_format, generator=gen(3))
    mixed, targets, params = op(images, labels, images2, labels if paired else None, return_params=True)
    (mixed.sum() + targets.sum()).backward()

    zeros = torch.zeros(shape, dtype=torch.float64)
    own, partner = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    for j in range(6):
        basis = zeros.clone()
        basis[j] = 1
        with torch.no_grad():
            if paired:
                own[j] = apply_mixup(basis, torch.zeros(6, 3), params, zeros, torch.zeros(6, 3),
                                     data_format=data_format)[0].sum()  # fmt: skip
                partner[j] = apply_mixup(zeros, torch.zeros(6, 3), params, basis, torch.zeros(6, 3),
                                         data_format=data_format)[0].sum()  # fmt: skip
            else:
                own[j] = apply_mixup(basis, torch.zeros(6, 3), params, data_format=data_format)[0].sum()
    per_element = int(np.prod(shape[1:]))
    torch.testing.assert_close(images.grad, (own / per_element).view(6, 1, 1, 1).expand(shape))
    if paired:
        torch.testing.assert_close(images2.grad, (partner / per_element).view(6, 1, 1, 1).expand(shape))
        # labels fed both batches' targets: its share is the whole sample either way
        torch.testing.assert_close(labels.grad, ((own + partner) / per_element)[:, None].expand(6, 3).float())
    else:
        torch.testing.assert_close(labels.grad, (own / per_element)[:, None].expand(6, 3).float())


def test_no_grad_and_grad_free_inputs_keep_the_fast_path_results():
    """The differentiable path gives the same pixels as the fast one; under no_grad nothing is recorded."""
    images = torch.rand(8, 3, 16, 16, generator=gen(0))
    labels = torch.randint(0, 10, (8,), generator=gen(1))
    for make in (lambda: CutMix(num_classes=10, generator=gen(2)), lambda: MixUp(num_classes=10, generator=gen(2)),
                 lambda: Cutout(num_classes=10, generator=gen(2))):  # fmt: skip
        fast = make()(images, labels)
        leaf = images.clone().requires_grad_()
        with torch.no_grad():
            quiet = make()(leaf, labels)
        assert quiet[0].grad_fn is None and torch.equal(quiet[0], fast[0])
        slow = make()(leaf, labels)
        assert slow[0].requires_grad and torch.equal(slow[0].detach(), fast[0])
        assert torch.equal(slow[1], fast[1])
        assert leaf.grad is None and torch.equal(leaf.detach(), images)  # the input is untouched
