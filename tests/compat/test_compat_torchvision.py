"""cutmix.compat.torchvision: torchvision v2's CutMix/MixUp signatures and calls, duck-typed (CI cannot
import torchvision beside our torch; benchmarks/compat_peers_tv.py runs ours beside the real one).

Every expected value here is computed from the outputs' pixels: each image is one constant, distinct
per sample, so a pixel shows which sample it came from."""

from __future__ import annotations

import inspect
import pickle

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from cutmix.compat.torchvision import CutMix, MixUp, default_labels_getter
from cutmix.errors import UsageError

B, C, H, W, K = 12, 3, 16, 20, 15


def constant_images(batch: int = B, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sample i is filled with the value 10·(i + 1): distinct, exact in every dtype used here."""
    values = 10 * torch.arange(1, batch + 1, dtype=torch.float64)
    return values.view(-1, 1, 1, 1).expand(batch, C, H, W).to(dtype).contiguous()


def ids(batch: int = B) -> torch.Tensor:
    return torch.arange(batch) % K  # distinct for batch <= K


def pasted_share(mixed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per sample, the share of its pixels that came from sample i - 1 (torchvision's partner)."""
    partner = images.roll(1, 0)
    from_partner = (mixed == partner).flatten(1).double()
    return from_partner.mean(1)


def expected_cutmix_targets(mixed: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    share = pasted_share(mixed, images)
    own = torch.nn.functional.one_hot(labels, K).double()
    return (1 - share)[:, None] * own + share[:, None] * own.roll(1, 0)


def box_masks(mixed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: where the partner's pixels are, checked identical over the channels."""
    masks = mixed == images.roll(1, 0)
    assert torch.equal(masks, masks[:, :1].expand_as(masks))
    return masks[:, 0]


def mixup_lambdas(mixed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """λ per sample from ``mixed = λ·x + (1 − λ)·x_{i−1}`` on constant images."""
    own, partner = images[:, 0, 0, 0].double(), images.roll(1, 0)[:, 0, 0, 0].double()
    return (mixed[:, 0, 0, 0].double() - partner) / (own - partner)


# ----------------------------------------------------------------------------------------------
# Signatures
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CutMix, MixUp])
def test_signature_is_torchvisions_plus_keywords(cls):
    params = inspect.signature(cls).parameters
    # torchvision 0.29's _BaseMixUpCutMix.__init__(self, *, alpha=1.0, num_classes=None, labels_getter="default")
    assert [(n, p.default, p.kind) for n, p in list(params.items())[:3]] == [
        ("alpha", 1.0, inspect.Parameter.KEYWORD_ONLY),
        ("num_classes", None, inspect.Parameter.KEYWORD_ONLY),
        ("labels_getter", "default", inspect.Parameter.KEYWORD_ONLY),
    ]
    assert set(params) == {"alpha", "num_classes", "labels_getter", "per_batch", "generator", "seed"}
    assert isinstance(cls(num_classes=K), nn.Module)


# ----------------------------------------------------------------------------------------------
# Call forms and structures
# ----------------------------------------------------------------------------------------------


def test_call_forms_return_the_same_structure():
    images, labels = constant_images(), ids()
    for call, unpack in [
        (lambda t: t(images, labels), lambda out: out),
        (lambda t: t((images, labels)), lambda out: out),
        (lambda t: t([images, labels]), lambda out: out),
        (lambda t: t({"image": images, "labels": labels}), lambda out: (out["image"], out["labels"])),
    ]:
        out = call(CutMix(num_classes=K, seed=1))
        reference = CutMix(num_classes=K, seed=1)(images, labels)  # the same seed: the same draw
        mixed, targets = unpack(out)
        assert torch.equal(mixed, reference[0]) and torch.equal(targets, reference[1])
    assert isinstance(CutMix(num_classes=K)(images, labels), tuple)
    assert isinstance(CutMix(num_classes=K)([images, labels]), list)


def test_dict_samples_keep_other_keys_and_find_labels_like_torchvision():
    images, labels = constant_images(), ids()
    extra = torch.arange(B)  # a plain tensor after the images: passed through, as torchvision does
    out = MixUp(num_classes=K, seed=0)({"img": images, "Labels": labels, "index": extra, "name": "batch"})
    assert list(out) == ["img", "Labels", "index", "name"]
    assert out["index"] is extra and out["name"] == "batch"
    assert out["Labels"].shape == (B, K) and not torch.equal(out["img"], images)
    # Without a key equal to "labels" (any case), the first key containing "label".
    out = CutMix(num_classes=K, seed=0)({"image": images, "class_label": labels})
    assert out["class_label"].shape == (B, K)
    # A pair whose second item is a dict (detection-style targets).
    mixed, target = CutMix(num_classes=K, seed=0)((images, {"labels": labels, "image_id": extra}))
    assert target["labels"].shape == (B, K) and target["image_id"] is extra
    # Labels listed before the images: the images are still the first plain tensor besides them.
    out = CutMix(num_classes=K, seed=0)({"labels": labels, "image": images})
    assert out["labels"].shape == (B, K)
    torch.testing.assert_close(
        out["labels"].double(), expected_cutmix_targets(out["image"], images, labels), rtol=0, atol=1e-6
    )


def test_default_labels_getter_cases():
    labels = ids()
    assert default_labels_getter((constant_images(), labels)) is labels
    assert default_labels_getter({"LABELS": labels, "label_x": 1}) is labels
    assert default_labels_getter({"x": 1, "my_Label": labels}) is labels
    with pytest.raises(UsageError, match=r"inputs: expected a 'labels' .* got keys \['image'\]"):
        default_labels_getter({"image": 1})
    with pytest.raises(UsageError, match="inputs: expected a dict, or a pair"):
        default_labels_getter((1, 2))


def test_callable_labels_getter_and_attribute():
    images, labels = constant_images(), ids()
    mix = CutMix(num_classes=K, seed=3, labels_getter=lambda sample: sample["y"])
    out = mix({"x": images, "y": labels})
    assert out["y"].shape == (B, K)
    torch.testing.assert_close(
        out["y"].double(), expected_cutmix_targets(out["x"], images, labels), rtol=0, atol=1e-6
    )
    mix.labels_getter = "default"  # effective on the next call
    with pytest.raises(UsageError, match="expected a 'labels'"):
        mix({"x": images, "y": labels})
    with pytest.raises(UsageError, match="labels_getter: expected 'default', a callable or None, got 5"):
        mix.labels_getter = 5
    with pytest.raises(UsageError, match="labels: expected a torch.Tensor from labels_getter, got NoneType"):
        CutMix(num_classes=K, labels_getter=None)(images, labels)
    with pytest.raises(UsageError, match="labels_getter: expected it to return a tensor of the inputs"):
        CutMix(num_classes=K, labels_getter=lambda s: labels.clone())(images, labels)


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32, torch.float64])
def test_one_hot_labels_of_any_dtype(dtype):
    images, labels = constant_images(), ids()
    one_hot = torch.nn.functional.one_hot(labels, K).to(dtype)
    for num_classes in (None, K):
        mixed, targets = CutMix(num_classes=num_classes, seed=5)(images, one_hot)
        # torchvision: float labels keep their dtype, others become float32.
        assert targets.dtype == (dtype if dtype.is_floating_point else torch.float32)
        torch.testing.assert_close(
            targets.double(), expected_cutmix_targets(mixed, images, labels), rtol=0, atol=1e-6
        )
        same = CutMix(num_classes=K, seed=5)(images, labels)  # ids give the same draw and targets
        assert torch.equal(mixed, same[0])
        torch.testing.assert_close(targets.float(), same[1])


