"""Defects of the torch ops found where users stand (issue 17, items 1, 2, 3 and 5).

Each result is compared with an independent one: the int64 (B,) class-id path, which the rest of
the suite checks from the pixels; a one-hot built by hand; the functional ``sample_*_params`` API
replayed from the same generator; or the constructor's own refusal.
"""

from __future__ import annotations

import pytest
import torch

from cutmix import (
    CutMix,
    CutMixOrMixUp,
    Cutout,
    MixParams,
    MixUp,
    sample_cutmix_params,
    sample_cutout_params,
    sample_mixup_params,
    to_targets,
)

INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32]
NO_KERNEL_DTYPES = [torch.uint16, torch.uint32, torch.uint64]  # stored by torch, no CPU add/sub/compare
B, K, H, W = 6, 5, 8, 8


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


OPS = {
    "cutmix": lambda: CutMix(num_classes=K, label_smoothing=0.1, generator=gen(0)),
    "mixup": lambda: MixUp(num_classes=K, label_smoothing=0.1, generator=gen(0)),
    "cutout": lambda: Cutout(size=3, num_classes=K, label_smoothing=0.1, generator=gen(0)),
    "switch": lambda: CutMixOrMixUp(
        CutMix(num_classes=K, generator=gen(1)), MixUp(num_classes=K, generator=gen(2)), generator=gen(3)
    ),
}


def _equal(a: object, b: object) -> bool:
    """Equal tensors (dtype included), or equal sequences of them, recursively."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, MixParams):
        return isinstance(b, MixParams) and a.kind == b.kind and torch.equal(a.table, b.table)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# ----------------------------------------------------------------------------------------------
# Item 1: class ids of any integer dtype, (B,) or (B, 1), give the int64 (B,) result
# ----------------------------------------------------------------------------------------------

LABELS = torch.tensor([0, 4, 2, 2, 1, 3])


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("column", [False, True])
def test_to_targets_takes_class_ids_of_every_integer_dtype(dtype, column):
    labels = LABELS.to(dtype)
    labels = labels[:, None] if column else labels
    before = labels.clone()
    expected = torch.eye(K)[LABELS] * 0.8 + 0.2 / K  # by hand: one-hot, smoothed with ε = 0.2
    got = to_targets(labels, K, 0.2)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, rtol=0, atol=1e-7)
    assert torch.equal(labels, before) and labels.dtype == dtype  # the input is not touched


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.uint16], ids=str)
def test_out_of_range_class_ids_of_every_dtype_are_refused_with_their_values(dtype):
    with pytest.raises(ValueError, match=r"labels: expected class ids in \[0, 5\), got values in \[0, 7\]"):
        to_targets(torch.tensor([0, 7]).to(dtype), K)
    if dtype == torch.int8:
        with pytest.raises(ValueError, match=r"got values in \[-1, 3\]"):
            to_targets(torch.tensor([3, -1], dtype=dtype)[:, None], K)


def test_integer_labels_of_k_columns_are_refused_saying_what_is_accepted():
    with pytest.raises(
        TypeError, match=r"labels: expected int class ids of shape \(B,\) or \(B, 1\), or float"
    ):
        to_targets(torch.zeros(4, 3, dtype=torch.uint8), 3)


@pytest.mark.parametrize("op_name", sorted(OPS))
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("column", [False, True])
def test_every_op_gives_the_int64_result_for_every_integer_dtype(op_name, dtype, column):
    images = torch.rand(B, 3, H, W, generator=gen(4))
    images2 = torch.rand(B, 3, H, W, generator=gen(5))

    def labels_as(labels: torch.Tensor) -> torch.Tensor:
        labels = labels.to(dtype)
        return labels[:, None] if column else labels

    labels2 = LABELS.flip(0)
    masks = torch.randint(0, 3, (B, H, W), dtype=torch.uint8, generator=gen(6))
    calls = [
        lambda op, lab, lab2: op(images, lab, return_params=True),
        lambda op, lab, lab2: op(images, lab, images2, lab2, return_params=True),
        lambda op, lab, lab2: op(
            images, lab, masks=masks, masks2=masks.flip(0), images2=images2, labels2=lab2
        ),
        lambda op, lab, lab2: op(images[:, :, None].expand(B, 3, 2, H, W), lab),  # clips
    ]
    for call in calls:
        reference = call(OPS[op_name](), LABELS, labels2)
        got = call(OPS[op_name](), labels_as(LABELS), labels_as(labels2))
        assert _equal(got, reference)


# ----------------------------------------------------------------------------------------------
# Item 2: uint16/uint32 (and uint64) images keep their dtype in CutMix and Cutout (and MixUp)
# ----------------------------------------------------------------------------------------------


def _wide_images(dtype: torch.dtype, data_format: str, seed: int) -> torch.Tensor:
    """Values over the whole uint16 range (beyond int16's), and above 2**31 for the wider dtypes."""
    high = 2**16 if dtype == torch.uint16 else 2**32
    shape = (B, 3, H, W) if data_format == "channels_first" else (B, H, W, 3)
    return torch.randint(0, high, shape, generator=gen(seed)).to(dtype)


IMAGE_OPS = {
    "cutmix": lambda fmt: CutMix(num_classes=K, data_format=fmt, generator=gen(0)),
    "cutout": lambda fmt: Cutout(size=4, num_classes=K, fill=7, data_format=fmt, generator=gen(0)),
    "mixup": lambda fmt: MixUp(num_classes=K, data_format=fmt, generator=gen(0)),
}


@pytest.mark.parametrize("dtype", NO_KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("op_name", sorted(IMAGE_OPS))
@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "memory_channels_last"])
def test_images_of_dtypes_without_arithmetic_kernels_keep_their_dtype(dtype, op_name, layout):
    """The pixels are those of the same images as int64 (a dtype torch computes in), cast back."""
    data_format = "channels_last" if layout == "channels_last" else "channels_first"
    images = _wide_images(dtype, data_format, 1)
    if layout == "memory_channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    before = images.clone()
    mixed, targets, params = IMAGE_OPS[op_name](data_format)(images, LABELS, return_params=True)
    ref_mixed, ref_targets, ref_params = IMAGE_OPS[op_name](data_format)(
        images.long(), LABELS, return_params=True
    )
    assert mixed.dtype == dtype and mixed.shape == images.shape and mixed.stride() == images.stride()
    assert torch.equal(mixed.long(), ref_mixed) and torch.equal(targets, ref_targets)
    assert torch.equal(params.table, ref_params.table) and torch.equal(images, before)
    if op_name != "mixup":  # a paired batch too (Cutout ignores it)
        images2 = _wide_images(dtype, data_format, 2)
        mixed = IMAGE_OPS[op_name](data_format)(images, LABELS, images2, LABELS)[0]
        ref = IMAGE_OPS[op_name](data_format)(images.long(), LABELS, images2.long(), LABELS)[0]
        assert mixed.dtype == dtype and torch.equal(mixed.long(), ref)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32], ids=str)
