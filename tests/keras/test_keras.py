"""cutmix.keras on the torch backend, checked from the output pixels as tests/ops/test_ops.py checks the
torch ops; the JAX and TensorFlow backends in subprocesses where they are installed.

Every layer has two implementations: the torch op (the fast path on the torch backend) and the
keras.ops one (every other backend, traced graphs). Each pixel test runs both, the second by
switching the fast path off, so the keras.ops code is checked here even without JAX or TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

# Keras fixes its backend at import: the torch backend needs no TensorFlow or JAX.
# test_this_file_on_jax runs this file again with CUTMIX_TEST_KERAS_BACKEND=jax, where only the
# keras.ops path exists.
BACKEND = os.environ.get("CUTMIX_TEST_KERAS_BACKEND", "torch")
os.environ["KERAS_BACKEND"] = BACKEND
keras = pytest.importorskip("keras")
if keras.config.backend() != BACKEND:  # pragma: no cover - keras imported earlier with another backend
    pytest.skip(f"Keras was imported with the {keras.config.backend()} backend", allow_module_level=True)

import torch  # noqa: E402

from cutmix.keras import CutMix, CutMixOrMixUp, Cutout, MixUp  # noqa: E402
from cutmix.keras.draw import draw_cutmix  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["torch_op", "keras_ops"] if BACKEND == "torch" else ["keras_ops"]
DTYPES = ["uint8", "int32", "float32"]


def to_np(x) -> np.ndarray:
    # Tensor.numpy(), not keras.ops.convert_to_numpy: the latter warns under NumPy 2 on this torch.
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def on_path(layer, path: str):
    layer._prefer_torch_op = path == "torch_op"
    return layer


def index_images(batch: int, channels: int, height: int, width: int, dtype: str, data_format: str, offset=0):
    """Every pixel of sample b holds b + offset."""
    values = (np.arange(batch) + offset).astype(dtype).reshape(batch, 1, 1, 1)
    shape = (
        (batch, channels, height, width)
        if data_format == "channels_first"
        else (batch, height, width, channels)
    )
    return np.ascontiguousarray(np.broadcast_to(values, shape))


def source_map(out, data_format: str) -> np.ndarray:
    """(B, H, W) int: the value each output pixel carries, checked to be the same in every channel."""
    values = to_np(out).astype(np.float64)
    values = values if data_format == "channels_first" else values.transpose(0, 3, 1, 2)
    assert (values == values[:, :1]).all(), "channels of one pixel came from different samples"
    return np.rint(values[:, 0]).astype(np.int64)


def rectangle_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The half-open rectangle that ``mask`` is exactly, None if empty; fails if it is no rectangle."""
    if not mask.any():
        return None
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    assert mask[y0:y1, x0:x1].all() and mask.sum() == (y1 - y0) * (x1 - x0), "pasted region is not a box"
    return int(y0), int(y1), int(x0), int(x1)


shapes = st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 11), st.integers(1, 11))  # B, C, H, W


