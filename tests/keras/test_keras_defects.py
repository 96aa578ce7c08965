"""cutmix.keras inputs that users have (issue 17): class ids as ``keras.datasets`` gives them, unsigned
box labels, int8 masks with Cutout, settings changed after construction, the same refusals on both
implementations, and ``import cutmix.keras`` where Keras' default backend cannot load.

Torch backend, both implementations; tests/keras/test_keras.py runs this file again on JAX (keras.ops only).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BACKEND = os.environ.get("CUTMIX_TEST_KERAS_BACKEND", "torch")
os.environ["KERAS_BACKEND"] = BACKEND
keras = pytest.importorskip("keras")
if keras.config.backend() != BACKEND:  # pragma: no cover - keras imported earlier with another backend
    pytest.skip(f"Keras was imported with the {keras.config.backend()} backend", allow_module_level=True)

import cutmix  # noqa: E402
from cutmix.keras import CutMix, CutMixOrMixUp, Cutout, MixUp  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PATHS = ["torch_op", "keras_ops"] if BACKEND == "torch" else ["keras_ops"]
# What box labels come back as: int64, except on JAX without x64, whose widest integer is int32.
if BACKEND == "jax":
    import jax

    BOX_LABEL_DTYPE = np.int64 if jax.config.read("jax_enable_x64") else np.int32
else:
    BOX_LABEL_DTYPE = np.int64


def to_np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


def on_path(layer, path: str):
    layer._prefer_torch_op = path == "torch_op"
    return layer


def core_message(error: BaseException) -> str:
    """The message without the frame Keras' own __call__ puts around it (keras.ops path)."""
    text = re.sub(r"\x1b\[\d*m", "", str(error))
    text = re.sub(r"^Exception encountered when calling \w+\.call\(\)\.\s*", "", text)
    return text.split("\n\nArguments received")[0].strip()


# ----------------------------------------------------------------------------------------------
# Item 1: class ids of any integer dtype, (B,) or (B, 1)
# ----------------------------------------------------------------------------------------------

# uint64: Keras converts no uint64 array on the torch backend ("Unsupported dtype for PyTorch").
INT_DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64"]
MAKERS = {
    "cutmix": lambda: CutMix(alpha=1.0, num_classes=10, label_smoothing=0.1, seed=3),
    "mixup": lambda: MixUp(alpha=1.0, num_classes=10, label_smoothing=0.1, seed=3),
    "cutout": lambda: Cutout(size=4, num_classes=10, label_smoothing=0.1, seed=3),
    "cutmix_or_mixup": lambda: CutMixOrMixUp(
        CutMix(num_classes=10, label_smoothing=0.1, seed=3),
        MixUp(num_classes=10, label_smoothing=0.1, seed=4),
        seed=5,
    ),
}
IDS = np.array([0, 9, 3, 3, 7, 1, 0, 5])  # fit every integer dtype