@pytest.mark.parametrize("op_name", sorted(IMAGE_OPS))
def test_clips_masks_and_boxes_of_dtypes_without_arithmetic_kernels(dtype, op_name):
    clips = _wide_images(dtype, "channels_first", 3)[:, :, None].repeat(1, 1, 2, 1, 1)
    got = IMAGE_OPS[op_name]("channels_first")(clips, LABELS)
    ref = IMAGE_OPS[op_name]("channels_first")(clips.long(), LABELS)
    assert got[0].dtype == dtype and torch.equal(got[0].long(), ref[0])
    images = torch.rand(B, 3, H, W, generator=gen(4))
    masks = torch.randint(0, 60000, (B, H, W), generator=gen(5)).to(dtype)
    boxes = torch.tensor([[[1, 1, 6, 7], [0, 0, 8, 8]]]).repeat(B, 1, 1)
    box_labels = torch.tensor([[1, 2]]).repeat(B, 1)
    got = IMAGE_OPS[op_name]("channels_first")(images, LABELS, masks=masks, boxes=boxes.to(dtype),
                                               box_labels=box_labels)  # fmt: skip
    ref = IMAGE_OPS[op_name]("channels_first")(images, LABELS, masks=masks.long(), boxes=boxes,
                                               box_labels=box_labels)  # fmt: skip
    mixed_masks, mixed_boxes = got[2], got[3]
    ref_masks, ref_boxes = ref[2], ref[3]
    if op_name == "mixup":
        assert mixed_masks.masks.dtype == dtype
        assert torch.equal(mixed_masks.partner_masks.long(), ref_masks.partner_masks)
    else:
        assert mixed_masks.dtype == dtype and torch.equal(mixed_masks.long(), ref_masks)
    assert mixed_boxes.boxes.dtype == dtype and torch.equal(mixed_boxes.boxes.long(), ref_boxes.boxes)
    assert _equal(mixed_boxes.labels, ref_boxes.labels) and _equal(mixed_boxes.weights, ref_boxes.weights)