@pytest.mark.parametrize("path", PATHS)
# Fewer on JAX, whose eager ops compile for each new shape (the same code as keras_ops here).
@settings(max_examples=40 if BACKEND == "torch" else 12, deadline=None)
@given(
    shape=shapes,
    dtype=st.sampled_from(DTYPES),
    data_format=st.sampled_from(["channels_first", "channels_last"]),
    partner=st.sampled_from(["permute", "roll", "flip", "batch"]),
    box=st.sampled_from(["center", "inside"]),
    alpha=st.sampled_from([0.25, 1.0, 4.0]),
    p=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**20),
)
def test_cutmix_read_back_from_pixels(path, shape, dtype, data_format, partner, box, alpha, p, seed):
    batch, channels, height, width = shape
    num_classes = 2 * batch  # sample b has class b, its explicit partner class batch + b
    images = index_images(batch, channels, height, width, dtype, data_format)
    labels = np.arange(batch)
    extra = {}
    if partner == "batch":
        extra = {"images2": index_images(batch, channels, height, width, dtype, data_format, offset=batch),
                 "labels2": labels + batch}  # fmt: skip
    layer = on_path(CutMix(alpha=alpha, p=p, num_classes=num_classes, box=box, data_format=data_format, seed=seed,
                           partner="permute" if partner == "batch" else partner), path)  # fmt: skip
    before = images.copy()
    out = layer({"images": images, "labels": labels, **extra})

    assert set(out) == {"images", "labels"}
    mixed, targets = out["images"], to_np(out["labels"])
    assert (images == before).all(), "input modified in place"
    assert keras.backend.standardize_dtype(mixed.dtype) == dtype and tuple(mixed.shape) == images.shape
    assert targets.dtype == np.float32 and targets.shape == (batch, num_classes)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=0, atol=1e-6)

    sources = source_map(mixed, data_format)
    for i in range(batch):
        other = sources[i] != i
        partner_values = np.unique(sources[i][other])
        assert len(partner_values) <= 1, "pasted pixels come from more than one partner"
        fraction = other.mean()
        # The target carries exactly the share of pixels read back.
        assert targets[i, i] == pytest.approx(1.0 - fraction, abs=1e-6)
        pasted = rectangle_of(other)
        if pasted is None:
            expected = np.eye(num_classes, dtype=np.float32)[i]
            assert (targets[i] == expected).all(), "untouched sample whose label changed"
            continue
        value = int(partner_values[0])
        assert targets[i, value] == pytest.approx(fraction, abs=1e-6)
        if partner == "batch":
            assert value == batch + i
        elif partner == "roll":
            assert value == (i - 1) % batch
        elif partner == "flip":
            assert value == batch - 1 - i
        else:
            assert value != i and 0 <= value < batch
        y0, y1, x0, x1 = pasted
        if box == "inside":  # the whole cut, floor(H·r) × floor(W·r), for one r = √(1−λ)
            r_low = max((y1 - y0) / height, (x1 - x0) / width)
            r_high = min((y1 - y0 + 1) / height, (x1 - x0 + 1) / width)
            assert r_low < r_high + 1e-6, "box sides do not come from one λ"
    if p == 0.0:
        assert (to_np(mixed) == images).all()


@pytest.mark.parametrize("box", ["center", "inside"])
def test_keras_ops_box_is_the_papers_box(box):
    """The keras.ops draws give the box of cutmix.ops' definition for the drawn λ and position
    (computed here in float32, as that path does)."""
    height, width = 13, 9
    params = draw_cutmix(256, height, width, 0.5, 1.0, "permute", box, keras.random.SeedGenerator(3))
    lam, anchor, boxes = (to_np(params[k]) for k in ("lam", "anchor", "box"))
    applied, weight = to_np(params["applied"]), to_np(params["weight"])
    for i in range(256):
        ratio = np.sqrt(np.float32(1.0) - lam[i])
        cut_h, cut_w = int(np.floor(np.float32(height) * ratio)), int(np.floor(np.float32(width) * ratio))
        cy, cx = (int(v) for v in anchor[i])
        if box == "inside":
            expected = (cy, cy + cut_h, cx, cx + cut_w)
            assert 0 <= cy <= height - cut_h and 0 <= cx <= width - cut_w
        else:
            assert 0 <= cy < height and 0 <= cx < width
            expected = (min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height),
                        min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width))  # fmt: skip
        area = (expected[1] - expected[0]) * (expected[3] - expected[2])
        if applied[i]:
            assert tuple(boxes[i]) == expected
            assert weight[i] == pytest.approx(1 - area / (height * width), abs=1e-7)
        else:
            assert area == 0 or to_np(params["partner"])[i] == i
            assert weight[i] == 1.0 and not boxes[i].any()


@pytest.mark.parametrize("path", PATHS)
def test_lambda_follows_beta_and_tiny_alpha_gives_no_nan(path):
    # Read λ back from MixUp's targets (weight = λ where applied; p = 1 and partner "flip" on an
    # even batch never pairs a sample with itself).
    layer = on_path(MixUp(alpha=0.25, num_classes=64, partner="flip", seed=0), path)
    images, labels = np.zeros((64, 2, 2, 1), np.float32), np.arange(64)
    lam = np.concatenate([to_np(layer(images, labels)[1])[np.arange(64), np.arange(64)] for _ in range(40)])
    assert stats.kstest(lam, stats.beta(0.25, 0.25).cdf).pvalue > 1e-3
    tiny = on_path(CutMix(alpha=1e-3, num_classes=64, seed=1), path)
    targets = to_np(tiny(np.zeros((64, 8, 8, 1), np.float32), labels)[1])
    assert np.isfinite(targets).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("paired", [False, True])