def uint8_images(batch: int = 8, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("column", [False, True], ids=["(B,)", "(B, 1)"])
def test_class_ids_of_any_integer_dtype_and_shape_match_int64(path, kind, dtype, column):
    images = uint8_images()
    labels = IDS.astype(dtype)[:, None] if column else IDS.astype(dtype)
    before = labels.copy()
    mixed, targets = on_path(MAKERS[kind](), path)(images, labels)
    want_mixed, want_targets = on_path(MAKERS[kind](), path)(images, IDS.astype(np.int64))
    assert np.array_equal(to_np(mixed), to_np(want_mixed))
    assert np.array_equal(to_np(targets), to_np(want_targets))
    assert np.array_equal(labels, before), "labels modified in place"
    targets = to_np(targets)
    assert targets.shape == (8, 10) and targets.dtype == np.float32
    if kind == "cutout":  # Cutout only smooths: ε = 0.1 over 10 classes, computed here
        expected = np.full((8, 10), 0.01, np.float32)
        expected[np.arange(8), IDS] += 0.9
        np.testing.assert_allclose(targets, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_keras_datasets_labels_in_the_dict_form_with_masks(path):
    # keras.datasets.cifar10.load_data() gives (N, 1) uint8 labels.
    images = uint8_images()
    masks = np.random.default_rng(1).integers(0, 5, (8, 8, 8, 1)).astype(np.uint8)
    labels = IDS.astype(np.uint8)[:, None]
    out = on_path(CutMix(num_classes=10, seed=1), path)(
        {"images": images, "labels": labels, "segmentation_masks": masks}
    )
    want = on_path(CutMix(num_classes=10, seed=1), path)(
        {"images": images, "labels": IDS, "segmentation_masks": masks}
    )
    for key in ("images", "labels", "segmentation_masks"):
        assert np.array_equal(to_np(out[key]), to_np(want[key])), key


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside Keras
@pytest.mark.parametrize("path", PATHS)
def test_column_of_uint8_ids_in_a_functional_model(path):
    images_in, labels_in = keras.Input((8, 8, 3), dtype="uint8"), keras.Input((1,), dtype="uint8")
    mixed, targets = on_path(CutMix(num_classes=10, seed=2), path)(images_in, labels_in)
    assert tuple(targets.shape) == (None, 10)
    model = keras.Model([images_in, labels_in], [mixed, targets])
    _, targets = model([uint8_images(), IDS.astype(np.uint8)[:, None]], training=True)
    targets = to_np(targets)
    assert targets.shape == (8, 10)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=0, atol=1e-6)
    # Each sample keeps at least half of its own class or gives it to a partner: the own class is set.
    assert (targets[np.arange(8), IDS] > 0).all()


# ----------------------------------------------------------------------------------------------
# Item 3: unsigned box labels are class ids; labels come back int64 with -1 padding
# ----------------------------------------------------------------------------------------------

BOXES = np.array([[[0, 0, 4, 4], [2, 2, 8, 8]], [[1, 1, 6, 7], [0, 0, 8, 8]]], np.float32)
BOX_IDS = np.array([[1, 2], [255, 0]])  # 255: a class, not padding


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int32", "int64"])
def test_unsigned_box_labels_are_class_ids_and_come_back_int64(path, dtype):
    images = uint8_images(2)
    # Cutout with p = 0: nothing is cut, so every box comes back as it went in.
    out = on_path(Cutout(size=3, p=0.0, seed=0), path)(
        {"images": images, "bounding_boxes": {"boxes": BOXES, "labels": BOX_IDS.astype(dtype)}}
    )
    labels = to_np(out["bounding_boxes"]["labels"])
    assert labels.dtype == BOX_LABEL_DTYPE
    assert np.array_equal(labels, BOX_IDS) and np.array_equal(to_np(out["bounding_boxes"]["boxes"]), BOXES)

    # CutMix: twice as many slots, the dropped ones padded with -1 (never 255), the same result as
    # the same ids in int64.
    data = {"images": images, "bounding_boxes": {"boxes": BOXES, "labels": BOX_IDS.astype(dtype)}}
    out = on_path(CutMix(seed=4), path)(data)
    want = on_path(CutMix(seed=4), path)({**data, "bounding_boxes": {"boxes": BOXES, "labels": BOX_IDS}})
    labels = to_np(out["bounding_boxes"]["labels"])
    assert labels.dtype == BOX_LABEL_DTYPE and labels.shape == (2, 4)
    assert np.array_equal(labels, to_np(want["bounding_boxes"]["labels"]))
    assert np.array_equal(to_np(out["bounding_boxes"]["boxes"]), to_np(want["bounding_boxes"]["boxes"]))
    assert set(labels.ravel()) <= {-1, 0, 1, 2, 255}
    assert (labels[0] == 1).any() or (labels[0] == 2).any() or (labels[0] == 255).any()


# ----------------------------------------------------------------------------------------------
# Item 4: the two implementations refuse alike
# ----------------------------------------------------------------------------------------------

FLOAT_IMAGES = np.random.default_rng(2).random((2, 6, 6, 3)).astype(np.float32)
GOOD_BOXES = np.array([[[0, 0, 4, 4]], [[1, 1, 6, 6]]], np.float32)
GOOD_LABELS = np.array([[0], [1]], np.int32)


def _boxes(boxes=GOOD_BOXES, labels=GOOD_LABELS):
    return {"images": FLOAT_IMAGES, "bounding_boxes": {"boxes": boxes, "labels": labels}}


REFUSALS = {
    "int8 masks, default mask_fill 255": (
        lambda: Cutout(seed=0),
        lambda m: m({"images": FLOAT_IMAGES, "segmentation_masks": np.zeros((2, 6, 6, 1), np.int8)}),
        "mask_fill: expected a value representable in the segmentation_masks' int8 ([-128, 127]), got 255",
    ),
    "uint8 masks, mask_fill -1": (
        lambda: Cutout(seed=0, mask_fill=-1),
        lambda m: m({"images": FLOAT_IMAGES, "segmentation_masks": np.zeros((2, 6, 6), np.uint8)}),
        "mask_fill: expected a value representable in the segmentation_masks' uint8 ([0, 255]), got -1",
    ),
    "fill outside uint8 images": (
        lambda: Cutout(fill=300, num_classes=3, seed=0),
        lambda m: m(np.zeros((2, 6, 6, 3), np.uint8), np.array([0, 1])),
        "fill: expected a value representable in the images' uint8 ([0, 255]), got 300.0",
    ),
    "float ids": (
        lambda: CutMix(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.array([0.0, 1.0], np.float32)),
        "labels: expected int class ids of shape (B,) or (B, 1), got dtype float32",
    ),
    "bool ids": (
        lambda: CutMix(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.array([True, False])),
        "labels: expected int class ids of shape (B,) or (B, 1), got dtype bool",
    ),
    "integer (B, K)": (
        lambda: CutMix(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.zeros((2, 3), np.int32)),
        "labels: expected int class ids of shape (B,) or (B, 1), or float probabilities of shape (B, K), got dtype int32 of shape (2, 3)",
    ),
    "ids out of range": (
        lambda: MixUp(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.array([[0], [5]], np.uint8)),
        "labels: expected class ids in [0, 3), got values in [0, 5]",
    ),
    "negative ids": (
        lambda: CutMix(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.array([0, -1], np.int16)),
        "labels: expected class ids in [0, 3), got values in [-1, 0]",
    ),
    "more labels than images": (
        lambda: CutMix(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.array([0, 1, 2])),
        "labels: expected 2 labels to match images' batch size, got shape (3,)",
    ),
    "fewer labels2 than images2": (
        lambda: CutMix(num_classes=3, seed=0),
        lambda m: m(FLOAT_IMAGES, np.array([0, 1]), FLOAT_IMAGES, np.array([0])),
        "labels2: expected 2 labels to match images2' batch size, got shape (1,)",
    ),
    "empty batch": (
        lambda: Cutout(num_classes=3, seed=0),
        lambda m: m(np.zeros((0, 6, 6, 3), np.float32), np.zeros(0, np.int64)),
        "images: expected a batch of at least 1 image, got an empty batch",
    ),
    "box outside the image": (
        lambda: CutMix(seed=0),
        lambda m: m(_boxes(np.array([[[0, 0, 9, 4]], [[1, 1, 6, 6]]], np.float32))),
        "bounding_boxes['boxes']: expected xyxy pixel boxes with 0 <= x1 <= x2 <= 6 and 0 <= y1 <= y2 <= 6, got [0.0, 0.0, 9.0, 4.0] (outside the 6x6 image) for image 0, box 0",
    ),
    "NaN box": (
        lambda: MixUp(seed=0),
        lambda m: m(_boxes(GOOD_BOXES * np.nan)),
        "bounding_boxes['boxes']: expected xyxy pixel boxes with 0 <= x1 <= x2 <= 6 and 0 <= y1 <= y2 <= 6, got [nan, nan, nan, nan] (not finite) for image 0, box 0",
    ),
    "box label below -1": (
        lambda: Cutout(seed=0),
        lambda m: m(_boxes(labels=GOOD_LABELS - 3)),
        "bounding_boxes['labels']: expected class ids >= 0, or -1 for padding, got -3",
    ),
    "uint8 box label for a box outside": (
        lambda: CutMix(seed=0),
        lambda m: m(
            _boxes(np.array([[[0, 0, 4, 4]], [[0, 0, 0, 0]]], np.float32) - 1, GOOD_LABELS.astype(np.uint8))
        ),
        "bounding_boxes['boxes']: expected xyxy pixel boxes with 0 <= x1 <= x2 <= 6 and 0 <= y1 <= y2 <= 6, got [-1.0, -1.0, 3.0, 3.0] (outside the 6x6 image) for image 0, box 0",
    ),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_both_implementations_refuse_alike(path, case):
    make, call, message = REFUSALS[case]
    with pytest.raises(ValueError) as caught:
        call(on_path(make(), path))
    assert core_message(caught.value) == message


@pytest.mark.parametrize("path", PATHS)
def test_int8_masks_with_a_mask_fill_they_hold(path):
    images = np.random.default_rng(3).random((4, 8, 8, 3)).astype(np.float32) + 1.0  # fill 0 marks the hole
    masks = np.random.default_rng(4).integers(0, 100, (4, 8, 8, 1)).astype(np.int8)
    out = on_path(Cutout(size=4, mask_fill=-1, seed=0), path)({"images": images, "segmentation_masks": masks})
    hole = to_np(out["images"])[..., :1] == 0
    assert hole.any()
    got = to_np(out["segmentation_masks"])
    assert got.dtype == np.int8 and np.array_equal(got, np.where(hole, np.int8(-1), masks))


# ----------------------------------------------------------------------------------------------
# Settings changed after construction: checked, and in effect on the next call on both paths
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_settings_set_later_are_checked_and_take_effect(path):
    images = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None, None], (8, 6, 6, 3)).copy()
    layer = on_path(CutMix(num_classes=8, seed=0), path)
    assert not np.array_equal(to_np(layer(images, np.arange(8))[0]), images)
    layer.p = 0.0
    mixed, targets = layer(images, np.arange(8))
    assert np.array_equal(to_np(mixed), images) and np.array_equal(
        to_np(targets), np.eye(8, dtype=np.float32)
    )
    with pytest.raises(ValueError, match=re.escape("p: expected a probability in [0, 1], got 5.0")):
        layer.p = 5.0
    assert layer.p == 0.0
    cutout = on_path(Cutout(size=2, seed=0), path)
    cutout(images)
    cutout.size = 6  # the whole 6x6 image, whatever the centre
    assert (to_np(cutout(images)) == 0).sum() >= 8 * 3 * 3 * 3
    with pytest.raises(ValueError, match="fill: expected a finite number, got nan"):
        cutout.fill = float("nan")
    both = CutMixOrMixUp(CutMix(seed=0), MixUp(seed=1))
    with pytest.raises(ValueError, match=re.escape("switch_prob: expected a probability in [0, 1], got 2")):
        both.switch_prob = 2


