"""The ops' fixed cost cut (issue 21): the faster call computes exactly what the drawn parameters say,
returns tensors that no later call overwrites, leaves its inputs alone, and launches few ATen ops.

The references below are written per sample with slicing and loops, independently of the ops' batched
code (masks, row gathers, target tables); pixels are compared bit for bit.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from cutmix import CutMix, Cutout, MixUp, to_targets
from cutmix.ops import apply_cutmix, sample_cutmix_params

DTYPES = [torch.uint8, torch.int32, torch.uint16, torch.float16, torch.bfloat16, torch.float32, torch.float64]
LAYOUTS = [
    ("channels_first", torch.contiguous_format),
    ("channels_first", torch.channels_last),  # what the trainer feeds
    ("channels_last", torch.contiguous_format),  # what Keras feeds
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images_of(
    shape_bchw: tuple[int, int, int, int], dtype: torch.dtype, layout: tuple, seed: int
) -> torch.Tensor:
    """Random images in ``layout`` (data format, memory format), with no -0.0 (so that comparing bits
    compares values)."""
    data_format, memory_format = layout
    g = gen(seed)
    if dtype.is_floating_point:
        images = (torch.rand(shape_bchw, generator=g, dtype=torch.float64) * 4 - 2).to(dtype)
    else:
        high = 256 if dtype in (torch.uint8, torch.uint16) else 2**20
        images = torch.randint(0, high, shape_bchw, generator=g, dtype=torch.int64).to(dtype)
    if data_format == "channels_last":
        return images.permute(0, 2, 3, 1).contiguous()
    return images.contiguous(memory_format=memory_format)


def bits(x: torch.Tensor) -> bytes:
    return (
        x.contiguous().view(torch.uint8).numpy().tobytes()
        if x.dtype != torch.bfloat16
        else bits(x.view(torch.int16))
    )


def as_bchw(images: torch.Tensor, data_format: str) -> torch.Tensor:
    return images.permute(0, 3, 1, 2) if data_format == "channels_last" else images


def reference_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    targets = torch.full((labels.numel(), num_classes), off, dtype=torch.float32)
    for i, label in enumerate(labels.reshape(-1).tolist()):
        targets[i, label] = 1.0 - smoothing + off
    return targets


def reference(
    kind: str, images: torch.Tensor, targets: torch.Tensor, params, data_format: str, fill: float = 0.0
):
    """What the op must compute from ``params``, one sample at a time."""
    x = as_bchw(images, data_format)
    out = torch.empty(x.shape, dtype=x.dtype)
    mixed_targets = targets.clone()
    partner, box, applied, weight = (params.partner.tolist(), params.box.tolist(), params.applied.tolist(),
                                     params.weight)  # fmt: skip
    for i in range(x.shape[0]):
        out[i] = x[i]
        if not applied[i]:
            continue
        y0, y1, x0, x1 = box[i] if kind != "mixup" else (0, 0, 0, 0)
        if kind == "cutmix":
            out[i, :, y0:y1, x0:x1] = x[partner[i], :, y0:y1, x0:x1]
        elif kind == "cutout":
            out[i, :, y0:y1, x0:x1] = torch.tensor(fill, dtype=x.dtype)
        else:
            compute = torch.float64 if x.dtype == torch.float64 else torch.float32
            blend = torch.lerp(x[partner[i]].to(compute), x[i].to(compute), weight[i].to(compute))
            if not x.dtype.is_floating_point:
                info = torch.iinfo(x.dtype)
                blend = blend.round().clamp(info.min, info.max)
            out[i] = blend.to(x.dtype)
        if kind != "cutout":
            mixed_targets[i] = torch.lerp(targets[partner[i]], targets[i], weight[i])
    return out, mixed_targets


def make_op(kind: str, p: float, common: dict):
    if kind == "cutmix":
        return CutMix(p=p, **common)
    if kind == "mixup":
        return MixUp(p=p, **common)
    return Cutout(size=(3, 2), p=p, fill=5.0, **common)


CASES = list(itertools.product(["cutmix", "mixup", "cutout"], DTYPES, LAYOUTS))


@pytest.mark.parametrize(("kind", "dtype", "layout"), CASES)
def test_each_call_computes_what_its_params_say_bit_for_bit(kind, dtype, layout):
    data_format = layout[0]
    for seed, (batch, height, width), p, smoothing in [
        (0, (1, 5, 7), 1.0, 0.0),
        (1, (6, 9, 4), 0.5, 0.1),
        (2, (33, 8, 8), 1.0, 0.25),
        (3, (5, 1, 12), 0.8, 0.0),
    ]:
        images = images_of((batch, 3, height, width), dtype, layout, seed)
        before = images.clone()
        labels = torch.randint(0, 7, (batch,), generator=gen(seed + 100))
        common = {
            "num_classes": 7,
            "label_smoothing": smoothing,
            "data_format": data_format,
            "generator": gen(seed),
        }
        op = make_op(kind, p, common)
        for _ in range(3):  # the later calls use the buffers and draws of the earlier ones
            mixed, targets, params = op(images, labels, return_params=True)
            expected, expected_targets = reference(
                kind, images, reference_targets(labels, 7, smoothing), params, data_format, fill=5.0
            )
            assert mixed.dtype == dtype and mixed.shape == images.shape and mixed.stride() == images.stride()
            assert bits(as_bchw(mixed, data_format)) == bits(expected)
            assert bits(targets) == bits(expected_targets)
        assert bits(images) == bits(before)  # input untouched


@pytest.mark.parametrize("op_name", ["cutmix", "mixup", "cutout"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_output_held_by_the_caller_never_changes(op_name, layout):
    """The ops reuse an internal buffer across calls (the box mask); what they return is new each call."""
    images = images_of((16, 3, 8, 8), torch.float32, layout, 0)
    labels = torch.randint(0, 10, (16,), generator=gen(1))
    op = {"cutmix": CutMix, "mixup": MixUp, "cutout": Cutout}[op_name](num_classes=10, data_format=layout[0],
                                                                      generator=gen(2))  # fmt: skip
    held = [op(images, labels) for _ in range(3)]
    copies = [(m.clone(), t.clone()) for m, t in held]
    for _ in range(40):  # past the 32 batches drawn ahead, into a fresh draw
        mixed, targets = op(images, labels)
    for (m, t), (m0, t0) in zip(held, copies, strict=True):
        assert bits(m) == bits(m0) and bits(t) == bits(t0)
    pointers = {m.data_ptr() for m, _ in held} | {t.data_ptr() for _, t in held}
    assert len(pointers) == 2 * len(held) and mixed.data_ptr() not in pointers
    assert images.data_ptr() not in pointers


def test_a_gradient_is_not_disturbed_by_calls_between_forward_and_backward():
    """With grad the mask is a fresh tensor autograd saves, not the reused buffer."""

    def grad_of(interleave: bool) -> torch.Tensor:
        images = images_of((8, 3, 6, 6), torch.float32, LAYOUTS[0], 3).requires_grad_()
        params = sample_cutmix_params(8, 6, 6, generator=gen(4))
        targets = torch.eye(8)
        mixed, _ = apply_cutmix(images, targets, params)
        if interleave:
            other = sample_cutmix_params(8, 6, 6, generator=gen(5))
            with torch.no_grad():
                apply_cutmix(images.detach(), targets, other)
        (mixed * torch.arange(mixed.numel()).view(mixed.shape)).sum().backward()
        return images.grad

    assert torch.equal(grad_of(True), grad_of(False))


@pytest.mark.parametrize("num_classes", [1, 3, 10, 1024, 1025])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1 / 3])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_targets_of_class_ids_are_the_smoothed_one_hot_rows(num_classes, smoothing, dtype):
    labels = torch.randint(0, min(num_classes, 256), (37,), generator=gen(num_classes)).to(dtype)
    for shaped in (labels, labels[:, None]):
        targets = to_targets(shaped, num_classes, smoothing)
        assert bits(targets) == bits(reference_targets(labels.long(), num_classes, smoothing))
        targets[0] += 1  # a new tensor each call: writing to it changes no later call's targets
        assert bits(to_targets(shaped, num_classes, smoothing)) == bits(
            reference_targets(labels.long(), num_classes, smoothing)
        )


@pytest.mark.parametrize("bad", [-1, 10])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8])
def test_out_of_range_class_ids_are_refused_with_their_range(bad, dtype):
    labels = torch.tensor([3, bad, 4], dtype=dtype)
    with pytest.raises(
        ValueError, match=rf"labels: expected class ids in \[0, 10\), got values in \[{min(bad, 3)}, "
    ):
        to_targets(labels, 10)
    with pytest.raises(ValueError, match="expected class ids in"):
        CutMix(num_classes=10)(torch.zeros(3, 3, 4, 4), labels)


def test_a_batch_of_another_shape_after_a_good_one_is_still_checked():
    """The checks are skipped only for a batch shaped like the last accepted one."""
    op = CutMix(num_classes=10, generator=gen(0))
    op(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels: expected 4 labels"):
        op(torch.zeros(4, 3, 8, 8), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="labels: expected int class ids"):
        op(torch.zeros(4, 3, 8, 8), torch.zeros(4))
    op.num_classes = None
    with pytest.raises(ValueError, match="num_classes: expected an int"):
        op(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.int64))


def _top_level_aten_ops(op, images: torch.Tensor, labels: torch.Tensor) -> int:
    """ATen ops called from Python (no aten:: op above them) by one call that draws nothing ahead."""
    from torch.profiler import ProfilerActivity, profile

    op(images, labels), op(images, labels)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        op(images, labels)

    def nested(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name.startswith("aten::"):
                return True
            parent = parent.cpu_parent
        return False

    return sum(e.name.startswith("aten::") and not nested(e) for e in prof.events())


@pytest.mark.parametrize(("op_name", "bound"), [("cutmix", 8), ("mixup", 6), ("cutout", 5)])
def test_one_call_launches_few_aten_ops(op_name, bound):
    """A count, not a timing: the code path decides it. Before issue 21: 29, 27 and 22."""
    images, labels = (
        torch.rand(128, 3, 32, 32, generator=gen(0)),
        torch.randint(0, 10, (128,), generator=gen(1)),
    )
    op = {"cutmix": CutMix, "mixup": MixUp, "cutout": Cutout}[op_name](num_classes=10, generator=gen(2))
    assert _top_level_aten_ops(op, images, labels) <= bound