def test_mixup_read_back_from_pixels(path, dtype, paired):
    batch, num_classes = 8, 16
    # Sample b is the constant 20·b + 10 (its partner batch: 20·b + 15), so the blend weight is read
    # back from any pixel.
    images = (20 * np.arange(batch) + 10).astype(dtype).reshape(batch, 1, 1, 1) * np.ones((1, 4, 5, 2), dtype)
    images2 = images + np.asarray(5, dtype) if paired else None
    labels = np.arange(batch)
    layer = on_path(
        MixUp(alpha=1.0, p=0.75, num_classes=num_classes, data_format="channels_last", seed=4), path
    )
    mixed, targets = layer(images, labels, images2, labels + batch if paired else None)
    mixed, targets = to_np(mixed), to_np(targets)
    assert mixed.dtype == images.dtype
    untouched = 0
    for i in range(batch):
        own = targets[i, i]
        pixel = mixed[i].astype(np.float64)
        assert (pixel == pixel.flat[0]).all()
        if own == 1.0:
            untouched += 1
            assert (mixed[i] == images[i]).all(), "a sample with weight 1 changed"
            continue
        partner = (
            batch + i if paired else int(np.argmax(np.where(np.arange(num_classes) == i, -1, targets[i])))
        )
        assert targets[i, partner] == pytest.approx(1 - own, abs=1e-6)
        other = 20 * (partner - batch) + 15 if paired else 20 * partner + 10
        expected = own * (20 * i + 10) + (1 - own) * other
        tolerance = 0.5 if dtype != "float32" else 1e-4  # integers round to nearest
        assert abs(pixel.flat[0] - expected) <= tolerance
    assert untouched < batch


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_cutout_read_back_from_pixels(path, dtype, data_format):
    batch, size = 32, (5, 3)
    images = index_images(batch, 2, 9, 7, dtype, data_format, offset=1)  # never 0, the fill
    layer = on_path(Cutout(size=size, num_classes=batch + 1, label_smoothing=0.1, data_format=data_format,
                           seed=5), path)  # fmt: skip
    labels = np.arange(batch)
    mixed, targets = layer(images, labels)
    sources = source_map(mixed, data_format)
    expected_targets = np.full((batch, batch + 1), 0.1 / (batch + 1), np.float32)
    expected_targets[labels, labels] += 0.9
    np.testing.assert_allclose(to_np(targets), expected_targets, rtol=0, atol=1e-7)
    filled = 0
    for i in range(batch):
        assert set(np.unique(sources[i])) <= {0, i + 1}
        hole = rectangle_of(sources[i] == 0)
        if hole is not None:
            filled += 1
            assert hole[1] - hole[0] <= size[0] and hole[3] - hole[2] <= size[1]
    assert filled == batch  # p = 1 and a hole always overlaps the image


@pytest.mark.parametrize("path", PATHS)
def test_label_smoothing_applied_once_and_untouched_samples_kept(path):
    # p = 0: nothing mixed, only smoothed; a batch of 1 is always paired with itself.
    layer = on_path(CutMix(p=0.0, num_classes=4, label_smoothing=0.2, seed=0), path)
    images = np.random.default_rng(0).random((3, 6, 6, 3)).astype(np.float32)
    mixed, targets = layer(images, np.array([0, 1, 3]))
    assert (to_np(mixed) == images).all()
    np.testing.assert_allclose(to_np(targets)[2], [0.05, 0.05, 0.05, 0.85], rtol=0, atol=1e-7)
    one = on_path(CutMix(num_classes=4, seed=0), path)
    mixed, targets = one(images[:1], np.array([2]))
    assert (to_np(mixed) == images[:1]).all() and (to_np(targets) == [[0, 0, 1, 0]]).all()


