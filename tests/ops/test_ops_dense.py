"""Masks, boxes and video clips through the mixing ops, checked from what the ops return.

Images are built so that every pixel says which sample it came from; the masks and boxes that come
back are compared with that source map pixel by pixel, and the box rule with a brute-force oracle that
paints each box and counts its pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cutmix import CutMix, CutMixOrMixUp, Cutout, MixedBoxes, MixedMasks, MixUp, mask_cross_entropy

PAIRED_OFFSET = 1000  # images2's samples carry 1000 + j, so a pixel from the second batch is told apart


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def index_images(batch: int, height: int, width: int, data_format: str = "channels_first", offset: int = 0,
                 channels: int = 3, frames: int | None = None) -> torch.Tensor:  # fmt: skip
    """float32 images (or clips) whose every pixel holds its sample index + offset."""
    values = torch.arange(batch, dtype=torch.float32) + offset
    spatial = (height, width) if frames is None else (frames, height, width)
    shape = (batch, channels, *spatial) if data_format == "channels_first" else (batch, *spatial, channels)
    return values.view(batch, *[1] * (len(shape) - 1)).expand(shape).clone()


def source_map(out: torch.Tensor, data_format: str = "channels_first") -> np.ndarray:
    """(B, [T,] H, W) int: the sample each output pixel came from (checked equal across channels)."""
    values = out if data_format == "channels_first" else out.movedim(-1, 1)
    assert torch.equal(values, values[:, :1].expand_as(values))
    return values[:, 0].round().long().numpy()


def random_masks(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    high = 2 if dtype == torch.int8 else 200
    return torch.randint(0, high, shape, generator=gen(seed + 7)).to(dtype)


def expected_pasted_masks(src: np.ndarray, masks: np.ndarray, masks2: np.ndarray | None) -> np.ndarray:
    """What each output mask pixel must hold: the mask of the sample its image pixel came from."""
    out = np.empty_like(masks)
    for b in range(src.shape[0]):
        for s in np.unique(src[b]):
            where = src[b] == s
            source = masks2[s - PAIRED_OFFSET] if s >= PAIRED_OFFSET else masks[s]
            out[b][where] = source[where]
    return out


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 6),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    data_format=st.sampled_from(["channels_first", "channels_last"]),
    mask_dtype=st.sampled_from([torch.uint8, torch.int8, torch.int32, torch.int64]),
    channel=st.booleans(),
    layout=st.sampled_from(["contiguous", "transposed", "channels_last_memory"]),
    paired=st.booleans(),
    alpha=st.sampled_from([0.3, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_cutmix_masks_change_exactly_where_the_image_changed(
    batch, height, width, data_format, mask_dtype, channel, layout, paired, alpha, seed
):
    images = index_images(batch, height, width, data_format)
    if layout == "channels_last_memory" and data_format == "channels_first":
        images = images.contiguous(memory_format=torch.channels_last)
    plain = random_masks((batch, height, width), mask_dtype, seed)
    if layout == "transposed":  # a non-contiguous view: any memory layout is accepted and kept
        plain = plain.transpose(1, 2).contiguous().transpose(1, 2)
    masks = (plain[:, None] if data_format == "channels_first" else plain[..., None]) if channel else plain
    masks_before = masks.clone()
    kwargs = {}
    if paired:
        images2 = index_images(batch, height, width, data_format, offset=PAIRED_OFFSET)
        masks2 = random_masks(tuple(masks.shape), mask_dtype, seed + 1)
        kwargs = {"images2": images2, "labels2": torch.zeros(batch, dtype=torch.long), "masks2": masks2}
    op = CutMix(alpha=alpha, num_classes=3, data_format=data_format, generator=gen(seed))
    mixed, targets, out = op(images, torch.zeros(batch, dtype=torch.long), masks=masks, **kwargs)

    assert out.shape == masks.shape and out.dtype == masks.dtype and out.stride() == masks.stride()
    assert torch.equal(masks, masks_before)  # the input is never modified
    src = source_map(mixed, data_format)
    other = kwargs["masks2"].reshape(batch, height, width).numpy() if paired else None
    expected = expected_pasted_masks(src, plain.numpy(), other)
    assert np.array_equal(out.reshape(batch, height, width).numpy(), expected)


def test_masks_do_not_change_the_classification_path():
    """The same seed gives bit-identical images, targets and draws with and without masks or boxes."""
    images = torch.rand(16, 3, 20, 24, generator=gen(0))
    labels = torch.randint(0, 10, (16,), generator=gen(1))
    masks = torch.randint(0, 5, (16, 20, 24), dtype=torch.uint8, generator=gen(2))
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0]]).expand(16, 1, 4)
    for make in (
        lambda: CutMix(alpha=1.0, num_classes=10, label_smoothing=0.1, generator=gen(5)),
        lambda: MixUp(alpha=0.4, num_classes=10, generator=gen(5)),
        lambda: Cutout(size=8, num_classes=10, generator=gen(5)),
    ):
        plain_op, dense_op = make(), make()
        for _ in range(40):  # past one pool of draws made ahead
            a_images, a_targets, a_params = plain_op(images, labels, return_params=True)
            b_images, b_targets, _, _, b_params = dense_op(
                images, labels, masks=masks, boxes=boxes, box_labels=torch.ones(16, 1, dtype=torch.long),
                return_params=True,
            )  # fmt: skip
            assert torch.equal(a_images, b_images) and torch.equal(a_targets, b_targets)
            assert torch.equal(a_params.table, b_params.table)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_cutout_fills_masks_where_it_filled_the_image(data_format):
    images = index_images(32, 16, 16, data_format, offset=1)  # fill 0 marks the hole
    masks = random_masks((32, 16, 16), torch.uint8, 0)
    op = Cutout(size=7, num_classes=2, data_format=data_format, generator=gen(3))
    mixed, _, out = op(images, torch.zeros(32, dtype=torch.long), masks=masks)
    hole = source_map(mixed, data_format) == 0
    assert hole.any() and (~hole).any()
    assert np.array_equal(out.numpy(), np.where(hole, 255, masks.numpy()))
    op = Cutout(size=7, num_classes=2, data_format=data_format, generator=gen(3), mask_fill=-1)
    _, _, out = op(images, torch.zeros(32, dtype=torch.long), masks=masks.long())
    assert np.array_equal(out.numpy(), np.where(hole, -1, masks.long().numpy()))


def one_hot_images(batch: int, size: int = 4) -> torch.Tensor:
    """Channel c of sample b is 1 where c == b: a MixUp'd pixel shows both weights and the partner."""
    return torch.eye(batch)[:, :, None, None].expand(batch, batch, size, size).clone()