# ----------------------------------------------------------------------------------------------
# Item 3: unsigned box labels are class ids (no padding value); output labels int64, −1 padding
# ----------------------------------------------------------------------------------------------

BOXES = torch.tensor([[[0, 0, 8, 8], [1, 1, 4, 4]]]).repeat(B, 1, 1).float()
BOX_OPS = {
    "cutmix": lambda: CutMix(generator=gen(0)),
    "mixup": lambda: MixUp(generator=gen(0)),
    "cutout": lambda: Cutout(size=3, generator=gen(0)),
}


@pytest.mark.parametrize("op_name", sorted(BOX_OPS))
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("as_list", [False, True])
def test_box_labels_of_every_integer_dtype(op_name, dtype, as_list):
    """Unsigned labels hold no padding: 255 in uint8 is class 255, the same as int64's 255. Signed
    ones keep −1 as padding. Either way the result is the int64 one."""
    images = torch.rand(B, 3, H, W, generator=gen(4))
    unsigned = not dtype.is_signed
    ids = torch.tensor([[1, 2], [255 if dtype == torch.uint8 else 0, 1], [1, 2], [2, 2], [0, 1], [3, 1]])
    if not unsigned:  # signed dtypes: some padding (−1) too
        ids[2, 1] = ids[4, 0] = -1

    def run(labels: torch.Tensor):
        if as_list:  # per-image tensors of different lengths: image 0 has one box
            boxes = [BOXES[i, : 1 if i == 0 else 2] for i in range(B)]
            labels = [labels[i, : 1 if i == 0 else 2] for i in range(B)]
        else:
            boxes = BOXES
        return BOX_OPS[op_name]()(images, None, boxes=boxes, box_labels=labels)[2]

    got, reference = run(ids.to(dtype)), run(ids)
    assert _equal(got, reference)
    labels = got.labels if as_list else [got.labels]
    assert all(lab.dtype == torch.int64 for lab in labels)
    if not as_list:  # padded output: −1 pads, and only pads (every label in the input was kept or not)
        assert set(got.labels.unique().tolist()) <= set(ids.unique().tolist()) | {-1}


def test_uint8_box_labels_are_kept_and_padded_with_minus_one():
    """The issue's case, checked by hand: [1, 2] as uint8, no mixing (p=0): both kept, int64."""
    images = torch.rand(2, 3, H, W, generator=gen(4))
    labels = torch.tensor([[1, 2], [255, 0]], dtype=torch.uint8)
    out = CutMix(p=0.0, generator=gen(0))(images, None, boxes=BOXES[:2], box_labels=labels)[2]
    assert out.labels.dtype == torch.int64 and out.labels.tolist() == [[1, 2, -1, -1], [255, 0, -1, -1]]
    listed = CutMix(p=0.0, generator=gen(0))(
        images, None, boxes=[BOXES[0], BOXES[1, :1]], box_labels=[labels[0], labels[1, :1]]
    )[2]
    assert [lab.tolist() for lab in listed.labels] == [[1, 2], [255]]
    assert all(lab.dtype == torch.int64 for lab in listed.labels)


def test_signed_box_labels_below_minus_one_are_still_refused():
    images = torch.rand(2, 3, H, W, generator=gen(4))
    with pytest.raises(ValueError, match=r"box_labels: expected class ids >= 0, or -1 for padding, got -2"):
        CutMix(generator=gen(0))(
            images, None, boxes=BOXES[:2], box_labels=torch.tensor([[1, -2]] * 2).to(torch.int8)
        )


# ----------------------------------------------------------------------------------------------
# Item 5: options set after construction are checked like the constructor's, and take effect
# ----------------------------------------------------------------------------------------------

# (factory taking the option as a keyword, option, a value the constructor refuses, a valid other value)
OPTIONS = [
    (CutMix, "alpha", 0.0, 0.3),
    (CutMix, "alpha", "big", 0.3),
    (CutMix, "p", 5.0, 0.5),
    (CutMix, "partner", "shuffle", "roll"),
    (CutMix, "box", "corner", "inside"),
    (CutMix, "min_visibility", 2.0, 0.5),
    (CutMix, "num_classes", 0, 7),
    (CutMix, "label_smoothing", 1.0, 0.1),
    (CutMix, "data_format", "NHWC", "channels_last"),
    (CutMix, "generator", 123, gen(9)),
    (MixUp, "alpha", -1.0, 2.0),
    (MixUp, "p", -0.1, 0.5),
    (MixUp, "partner", "swap", "flip"),
    (MixUp, "label_smoothing", -0.5, 0.2),
    (Cutout, "size", -2, (2, 3)),
    (Cutout, "p", 1.5, 0.2),
    (Cutout, "mask_fill", 2.5, 0),
    (Cutout, "min_visibility", -1, 1.0),
    (Cutout, "fill", "grey", 3),
]