@pytest.mark.parametrize("path", PATHS)
def test_probability_labels_are_mixed(path):
    labels = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], np.float32)
    layer = on_path(CutMix(partner="flip", seed=2), path)
    images = np.stack([np.zeros((8, 8, 1)), np.ones((8, 8, 1))]).astype(np.float32)
    mixed, targets = layer(images, labels)
    share = to_np(mixed)[0].mean()  # sample 0 is zeros, its partner ones
    np.testing.assert_allclose(to_np(targets)[0], (1 - share) * labels[0] + share * labels[1], atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_drop_in_call_forms_and_training_false(path):
    layer = on_path(CutMix(num_classes=10, seed=0), path)
    images = np.random.default_rng(1).random((16, 8, 8, 3)).astype(np.float32)
    onehot = np.eye(10, dtype=np.float32)[np.arange(16) % 10]
    out = layer({"images": images, "labels": onehot}, training=True)
    assert set(out) == {"images", "labels"} and tuple(out["labels"].shape) == (16, 10)
    mixed, targets = layer(images, onehot)
    assert tuple(mixed.shape) == images.shape and not np.array_equal(to_np(mixed), images)
    only = layer(images)
    assert tuple(only.shape) == images.shape
    kept = {"images": keras.ops.convert_to_tensor(images), "labels": keras.ops.convert_to_tensor(onehot)}
    same = layer(kept, training=False)
    assert same["images"] is kept["images"] and same["labels"] is kept["labels"]
    x, y = layer(kept["images"], kept["labels"], training=False)
    assert x is kept["images"] and y is kept["labels"]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras' predict
@pytest.mark.parametrize("path", PATHS)
def test_inside_a_functional_model(path):
    images_in, labels_in = keras.Input((8, 8, 3)), keras.Input((), dtype="int32")
    layer = on_path(CutMix(num_classes=5, seed=0), path)
    mixed, targets = layer(images_in, labels_in)
    assert tuple(targets.shape) == (None, 5) and targets.dtype == "float32"
    model = keras.Model([images_in, labels_in], [mixed, targets])
    images = index_images(6, 3, 8, 8, "float32", "channels_last")
    labels = np.arange(6) % 5
    mixed, targets = model([images, labels], training=True)
    assert not np.array_equal(to_np(mixed), images)
    np.testing.assert_allclose(to_np(targets).sum(1), 1.0, atol=1e-6)
    mixed, targets = model([images, labels], training=False)  # passes through
    assert np.array_equal(to_np(mixed), images) and np.array_equal(to_np(targets), labels)
    assert np.array_equal(model.predict([images, labels], verbose=0)[0], images)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("make", [lambda s: CutMix(seed=s), lambda s: MixUp(seed=s), lambda s: Cutout(size=3, seed=s),
                                  lambda s: CutMixOrMixUp(CutMix(seed=s), MixUp(seed=s + 1), seed=s)])  # fmt: skip
def test_same_seed_same_output_other_seed_other_output(path, make):
    images = np.random.default_rng(2).random((16, 8, 8, 3)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[np.arange(16) % 4]

    def run(seed: int) -> list[np.ndarray]:
        layer = on_path(make(seed), path)
        return [to_np(layer(images, labels)[0]) for _ in range(3)]

    first, again, other = run(7), run(7), run(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1]), "each batch must get new draws"


def test_seed_none_follows_keras_set_random_seed():
    images = np.random.default_rng(3).random((8, 8, 8, 3)).astype(np.float32)
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(11)
        runs.append(to_np(CutMix()(images)))
    assert np.array_equal(*runs)


@pytest.mark.parametrize("path", PATHS)
def test_cutmix_or_mixup_switches_per_batch(path):
    layer = on_path(CutMixOrMixUp(CutMix(num_classes=8, seed=0), MixUp(num_classes=8, seed=1), switch_prob=0.5,
                                  seed=2), path)  # fmt: skip
    images = index_images(8, 1, 6, 6, "float32", "channels_last")
    kinds = []
    for _ in range(40):
        mixed = to_np(layer(images, np.arange(8))[0])
        # CutMix only moves pixels, so every value stays a sample index; MixUp blends them.
        kinds.append("cutmix" if np.array_equal(mixed, np.rint(mixed)) else "mixup")
    assert 0.2 < kinds.count("cutmix") / 40 < 0.8


def test_config_round_trip():
    layer = CutMixOrMixUp(CutMix(alpha=0.25, p=0.5, num_classes=10, label_smoothing=0.1, partner="roll",
                                 box="inside", data_format="channels_first", seed=1),
                          MixUp(alpha=0.2, num_classes=10, label_smoothing=0.1, data_format="channels_first", seed=2),
                          switch_prob=0.3, seed=3)  # fmt: skip
    clone = CutMixOrMixUp.from_config(layer.get_config())
    assert clone.switch_prob == 0.3 and clone.seed == 3
    assert clone.cutmix.get_config() == {**layer.cutmix.get_config(), "name": clone.cutmix.name}
    assert (clone.cutmix.alpha, clone.cutmix.partner, clone.cutmix.box) == (0.25, "roll", "inside")
    cutout = Cutout.from_config(Cutout(size=(3, 5), fill=0.5, seed=0).get_config())
    assert cutout.size == (3, 5) and cutout.fill == 0.5
    assert CutMix().data_format == keras.config.image_data_format()


# What Keras wrote for these layers when they lived in one module, cutmix/keras.py (commit b89fc42):
# the package must serialize them the same, and load what was saved then.
_POLICY = {
    "class_name": "DTypePolicy",
    "config": {"name": "float32"},
    "module": "keras",
    "registered_name": None,
}
_SAVED_BEFORE = {
    "class_name": "CutMixOrMixUp",
    "config": {
        "cutmix": {"class_name": "CutMix", "config": {"alpha": 1.0, "bounding_box_format": "xyxy", "box": "inside",
                   "data_format": "channels_last", "dtype": _POLICY, "label_smoothing": 0.0, "min_visibility": 0.25,
                   "name": "cut_mix", "num_classes": 3, "p": 1.0, "partner": "permute", "seed": 1,
                   "trainable": True}, "module": "cutmix.keras", "registered_name": "cutmix>CutMix"},
        "dtype": _POLICY,
        "mixup": {"class_name": "MixUp", "config": {"alpha": 1.0, "bounding_box_format": "xyxy",
                  "data_format": "channels_last", "dtype": _POLICY, "label_smoothing": 0.0, "name": "mix_up",
                  "num_classes": 3, "p": 1.0, "partner": "permute", "seed": 2, "trainable": True},
                  "module": "cutmix.keras", "registered_name": "cutmix>MixUp"},
        "name": "cut_mix_or_mix_up", "seed": 4, "switch_prob": 0.3, "trainable": True,
    },
    "module": "cutmix.keras",
    "registered_name": "cutmix>CutMixOrMixUp",
}  # fmt: skip


def test_layers_serialize_and_load_as_before_the_package():
    for layer in (CutMix, MixUp, Cutout, CutMixOrMixUp):
        assert keras.saving.get_registered_name(layer) == f"cutmix>{layer.__name__}"
        assert layer.__module__ == "cutmix.keras"
    layer = CutMixOrMixUp(CutMix(num_classes=3, seed=1, box="inside", name="cut_mix"),
                          MixUp(num_classes=3, seed=2, name="mix_up"), switch_prob=0.3, seed=4,
                          name="cut_mix_or_mix_up")  # fmt: skip
    assert keras.saving.serialize_keras_object(layer) == _SAVED_BEFORE
    loaded = keras.saving.deserialize_keras_object(_SAVED_BEFORE)
    assert type(loaded) is CutMixOrMixUp and type(loaded.cutmix) is CutMix and loaded.cutmix.box == "inside"
    assert (loaded.switch_prob, loaded.seed, loaded.mixup.seed) == (0.3, 4, 2)


def test_a_saved_model_with_a_layer_loads(tmp_path):
    images_in = keras.Input((6, 6, 3))
    mixed = Cutout(size=2, num_classes=3, seed=0)(images_in)
    model = keras.Model(images_in, keras.layers.GlobalAveragePooling2D()(mixed))
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    layer = next(layer for layer in loaded.layers if isinstance(layer, Cutout))
    assert layer.size == (2, 2) and layer.num_classes == 3 and layer.seed == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CutMix(alpha=0), "alpha: expected a finite number > 0, got 0"),
        (lambda: CutMix(p=1.5), r"p: expected a probability in \[0, 1\], got 1.5"),
        (lambda: CutMix(num_classes=0), "num_classes: expected an int >= 1 or None, got 0"),
        (lambda: CutMix(label_smoothing=1.0), r"label_smoothing: expected a number in \[0, 1\), got 1.0"),
        (lambda: CutMix(partner="shift"), "partner: expected one of 'permute', 'roll', 'flip', got 'shift'"),
        (lambda: CutMix(box="corner"), "box: expected one of 'center', 'inside', got 'corner'"),
        (
            lambda: CutMix(data_format="nhwc"),
            "data_format: expected one of 'channels_first', 'channels_last', got 'nhwc'",
        ),
        (lambda: CutMix(seed=-1), "seed: expected an int >= 0 or None, got -1"),
        (lambda: Cutout(size=-2), r"size: expected an int >= 0 or a pair \(h, w\) of them, got -2"),
        (lambda: Cutout(fill=float("nan")), "fill: expected a finite number, got nan"),
        (lambda: CutMixOrMixUp(CutMix(), CutMix()), "mixup: expected a cutmix.keras.MixUp, got CutMix"),
        (
            lambda: CutMixOrMixUp(CutMix(num_classes=3), MixUp()),
            "mixup: expected num_classes 3 like cutmix, got None",
        ),
        (
            lambda: CutMixOrMixUp(CutMix(), MixUp(), switch_prob=2),
            r"switch_prob: expected a probability in \[0, 1\], got 2",
        ),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda m: m(np.zeros((8, 8, 3), np.float32)),
            r"images: expected a 4-D tensor \(B, H, W, C\), got shape \(8, 8, 3\)",
        ),
        (
            lambda m: m({"pixels": np.zeros((2, 4, 4, 3), np.float32)}),
            "data: expected the keys images, labels, images2, labels2, got also pixels",
        ),
        (
            lambda m: m(
                np.zeros((2, 4, 4, 3), np.float32), np.zeros(2, np.int64), np.zeros((2, 4, 4, 3), np.float32)
            ),
            "images2, labels2: expected both or neither, got only one",
        ),
        (
            lambda m: m(
                np.zeros((2, 4, 4, 3), np.float32),
                np.zeros(2, np.int64),
                np.zeros((2, 5, 4, 3), np.float32),
                np.zeros(2, np.int64),
            ),
            "images2: expected the shape and dtype of images",
        ),
    ],
)
def test_bad_inputs(path, call, match):
    with pytest.raises(ValueError, match=match):
        call(on_path(CutMix(num_classes=3, seed=0), path))