def test_mixup_returns_both_masks_and_the_weight_read_from_the_pixels():
    batch = 12
    images = one_hot_images(batch)
    masks = random_masks((batch, 1, 4, 4), torch.int64, 1)
    op = MixUp(alpha=1.0, num_classes=2, generator=gen(4))
    mixed, _, out = op(images, torch.zeros(batch, dtype=torch.long), masks=masks)
    assert isinstance(out, MixedMasks)
    pixel = mixed[:, :, 0, 0]
    own = pixel.diagonal()
    partner = torch.where(own < 1, (pixel - torch.diag(own)).argmax(1), torch.arange(batch))
    assert torch.allclose(out.weight, own, atol=1e-6)
    assert torch.equal(out.masks, masks) and out.masks.data_ptr() != masks.data_ptr()
    assert torch.equal(out.partner_masks, masks[partner])
    assert out.masks.shape == masks.shape and out.partner_masks.dtype == masks.dtype


def test_mask_cross_entropy_matches_the_soft_target_loss():
    logits = torch.randn(6, 5, 7, 8, generator=gen(0))
    masks = torch.randint(0, 5, (6, 7, 8), generator=gen(1))
    partner = torch.randint(0, 5, (6, 7, 8), generator=gen(2))
    weight = torch.rand(6, generator=gen(3))
    # A tensor: exactly PyTorch's loss, ignore index 255 included.
    ignored = masks.clone()
    ignored[:, :2] = 255
    assert torch.allclose(
        mask_cross_entropy(logits, ignored), F.cross_entropy(logits, ignored, ignore_index=255)
    )
    # MixedMasks: the cross-entropy with the K x H x W soft targets (built here only to check).
    soft = weight.view(-1, 1, 1, 1) * F.one_hot(masks, 5).permute(0, 3, 1, 2) + (1 - weight).view(
        -1, 1, 1, 1
    ) * F.one_hot(partner, 5).permute(0, 3, 1, 2)
    mixed = MixedMasks(masks.to(torch.uint8)[:, None], partner.to(torch.uint8)[:, None], weight)
    assert torch.allclose(mask_cross_entropy(logits, mixed), F.cross_entropy(logits, soft.float()), atol=1e-6)
    none = mask_cross_entropy(logits, mixed, reduction="none")
    assert none.shape == (6, 7, 8)
    assert torch.allclose(none.sum(), mask_cross_entropy(logits, mixed, reduction="sum"))
    # Weight 1 everywhere: the plain loss.
    full = MixedMasks(ignored, partner, torch.ones(6))
    assert torch.allclose(mask_cross_entropy(logits, full), mask_cross_entropy(logits, ignored))


