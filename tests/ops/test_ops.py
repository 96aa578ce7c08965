"""The mixing ops, checked from the output pixels.

Images are built so that every pixel says where it came from (its sample index, or its sample, channel
and position), so what an op did is read back from what it returned, not recomputed from its own
parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from cutmix import (
    CutMix,
    CutMixOrMixUp,
    Cutout,
    MixUp,
    apply_cutmix,
    apply_cutout,
    apply_mixup,
    sample_cutmix_params,
    sample_cutout_params,
    sample_mixup_params,
    to_targets,
)
from cutmix.ops.apply import _box_mask

DTYPES = [torch.uint8, torch.int32, torch.float16, torch.bfloat16, torch.float32, torch.float64]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def index_images(
    batch: int, channels: int, height: int, width: int, dtype: torch.dtype, data_format: str, offset: int = 0
) -> torch.Tensor:
    """Every pixel of sample b holds b + offset (exact in every dtype tested for values < 256)."""
    values = (torch.arange(batch) + offset).view(batch, 1, 1, 1).to(dtype)
    shape = (
        (batch, channels, height, width)
        if data_format == "channels_first"
        else (batch, height, width, channels)
    )
    return values.expand(shape).clone()


def source_map(out: torch.Tensor, data_format: str) -> np.ndarray:
    """(B, H, W) int: the value each output pixel carries, checked to be the same in every channel."""
    values = out.to(torch.float64)
    values = values if data_format == "channels_first" else values.permute(0, 3, 1, 2)
    first = values[:, :1]
    assert torch.equal(values, first.expand_as(values)), "channels of one pixel came from different samples"
    return first[:, 0].round().long().numpy()


def reference_box(lam: float, anchor: tuple[int, int], height: int, width: int, box: str) -> tuple[int, ...]:
    """The paper's box, one sample at a time, written plainly."""
    cut_h = int(height * math.sqrt(1.0 - lam))
    cut_w = int(width * math.sqrt(1.0 - lam))
    cy, cx = anchor
    if box == "inside":
        return cy, cy + cut_h, cx, cx + cut_w
    clip_y = lambda v: min(max(v, 0), height)  # noqa: E731
    clip_x = lambda v: min(max(v, 0), width)  # noqa: E731
    return clip_y(cy - cut_h // 2), clip_y(cy + cut_h // 2), clip_x(cx - cut_w // 2), clip_x(cx + cut_w // 2)


def rectangle_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The half-open rectangle that ``mask`` is exactly, None if empty; fails if it is no rectangle."""
    if not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert mask[y0:y1, x0:x1].all() and mask.sum() == (y1 - y0) * (x1 - x0), "pasted region is not a box"
    return int(y0), int(y1), int(x0), int(x1)


shapes = st.tuples(st.integers(1, 9), st.integers(1, 4), st.integers(1, 13), st.integers(1, 13))  # B, C, H, W


@settings(max_examples=150, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    data_format=st.sampled_from(["channels_first", "channels_last"]),
    partner=st.sampled_from(["permute", "roll", "flip", "batch"]),
    box=st.sampled_from(["center", "inside"]),
    alpha=st.sampled_from([0.1, 0.25, 1.0, 4.0]),
    p=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**31),
)
def test_cutmix_read_back_from_pixels(shape, dtype, data_format, partner, box, alpha, p, seed):
    batch, channels, height, width = shape
    num_classes = 2 * batch  # sample b has class b, its explicit partner class batch + b
    images = index_images(batch, channels, height, width, dtype, data_format)
    labels = torch.arange(batch)
    images2 = labels2 = None
    if partner == "batch":
        images2 = index_images(batch, channels, height, width, dtype, data_format, offset=batch)
        labels2 = labels + batch
    mix = CutMix(
        alpha=alpha, p=p, num_classes=num_classes, box=box, data_format=data_format, generator=gen(seed),
        partner="permute" if partner == "batch" else partner,
    )  # fmt: skip
    before = images.clone()
    mixed, targets, params = mix(images, labels, images2, labels2, return_params=True)

    assert torch.equal(images, before), "input modified in place"
    assert mixed.dtype == images.dtype and mixed.shape == images.shape
    assert targets.dtype == torch.float32 and targets.shape == (batch, num_classes)
    torch.testing.assert_close(targets.sum(1), torch.ones(batch), rtol=0, atol=1e-6)

    sources = source_map(mixed, data_format)
    partners = params.partner.numpy()
    for i in range(batch):
        own = sources[i] == i
        other = ~own
        partner_value = partners[i] + (batch if partner == "batch" else 0)
        assert (sources[i][other] == partner_value).all(), "a pasted pixel is not from the partner"
        fraction = other.mean()
        # The targets carry exactly the share of pixels read back.
        assert targets[i, i].item() == pytest.approx(1.0 - fraction, abs=1e-6)
        if partner_value != i:
            assert targets[i, partner_value].item() == pytest.approx(fraction, abs=1e-6)
        pasted = rectangle_of(other)
        if params.applied[i]:
            lam = params.lam[i].item()
            expected = reference_box(lam, tuple(params.anchor[i].tolist()), height, width, box)
            assert pasted == expected
            assert tuple(params.box[i].tolist()) == expected
        else:
            assert pasted is None and targets[i, i].item() == 1.0  # untouched: image and label
    if partner == "roll":
        assert partners.tolist() == np.roll(np.arange(batch), 1).tolist()
    if partner == "flip":
        assert partners.tolist() == list(range(batch - 1, -1, -1))
    if p == 0.0:
        assert torch.equal(mixed, images) and not params.applied.any()


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes, data_format=st.sampled_from(["channels_first", "channels_last"]), seed=st.integers(0, 999)
)
def test_cutmix_moves_pixels_with_their_position(shape, data_format, seed):
    """Pasted pixels come from the same channel and position of the partner."""
    batch, channels, height, width = shape
    b, c, h, w = torch.meshgrid(
        torch.arange(batch), torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij"
    )
    images = (b * 1_000_000 + c * 10_000 + h * 100 + w).to(torch.float64)
    if data_format == "channels_last":
        images = images.permute(0, 2, 3, 1).contiguous()
    mixed, _, params = CutMix(num_classes=batch, data_format=data_format, generator=gen(seed))(
        images, torch.arange(batch), return_params=True
    )

    def position_code(t: torch.Tensor) -> torch.Tensor:
        return t - torch.div(t, 1_000_000, rounding_mode="floor") * 1_000_000

    assert torch.equal(position_code(mixed), position_code(images))
    sample_of = torch.div(mixed, 1_000_000, rounding_mode="floor").long()
    own = torch.arange(batch).view(-1, 1, 1, 1)
    from_partner = sample_of != own
    assert torch.equal(
        sample_of[from_partner], params.partner.view(-1, 1, 1, 1).expand_as(sample_of)[from_partner]
    )
    assert from_partner.any().item() == params.applied.any().item()


@pytest.mark.parametrize("alpha", [0.25, 1.0, 3.0])
def test_lambda_follows_beta(alpha):
    params = sample_cutmix_params(4000, 32, 32, alpha=alpha, generator=gen(7))
    result = stats.kstest(params.lam.double().numpy(), "beta", args=(alpha, alpha))
    assert result.pvalue > 1e-3, result
    mixup = sample_mixup_params(4000, alpha=alpha, generator=gen(8))
    assert stats.kstest(mixup.lam.double().numpy(), "beta", args=(alpha, alpha)).pvalue > 1e-3


def test_centres_are_uniform_and_p_is_per_sample():
    params = sample_cutmix_params(6000, 8, 5, alpha=1.0, p=0.3, generator=gen(3))
    counts_y = np.bincount(params.anchor[:, 0].numpy(), minlength=8)
    counts_x = np.bincount(params.anchor[:, 1].numpy(), minlength=5)
    assert stats.chisquare(counts_y).pvalue > 1e-3 and stats.chisquare(counts_x).pvalue > 1e-3
    # On 64×64 images a box is empty only when 1 − λ < 1/1024, so the applied share is about p.
    applied = sample_cutmix_params(6000, 64, 64, alpha=1.0, p=0.3, generator=gen(4)).applied
    assert 0.28 < applied.float().mean().item() < 0.32


def test_non_square_boxes_scale_per_axis():
    params = sample_cutmix_params(500, 10, 40, alpha=1.0, box="inside", generator=gen(0))
    box = params.box[params.applied]
    heights, widths = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
    lam = params.lam[params.applied].double()
    assert torch.equal(heights, torch.floor(10 * torch.sqrt(1 - lam)).long())
    assert torch.equal(widths, torch.floor(40 * torch.sqrt(1 - lam)).long())


@pytest.mark.parametrize("op_name", ["cutmix", "mixup", "cutout"])
def test_same_seed_same_output_other_seed_other_output(op_name):
    images = torch.rand(16, 3, 12, 12, generator=gen(0))
    labels = torch.randint(0, 10, (16,), generator=gen(1))
    make = {
        "cutmix": lambda s: CutMix(num_classes=10, generator=gen(s)),
        "mixup": lambda s: MixUp(num_classes=10, generator=gen(s)),
        "cutout": lambda s: Cutout(size=5, num_classes=10, generator=gen(s)),
    }[op_name]
    a, b, c = make(1)(images, labels), make(1)(images, labels), make(2)(images, labels)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_generator_none_follows_torch_manual_seed():
    images, labels = torch.rand(8, 3, 8, 8), torch.arange(8)
    torch.manual_seed(5)
    first = CutMix(num_classes=8)(images, labels)[0]
    torch.manual_seed(5)
    second = CutMix(num_classes=8)(images, labels)[0]
    assert torch.equal(first, second)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 999))
def test_every_memory_layout_gives_the_same_result(shape, dtype, seed):
    """A channels_last batch takes other code paths (gather and mask in memory order): same pixels."""
    batch, channels, height, width = shape
    images = index_images(batch, channels, height, width, dtype, "channels_first")
    layouts = {
        "contiguous": (images, "channels_first"),
        "channels_last memory": (images.contiguous(memory_format=torch.channels_last), "channels_first"),
        "channels_last data": (images.permute(0, 2, 3, 1).contiguous(), "channels_last"),
        "non-dense view": (torch.cat([images, images], 3)[..., ::2], "channels_first"),
    }
    for op_class in (CutMix, Cutout):
        results = {}
        for name, (batch_images, data_format) in layouts.items():
            op = op_class(num_classes=batch, data_format=data_format, generator=gen(seed))
            mixed = op(batch_images, torch.arange(batch))[0]
            results[name] = mixed.permute(0, 3, 1, 2) if data_format == "channels_last" else mixed
        for name, mixed in results.items():
            assert torch.equal(mixed, results["contiguous"]), (op_class.__name__, name)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_boolean_box_mask_matches_the_numeric_one(data_format, memory_format):
    """Accelerators paste with a bool mask and torch.where; the CPU blends with a 0/1 one."""
    images = torch.zeros(5, 3, 7, 9).contiguous(memory_format=memory_format)
    if data_format == "channels_last":
        images = torch.zeros(5, 7, 9, 3)
    params = sample_cutmix_params(5, 7, 9, generator=gen(3))
    flags = _box_mask(params, images, data_format, torch.bool)
    numbers = _box_mask(params, images, data_format, torch.float32)
    assert flags.dtype == torch.bool
    assert torch.equal(flags.expand_as(images), numbers.expand_as(images).bool())
    areas = numbers.expand_as(images).sum((1, 2, 3)) / 3
    assert areas.tolist() == [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in params.box.tolist()]


@pytest.mark.parametrize("dtype", DTYPES)
def test_memory_format_and_dtype_preserved(dtype):
    images = index_images(6, 3, 8, 8, dtype, "channels_first").contiguous(memory_format=torch.channels_last)
    for op in (CutMix(num_classes=6, generator=gen(0)), MixUp(num_classes=6, generator=gen(0)),
               Cutout(size=3, num_classes=6, generator=gen(0))):  # fmt: skip
        mixed, targets = op(images, torch.arange(6))
        assert mixed.dtype == dtype and mixed.shape == images.shape
        assert mixed.is_contiguous(memory_format=torch.channels_last), type(op).__name__
        assert targets.dtype == torch.float32


def test_bfloat16_images_keep_exact_class_targets():
    images = torch.rand(4, 3, 8, 8).to(torch.bfloat16)
    _, targets = CutMix(num_classes=1000, p=0.0, generator=gen(0))(images, torch.tensor([999, 998, 513, 257]))
    assert targets.dtype == torch.float32
    assert targets.argmax(1).tolist() == [999, 998, 513, 257]


def test_label_smoothing_applied_once_before_mixing():
    images = index_images(4, 3, 8, 8, torch.float32, "channels_first")
    mixed, targets, params = CutMix(num_classes=5, label_smoothing=0.1, p=0.0, generator=gen(0))(
        images, torch.tensor([0, 1, 2, 3]), return_params=True
    )
    assert targets[0].tolist() == pytest.approx([0.92, 0.02, 0.02, 0.02, 0.02])
    smoothed = to_targets(torch.tensor([0, 1]), 3, label_smoothing=0.3)
    assert smoothed[1].tolist() == pytest.approx([0.1, 0.8, 0.1])
    # Soft labels in (B, K) are smoothed the same way.
    soft = to_targets(torch.tensor([[0.5, 0.5, 0.0]]), label_smoothing=0.3)
    assert soft[0].tolist() == pytest.approx([0.45, 0.45, 0.1])


def test_probability_labels_are_mixed():
    images = index_images(3, 1, 6, 6, torch.float32, "channels_first")
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    mixed, targets, params = CutMix(partner="roll", generator=gen(4))(images, labels, return_params=True)
    w = params.weight[:, None]
    torch.testing.assert_close(targets, labels * w + labels.roll(1, 0) * (1 - w))


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_tiny_and_odd_batches(batch):
    images = index_images(batch, 3, 8, 8, torch.float32, "channels_first")
    for partner in ("permute", "roll", "flip"):
        mixed, targets, params = CutMix(num_classes=batch, partner=partner, generator=gen(1))(
            images, torch.arange(batch), return_params=True
        )
        self_paired = params.partner == torch.arange(batch)
        assert not params.applied[self_paired].any()
        assert torch.equal(mixed[self_paired], images[self_paired])
    if batch == 1:
        assert torch.equal(mixed, images) and targets.tolist() == [[1.0]]


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from([torch.uint8, torch.float32, torch.float64]),
    data_format=st.sampled_from(["channels_first", "channels_last"]),
    seed=st.integers(0, 2**31),
    paired=st.booleans(),
)
def test_mixup_read_back_from_pixels(shape, dtype, data_format, seed, paired):
    batch, channels, height, width = shape
    # Sample b is a constant 20·b + 10, so the blend weight can be read back from any pixel.
    images = (index_images(batch, channels, height, width, torch.float64, data_format) * 20 + 10).to(dtype)
    images2 = labels2 = None
    if paired:
        images2 = torch.full_like(images, 3)
        labels2 = torch.full((batch,), batch)
    mixed, targets, params = MixUp(
        alpha=0.5, num_classes=batch + 1, data_format=data_format, generator=gen(seed)
    )(images, torch.arange(batch), images2, labels2, return_params=True)
    assert mixed.dtype == dtype
    for i in range(batch):
        own = 20.0 * i + 10
        other = 3.0 if paired else 20.0 * params.partner[i].item() + 10
        weight = params.weight[i].item()
        expected = weight * own + (1 - weight) * other
        values = mixed[i].double()
        if dtype == torch.uint8:
            assert torch.all(values == round(expected)) or torch.all((values - expected).abs() <= 0.5 + 1e-6)
        else:
            torch.testing.assert_close(values, torch.full_like(values, expected))
        if other != own:
            read_back = (values.flatten()[0].item() - other) / (own - other)
            tolerance = 0.5 / abs(own - other) + 1e-6 if dtype == torch.uint8 else 1e-6
            assert targets[i, i].item() == pytest.approx(read_back, abs=tolerance)
        if not params.applied[i]:
            assert torch.equal(mixed[i], images[i]) and targets[i, i].item() == 1.0
    torch.testing.assert_close(targets.sum(1), torch.ones(batch))


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    data_format=st.sampled_from(["channels_first", "channels_last"]),
    size=st.integers(0, 8),
    seed=st.integers(0, 2**31),
)
def test_cutout_read_back_from_pixels(shape, dtype, data_format, size, seed):
    batch, channels, height, width = shape
    images = index_images(batch, channels, height, width, dtype, data_format, offset=1)  # no zero pixels
    out, targets, params = Cutout(size=size, num_classes=batch, data_format=data_format, generator=gen(seed))(
        images, torch.arange(batch), return_params=True
    )
    assert torch.equal(targets, torch.eye(batch))  # labels unchanged
    sources = source_map(out, data_format)
    for i in range(batch):
        zeroed = sources[i] == 0
        assert (sources[i][~zeroed] == i + 1).all()
        region = rectangle_of(zeroed)
        if region is None:
            assert not params.applied[i]
            continue
        y0, y1, x0, x1 = region
        assert y1 - y0 <= size and x1 - x0 <= size
        cy, cx = params.anchor[i].tolist()
        expected = (
            max(cy - size // 2, 0), min(cy - size // 2 + size, height),
            max(cx - size // 2, 0), min(cx - size // 2 + size, width),
        )  # fmt: skip
        assert region == expected


def test_functional_replay_gives_the_same_batch():
    images = torch.rand(10, 3, 16, 16, generator=gen(0))
    labels = torch.randint(0, 4, (10,), generator=gen(1))
    for op, apply in (
        (CutMix(num_classes=4, generator=gen(2)), apply_cutmix),
        (MixUp(num_classes=4, generator=gen(2)), apply_mixup),
    ):
        mixed, targets, params = op(images, labels, return_params=True)
        replayed = apply(images, to_targets(labels, 4), params)
        assert torch.equal(replayed[0], mixed) and torch.equal(replayed[1], targets)
    cutout = Cutout(size=4, num_classes=4, generator=gen(3))
    mixed, _, params = cutout(images, labels, return_params=True)
    assert torch.equal(apply_cutout(images, params), mixed)
    again = sample_cutout_params(10, 16, 16, size=4, generator=gen(3))
    assert torch.equal(again.table, params.table)


def test_cutmix_or_mixup_switches_per_batch():
    images = index_images(8, 3, 16, 16, torch.float32, "channels_first") * 10 + 1
    op = CutMixOrMixUp(
        CutMix(num_classes=8, generator=gen(0)), MixUp(num_classes=8, generator=gen(1)),
        switch_prob=0.5, generator=gen(2),
    )  # fmt: skip
    kinds = [op(images, torch.arange(8), return_params=True)[2].kind for _ in range(200)]
    share = kinds.count("cutmix") / len(kinds)
    assert 0.38 < share < 0.62
    always = CutMixOrMixUp(CutMix(num_classes=8), MixUp(num_classes=8), switch_prob=1.0)
    assert {always(images, torch.arange(8), return_params=True)[2].kind for _ in range(10)} == {"cutmix"}


def test_tiny_alpha_never_gives_nan():
    params = sample_cutmix_params(5000, 8, 8, alpha=1e-3, generator=gen(0))
    assert torch.isfinite(params.lam).all() and torch.isfinite(params.weight).all()


def test_works_under_torch_compile():
    images = torch.rand(6, 3, 8, 8, generator=gen(0))
    targets = to_targets(torch.arange(6), 6)
    params = sample_cutmix_params(6, 8, 8, generator=gen(1))
    compiled = torch.compile(apply_cutmix, backend="eager", fullgraph=True)
    expected = apply_cutmix(images, targets, params)
    got = compiled(images, targets, params)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    whole = torch.compile(CutMix(num_classes=6, generator=gen(3)), backend="eager")
    reference = CutMix(num_classes=6, generator=gen(3))(images, torch.arange(6))
    assert torch.equal(whole(images, torch.arange(6))[0], reference[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    images = index_images(32, 3, 16, 16, torch.float32, "channels_first")
    for make in (
        lambda: CutMix(num_classes=32, generator=gen(9)),
        lambda: MixUp(num_classes=32, generator=gen(9)),
    ):
        cpu = make()(images, torch.arange(32), return_params=True)
        gpu = make()(images.cuda(), torch.arange(32).cuda(), return_params=True)
        assert torch.equal(cpu[2].table, gpu[2].table.cpu())
        torch.testing.assert_close(cpu[0], gpu[0].cpu(), rtol=0, atol=1e-6)
        torch.testing.assert_close(cpu[1], gpu[1].cpu(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

IMAGES = torch.zeros(4, 3, 8, 8)
LABELS = torch.arange(4)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: CutMix(alpha=0), ValueError, r"alpha: expected a finite number > 0, got 0"),
        (lambda: CutMix(alpha=-1.0), ValueError, r"alpha: expected a finite number > 0"),
        (lambda: CutMix(alpha=float("nan")), ValueError, r"alpha"),
        (lambda: MixUp(alpha=0.0), ValueError, r"alpha"),
        (lambda: CutMix(p=1.5), ValueError, r"p: expected a probability in \[0, 1\], got 1.5"),
        (lambda: Cutout(p=-0.1), ValueError, r"p: expected a probability"),
        (
            lambda: CutMix(partner="shuffle"),
            ValueError,
            r"partner: expected one of .*'permute'.*got 'shuffle'",
        ),
        (lambda: CutMix(box="corner"), ValueError, r"box: expected one of 'center', 'inside', got 'corner'"),
        (lambda: CutMix(data_format="NHWC"), ValueError, r"data_format: expected one of .*got 'NHWC'"),
        (lambda: CutMix(num_classes=0), ValueError, r"num_classes: expected an int >= 1"),
        (lambda: CutMix(label_smoothing=1.0), ValueError, r"label_smoothing: expected a number in \[0, 1\)"),
        (lambda: Cutout(size=-2), ValueError, r"size: expected an int >= 0"),
        (lambda: CutMix(generator=123), TypeError, r"generator: expected a torch.Generator"),
        (lambda: CutMixOrMixUp(CutMix(), MixUp(), switch_prob=2), ValueError, r"switch_prob"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda m: m(IMAGES[0], LABELS),
            ValueError,
            r"images: expected a 4-D tensor \(B, C, H, W\), got shape \(3, 8, 8\)",
        ),
        (lambda m: m(IMAGES.numpy(), LABELS), TypeError, r"images: expected a torch.Tensor, got ndarray"),
        (
            lambda m: m(IMAGES, LABELS[:3]),
            ValueError,
            r"labels: expected 4 labels to match images' batch size, got shape \(3,\)",
        ),
        (
            lambda m: m(IMAGES, torch.tensor([0, 1, 2, 10])),
            ValueError,
            r"labels: expected class ids in \[0, 10\), got values in \[0, 10\]",
        ),
        (
            lambda m: m(IMAGES, torch.tensor([0, 1, -1, 2])),
            ValueError,
            r"labels: expected class ids in \[0, 10\)",
        ),
        (lambda m: m(IMAGES, LABELS.float()), TypeError, r"labels: expected int class ids"),
        (
            lambda m: m(IMAGES, torch.zeros(4, 7)),
            ValueError,
            r"labels: expected \(B, 10\) probabilities, got \(4, 7\)",
        ),
        (
            lambda m: m(IMAGES, LABELS, IMAGES[:, :, :4]),
            ValueError,
            r"images2, labels2: expected both or neither",
        ),
        (
            lambda m: m(IMAGES, LABELS, IMAGES[:, :, :4], LABELS),
            ValueError,
            r"images2: expected the shape and dtype of images \(4, 3, 8, 8\)",
        ),
        (
            lambda m: m(IMAGES, LABELS, IMAGES.double(), LABELS),
            ValueError,
            r"images2: expected the shape and dtype",
        ),
        (lambda m: m(IMAGES, LABELS, IMAGES[:2], LABELS[:2]), ValueError, r"images2: expected the shape"),
        (lambda m: m(IMAGES[:0], LABELS[:0]), ValueError, r"images: expected a batch of at least 1 image"),
    ],
)
def test_bad_inputs(call, error, match):
    for op in (CutMix(num_classes=10), MixUp(num_classes=10)):
        with pytest.raises(error, match=match):
            call(op)


def test_int_labels_without_num_classes():
    with pytest.raises(ValueError, match=r"num_classes: expected an int when labels are class ids, got None"):
        CutMix()(IMAGES, LABELS)


def test_channels_last_data_format_message():
    with pytest.raises(ValueError, match=r"images: expected a 4-D tensor \(B, H, W, C\)"):
        CutMix(num_classes=4, data_format="channels_last")(torch.zeros(8, 8, 3), LABELS)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CutMix(num_classes=5, generator=gen(0)),
        lambda: MixUp(num_classes=5, generator=gen(0)),
        lambda: Cutout(size=3, num_classes=5, generator=gen(0)),
        lambda: CutMixOrMixUp(
            CutMix(num_classes=5, generator=gen(0)), MixUp(num_classes=5, generator=gen(1)), generator=gen(2)
        ),
    ],
)
def test_state_dict_continues_exactly(make, tmp_path):
    """An op restored from a checkpointed state gives the batches the original would have given,
    including those drawn ahead before the checkpoint."""
    images, labels = torch.rand(6, 3, 8, 8, generator=gen(5)), torch.randint(0, 5, (6,), generator=gen(6))
    original = make()
    for _ in range(3):
        original(images, labels)
    path = tmp_path / "state.pt"
    torch.save(original.state_dict(), path)
    restored = make()
    restored.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(40):  # past the batches drawn ahead, into fresh draws
        a, b = original(images, labels), restored(images, labels)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_batches_drawn_together_match_the_pool():
    """The class draws parameters for many batches at once; each batch is still per sample."""
    params = sample_cutmix_params(8, 16, 16, alpha=1.0, generator=gen(0), batches=5)
    parts = params.split(8)
    assert len(parts) == 5 and all(part.batch_size == 8 for part in parts)
    for part in parts:
        assert sorted(part.partner.tolist()) == list(range(8))  # a permutation within the batch
    op = CutMix(num_classes=8, generator=gen(0))
    images = index_images(8, 3, 16, 16, torch.float32, "channels_first")
    first = op(images, torch.arange(8), return_params=True)[2]
    assert torch.equal(
        first.table,
        sample_cutmix_params(8, 16, 16, alpha=1.0, generator=gen(0), batches=32).split(8)[0].table,
    )