def test_bad_labels_on_the_keras_ops_path():
    layer = on_path(CutMix(seed=0), "keras_ops")
    images = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="num_classes: expected an int when labels are class ids, got None"):
        layer(images, np.array([0, 1]))
    with pytest.raises(
        ValueError,
        match=r"labels: expected int class ids of shape \(B,\) or \(B, 1\), or float probabilities",
    ):
        layer(images, np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match=r"labels: expected \(B, 5\) probabilities, got \(2, 3\)"):
        on_path(CutMix(num_classes=5), "keras_ops")(images, np.zeros((2, 3), np.float32))


# The example moved from the README to docs/keras.md; the name keeps "readme" for _ON_JAX's filter.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras
def test_readme_keras_example_runs():
    text = (ROOT / "docs" / "keras.md").read_text(encoding="utf-8")
    blocks = [
        b
        for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
        if b.startswith("# cutmix.keras example")
    ]
    assert len(blocks) == 1, "docs/keras.md's Keras example is missing"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/keras.md", "exec"), namespace)  # noqa: S102
    assert tuple(namespace["targets"].shape) == (32, 10) and set(namespace["out"]) == {"images", "labels"}
    images, labels = namespace["images"], namespace["labels"]
    mixed, targets = namespace["augment"]([images, labels], training=False)
    assert np.array_equal(to_np(mixed), images) and np.array_equal(to_np(targets), labels)
    mixed, targets = namespace["augment"]([images, labels], training=True)
    assert not np.array_equal(to_np(mixed), images)
    assert float(to_np(targets).min()) > 0  # smoothed