def test_label_refusals_name_the_argument():
    images = constant_images()
    cases = [
        (CutMix(), ids(), "num_classes: expected an int when labels are class ids, got None"),
        (CutMix(num_classes=K), torch.zeros(B, K, 1), r"labels: expected class ids \(B,\) or \(B, K\)"),
        (
            CutMix(num_classes=K),
            torch.zeros(B, K + 1),
            rf"labels: expected \(B, {K}\) labels to match num_classes",
        ),
        (CutMix(num_classes=K), ids(B - 1), rf"labels: expected {B} labels to match images' batch size"),
        (CutMix(num_classes=K), ids() + K, rf"labels: expected class ids in \[0, {K}\)"),
        (MixUp(num_classes=K, per_batch=True), ids(B - 1), rf"labels: expected {B} labels, one per image"),
    ]
    for transform, labels, message in cases:
        with pytest.raises(UsageError, match=message):
            transform(images, labels)
    with pytest.raises(UsageError, match=r"images: expected a 4-D tensor"):
        CutMix(num_classes=K)(images[0], ids(C))


# ----------------------------------------------------------------------------------------------
# Per sample (default) and per batch (torchvision's)
# ----------------------------------------------------------------------------------------------


def test_cutmix_per_sample_targets_are_the_pasted_share():
    images, labels = constant_images(), ids()
    mix = CutMix(num_classes=K, seed=7)
    shares = []
    for _ in range(4):
        mixed, targets = mix(images, labels)
        # Every pixel is the sample's own or its partner's (sample i - 1), and the targets weigh them.
        assert torch.all((mixed == images) | (mixed == images.roll(1, 0)))
        torch.testing.assert_close(
            targets.double(), expected_cutmix_targets(mixed, images, labels), rtol=0, atol=1e-6
        )
        masks = box_masks(mixed, images)
        shares.append(masks.flatten(1).double().mean(1))
        # Each pasted region is one axis-aligned rectangle.
        for mask in masks:
            rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
            if len(rows):
                assert mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
                assert mask.sum() == len(rows) * len(cols)
    shares = torch.stack(shares)
    assert len(torch.unique(shares)) > B  # per sample: many different boxes, not one per batch