def test_cutmix_or_mixup_masks_feed_one_loss():
    op = CutMixOrMixUp(CutMix(num_classes=3, generator=gen(0)), MixUp(num_classes=3, generator=gen(1)),
                       generator=gen(2))  # fmt: skip
    images, masks = torch.rand(8, 3, 6, 6), torch.randint(0, 3, (8, 6, 6), dtype=torch.uint8)
    kinds = set()
    for _ in range(12):
        _, _, out = op(images, None, masks=masks)
        kinds.add(type(out).__name__)
        assert mask_cross_entropy(torch.randn(8, 3, 6, 6), out).isfinite()
    assert kinds == {"Tensor", "MixedMasks"}


# ----------------------------------------------------------------------------------------------
# Boxes: a brute-force oracle
# ----------------------------------------------------------------------------------------------


def paint(box, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in box)
    canvas = np.zeros((height, width), dtype=bool)
    canvas[y0:y1, x0:x1] = True
    return canvas


def tight(pixels: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(pixels.any(1))[0], np.nonzero(pixels.any(0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def oracle(boxes, labels, region: np.ndarray, min_visibility: float) -> list[tuple]:
    """(box, label) for each box whose pixels inside ``region`` are kept by the rule."""
    kept = []
    for box, label in zip(boxes, labels, strict=True):
        if label < 0:
            continue
        painted = paint(box, *region.shape)
        visible = painted & region
        count = int(visible.sum())
        if count > 0 and count >= min_visibility * int(painted.sum()):
            kept.append((tight(visible), int(label)))
    return kept


def rows_of(result: MixedBoxes, b: int) -> list[tuple]:
    boxes, labels = result.boxes[b], result.labels[b]
    assert (labels[: int((labels >= 0).sum())] >= 0).all(), "kept boxes come first"
    return [
        (tuple(int(v) for v in box), int(lab)) for box, lab in zip(boxes, labels, strict=True) if lab >= 0
    ]


@st.composite
def box_batches(draw, batch: int, height: int, width: int):
    """(B, N, 4) integer boxes, degenerate, touching the border or covering the image included."""
    n = draw(st.integers(0, 5))
    xs = st.lists(st.integers(0, width), min_size=2, max_size=2).map(sorted)
    ys = st.lists(st.integers(0, height), min_size=2, max_size=2).map(sorted)
    boxes = np.zeros((batch, n, 4), dtype=np.int64)
    labels = np.full((batch, n), -1, dtype=np.int64)
    for b in range(batch):
        for i in range(draw(st.integers(0, n))):
            (x0, x1), (y0, y1) = draw(xs), draw(ys)
            boxes[b, i] = (x0, y0, x1, y1)
            labels[b, i] = draw(st.integers(0, 9))
    return torch.from_numpy(boxes), torch.from_numpy(labels)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["cutmix", "cutout"]), batch=st.integers(1, 5),
       height=st.integers(1, 10), width=st.integers(1, 10), paired=st.booleans(),
       min_visibility=st.sampled_from([0.0, 0.25, 0.5, 1.0]), as_float=st.booleans(),
       seed=st.integers(0, 2**16))  # fmt: skip
def test_boxes_follow_the_pixels(data, kind, batch, height, width, paired, min_visibility, as_float, seed):
    boxes, labels = data.draw(box_batches(batch, height, width))
    boxes2, labels2 = data.draw(box_batches(batch, height, width))
    dtype = torch.float32 if as_float else torch.int64
    boxes, boxes2 = boxes.to(dtype), boxes2.to(dtype)
    before = (boxes.clone(), labels.clone())
    images = index_images(batch, height, width, offset=1 if kind == "cutout" else 0)
    kwargs = {}
    if paired and kind == "cutmix":
        kwargs = {"images2": index_images(batch, height, width, offset=PAIRED_OFFSET),
                  "labels2": None, "boxes2": boxes2, "box_labels2": labels2}  # fmt: skip
    if kind == "cutmix":
        op = CutMix(alpha=data.draw(st.sampled_from([0.2, 1.0, 5.0])), generator=gen(seed),
                    min_visibility=min_visibility)  # fmt: skip
    else:
        op = Cutout(size=data.draw(st.integers(0, 12)), generator=gen(seed), min_visibility=min_visibility)
    mixed, targets, result = op(images, None, boxes=boxes, box_labels=labels, **kwargs)
    assert targets is None and isinstance(result, MixedBoxes)
    assert result.boxes.dtype == dtype and result.labels.dtype == labels.dtype
    assert torch.equal(boxes, before[0]) and torch.equal(labels, before[1])
    src = source_map(mixed)
    for b in range(batch):
        own_sample = b + (1 if kind == "cutout" else 0)
        own = src[b] == own_sample
        if own.all():  # nothing pasted or cut: the sample keeps its boxes as they were
            expected = [
                (tuple(int(v) for v in box), int(lab))
                for box, lab in zip(boxes[b], labels[b], strict=True)
                if lab >= 0
            ]
        else:
            expected = oracle(boxes[b], labels[b], own, min_visibility)
            if kind == "cutmix":
                (partner,) = set(np.unique(src[b])) - {own_sample}
                pboxes, plabels = (boxes2, labels2) if partner >= PAIRED_OFFSET else (boxes, labels)
                p = partner - PAIRED_OFFSET if partner >= PAIRED_OFFSET else partner
                expected += oracle(pboxes[p], plabels[p], src[b] == partner, min_visibility)
        assert rows_of(result, b) == expected, (b, src[b])
        assert torch.equal(result.weights[b] > 0, result.labels[b] >= 0)


@pytest.mark.parametrize(
    ("box", "hole", "expected"),
    [
        (
            (2, 2, 8, 8),
            (0, 0, 5, 10),
            (5, 2, 8, 8),
        ),  # the hole covers the box's whole height: left side moves
        ((2, 2, 8, 8), (0, 0, 10, 4), (2, 4, 8, 8)),  # whole width: top moves
        ((2, 2, 8, 8), (4, 0, 6, 10), (2, 2, 8, 8)),  # a slit through the middle: the bounding box stays
        ((2, 2, 8, 8), (0, 0, 5, 5), (2, 2, 8, 8)),  # a corner: the visible L keeps the box
        ((2, 2, 8, 8), (2, 2, 8, 8), None),  # fully covered: dropped
        ((0, 0, 10, 10), (0, 0, 10, 8), None),  # the whole image's box, 20% visible < 25%: dropped
        ((0, 0, 10, 10), (0, 0, 10, 7), (0, 7, 10, 10)),  # 30% visible, touching the border
        ((3, 3, 3, 6), (8, 8, 9, 9), None),  # zero area in a mixed sample: no pixels, dropped
    ],
)
def test_own_box_rule_cases(box, hole, expected):
    from cutmix.ops.boxes import cut_own_boxes
    from cutmix.ops.params import _finish, _table

    table = _table(1, 1, 10, 10)
    x0, y0, x1, y1 = hole
    table[0, 3:7] = (y0, y1, x0, x1)  # y0, y1, x0, x1 columns of MixParams.table
    params = _finish("cutmix", table, np.array([True]), 10, 10)
    new, keep = cut_own_boxes(torch.tensor([[box]]), torch.tensor([[1]]), params, 0.25)
    if expected is None:
        assert not keep[0, 0]
    else:
        assert keep[0, 0] and tuple(int(v) for v in new[0, 0]) == expected


def test_mixup_keeps_both_box_sets_with_the_pixel_weights():
    batch = 10
    images = one_hot_images(batch)
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]]).expand(batch, 2, 4).clone()
    labels = torch.arange(batch * 2).view(batch, 2)
    labels[0, 1] = -1  # padding stays out
    mixed, _, result = MixUp(alpha=1.0, generator=gen(0))(images, None, boxes=boxes, box_labels=labels)
    pixel = mixed[:, :, 0, 0]
    for b in range(batch):
        w = float(pixel[b, b])
        partner = int((pixel[b] - torch.eye(batch)[b] * w).argmax()) if w < 1 else b
        own = [(int(lab), w) for lab in labels[b] if lab >= 0]
        other = [(int(lab), 1 - w) for lab in labels[partner] if lab >= 0] if w < 1 else []
        got = [
            (int(lab), float(wt))
            for lab, wt in zip(result.labels[b], result.weights[b], strict=True)
            if lab >= 0
        ]
        assert [g[0] for g in got] == [e[0] for e in own + other]
        assert np.allclose([g[1] for g in got], [e[1] for e in own + other], atol=1e-6)
    assert result.boxes.shape == (batch, 4, 4)