# ----------------------------------------------------------------------------------------------
# Other backends, each in its own process (Keras fixes the backend at import)
# ----------------------------------------------------------------------------------------------

_BACKEND_CHECK = """
import os, sys
import numpy as np
import keras
from keras import ops
from cutmix.keras import CutMix, CutMixOrMixUp, Cutout, MixUp

assert keras.config.backend() == os.environ["KERAS_BACKEND"]
B, H, W = 8, 12, 10
images = np.broadcast_to(np.arange(B, dtype=np.uint8)[:, None, None, None], (B, H, W, 3)).copy()
labels = np.arange(B)


def check(mixed, targets):
    mixed, targets = np.asarray(ops.convert_to_numpy(mixed)), np.asarray(ops.convert_to_numpy(targets))
    assert mixed.dtype == np.uint8, mixed.dtype
    for i in range(B):
        other = mixed[i, :, :, 0] != i
        assert abs(targets[i, i] - (1 - other.mean())) < 1e-6, (targets[i], other.mean())
        if not other.any():
            assert targets[i, i] == 1.0
    return mixed


# 1. eager and inside a model
layer = CutMix(num_classes=B, seed=0)
first = check(*layer(images, labels))
assert not np.array_equal(first, check(*layer(images, labels))), "draws frozen between calls"
images_in, labels_in = keras.Input((H, W, 3), dtype="uint8"), keras.Input((), dtype="int32")
model = keras.Model([images_in, labels_in], layer(images_in, labels_in))
check(*model([images, labels], training=True))
for make in (lambda: MixUp(num_classes=B, seed=1), lambda: Cutout(size=4, num_classes=B, seed=2),
             lambda: CutMixOrMixUp(CutMix(num_classes=B, seed=3), MixUp(num_classes=B, seed=4), seed=5)):
    out = make()({"images": images, "labels": labels})
    assert ops.convert_to_numpy(out["labels"]).shape == (B, B)

if keras.config.backend() == "jax":
    # 2. under jax.jit, through stateless_call: the seed state goes in and comes out.
    import jax

    layer = CutMix(num_classes=B, seed=0)
    state = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def step(state, images, labels):
        (mixed, targets), state = layer.stateless_call([], state, images, labels)
        return mixed, targets, state

    outs = []
    for _ in range(3):
        mixed, targets, state = step(state, images, labels)
        outs.append(check(mixed, targets))
    assert not np.array_equal(outs[0], outs[1]), "draws frozen at trace time"

if keras.config.backend() == "tensorflow":
    # 3. in tf.data.Dataset.map on batches: drawn when the graph runs, not when it is traced.
    import tensorflow as tf

    layer = CutMix(num_classes=B, seed=0)
    data = tf.data.Dataset.from_tensor_slices((np.tile(images, (4, 1, 1, 1)), np.tile(labels, 4)))
    data = data.batch(B).map(lambda x, y: layer(x, y))
    batches = [check(x.numpy(), y.numpy()) for x, y in data] + [check(x.numpy(), y.numpy()) for x, y in data]
    assert len({b.tobytes() for b in batches}) == len(batches), "draws frozen at trace time"
    data = tf.data.Dataset.from_tensor_slices({"images": images, "labels": labels}).batch(4)
    for batch in data.map(CutMix(num_classes=B, seed=1)):
        assert set(batch) == {"images", "labels"}
# 4. masks and boxes through the keras.ops path: the mask changes exactly where the image does, and
# a box covering the whole image keeps what is left of it (own) or what was pasted (partner).
layer = CutMix(num_classes=B, seed=6)
masks = images[..., :1].copy()
whole = np.tile(np.array([[[0.0, 0.0, W, H]]], "float32"), (B, 1, 1))
boxes = {"boxes": whole, "labels": np.arange(B, dtype="int32")[:, None]}
for _ in range(3):
    out = layer({"images": images, "labels": labels, "segmentation_masks": masks, "bounding_boxes": boxes})
    mixed = np.asarray(ops.convert_to_numpy(out["images"]))
    mixed_masks = np.asarray(ops.convert_to_numpy(out["segmentation_masks"]))
    assert mixed_masks.shape == masks.shape and mixed_masks.dtype == np.uint8
    assert np.array_equal(mixed_masks[..., 0], mixed[..., 0])
    kept = np.asarray(ops.convert_to_numpy(out["bounding_boxes"]["labels"]))
    assert kept.shape == (B, 2)
    for i in range(B):
        pasted = (mixed[i, :, :, 0] != i).mean()
        expect = {i} if pasted < 0.25 else ({int(mixed[i][mixed[i, :, :, 0] != i][0, 0])} if pasted > 0.75 else None)
        if expect is not None and pasted not in (0.0, 1.0):
            assert set(kept[i][kept[i] >= 0].tolist()) >= expect, (i, pasted, kept[i])
print("BACKEND OK", keras.config.backend())
"""