def test_cutmix_per_batch_is_one_box_and_the_rolled_batch():
    images, labels = constant_images(), ids()
    mix = CutMix(num_classes=K, seed=11, per_batch=True)
    seen = set()
    for _ in range(6):
        mixed, targets = mix(images, labels)
        masks = box_masks(mixed, images)
        assert torch.all((mixed == images) | (mixed == images.roll(1, 0)))
        assert torch.equal(masks, masks[:1].expand_as(masks))  # one box for the whole batch
        torch.testing.assert_close(
            targets.double(), expected_cutmix_targets(mixed, images, labels), rtol=0, atol=1e-6
        )
        seen.add(int(masks[0].sum()))
    assert len(seen) > 1  # a new box on every call


def test_mixup_per_sample_and_per_batch_lambdas():
    images, labels = constant_images(), ids()
    for per_batch in (False, True):
        mixed, targets = MixUp(num_classes=K, seed=2, per_batch=per_batch)(images, labels)
        lam = mixup_lambdas(mixed, images)
        own = torch.nn.functional.one_hot(labels, K).double()
        expected = lam[:, None] * own + (1 - lam)[:, None] * own.roll(1, 0)
        torch.testing.assert_close(targets.double(), expected, rtol=0, atol=1e-5)
        spread = float(lam.max() - lam.min())
        assert (spread < 1e-5) if per_batch else (spread > 0.2)


def test_per_batch_lambda_distribution_is_beta_alpha():
    """One λ per call ~ Beta(α, α): over many calls, the mean and variance of Beta(0.5, 0.5)."""
    images, labels = constant_images(4), ids(4)
    mix = MixUp(alpha=0.5, num_classes=K, seed=4, per_batch=True)
    lams = torch.stack([mixup_lambdas(mix(images, labels)[0], images)[0] for _ in range(2000)])
    assert abs(float(lams.mean()) - 0.5) < 0.03
    assert abs(float(lams.var()) - 0.125) < 0.01  # α² / ((2α)²(2α + 1)) = 1/8


def test_uint8_images():
    images, labels = constant_images(dtype=torch.uint8), ids()
    mixed, targets = CutMix(num_classes=K, seed=0)(images, labels)
    assert mixed.dtype == torch.uint8
    torch.testing.assert_close(
        targets.double(), expected_cutmix_targets(mixed, images, labels), rtol=0, atol=1e-6
    )
    mixed, targets = MixUp(num_classes=K, seed=0)(images, labels)
    assert mixed.dtype == torch.uint8
    lam = targets[torch.arange(B), labels].double()
    expected = (lam * images[:, 0, 0, 0] + (1 - lam) * images.roll(1, 0)[:, 0, 0, 0]).round()
    assert torch.all((mixed[:, 0, 0, 0].double() - expected).abs() <= 1)


# ----------------------------------------------------------------------------------------------
# tv_tensors, duck-typed: torchvision's Image and Video are Tensor subclasses in torchvision.tv_tensors
# ----------------------------------------------------------------------------------------------


def _fake_tv(name: str, module: str = "torchvision.tv_tensors._fake") -> type:
    return type(name, (torch.Tensor,), {"__module__": module})