def _refusal(make) -> tuple[type, str]:
    with pytest.raises((TypeError, ValueError)) as info:
        make()
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    ("cls", "name", "bad", "good"), OPTIONS, ids=[f"{c.__name__}-{n}-{b!r}" for c, n, b, _ in OPTIONS]
)
def test_an_option_set_after_construction_is_checked_as_the_constructor_checks_it(cls, name, bad, good):
    constructor = _refusal(lambda: cls(**{name: bad}))
    op = cls(num_classes=K, generator=gen(0))
    kept = getattr(op, name)
    assert _refusal(lambda: setattr(op, name, bad)) == constructor
    assert getattr(op, name) is kept  # a refused value changes nothing
    setattr(op, name, good)
    expected = getattr(cls(**{name: good}), name)
    assert getattr(op, name) == expected or getattr(op, name) is good


@pytest.mark.parametrize("bad", [5.0, -1, "half", True])
def test_switch_prob_set_after_construction_is_checked_as_the_constructor_checks_it(bad):
    constructor = _refusal(lambda: CutMixOrMixUp(CutMix(), MixUp(), switch_prob=bad))
    op = CutMixOrMixUp(CutMix(), MixUp())
    assert _refusal(lambda: setattr(op, "switch_prob", bad)) == constructor
    assert op.switch_prob == 0.5


def _applied_after(op, change, calls: int = 31) -> list[bool]:
    images, labels = torch.rand(8, 3, H, W, generator=gen(4)), torch.arange(8) % K
    op(images, labels)  # draws 32 batches ahead, uses one
    change(op)
    return [bool(op(images, labels, return_params=True)[2].applied.any()) for _ in range(calls)]


@pytest.mark.parametrize("cls", [CutMix, MixUp, Cutout])
def test_p_zero_takes_effect_on_the_next_call(cls):
    """The issue's case: after op.p = 0 the op mixed for 31 more batches (its draws made ahead)."""
    assert not any(_applied_after(cls(num_classes=K, generator=gen(0)), lambda op: setattr(op, "p", 0.0)))
    off = cls(num_classes=K, p=0.0, generator=gen(0))
    assert any(_applied_after(off, lambda op: setattr(op, "p", 1.0))[:1])


SAMPLERS = {
    CutMix: lambda g, **kw: sample_cutmix_params(8, H, W, generator=g, batches=32, **kw),
    MixUp: lambda g, **kw: sample_mixup_params(8, generator=g, batches=32, **kw),
    Cutout: lambda g, **kw: sample_cutout_params(8, H, W, generator=g, batches=32, **kw),
}
CHANGES = [
    (CutMix, {"alpha": 0.2}),
    (CutMix, {"p": 0.5}),
    (CutMix, {"partner": "flip", "box": "inside"}),
    (MixUp, {"alpha": 3.0, "partner": "roll"}),
    (Cutout, {"size": (2, 5)}),
    (Cutout, {"p": 0.3}),
]


@pytest.mark.parametrize(("cls", "change"), CHANGES, ids=[f"{c.__name__}-{sorted(ch)}" for c, ch in CHANGES])
def test_a_changed_option_draws_from_the_next_call_on(cls, change):
    """After the change, the op's draws are those of the functional API, from the generator as the
    first pool left it: the rest of that pool (31 batches) is dropped."""
    base = {"size": 4} if cls is Cutout else {}
    op = cls(num_classes=K, generator=gen(0), **base)
    images, labels = torch.rand(8, 3, H, W, generator=gen(4)), torch.arange(8) % K
    first = op(images, labels, return_params=True)[2]
    for name, value in change.items():
        setattr(op, name, value)
    g = gen(0)
    drawn = SAMPLERS[cls](g, **base)
    assert torch.equal(first.table, drawn.split(8)[0].table)
    after = SAMPLERS[cls](g, **{**base, **change}).split(8) + SAMPLERS[cls](g, **{**base, **change}).split(8)
    for k in range(33):  # the new pool, and the first batch of the one after it
        assert torch.equal(op(images, labels, return_params=True)[2].table, after[k].table), k