def test_box_lists_give_the_padded_result_without_padding():
    sizes = [0, 3, 1, 2]
    box_list = [
        torch.tensor([[0.0, 0.0, 6.0, 6.0], [2.0, 1.0, 9.0, 8.0], [5.0, 5.0, 10.0, 10.0]])[:n] for n in sizes
    ]
    label_list = [torch.arange(n) for n in sizes]
    images = torch.rand(4, 3, 10, 10)
    padded = torch.nn.utils.rnn.pad_sequence(box_list, batch_first=True)
    padded_labels = torch.nn.utils.rnn.pad_sequence(label_list, batch_first=True, padding_value=-1)
    _, _, as_lists = CutMix(generator=gen(1))(images, None, boxes=box_list, box_labels=label_list)
    _, _, as_padded = CutMix(generator=gen(1))(images, None, boxes=padded, box_labels=padded_labels)
    for b in range(4):
        n = int((as_padded.labels[b] >= 0).sum())
        assert torch.equal(as_lists.boxes[b], as_padded.boxes[b, :n])
        assert torch.equal(as_lists.labels[b], as_padded.labels[b, :n])
        assert torch.equal(as_lists.weights[b], as_padded.weights[b, :n])


# ----------------------------------------------------------------------------------------------
# Video clips
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("kind", ["cutmix", "cutout", "mixup"])
def test_clips_get_one_box_and_partner_across_frames(data_format, kind):
    batch, frames, size = 8, 5, 12
    offset = 1 if kind == "cutout" else 0
    clips = index_images(batch, size, size, data_format, offset=offset, frames=frames)
    masks = random_masks((batch, frames, size, size), torch.uint8, 0)
    op = {
        "cutmix": lambda: CutMix(num_classes=8, data_format=data_format, generator=gen(2)),
        "cutout": lambda: Cutout(size=6, num_classes=8, data_format=data_format, generator=gen(2)),
        "mixup": lambda: MixUp(num_classes=8, data_format=data_format, generator=gen(2)),
    }[kind]()
    labels = torch.arange(batch)
    mixed, targets, out = op(clips, labels, masks=masks)
    assert mixed.shape == clips.shape and mixed.dtype == clips.dtype
    assert torch.allclose(targets.sum(1), torch.ones(batch))
    if kind == "mixup":
        values = mixed if data_format == "channels_first" else mixed.movedim(-1, 1)
        assert torch.equal(values, values[:, :1, :1, :1, :1].expand_as(values))  # one λ and partner per clip
        assert isinstance(out, MixedMasks) and out.partner_masks.shape == masks.shape
        return
    src = source_map(mixed, data_format)  # (B, T, H, W)
    assert (src == src[:, :1]).all(), "every frame of a clip is cut the same way"
    assert (src != np.arange(batch)[:, None, None, None] + offset).any()
    if kind == "cutmix":
        expected = np.stack(
            [expected_pasted_masks(src[:, t], masks[:, t].numpy(), None) for t in range(frames)], 1
        )
    else:
        expected = np.where(src == 0, 255, masks.numpy())
    assert np.array_equal(out.numpy(), expected)
    # The clip's own label weight is its share of pixels in any frame.
    if kind == "cutmix":
        share = (src == np.arange(batch)[:, None, None, None]).mean(axis=(1, 2, 3))
        assert np.allclose(targets.numpy()[np.arange(batch), np.arange(batch)], share, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


def _call(op=None, images=None, **kwargs):
    op = op or CutMix(num_classes=3, generator=gen(0))
    images = torch.rand(2, 3, 8, 8) if images is None else images
    return op(images, torch.zeros(2, dtype=torch.long), **kwargs)


GOOD_BOXES = torch.tensor([[[1.0, 1.0, 4.0, 4.0]], [[0.0, 0.0, 8.0, 8.0]]])
GOOD_LABELS = torch.tensor([[1], [2]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"masks": torch.zeros(2, 8, 8)}, ValueError, r"masks: expected integer class ids.*dtype float32"),
        ({"masks": torch.zeros(2, 8, 8, dtype=torch.bool)}, ValueError, r"masks: expected integer class ids"),
        (
            {"masks": torch.zeros(2, 8, 7, dtype=torch.uint8)},
            ValueError,
            r"masks: expected shape \(2, 8, 8\) or \(2, 1, 8, 8\).*got \(2, 8, 7\)",
        ),
        ({"masks": torch.zeros(2, 3, 8, 8, dtype=torch.uint8)}, ValueError, r"masks: expected shape"),
        ({"masks": [[0]]}, TypeError, r"masks: expected a torch.Tensor"),
        (
            {"masks": MixedMasks(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), torch.ones(2))},
            TypeError,
            r"masks: .*MixUp's MixedMasks",
        ),
        ({"boxes": GOOD_BOXES}, ValueError, r"boxes, box_labels: expected both"),
        (
            {"boxes": GOOD_BOXES + 1, "box_labels": GOOD_LABELS},
            ValueError,
            r"boxes: expected xyxy pixel boxes.*outside the 8x8 image.*image 1, box 0",
        ),
        ({"boxes": GOOD_BOXES - 1, "box_labels": GOOD_LABELS}, ValueError, r"boxes: .*outside"),
        (
            {"boxes": GOOD_BOXES.flip(-1), "box_labels": GOOD_LABELS},
            ValueError,
            r"boxes: .*x2 < x1 or y2 < y1.*image 0, box 0",
        ),
        (
            {"boxes": GOOD_BOXES * float("nan"), "box_labels": GOOD_LABELS},
            ValueError,
            r"boxes: expected xyxy",
        ),
        (
            {"boxes": GOOD_BOXES > 0, "box_labels": GOOD_LABELS},
            ValueError,
            r"boxes: expected float or integer.*bool",
        ),
        (
            {"boxes": GOOD_BOXES, "box_labels": GOOD_LABELS.float()},
            ValueError,
            r"box_labels: expected integer class ids.*float32",
        ),
        (
            {"boxes": GOOD_BOXES, "box_labels": GOOD_LABELS - 3},
            ValueError,
            r"box_labels: expected class ids >= 0",
        ),
        (
            {"boxes": GOOD_BOXES[:, :, :3], "box_labels": GOOD_LABELS},
            ValueError,
            r"boxes: expected shape \(2, N, 4\)",
        ),
        (
            {"boxes": GOOD_BOXES, "box_labels": GOOD_LABELS[:, :0]},
            ValueError,
            r"box_labels: expected shape \(2, 1\)",
        ),
        (
            {"boxes": [GOOD_BOXES[0]], "box_labels": [GOOD_LABELS[0]]},
            ValueError,
            r"boxes, box_labels: expected 2 per-image",
        ),
        ({"boxes": "box", "box_labels": GOOD_LABELS}, TypeError, r"boxes: expected a \(B, N, 4\) tensor"),
    ],
)
def test_bad_masks_and_boxes_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(**kwargs)