# ----------------------------------------------------------------------------------------------
# Item 7: import cutmix.keras where Keras' backend cannot load (subprocesses; backend-independent)
# ----------------------------------------------------------------------------------------------


def _import_in_subprocess(tmp_path: Path, prelude: str = "") -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    # The cutmix under test (this venv's: the clone's src, or an installed copy), and a Keras home
    # of its own, so that no ~/.keras/keras.json chooses the backend.
    env.update(PYTHONPATH=str(Path(cutmix.__file__).resolve().parents[1]), KERAS_HOME=str(tmp_path))
    code = f"{prelude}\nimport cutmix.keras"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(BACKEND != "torch", reason="backend-independent: run once, from the torch run")
def test_import_without_keras_backend_says_what_is_wrong(tmp_path):
    run = _import_in_subprocess(tmp_path)
    if importlib.util.find_spec("tensorflow") is not None:
        assert run.returncode == 0, run.stderr[-3000:]  # Keras' default backend is there
        return
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cutmix.keras: Keras is installed but its backend could not load")
    assert "KERAS_BACKEND is not set" in last and "No module named 'tensorflow'" in last
    assert "set KERAS_BACKEND=torch (or jax) before importing keras, or install TensorFlow" in last
    assert "cutmix[keras]" not in last


@pytest.mark.skipif(BACKEND != "torch", reason="backend-independent: run once, from the torch run")
def test_import_without_keras_gives_install_advice_that_works_from_a_clone(tmp_path):
    run = _import_in_subprocess(tmp_path, "import sys; sys.modules['keras'] = None  # as if not installed")
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cutmix.keras needs Keras 3, which is not installed")
    assert 'pip install -e ".[keras]" from the cutmix clone' in last