def test_setting_an_option_to_its_value_keeps_the_draws_made_ahead():
    images, labels = torch.rand(8, 3, H, W, generator=gen(4)), torch.arange(8) % K
    untouched, touched = CutMix(num_classes=K, generator=gen(0)), CutMix(num_classes=K, generator=gen(0))
    for k in range(40):
        if k == 3:
            touched.p, touched.alpha, touched.partner = 1, 1.0, "permute"
            touched.label_smoothing = 0.0
        a = untouched(images, labels, return_params=True)[2]
        b = touched(images, labels, return_params=True)[2]
        assert torch.equal(a.table, b.table)


def test_a_new_generator_draws_from_the_next_call_on():
    images, labels = torch.rand(8, 3, H, W, generator=gen(4)), torch.arange(8) % K
    op = CutMix(num_classes=K, generator=gen(0))
    op(images, labels)
    op.generator = gen(5)
    fresh = CutMix(num_classes=K, generator=gen(5))
    for _ in range(3):
        assert torch.equal(op(images, labels, return_params=True)[2].table,
                           fresh(images, labels, return_params=True)[2].table)  # fmt: skip


def test_options_that_only_apply_take_effect_on_the_next_call():
    images, labels = torch.rand(8, 3, H, W, generator=gen(4)), torch.arange(8) % K
    op = Cutout(size=4, num_classes=K, generator=gen(0))
    mixed, targets, params = op(images, labels, return_params=True)
    op.fill, op.num_classes, op.label_smoothing = 2, 6, 0.3
    mixed, targets, params = op(images, labels, return_params=True)
    hole = params.box_rows[:, :, None].bool() & params.box_cols[:, None, :].bool()
    assert torch.equal(mixed, torch.where(hole[:, None], torch.tensor(2.0), images))
    assert torch.allclose(targets, torch.eye(6)[labels] * 0.7 + 0.3 / 6, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("cutmix", "mixup", "match"),
    [
        ({"num_classes": 10}, {"num_classes": 100}, r"mixup: expected num_classes 10 like cutmix, got 100"),
        ({"num_classes": 10}, {}, r"mixup: expected num_classes 10 like cutmix, got None"),
        ({"label_smoothing": 0.1}, {}, r"mixup: expected label_smoothing 0.1 like cutmix, got 0.0"),
        ({"data_format": "channels_last"}, {}, r"mixup: expected data_format 'channels_last' like cutmix"),
    ],
)
def test_cutmix_or_mixup_refuses_ops_whose_targets_disagree(cutmix, mixup, match):
    with pytest.raises(ValueError, match=match):
        CutMixOrMixUp(CutMix(**cutmix), MixUp(**mixup))
    # ... and later, when either op is replaced or changed, with the same message.
    agreeing = {**mixup, **cutmix}
    op = CutMixOrMixUp(CutMix(**agreeing), MixUp(**agreeing))
    with pytest.raises(ValueError, match=match):
        op.mixup = MixUp(**mixup)
    assert op.mixup.num_classes == agreeing.get("num_classes")  # the refused op was not taken
    for name in ("num_classes", "label_smoothing", "data_format"):
        setattr(op.mixup, name, getattr(MixUp(**mixup), name))
    images = torch.rand(4, 3, H, W, generator=gen(4))
    with pytest.raises(ValueError, match=match):
        op(images, torch.zeros(4, 10).softmax(1))


@pytest.mark.parametrize(
    ("dtype", "fill", "message"),
    [
        (torch.uint8, 300, "fill: expected a value representable in the images' uint8 ([0, 255]), got 300.0"),
        (torch.uint8, -1, "fill: expected a value representable in the images' uint8 ([0, 255]), got -1.0"),
        (
            torch.int8,
            128,
            "fill: expected a value representable in the images' int8 ([-128, 127]), got 128.0",
        ),
    ],
)
def test_cutout_refuses_a_fill_its_integer_images_cannot_hold(dtype, fill, message):
    # The message is cutmix.keras's for the same refusal (tests/test_keras_defects.py).
    images = torch.zeros(4, 3, 8, 8, dtype=dtype)
    with pytest.raises(ValueError) as error:
        Cutout(size=4, fill=fill, num_classes=3, generator=torch.Generator().manual_seed(0))(
            images, torch.arange(4) % 3
        )
    assert str(error.value) == message


def test_cutout_fill_at_the_edge_of_the_dtype_is_used_exactly():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    out, _ = Cutout(size=8, fill=255, num_classes=3, generator=torch.Generator().manual_seed(0))(
        images, torch.arange(4) % 3
    )
    assert set(out.unique().tolist()) <= {0, 255} and int(out.max()) == 255