# JAX (CPU) is pinned in the test extra (pyproject.toml), so CI always has it; TensorFlow is optional.
_REQUIRED_IN_CI = {"jax"}


def needs_backend(module: str) -> None:
    """Skips where ``module`` is not installed, except a backend the test extra installs when CI=true:
    missing there, the run fails instead of passing on a skip."""
    if importlib.util.find_spec(module) is not None:
        return
    if module in _REQUIRED_IN_CI and os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(
            f'{module}: expected it installed (CI=true, and the test extra pins it: pip install -e ".[test]"), '
            "got none",
            pytrace=False,
        )
    pytest.skip(f"{module} is not installed")


@pytest.mark.skipif(BACKEND != "torch", reason="started from the torch run")
@pytest.mark.parametrize("ci, outcome", [("true", "1 failed"), ("", "1 skipped")])
def test_missing_backend_fails_only_in_ci(ci, outcome):
    # test_other_backend[jax-jax] in a pytest of its own, where jax cannot be imported.
    code = ("import sys; sys.modules['jax'] = None  # as if not installed\n"
            "import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', sys.argv[1]]))")  # fmt: skip
    target = f"{Path(__file__).resolve()}::test_other_backend[jax-jax]"
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code, target], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    summary = run.stdout.strip().splitlines()[-1]
    assert outcome in summary, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == (1 if ci else 0)
    if ci:
        assert (
            'jax: expected it installed (CI=true, and the test extra pins it: pip install -e ".[test]")'
            in run.stdout
        )