def test_tv_tensor_images_are_mixed_and_plain_tensors_pass():
    Image, Video = _fake_tv("Image"), _fake_tv("Video")
    images, labels = constant_images(), ids()
    plain = torch.rand(B, C, H, W)  # beside an Image, a plain tensor is not an image (torchvision's rule)
    mixed, targets, passed = CutMix(num_classes=K, seed=0)(images.as_subclass(Image), labels, plain)
    assert type(mixed) is Image and passed is plain
    torch.testing.assert_close(
        targets.double(),
        expected_cutmix_targets(mixed.as_subclass(torch.Tensor), images, labels),
        rtol=0,
        atol=1e-6,
    )
    # Two Images in one sample get the same draw.
    first, _, second = CutMix(num_classes=K, seed=0)(
        images.as_subclass(Image), labels, images.as_subclass(Image)
    )
    assert torch.equal(first.as_subclass(torch.Tensor), second.as_subclass(torch.Tensor))
    # A video (B, T, C, H, W): one box per sample over all frames.
    clip = images[:, None].expand(B, 4, C, H, W).contiguous()
    mixed, targets = CutMix(num_classes=K, seed=0)(clip.as_subclass(Video), labels)
    mixed = mixed.as_subclass(torch.Tensor)
    assert mixed.shape == clip.shape
    assert torch.equal(mixed, mixed[:, :1].expand_as(mixed))
    torch.testing.assert_close(
        targets.double(), expected_cutmix_targets(mixed[:, 0], images, labels), rtol=0, atol=1e-6
    )


def test_pil_images_boxes_and_masks_are_refused():
    labels = ids()
    for leaf in (
        _fake_tv("BoundingBoxes")(),
        _fake_tv("Mask")(),
        type("Image", (), {"__module__": "PIL.Image"})(),
    ):
        with pytest.raises(UsageError, match="which CutMix does not support"):
            CutMix(num_classes=K)(constant_images(), labels, leaf)


# ----------------------------------------------------------------------------------------------
# Settings after construction, generators, pickling
# ----------------------------------------------------------------------------------------------


def test_attributes_are_checked_and_effective_on_the_next_call():
    images, labels = constant_images(), ids()
    mix = MixUp(num_classes=K, seed=0)
    assert float((mixup_lambdas(mix(images, labels)[0], images) - 0.5).abs().mean()) < 0.4
    mix.alpha = 1e-3  # Beta(0.001, 0.001): λ at 0 or 1
    assert float((mixup_lambdas(mix(images, labels)[0], images) - 0.5).abs().mean()) > 0.45
    mix.per_batch = True
    lam = mixup_lambdas(mix(images, labels)[0], images)
    assert float(lam.max() - lam.min()) < 1e-5
    mix.num_classes = K + 5
    assert mix(images, labels)[1].shape == (B, K + 5)
    for name, value, message in [
        ("alpha", 0, "alpha: expected a finite number > 0, got 0"),
        ("alpha", "1", "alpha: expected a positive number, got str"),
        ("num_classes", 0, "num_classes: expected an int >= 1 or None, got 0"),
        ("per_batch", 1, "per_batch: expected True or False, got 1"),
        ("generator", 3, "generator: expected a torch.Generator or None, got int"),
    ]:
        before = getattr(mix, name)
        with pytest.raises(UsageError, match=message):
            setattr(mix, name, value)
        assert getattr(mix, name) is before  # a refused value leaves the setting as it was
    with pytest.raises(UsageError, match="alpha: expected a finite number > 0, got -1"):
        CutMix(alpha=-1)
    with pytest.raises(UsageError, match="generator, seed: expected one of them, got both"):
        CutMix(generator=torch.Generator(), seed=1)


def test_seed_and_generator_fix_the_draws():
    images, labels = constant_images(), ids()
    for per_batch in (False, True):
        a = CutMix(num_classes=K, seed=9, per_batch=per_batch)
        b = CutMix(num_classes=K, generator=torch.Generator().manual_seed(9), per_batch=per_batch)
        for _ in range(3):
            assert torch.equal(a(images, labels)[0], b(images, labels)[0])
    state = torch.get_rng_state()
    CutMix(num_classes=K, seed=0)(images, labels)
    assert torch.equal(torch.get_rng_state(), state)  # never the global RNG