def test_bad_input_with_a_second_batch_and_options():
    images, labels = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="masks2: expected the masks of images2"):
        CutMix(num_classes=3)(images, labels, images, labels, masks=masks)
    with pytest.raises(ValueError, match="masks2: expected the shape and dtype"):
        CutMix(num_classes=3)(images, labels, images, labels, masks=masks, masks2=masks.long())
    with pytest.raises(ValueError, match="boxes2, box_labels2: expected the boxes of images2"):
        CutMix(num_classes=3)(images, labels, images, labels, boxes=GOOD_BOXES, box_labels=GOOD_LABELS)
    with pytest.raises(
        ValueError, match=r"mask_fill: expected a value representable in the masks' int8 \(\[-128, 127\]\)"
    ):
        Cutout(num_classes=3)(images, labels, masks=masks.to(torch.int8))
    with pytest.raises(ValueError, match="mask_fill: expected an int"):
        Cutout(mask_fill=0.5)
    with pytest.raises(ValueError, match=r"min_visibility: expected a number in \[0, 1\]"):
        CutMix(min_visibility=1.5)
    with pytest.raises(TypeError, match="labels: expected a torch.Tensor"):
        CutMix()(images, None)  # labels may be None only when masks or boxes carry them
    with pytest.raises(ValueError, match=r"labels: expected a tensor \(None only with masks or boxes\)"):
        CutMix()(torch.rand(2, 3, 4, 8, 8), None)
    with pytest.raises(ValueError, match="boxes: expected 4-D images; boxes are not supported for video"):
        CutMix()(torch.rand(2, 3, 4, 8, 8), None, boxes=GOOD_BOXES, box_labels=GOOD_LABELS)
    with pytest.raises(ValueError, match=r"masks: expected shape \(2, 4, 8, 8\)"):
        CutMix()(torch.rand(2, 3, 4, 8, 8), None, masks=masks)
    with pytest.raises(ValueError, match="logits: expected a float tensor"):
        mask_cross_entropy(torch.zeros(2, 3, 8, 8, dtype=torch.long), masks)
    with pytest.raises(ValueError, match=r"masks: expected shape \(2, 8, 8\) to match logits"):
        mask_cross_entropy(torch.zeros(2, 3, 8, 8), masks[:, :4])


def test_a_failed_check_draws_nothing():
    a, b = CutMix(num_classes=3, generator=gen(0)), CutMix(num_classes=3, generator=gen(0))
    with pytest.raises(ValueError):
        _call(a, masks=torch.zeros(2, 8, 8))
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    assert torch.equal(a(x, y)[0], b(x, y)[0])