@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("tensorflow", "tensorflow")])
def test_other_backend(backend, module):
    needs_backend(module)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_BACKEND_CHECK)], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"BACKEND OK {backend}" in run.stdout


# Each Keras test file again on JAX, where only the keras.ops path exists (and the tests that pick
# a path run it alone). Left out: what is not about the layers on a backend (the other-backend
# subprocesses, the example's training run and model, the README's torch-backend snippet, the
# import messages) and this test itself.
_ON_JAX = {
    "test_keras.py": "not other_backend and not example and not readme and not on_jax and not missing_backend",
    "test_keras_dense.py": "",
    "test_keras_defects.py": "not import_without",
    "test_semantics.py": "",  # the torch op against keras.ops on JAX, every semantic case
}


@pytest.mark.skipif(BACKEND != "torch", reason="started from the torch run")
@pytest.mark.parametrize("name", sorted(_ON_JAX))
def test_file_on_jax(name):
    needs_backend("jax")
    env = {**os.environ, "CUTMIX_TEST_KERAS_BACKEND": "jax", "KERAS_BACKEND": "jax",
           "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    here = Path(__file__).resolve().parent
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / name)]
    if _ON_JAX[name]:
        command += ["-k", _ON_JAX[name]]
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), summary
    assert not re.search(r"skipped|failed|error", summary), summary  # every test ran, on JAX


# ----------------------------------------------------------------------------------------------
# The example
# ----------------------------------------------------------------------------------------------


def test_example_model_is_the_keras_examples_resnet20():
    spec = importlib.util.spec_from_file_location(
        "keras_cutmix_example", ROOT / "examples" / "keras_cutmix.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = example.resnet_v1((32, 32, 3), 20, 10)
    assert model.count_params() == 274_442  # the example's count_params(), as cutmix.models
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]) == 21
    with pytest.raises(ValueError, match="depth: expected 6n"):
        example.resnet_v1((32, 32, 3), 21)


def test_example_runs_one_short_epoch(tmp_path):
    out = tmp_path / "result.json"
    # One thread: on a loaded machine, torch's threads fighting for busy cores make a step 10x slower.
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "keras_cutmix.py"), "--data", "synthetic:256", "--epochs", "1",
         "--limit", "64", "--out", str(out), "--depth", "8"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    for arm in ("none", "cutmix"):
        assert 0.0 <= result["test_accuracy"][arm] <= 1.0
    assert result["epochs"] == 1 and result["train_images"] == 64 and result["backend"] == "torch"
    assert math.isfinite(result["final_loss"]["cutmix"])