@pytest.mark.parametrize("cls", [CutMix, MixUp])
def test_pickles_and_continues_the_same_stream(cls):
    images, labels = constant_images(), ids()
    mix = cls(num_classes=K, seed=6)
    mix(images, labels)
    copy = pickle.loads(pickle.dumps(mix))
    assert repr(copy) == repr(mix) == f"{cls.__name__}(alpha=1.0, num_classes={K}, per_batch=False)"
    for _ in range(2):
        assert torch.equal(copy(images, labels)[0], mix(images, labels)[0])


class _Pairs(Dataset):
    def __len__(self) -> int:
        return 2 * B

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.full((C, H, W), float(i + 1)), i % K


def test_collate_fn_as_torchvision_documents_and_spawn_workers():
    mix = CutMix(num_classes=K, seed=0)
    loader = DataLoader(
        _Pairs(), batch_size=B, collate_fn=_MixCollate(mix), num_workers=1, multiprocessing_context="spawn"
    )
    batches = list(loader)
    assert len(batches) == 2
    for k, (mixed, targets) in enumerate(batches):
        images = default_collate([_Pairs()[i] for i in range(k * B, (k + 1) * B)])[0]
        labels = torch.arange(k * B, (k + 1) * B) % K
        assert targets.shape == (B, K)
        torch.testing.assert_close(targets.double(), _targets_for(mixed, images, labels), rtol=0, atol=1e-6)


def _targets_for(mixed: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    share = pasted_share(mixed, images)
    own = torch.nn.functional.one_hot(labels, K).double()
    return (1 - share)[:, None] * own + share[:, None] * own.roll(1, 0)


class _MixCollate:
    """``collate_fn=lambda batch: cutmix(*default_collate(batch))`` as a picklable object (spawn)."""

    def __init__(self, transform: nn.Module) -> None:
        self.transform = transform

    def __call__(self, batch: list) -> tuple:
        return self.transform(*default_collate(batch))


# ----------------------------------------------------------------------------------------------
# Composition: stand-ins for v2.Compose and v2.RandomChoice (their call protocol in torchvision 0.29)
# ----------------------------------------------------------------------------------------------


class _Compose(nn.Module):
    """v2.Compose's protocol: each transform called with ``*inputs``; several inputs stay unpacked."""

    def __init__(self, transforms: list) -> None:
        super().__init__()
        self.transforms = transforms

    def forward(self, *inputs):
        unpack = len(inputs) > 1
        for transform in self.transforms:
            outputs = transform(*inputs)
            inputs = outputs if unpack else (outputs,)
        return outputs


class _RandomChoice(nn.Module):
    """v2.RandomChoice's protocol: one transform picked by weight, called with ``*inputs``."""

    def __init__(self, transforms: list, p: list[float] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.transforms, self.p = transforms, torch.tensor(p or [1.0] * len(transforms))
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, *inputs):
        return self.transforms[int(torch.multinomial(self.p, 1, generator=self.generator))](*inputs)


class _ToFloat(nn.Module):
    """A plain nn.Module transform in the same pipeline: uint8 images to float in [0, 1]."""

    def forward(self, images, labels):
        return images.float() / 255, labels


def test_inside_compose_and_random_choice():
    images, labels = constant_images(dtype=torch.uint8), ids()
    cutmix, mixup = CutMix(num_classes=K, seed=0), MixUp(num_classes=K, seed=1)
    pipeline = _Compose([_ToFloat(), _RandomChoice([cutmix, mixup], p=[0.5, 0.5])])
    kinds = set()
    floats = images.float() / 255
    for _ in range(20):
        mixed, targets = pipeline(images, labels)
        assert mixed.dtype == torch.float32 and targets.shape == (B, K)
        torch.testing.assert_close(targets.sum(1), torch.ones(B))
        exact = torch.all((mixed == floats) | (mixed == floats.roll(1, 0)))
        kinds.add("cutmix" if exact else "mixup")
        if exact:
            torch.testing.assert_close(
                targets.double(), expected_cutmix_targets(mixed, floats, labels), rtol=0, atol=1e-6
            )
    assert kinds == {"cutmix", "mixup"}
    # The one-argument form through Compose: a (images, labels) tuple in, a tuple out.
    out = _Compose([CutMix(num_classes=K, seed=0)])((images, labels))
    assert isinstance(out, tuple) and out[1].shape == (B, K)
