"""Keras 3 layers: per-sample CutMix, MixUp, Cutout and CutMixOrMixUp with the torch ops' semantics.

``pip install -e ".[keras]"`` from the clone, and a Keras backend that loads (``KERAS_BACKEND=torch``
or ``jax``; Keras' default is TensorFlow). The layers are a drop-in for ``keras.layers.CutMix``::

    from cutmix.keras import CutMix

    mix = CutMix(alpha=1.0, num_classes=10, seed=0)
    out = mix({"images": images, "labels": labels})  # {"images": mixed, "labels": targets}
    mixed, targets = mix(images, labels)              # the same, as a pair

They keep the guarantees of :mod:`cutmix.ops`: λ ~ Beta(α, α) per sample, the paper's clipped
centre box, each target weight equal to the share of pixels actually pasted, and a sample whose
box is empty (or that is paired with itself, or not drawn by ``p``) keeps its image and label
exactly. Integer images stay integer (Keras itself casts floating images to the layer's compute
dtype before the call). ``training=False`` returns the inputs unchanged.

Labels are class ids of any integer dtype, (B,) or (B, 1) as ``keras.datasets`` gives them, or float
probabilities (B, K). Both implementations check their inputs with the same code before either runs,
so they refuse alike; values (class ids in range, boxes inside the image) are checked where they can
be read without waiting for an accelerator or tracing (NumPy, CPU torch tensors, concrete CPU JAX
arrays), not in traced graphs or TensorFlow. Box labels come back int64 (int32 on JAX without x64)
with -1 for padding; unsigned box labels are class ids only (they cannot hold the -1).

Two implementations, one semantics:

* on the torch backend, with concrete tensors, the layer calls the torch op of :mod:`cutmix.ops`
  (the fast path: it draws parameters for many batches at once on the CPU), with a
  ``torch.Generator`` seeded once from the layer's ``keras.random.SeedGenerator``;
* everywhere else (JAX, TensorFlow, ``tf.data.Dataset.map`` with the TensorFlow backend,
  ``jax.jit`` through ``stateless_call``) it is written with ``keras.ops`` and ``keras.random``
  only, every draw taken from the layer's ``SeedGenerator`` when the graph runs, never frozen at
  trace time. The box arithmetic is float32 there (JAX has no float64 by default).

Keras chooses its backend once, at import (``KERAS_BACKEND``); this module works with whichever
it is, and with Keras 3 only.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import numpy as np

from cutmix.ops.dense import MASK_FILL, MIN_VISIBILITY, _check_min_visibility, mask_channel_dim
from cutmix.ops.params import (
    BOXES,
    DATA_FORMATS,
    PARTNERS,
    _check_alpha,
    _check_choice,
    _check_cutout_size,
    _check_p,
)

# The project is installed from its clone, not from a package index.
_INSTALL = 'pip install -e ".[keras]" from the cutmix clone (or pip install "keras>=3.8")'


def _import_error_message(error: ImportError) -> str:
    """Why ``import keras`` failed, and what to do: Keras missing, or installed with a backend that
    cannot load (its default is TensorFlow, which this project does not install)."""
    if importlib.util.find_spec("keras") is None:
        return f"cutmix.keras needs Keras 3, which is not installed: {_INSTALL}"
    chosen = os.environ.get("KERAS_BACKEND")
    backend = (
        f"KERAS_BACKEND={chosen}"
        if chosen
        else "KERAS_BACKEND is not set, so Keras loads its default, TensorFlow, unless "
        "~/.keras/keras.json names another"
    )
    return (
        f"cutmix.keras: Keras is installed but its backend could not load ({backend}; {error}): "
        "set KERAS_BACKEND=torch (or jax) before importing keras, or install TensorFlow"
    )


try:
    import keras
    from keras import ops
except ImportError as error:  # depends on the environment: tested in subprocesses
    raise ImportError(_import_error_message(error)) from error

if not keras.__version__.startswith("3."):  # pragma: no cover - depends on the environment
    raise ImportError(f"cutmix.keras needs Keras 3, got Keras {keras.__version__}")

try:  # Keras internals, used only to decide whether the direct call below is safe (see __call__)
    from keras.src.backend.common.global_state import get_global_attribute as _keras_global
    from keras.src.backend.common.stateless_scope import in_stateless_scope as _in_stateless_scope
except ImportError:  # pragma: no cover - another Keras layout: always take Keras' own __call__
    _keras_global = _in_stateless_scope = None

__all__ = ["CutMix", "CutMixOrMixUp", "Cutout", "MixUp"]

_DATA_KEYS = ("images", "labels", "images2", "labels2")
# Keras' own keys for dense targets (keras.layers.CutMix & co.): per-pixel class ids and a
# {"boxes": (B, N, 4), "labels": (B, N)} dict, padded with label -1.
_DENSE_KEYS = ("segmentation_masks", "bounding_boxes")
_BOX_KEYS = ("boxes", "labels")
# Keras' layers take a bounding_box_format; only pixel xyxy is accepted (the torch ops' format,
# and Keras' own default), so a box is never silently read in the wrong format.
_BOX_FORMATS = ("xyxy",)
_SEED_HIGH = 2**31 - 1


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------


def _check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes: expected an int >= 1 or None, got {num_classes!r}")
    return num_classes


def _check_smoothing(label_smoothing: float) -> float:
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, int | float)
        or not 0.0 <= label_smoothing < 1.0
    ):
        raise ValueError(f"label_smoothing: expected a number in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def _check_seed(seed: int | None) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed: expected an int >= 0 or None, got {seed!r}")
    return seed


def _check_data_format(data_format: str | None) -> str:
    # Keras layers default to the global setting (channels_last unless configured otherwise).
    if data_format is None:
        return keras.config.image_data_format()
    return _check_choice("data_format", data_format, DATA_FORMATS)


def _check_fill(fill: float) -> float:
    if isinstance(fill, bool) or not isinstance(fill, int | float) or not math.isfinite(fill):
        raise ValueError(f"fill: expected a finite number, got {fill!r}")
    return float(fill)


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    return _check_cutout_size(tuple(size) if isinstance(size, list) else size)


class _Setting:
    """A layer option, checked by the constructor's own check whenever it is set: ``layer.p = 5``
    is refused as ``CutMix(p=5)`` is, and a new value takes effect on the next call on both paths
    (the keras.ops path reads it on every call; the torch op is rebuilt, see ``_current_torch_op``)."""

    def __init__(self, check: Any) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, f"_setting_{name}"

    def __get__(self, layer: Any, owner: type | None = None) -> Any:
        if layer is None:
            return self
        try:
            return layer.__dict__[self.slot]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, layer: Any, value: Any) -> None:
        layer.__dict__[self.slot] = self.check(value)


def _rank(x: Any) -> int:
    return len(x.shape)


def _check_images(images: Any, data_format: str, name: str = "images") -> None:
    if _rank(images) != 4:
        layout = "(B, C, H, W)" if data_format == "channels_first" else "(B, H, W, C)"
        raise ValueError(f"{name}: expected a 4-D batch {layout}, got shape {tuple(images.shape)}")
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype == "bool" or dtype.startswith("complex"):
        raise ValueError(f"{name}: expected integer or floating-point images, got dtype {dtype}")
    if images.shape[0] == 0:  # as the torch ops refuse it (a batch size unknown until run passes)
        raise ValueError(f"{name}: expected a batch of at least 1 image, got an empty batch")


def _check_pair(images: Any, labels: Any, images2: Any, labels2: Any) -> None:
    if (images2 is None) != (labels2 is None):
        raise ValueError("images2, labels2: expected both or neither, got only one")
    if images2 is not None and labels is None:
        raise ValueError("labels: expected labels with images2 and labels2, got None")
    if images2 is not None and (tuple(images2.shape) != tuple(images.shape) or images2.dtype != images.dtype):
        raise ValueError(
            f"images2: expected the shape and dtype of images {tuple(images.shape)} {images.dtype}, "
            f"got {tuple(images2.shape)} {images2.dtype}"
        )


def _host_values(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array where its values can be read now without waiting for an accelerator:
    NumPy arrays, CPU torch tensors, concrete CPU JAX arrays. None elsewhere (traced graphs, symbolic
    tensors, accelerators), where nothing can be raised on values."""
    if isinstance(x, np.ndarray):
        return x
    backend = keras.config.backend()
    if backend == "torch":
        import torch

        if isinstance(x, torch.Tensor) and x.device.type == "cpu" and not torch.compiler.is_compiling():
            return x.detach().numpy()
    elif backend == "jax":
        import jax

        if (
            isinstance(x, jax.Array)
            and not isinstance(x, jax.core.Tracer)
            and all(device.platform == "cpu" for device in x.devices())
        ):
            return np.asarray(x)
    return None


def _is_ids(dtype: str) -> bool:
    return keras.backend.is_int_dtype(dtype) and dtype != "bool"


def _class_labels(labels: Any, images: Any, num_classes: int | None, name: str = "labels") -> Any:
    """Checks ``labels`` for both implementations alike (same conditions, same messages) and returns
    them as the two take them: class ids of any integer dtype, (B,) or (B, 1) as
    ``keras.datasets`` gives them, become (B,) ids; float (B, K) probabilities are kept."""
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if _is_ids(dtype) and _rank(labels) == 2 and labels.shape[1] == 1:
        labels = ops.reshape(labels, (-1,))
    rank = _rank(labels)
    if rank not in (1, 2):
        raise ValueError(
            f"{name}: expected class ids (B,) or (B, 1), or probabilities (B, K), "
            f"got shape {tuple(labels.shape)}"
        )
    batch = images.shape[0]
    if batch is not None and labels.shape[0] is not None and labels.shape[0] != batch:
        images_name = "images2" if name == "labels2" else "images"
        raise ValueError(
            f"{name}: expected {batch} labels to match {images_name}' batch size, "
            f"got shape {tuple(labels.shape)}"
        )
    if rank == 2:
        if not keras.backend.is_float_dtype(dtype):
            raise ValueError(
                f"{name}: expected int class ids of shape (B,) or (B, 1), or float probabilities of shape "
                f"(B, K), got dtype {dtype} of shape {tuple(labels.shape)}"
            )
        if num_classes is not None and labels.shape[1] is not None and labels.shape[1] != num_classes:
            raise ValueError(f"{name}: expected (B, {num_classes}) probabilities, got {tuple(labels.shape)}")
        return labels
    if not _is_ids(dtype):
        raise ValueError(f"{name}: expected int class ids of shape (B,) or (B, 1), got dtype {dtype}")
    if num_classes is None:
        raise ValueError("num_classes: expected an int when labels are class ids, got None")
    values = _host_values(labels)
    if values is not None and values.size:
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name}: expected class ids in [0, {num_classes}), got values in [{low}, {high}]"
            )
    return labels


def _check_representable(name: str, value: float, dtype: str, of: str) -> None:
    """A fill value that an integer ``dtype`` cannot hold is refused, not wrapped or left to a cast
    that overflows on one backend and not on another."""
    if not keras.backend.is_int_dtype(dtype):
        return
    low, high = _int_range(dtype)
    if not low <= value <= high:
        raise ValueError(
            f"{name}: expected a value representable in {of} {dtype} ([{low}, {high}]), got {value!r}"
        )


# ----------------------------------------------------------------------------------------------
# The keras.ops implementation (every backend; traceable)
# ----------------------------------------------------------------------------------------------


def _to_targets(labels: Any, num_classes: int | None, label_smoothing: float) -> Any:
    """float32 (B, K) targets from int ids (B,) or probabilities (B, K), smoothed as y·(1−ε) + ε/K:
    the one place where smoothing happens, as :func:`cutmix.ops.to_targets`."""
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if _rank(labels) == 1:
        if not keras.backend.is_int_dtype(dtype):
            raise ValueError(f"labels: expected int class ids of shape (B,), got dtype {dtype}")
        if num_classes is None:
            raise ValueError("num_classes: expected an int when labels are class ids, got None")
        # int32 ids whatever their dtype (JAX has no int64 by default; checked < num_classes).
        targets = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    elif _rank(labels) == 2:
        if not keras.backend.is_float_dtype(dtype):
            raise ValueError(f"labels: expected float probabilities of shape (B, K), got dtype {dtype}")
        if num_classes is not None and labels.shape[1] is not None and labels.shape[1] != num_classes:
            raise ValueError(f"labels: expected (B, {num_classes}) probabilities, got {tuple(labels.shape)}")
        targets = ops.cast(labels, "float32")
    else:
        raise ValueError(f"labels: expected shape (B,) or (B, K), got {tuple(labels.shape)}")
    if label_smoothing:
        classes = targets.shape[1] if targets.shape[1] is not None else ops.shape(targets)[1]
        targets = targets * (1.0 - label_smoothing) + label_smoothing / ops.cast(classes, "float32")
    return targets


def _spatial(images: Any, data_format: str) -> tuple[Any, Any, Any]:
    """(B, H, W): Python ints where the shape is static, scalar tensors where it is not (tf.data)."""
    shape = ops.shape(images)
    if data_format == "channels_first":
        return shape[0], shape[2], shape[3]
    return shape[0], shape[1], shape[2]


def _uniform_int(uniform: Any, upper: Any) -> Any:
    """int32 uniform over [0, upper) from float32 uniforms in [0, 1) (``upper`` ≥ 1, per sample or not);
    the minimum guards the rounding of ``uniform·upper`` up to ``upper``."""
    upper = ops.cast(upper, "float32")
    return ops.cast(ops.minimum(ops.floor(uniform * upper), upper - 1.0), "int32")


def _partners(batch: Any, partner: str | None, seed: keras.random.SeedGenerator) -> Any:
    index = ops.arange(batch, dtype="int32")
    if partner is None:  # an explicit second batch: sample i meets its sample i
        return index
    if partner == "permute":
        return keras.random.shuffle(index, seed=seed)
    if partner == "roll":  # as torchvision's v2.CutMix: sample i meets sample i - 1
        return ops.roll(index, 1)
    return ops.flip(index, axis=0)  # "flip", as timm: sample i meets sample B - 1 - i


def _beta(alpha: float, batch: Any, coin: Any, seed: keras.random.SeedGenerator) -> Any:
    """Beta(α, α) as float32 from two Gamma(α, 1) draws. For tiny α both gammas can underflow to 0;
    Beta(α, α) then sits at 0 or 1 with equal odds, which ``coin`` (uniforms) decides."""
    gammas = keras.random.gamma((2, batch), alpha, dtype="float32", seed=seed)
    total = gammas[0] + gammas[1]
    safe = ops.where(total > 0, total, ops.ones_like(total))
    return ops.where(total > 0, gammas[0] / safe, ops.cast(coin < 0.5, "float32"))


def _draw_common(batch: Any, p: float, partner: str | None, seed: keras.random.SeedGenerator):
    """Uniforms (columns: p-draw, row, column, coin), partners and the p-draw, self-pairs removed."""
    uniforms = keras.random.uniform((batch, 4), dtype="float32", seed=seed)
    partners = _partners(batch, partner, seed)
    applied = uniforms[:, 0] < p
    if partner is not None:  # paired with itself: nothing to mix
        applied = ops.logical_and(applied, ops.not_equal(partners, ops.arange(batch, dtype="int32")))
    return uniforms, partners, applied


def _box_params(
    batch: Any, height: Any, width: Any, alpha: float, p: float, partner: str | None, box: str,
    seed: keras.random.SeedGenerator,
) -> dict[str, Any]:  # fmt: skip
    """Per-sample CutMix parameters, as :func:`cutmix.ops.sample_cutmix_params` defines them:
    ``cut = floor(size·√(1−λ))`` per axis, an integer centre uniform over the image with edges
    ``centre ∓ cut // 2`` clipped to it (``box="center"``) or the whole cut inside it
    (``"inside"``); ``weight = 1 − area / (H·W)`` where applied, else exactly 1."""
    uniforms, partners, applied = _draw_common(batch, p, partner, seed)
    lam = _beta(alpha, batch, uniforms[:, 3], seed)
    ratio = ops.sqrt(1.0 - lam)
    cut_h = ops.cast(ops.floor(ops.cast(height, "float32") * ratio), "int32")
    cut_w = ops.cast(ops.floor(ops.cast(width, "float32") * ratio), "int32")
    if box == "center":
        cy, cx = _uniform_int(uniforms[:, 1], height), _uniform_int(uniforms[:, 2], width)
        y0 = ops.clip(cy - ops.floor_divide(cut_h, 2), 0, height)
        y1 = ops.clip(cy + ops.floor_divide(cut_h, 2), 0, height)
        x0 = ops.clip(cx - ops.floor_divide(cut_w, 2), 0, width)
        x1 = ops.clip(cx + ops.floor_divide(cut_w, 2), 0, width)
    else:
        y0 = _uniform_int(uniforms[:, 1], height - cut_h + 1)
        x0 = _uniform_int(uniforms[:, 2], width - cut_w + 1)
        y1, x1 = y0 + cut_h, x0 + cut_w
        cy, cx = y0, x0
    params = _finish_box(y0, y1, x0, x1, applied, height, width)
    # λ, partner and the drawn position (centre, or top-left corner for "inside"), for replays and tests.
    params.update(lam=lam, partner=partners, anchor=ops.stack([cy, cx], axis=1))
    return params


def _cutout_params(
    batch: Any, height: Any, width: Any, size: tuple[int, int], p: float, seed: keras.random.SeedGenerator
) -> dict[str, Any]:
    """A ``size`` rectangle with an integer centre uniform over the image, clipped to it, as
    :func:`cutmix.ops.sample_cutout_params`."""
    uniforms = keras.random.uniform((batch, 3), dtype="float32", seed=seed)
    cy, cx = _uniform_int(uniforms[:, 1], height), _uniform_int(uniforms[:, 2], width)
    y0 = ops.clip(cy - size[0] // 2, 0, height)
    y1 = ops.clip(cy - size[0] // 2 + size[0], 0, height)
    x0 = ops.clip(cx - size[1] // 2, 0, width)
    x1 = ops.clip(cx - size[1] // 2 + size[1], 0, width)
    params = _finish_box(y0, y1, x0, x1, uniforms[:, 0] < p, height, width)
    params.update(anchor=ops.stack([cy, cx], axis=1))
    return params


def _finish_box(y0: Any, y1: Any, x0: Any, x1: Any, applied: Any, height: Any, width: Any) -> dict[str, Any]:
    """Row and column flags of the box (all False where not applied: an empty box mixes nothing,
    where the Keras example pastes a 1-pixel patch) and the weight of the sample's own pixels."""
    area = (y1 - y0) * (x1 - x0)
    applied = ops.logical_and(applied, area > 0)
    rows = ops.arange(height, dtype="int32")[None, :]
    cols = ops.arange(width, dtype="int32")[None, :]
    row_flags = ops.logical_and(ops.logical_and(rows >= y0[:, None], rows < y1[:, None]), applied[:, None])
    col_flags = ops.logical_and(cols >= x0[:, None], cols < x1[:, None])
    pixels = ops.cast(height, "float32") * ops.cast(width, "float32")
    share = ops.cast(area, "float32") / pixels  # area is an integer below 2**24: exact in float32
    weight = ops.where(applied, 1.0 - share, ops.ones_like(share))
    empty = ops.zeros_like(y0)
    box = ops.stack([ops.where(applied, v, empty) for v in (y0, y1, x0, x1)], axis=1)
    return {"rows": row_flags, "cols": col_flags, "weight": weight, "applied": applied, "box": box}


def _box_mask(params: dict[str, Any], data_format: str) -> Any:
    """bool mask broadcastable to the images: (B, 1, H, W) or (B, H, W, 1)."""
    mask = ops.logical_and(params["rows"][:, :, None], params["cols"][:, None, :])
    return mask[:, None] if data_format == "channels_first" else mask[..., None]


def _mix_targets(targets: Any, targets2: Any, params: dict[str, Any]) -> Any:
    partner_targets = targets2 if targets2 is not None else ops.take(targets, params["partner"], axis=0)
    weight = params["weight"][:, None]
    # With weight exactly 1 this is exactly the sample's own target (1·y + 0·y').
    return weight * targets + (1.0 - weight) * partner_targets


def _partner_images(images: Any, images2: Any, params: dict[str, Any]) -> Any:
    return images2 if images2 is not None else ops.take(images, params["partner"], axis=0)


def _blend(images: Any, partner_images: Any, weight: Any) -> Any:
    """``w·x + (1−w)·x'`` per sample in float32 (float64 kept), rounded to nearest for integer
    images; with ``w`` exactly 1 the result is exactly ``x``."""
    dtype = keras.backend.standardize_dtype(images.dtype)
    compute = "float64" if dtype == "float64" else "float32"
    weight = ops.cast(ops.reshape(weight, (-1, 1, 1, 1)), compute)
    mixed = weight * ops.cast(images, compute) + (1.0 - weight) * ops.cast(partner_images, compute)
    if keras.backend.is_int_dtype(dtype):
        info = _int_range(dtype)
        mixed = ops.clip(ops.round(mixed), info[0], info[1])
    return ops.cast(mixed, dtype)


def _int_range(dtype: str) -> tuple[int, int]:
    bits = int("".join(c for c in dtype if c.isdigit()))
    if dtype.startswith("uint"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


# ----------------------------------------------------------------------------------------------
# Dense targets: segmentation masks and bounding boxes (the keras.ops implementation)
# ----------------------------------------------------------------------------------------------


def _check_mask_fill(mask_fill: int) -> int:
    if isinstance(mask_fill, bool) or not isinstance(mask_fill, int):
        raise ValueError(f"mask_fill: expected an int class id (e.g. 255, ignored), got {mask_fill!r}")
    return mask_fill


def _check_box_format(bounding_box_format: str) -> str:
    if bounding_box_format not in _BOX_FORMATS:
        raise ValueError(
            f"bounding_box_format: expected 'xyxy' (pixel corners x1, y1, x2, y2; convert others with "
            f"keras.utils.bounding_boxes.convert_format), got {bounding_box_format!r}"
        )
    return bounding_box_format


def _mask_layout(masks: Any, images: Any, data_format: str) -> int | None:
    """Checks ``segmentation_masks`` against the images; returns its singleton channel axis, or None."""
    dtype = keras.backend.standardize_dtype(masks.dtype)
    if not keras.backend.is_int_dtype(dtype) or dtype == "bool":
        raise ValueError(
            f"segmentation_masks: expected integer class ids (e.g. uint8, int32), got dtype {dtype}"
        )
    return mask_channel_dim(masks.shape, images.shape, data_format, "segmentation_masks")


def _box_parts(bounding_boxes: Any, images: Any, data_format: str) -> tuple[Any, Any]:
    """Checks a ``bounding_boxes`` dict's structure; returns its padded (B, N, 4) boxes and (B, N) labels."""
    if not isinstance(bounding_boxes, dict):
        raise ValueError(
            "bounding_boxes: expected a dict with keys 'boxes' and 'labels', "
            f"got {type(bounding_boxes).__name__}"
        )
    if sorted(bounding_boxes) != sorted(_BOX_KEYS):
        raise ValueError(f"bounding_boxes: expected the keys boxes, labels, got {sorted(bounding_boxes)}")
    boxes, labels = bounding_boxes["boxes"], bounding_boxes["labels"]
    for value, key in ((boxes, "boxes"), (labels, "labels")):
        if isinstance(value, list | tuple) or not hasattr(value, "shape"):
            raise ValueError(
                f"bounding_boxes['{key}']: expected a padded tensor (labels -1 for padding; "
                f"keras.utils.bounding_boxes densifies ragged ones), got {type(value).__name__}"
            )
    batch = images.shape[0]
    if _rank(boxes) != 3 or boxes.shape[2] != 4 or boxes.shape[0] != batch:
        raise ValueError(
            f"bounding_boxes['boxes']: expected shape ({batch}, N, 4) (xyxy), got {tuple(boxes.shape)}"
        )
    box_dtype = keras.backend.standardize_dtype(boxes.dtype)
    if box_dtype == "bool" or box_dtype.startswith("complex"):
        raise ValueError(
            f"bounding_boxes['boxes']: expected float or integer pixel coordinates, got dtype {box_dtype}"
        )
    if tuple(labels.shape) != tuple(boxes.shape[:2]):
        raise ValueError(
            f"bounding_boxes['labels']: expected shape {tuple(boxes.shape[:2])} like its boxes, "
            f"got {tuple(labels.shape)}"
        )
    label_dtype = keras.backend.standardize_dtype(labels.dtype)
    if not keras.backend.is_int_dtype(label_dtype) or label_dtype == "bool":
        raise ValueError(
            f"bounding_boxes['labels']: expected integer class ids (-1 for padding), got dtype {label_dtype}"
        )
    return boxes, labels


def _box_label_dtype() -> str:
    """The dtype of output box labels: int64 (−1 for padding), or int32 on JAX without x64, whose
    widest integer it is."""
    if keras.config.backend() == "jax":
        import jax

        if not jax.config.read("jax_enable_x64"):
            return "int32"
    return "int64"


def _box_labels(labels: Any) -> Any:
    """Box labels as both implementations take them: signed ids with −1 for padding, in
    :func:`_box_label_dtype`. Unsigned labels hold class ids only (no −1 to pad with): every one
    is a real box, and 255 in uint8 stays class 255."""
    return ops.cast(labels, _box_label_dtype())


def _check_box_values(boxes: Any, labels: Any, images: Any, data_format: str) -> None:
    """Value checks for both implementations, where the values can be read now (see
    :func:`_host_values`): every real box inside the image and ordered, labels >= -1. Traced graphs
    (JAX, TensorFlow) and accelerators cannot raise on values."""
    boxes_np, labels_np = _host_values(boxes), _host_values(labels)
    if boxes_np is None or labels_np is None:
        return
    _, height, width = (int(v) for v in _spatial(images, data_format))
    if labels_np.size and labels_np.min() < -1:
        raise ValueError(
            "bounding_boxes['labels']: expected class ids >= 0, or -1 for padding, "
            f"got {int(labels_np.min())}"
        )
    x0, y0, x1, y1 = (boxes_np[..., i] for i in range(4))
    with np.errstate(invalid="ignore"):
        inside = (x0 >= 0) & (y0 >= 0) & (x1 <= width) & (y1 <= height)  # False for NaN too
        ordered = (x1 >= x0) & (y1 >= y0)
    bad = (labels_np >= 0) & ~(inside & ordered)
    if bad.any():
        b, n = (int(i) for i in np.argwhere(bad)[0])
        box = [round(float(v), 3) for v in boxes_np[b, n]]
        raise ValueError(
            f"bounding_boxes['boxes']: expected xyxy pixel boxes with 0 <= x1 <= x2 <= {width} and "
            f"0 <= y1 <= y2 <= {height}, got {box} for image {b}, box {n}"
        )


def _mix_masks_keras(masks: Any, channel_axis: int | None, params: dict[str, Any], fill: int | None) -> Any:
    """CutMix (``fill`` None): the partner's mask where the partner's pixels were pasted, from the
    same row and column flags as the images; Cutout: ``fill`` there."""
    flags = ops.logical_and(params["rows"][:, :, None], params["cols"][:, None, :])  # (B, H, W)
    if channel_axis is not None:
        flags = ops.expand_dims(flags, channel_axis)
    other = ops.take(masks, params["partner"], axis=0) if fill is None else ops.cast(fill, masks.dtype)
    return ops.where(flags, other, masks)


def _area(x0: Any, y0: Any, x1: Any, y1: Any) -> Any:
    return ops.maximum(x1 - x0, 0.0) * ops.maximum(y1 - y0, 0.0)


def _hole(params: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    box = ops.cast(params["box"], "float32")  # y0, y1, x0, x1; integers below 2**24: exact
    return box[:, 2:3], box[:, 0:1], box[:, 3:4], box[:, 1:2]


def _cut_own_boxes(boxes: Any, labels: Any, params: dict[str, Any], min_visibility: float) -> tuple[Any, Any]:
    """As :func:`cutmix.ops.dense.cut_own_boxes`: each box minus its sample's hole. The visible part's
    bounding box moves only on a side the hole covers along the box's whole other extent."""
    hx0, hy0, hx1, hy1 = _hole(params)
    bx0, by0, bx1, by1 = (boxes[..., i] for i in range(4))
    area = _area(bx0, by0, bx1, by1)
    covered = _area(
        ops.maximum(bx0, hx0), ops.maximum(by0, hy0), ops.minimum(bx1, hx1), ops.minimum(by1, hy1)
    )
    visible = area - covered
    spans_y = ops.logical_and(hy0 <= by0, hy1 >= by1)
    spans_x = ops.logical_and(hx0 <= bx0, hx1 >= bx1)
    both = ops.logical_and
    new = ops.stack(
        [
            ops.where(both(spans_y, both(hx0 <= bx0, hx1 > bx0)), hx1, bx0),
            ops.where(both(spans_x, both(hy0 <= by0, hy1 > by0)), hy1, by0),
            ops.where(both(spans_y, both(hx1 >= bx1, hx0 < bx1)), hx0, bx1),
            ops.where(both(spans_x, both(hy1 >= by1, hy0 < by1)), hy0, by1),
        ],
        axis=-1,
    )
    applied = params["applied"][:, None]
    seen = both(visible > 0, visible >= min_visibility * area)
    keep = both(labels >= 0, ops.logical_or(ops.logical_not(applied), seen))
    return ops.where(applied[..., None], new, boxes), keep


def _cut_partner_boxes(
    boxes: Any, labels: Any, params: dict[str, Any], min_visibility: float
) -> tuple[Any, Any]:
    """As :func:`cutmix.ops.dense.cut_partner_boxes`: each partner box cut to the pasted region."""
    hx0, hy0, hx1, hy1 = _hole(params)
    bx0, by0, bx1, by1 = (boxes[..., i] for i in range(4))
    cut = [ops.maximum(bx0, hx0), ops.maximum(by0, hy0), ops.minimum(bx1, hx1), ops.minimum(by1, hy1)]
    inside = _area(*cut)
    keep = ops.logical_and(
        ops.logical_and(labels >= 0, params["applied"][:, None]),
        ops.logical_and(inside > 0, inside >= min_visibility * _area(bx0, by0, bx1, by1)),
    )
    return ops.stack(cut, axis=-1), keep


def _pack_boxes(parts: list[tuple[Any, Any, Any, Any]], dtype: str, label_dtype: str) -> dict[str, Any]:
    """As :func:`cutmix.ops.dense._pack`: concatenated parts, dropped boxes blanked (label -1, zeros),
    kept boxes first in their order. The sort key is unique per row, so an unstable argsort is fine."""
    boxes, labels, weights, keep = (ops.concatenate(list(p), axis=1) for p in zip(*parts, strict=True))
    count = ops.shape(keep)[1]
    index = ops.arange(count, dtype="int32")[None, :]
    order = ops.argsort(ops.where(keep, index, index + count), axis=1)
    keep = ops.take_along_axis(keep, order, axis=1)
    boxes = ops.take_along_axis(boxes, ops.expand_dims(order, -1), axis=1)
    boxes = ops.where(keep[..., None], boxes, ops.zeros_like(boxes))
    if keras.backend.is_int_dtype(dtype):
        boxes = ops.round(boxes)  # the cut edges are the hole's integer edges: exact
    labels = ops.take_along_axis(labels, order, axis=1)
    out = {
        "boxes": ops.cast(boxes, dtype),
        "labels": ops.cast(ops.where(keep, labels, ops.full_like(labels, -1)), label_dtype),
        "weights": ops.where(keep, ops.take_along_axis(weights, order, axis=1), ops.zeros_like(weights)),
    }
    return out


def _mix_boxes_keras(
    kind: str, boxes: Any, labels: Any, params: dict[str, Any], min_visibility: float
) -> dict[str, Any]:
    """``bounding_boxes`` after the keras.ops mix: own boxes, then (CutMix, MixUp) partner boxes;
    ``labels`` come from :func:`_box_labels`."""
    dtype = keras.backend.standardize_dtype(boxes.dtype)
    label_dtype = _box_label_dtype()
    work, labels = ops.cast(boxes, "float32"), ops.cast(labels, "int32")
    ones = ops.ones(ops.shape(labels), dtype="float32")
    if kind == "mixup":
        # Every box stays where it was, weighted by its image's share of the blend.
        weight = params["weight"][:, None]
        partner, partner_labels = (
            ops.take(work, params["partner"], axis=0),
            ops.take(labels, params["partner"], axis=0),
        )
        parts = [
            (work, labels, weight * ones, ops.logical_and(labels >= 0, weight > 0)),
            (
                partner,
                partner_labels,
                (1.0 - weight) * ones,
                ops.logical_and(partner_labels >= 0, weight < 1),
            ),
        ]
        return _pack_boxes(parts, dtype, label_dtype)
    own, keep = _cut_own_boxes(work, labels, params, min_visibility)
    parts = [(own, labels, ones, keep)]
    if kind == "cutmix":
        partner_labels = ops.take(labels, params["partner"], axis=0)
        cut, keep2 = _cut_partner_boxes(ops.take(work, params["partner"], axis=0), partner_labels, params,
                                        min_visibility)  # fmt: skip
        parts.append((cut, partner_labels, ones, keep2))
    return _pack_boxes(parts, dtype, label_dtype)


def _torch_ids(labels: Any) -> Any:
    """Class ids (checked, (B,)) as int64 for the torch ops, whatever their integer dtype."""
    if labels is None or not _is_ids(keras.backend.standardize_dtype(labels.dtype)):
        return labels
    return ops.cast(labels, "int64")


def _leaves(data: dict[str, Any]) -> list[Any]:
    return [v for value in data.values() for v in (_leaves(value) if isinstance(value, dict) else [value])]


def _dense_inputs(data: Any) -> dict[str, Any]:
    """The dense keys of a dict input that are present and not None."""
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in _DENSE_KEYS if data.get(key) is not None}


# ----------------------------------------------------------------------------------------------
# The layers
# ----------------------------------------------------------------------------------------------


class _MixLayer(keras.layers.Layer):
    """Input handling shared by the layers: the dict form, the pair form, ``training`` and the
    torch fast path."""

    # Set to False (per layer or class) to run the keras.ops implementation on the torch backend
    # too; the tests do, to check that implementation where JAX and TensorFlow are not installed.
    _prefer_torch_op = True
    kind = ""  # "cutmix", "mixup" or "cutout", as the torch ops: picks the mask and box rule
    bounding_box_format = _Setting(_check_box_format)
    num_classes = _Setting(_check_num_classes)
    label_smoothing = _Setting(_check_smoothing)
    data_format = _Setting(_check_data_format)
    # The settings that _make_torch_op hands to the torch op: a change rebuilds it.
    _torch_settings: tuple[str, ...] = ()

    def __init__(
        self,
        num_classes: int | None,
        label_smoothing: float,
        data_format: str | None,
        seed: int | None,
        bounding_box_format: str = "xyxy",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bounding_box_format = bounding_box_format
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.data_format = data_format
        self.seed = _check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._torch_op: Any = None
        self._torch_key: tuple = ()
        # Preprocessing: it holds no weights, so a model summary or a stateless call needs no build.
        self.built = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Keras' Layer.__call__ spends about 1 ms of Python per call on the torch backend (tree
        # walks, call context, name scopes): as long as mixing a 128x32x32 batch itself. Called at
        # top level (a data pipeline, a training loop) with concrete torch tensors or arrays, all it
        # would do for this weightless layer is convert arrays and default training to True, so
        # do just that. Inside a model or a symbolic call, Keras' own __call__ runs as usual.
        if not self._direct_call_ok(args, kwargs):
            return super().__call__(*args, **kwargs)
        training = kwargs.pop("training", None)
        args = tuple(self._convert(x) for x in args)
        kwargs = {name: self._convert(x) for name, x in kwargs.items()}
        return self.call(*args, training=True if training is None else training, **kwargs)

    def _direct_call_ok(self, args: tuple, kwargs: dict) -> bool:
        if not self._prefer_torch_op or _keras_global is None or keras.config.backend() != "torch":
            return False
        if len(args) > 4 or "mask" in kwargs:  # training given positionally, or a mask: Keras sorts it out
            return False
        if _keras_global("current_call_ctx") is not None or _in_stateless_scope():
            return False  # inside another layer's call (training comes from there) or a stateless call
        import numpy as np
        import torch

        values = [*args, *kwargs.values()]
        if values and isinstance(values[0], dict):
            values = [*_leaves(values[0]), *values[1:]]  # bounding_boxes is a dict inside the dict
        concrete = (np.ndarray, torch.Tensor)
        return all(
            v is None or (isinstance(v, concrete) and getattr(v, "device", None) != torch.device("meta"))
            for v in values
            if not isinstance(v, bool)
        )

    def _convert(self, x: Any) -> Any:
        """What Keras' __call__ does to each input: arrays become tensors, floating inputs take the
        layer's compute dtype, integers are kept."""
        if isinstance(x, dict):
            return {key: self._convert(value) for key, value in x.items()}
        if x is None or isinstance(x, bool):
            return x
        return self.dtype_policy.convert_input(x, self.autocast, self.input_dtype)

    # -- input forms -------------------------------------------------------------------------

    def _unpack(self, data: Any, labels: Any, images2: Any, labels2: Any) -> tuple[Any, ...]:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(_DATA_KEYS) - set(_DENSE_KEYS))
            if unknown:
                raise ValueError(
                    f"data: expected the keys {', '.join(_DATA_KEYS)}, got also {', '.join(unknown)} "
                    f"({' and '.join(_DENSE_KEYS)} are accepted too)"
                )
            if "images" not in data:
                raise ValueError(f"data: expected an 'images' key, got keys {sorted(data)}")
            if labels is not None or images2 is not None or labels2 is not None:
                raise ValueError("labels: expected them inside the dict when data is a dict, got them apart")
            return data["images"], data.get("labels"), data.get("images2"), data.get("labels2")
        return data, labels, images2, labels2

    def call(
        self, data: Any, labels: Any = None, images2: Any = None, labels2: Any = None, training: bool = True
    ) -> Any:
        """``layer({"images": x, "labels": y})`` → ``{"images": mixed, "labels": targets}``;
        ``layer(x, y)`` → ``(mixed, targets)``; ``layer(x)`` → ``mixed``. ``images2``/``labels2``
        (or those dict keys): a second batch that pairs sample i with its sample i (the Keras
        example's two shuffled streams). ``training=False`` returns the inputs unchanged."""
        images, labels, images2, labels2 = self._unpack(data, labels, images2, labels2)
        if not training:
            return data if isinstance(data, dict) or labels is None else (images, labels)
        _check_images(images, self.data_format)
        self._check_call(images)
        dense = _dense_inputs(data)
        if dense:
            return self._dense_call(images, labels, images2, labels2, dense)
        _check_pair(images, labels, images2, labels2)
        if images2 is not None:
            _check_images(images2, self.data_format, "images2")
        # Checked here for both implementations: the same conditions and messages on either path.
        labels = self._labels(labels, images)
        labels2 = self._labels(labels2, images2, "labels2")
        if self._use_torch_op(images):
            mixed, targets = self._torch_call(images, labels, images2, labels2)
        else:
            mixed, targets = self._keras_call(images, labels, images2, labels2)
        return self._pack(data, mixed, targets)

    def _check_call(self, images: Any) -> None:
        """Raises where this layer's settings cannot apply to ``images`` (overridden by Cutout)."""

    def _labels(self, labels: Any, images: Any, name: str = "labels") -> Any:
        return None if labels is None else _class_labels(labels, images, self.num_classes, name)

    def _pack(self, data: Any, mixed: Any, targets: Any, dense: dict[str, Any] | None = None) -> Any:
        if isinstance(data, dict):
            out = {"images": mixed}
            if targets is not None:
                out["labels"] = targets
            out.update(dense or {})
            return out
        return mixed if targets is None else (mixed, targets)

    # -- segmentation masks and bounding boxes ------------------------------------------------

    def _refuse_dense(self, dense: dict[str, Any]) -> None:
        """Raises where this layer cannot carry ``dense`` (overridden by MixUp, CutMixOrMixUp)."""

    def _dense_call(self, images: Any, labels: Any, images2: Any, labels2: Any, dense: dict[str, Any]) -> Any:
        """The dict call with ``segmentation_masks`` and/or ``bounding_boxes``: the same dict back, masks
        and boxes mixed with the parameters that mixed the images."""
        if images2 is not None or labels2 is not None:
            raise ValueError(
                "images2: expected no second batch with segmentation_masks or bounding_boxes, got one "
                "(the batch is mixed with its own partners)"
            )
        self._refuse_dense(dense)
        # Every check here, before either implementation runs, so that both refuse alike and name
        # Keras' keys; on an accelerator only the torch op checks values (without waiting for it).
        labels = self._labels(labels, images)
        masks, bounding_boxes = dense.get("segmentation_masks"), dense.get("bounding_boxes")
        channel_axis = None if masks is None else _mask_layout(masks, images, self.data_format)
        if masks is not None and self.kind == "cutout":
            dtype = keras.backend.standardize_dtype(masks.dtype)
            _check_representable("mask_fill", self.mask_fill, dtype, "the segmentation_masks'")
        boxes = box_labels = None
        if bounding_boxes is not None:
            boxes, box_labels = _box_parts(bounding_boxes, images, self.data_format)
            box_labels = _box_labels(box_labels)
            _check_box_values(boxes, box_labels, images, self.data_format)
        if self._use_torch_op(images):
            mixed, targets, masks_out, boxes_out = self._torch_dense_call(
                images, labels, masks, boxes, box_labels
            )
        else:
            params = self._draw(images, False)
            mixed, targets = self._keras_call(images, labels, None, None, params=params)
            masks_out = None
            if masks is not None:
                fill = getattr(self, "mask_fill", None) if self.kind == "cutout" else None
                masks_out = _mix_masks_keras(masks, channel_axis, params, fill)
            boxes_out = None
            if boxes is not None:
                boxes_out = _mix_boxes_keras(self.kind, boxes, box_labels, params, self._min_visibility())
        out: dict[str, Any] = {}
        if masks_out is not None:
            out["segmentation_masks"] = masks_out
        if boxes_out is not None:
            # Keras' form, {"boxes", "labels"}; MixUp adds each box's weight (λ or 1 − λ, 0 for padding).
            keys = ("boxes", "labels", "weights") if self.kind == "mixup" else ("boxes", "labels")
            out["bounding_boxes"] = {key: boxes_out[key] for key in keys}
        return self._pack({}, mixed, targets, out)

    def _min_visibility(self) -> float:
        return getattr(self, "min_visibility", MIN_VISIBILITY)

    def _torch_dense_call(
        self, images: Any, labels: Any, masks: Any, boxes: Any, box_labels: Any
    ) -> tuple[Any, Any, Any, Any]:
        labels = _torch_ids(labels)
        op = self._current_torch_op()
        result = list(op(images, labels, masks=masks, boxes=boxes, box_labels=box_labels))
        mixed, targets = result[0], result[1]
        masks_out = result[2] if masks is not None else None
        boxes_out = None
        if boxes is not None:
            mixed_boxes = result[3 if masks is not None else 2]
            boxes_out = {
                "boxes": mixed_boxes.boxes,
                "labels": mixed_boxes.labels,
                "weights": mixed_boxes.weights,
            }
        return mixed, targets, masks_out, boxes_out

    def _draw(self, images: Any, paired: bool) -> dict[str, Any]:
        raise NotImplementedError

    def compute_output_spec(
        self, data: Any, labels: Any = None, images2: Any = None, labels2: Any = None, training: bool = True
    ) -> Any:
        # Given explicitly so that a symbolic call (building a functional model) never traces the
        # torch fast path; the targets are float32 (B, K).
        images, labels, images2, labels2 = self._unpack(data, labels, images2, labels2)
        mixed = keras.KerasTensor(images.shape, dtype=images.dtype)
        targets = None
        if labels is not None:
            ids = _rank(labels) == 1 or _is_ids(keras.backend.standardize_dtype(labels.dtype))
            classes = self.num_classes if ids else labels.shape[-1]
            targets = keras.KerasTensor((labels.shape[0], classes), dtype="float32")
        dense = {}
        for key, value in _dense_inputs(data).items():
            if key == "segmentation_masks":
                dense[key] = keras.KerasTensor(value.shape, dtype=value.dtype)
                continue
            boxes, box_labels = value["boxes"], value["labels"]
            count = boxes.shape[1] if self.kind == "cutout" or boxes.shape[1] is None else 2 * boxes.shape[1]
            dense[key] = {
                "boxes": keras.KerasTensor((boxes.shape[0], count, 4), dtype=boxes.dtype),
                "labels": keras.KerasTensor((box_labels.shape[0], count), dtype=_box_label_dtype()),
            }
            if self.kind == "mixup":
                dense[key]["weights"] = keras.KerasTensor((box_labels.shape[0], count), dtype="float32")
        return self._pack(data, mixed, targets, dense)

    # -- the two implementations ----------------------------------------------------------------

    def _use_torch_op(self, images: Any) -> bool:
        if not self._prefer_torch_op or keras.config.backend() != "torch":
            return False
        import torch

        return isinstance(images, torch.Tensor) and images.device.type != "meta"

    def _torch_generator(self) -> Any:
        """A CPU torch.Generator seeded once from the layer's SeedGenerator, so ``seed`` (or
        ``keras.utils.set_random_seed``) fixes the torch path's draws too."""
        import torch

        seed = keras.random.randint((), 0, _SEED_HIGH, seed=self.seed_generator)
        return torch.Generator().manual_seed(int(seed))

    def _make_torch_op(self) -> Any:
        raise NotImplementedError

    def _current_torch_op(self) -> Any:
        """The torch op, made on first use and made again after a setting it holds was changed (a
        new generator seeded from the SeedGenerator: the draws it made ahead are dropped)."""
        key = tuple(getattr(self, name) for name in self._torch_settings)
        if self._torch_op is None or key != self._torch_key:
            self._torch_op, self._torch_key = self._make_torch_op(), key
        return self._torch_op

    def _torch_call(self, images: Any, labels: Any, images2: Any, labels2: Any) -> tuple[Any, Any]:
        import torch

        op = self._current_torch_op()
        if labels is None:  # (then images2 is None too: checked in call)
            # The torch ops always take labels: stand-ins whose targets are dropped.
            batch = images.shape[0]
            if op.num_classes is None:
                labels = torch.ones(batch, 1, device=images.device)
            else:
                labels = torch.zeros(batch, dtype=torch.int64, device=images.device)
            return op(images, labels)[0], None
        return op(images, _torch_ids(labels), images2, _torch_ids(labels2))

    def _keras_call(
        self, images: Any, labels: Any, images2: Any, labels2: Any, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        raise NotImplementedError

    def _targets(self, labels: Any, labels2: Any) -> tuple[Any, Any]:
        if labels is None:
            return None, None
        targets = _to_targets(labels, self.num_classes, self.label_smoothing)
        targets2 = None if labels2 is None else _to_targets(labels2, self.num_classes, self.label_smoothing)
        if targets2 is not None and targets2.shape[1] != targets.shape[1]:
            raise ValueError(
                f"labels2: expected targets of shape {tuple(targets.shape)}, got {tuple(targets2.shape)}"
            )
        return targets, targets2

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, label_smoothing=self.label_smoothing,
            data_format=self.data_format, seed=self.seed, bounding_box_format=self.bounding_box_format,
        )  # fmt: skip
        return config


@keras.saving.register_keras_serializable(package="cutmix")
class CutMix(_MixLayer):
    """Per-sample CutMix: each image gets a box cut from its partner; targets mixed by the pasted area.

    Args:
        alpha: λ ~ Beta(alpha, alpha) per sample, alpha > 0 (``keras.layers.CutMix`` instead draws
            its α from U(0, factor) on every call).
        p: probability, drawn per sample, that the sample is mixed at all.
        num_classes: K, needed when labels are int class ids, (B,) or (B, 1).
        label_smoothing: ε, applied to each sample's own target before mixing; don't smooth again
            in the loss.
        partner: ``"permute"`` (the paper), ``"roll"`` (torchvision), ``"flip"`` (timm). A second
            batch given to the call overrides it.
        box: ``"center"`` (the paper's clipped box) or ``"inside"`` (the whole cut inside the image).
        data_format: ``"channels_last"`` or ``"channels_first"``; default
            ``keras.config.image_data_format()``.
        seed: an int for a reproducible layer, as Keras' random layers take it.
        min_visibility: a ``bounding_boxes`` box is kept when at least this share of its area is
            still visible (own boxes) or pasted (partner boxes); see :mod:`cutmix.ops.dense`.
        bounding_box_format: only ``"xyxy"`` (pixels), as Keras' default.
    """

    kind = "cutmix"
    alpha = _Setting(_check_alpha)
    p = _Setting(_check_p)
    partner = _Setting(lambda value: _check_choice("partner", value, PARTNERS))
    box = _Setting(lambda value: _check_choice("box", value, BOXES))
    min_visibility = _Setting(_check_min_visibility)
    _torch_settings = ("alpha", "p", "num_classes", "label_smoothing", "partner", "box", "data_format",
                       "min_visibility")  # fmt: skip

    def __init__(
        self,
        alpha: float = 1.0,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        partner: str = "permute",
        box: str = "center",
        data_format: str | None = None,
        seed: int | None = None,
        *,
        min_visibility: float = MIN_VISIBILITY,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, seed, **kwargs)
        self.alpha = alpha
        self.p = p
        self.partner = partner
        self.box = box
        self.min_visibility = min_visibility

    def _make_torch_op(self) -> Any:
        from cutmix.ops import CutMix as TorchCutMix

        return TorchCutMix(
            self.alpha, self.p, self.num_classes, self.label_smoothing, self.partner, self.box,
            self.data_format, self._torch_generator(), min_visibility=self.min_visibility,
        )  # fmt: skip

    def _draw(self, images: Any, paired: bool) -> dict[str, Any]:
        batch, height, width = _spatial(images, self.data_format)
        partner = None if paired else self.partner
        return _box_params(batch, height, width, self.alpha, self.p, partner, self.box, self.seed_generator)

    def _keras_call(
        self, images: Any, labels: Any, images2: Any, labels2: Any, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        targets, targets2 = self._targets(labels, labels2)
        if params is None:  # given when masks or boxes are mixed with the same draw
            params = self._draw(images, images2 is not None)
        mask = _box_mask(params, self.data_format)
        mixed = ops.where(mask, _partner_images(images, images2, params), images)
        return mixed, None if targets is None else _mix_targets(targets, targets2, params)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha, p=self.p, partner=self.partner, box=self.box,
                      min_visibility=self.min_visibility)  # fmt: skip
        return config


@keras.saving.register_keras_serializable(package="cutmix")
class MixUp(_MixLayer):
    """Per-sample MixUp (Zhang et al., 2018): ``λ·x + (1−λ)·x_partner``, targets likewise.

    Same arguments as :class:`CutMix`, without ``box`` and ``min_visibility``. Integer images are
    blended in float32 and rounded to the nearest integer (their targets carry the exact λ).
    ``bounding_boxes`` come back as both images' boxes with a ``"weights"`` key (λ or 1 − λ, 0 for
    padding); ``segmentation_masks`` are refused (a blended pixel has two classes: use the torch op's
    ``MixedMasks`` and ``mask_cross_entropy``).
    """

    kind = "mixup"
    alpha = _Setting(_check_alpha)
    p = _Setting(_check_p)
    partner = _Setting(lambda value: _check_choice("partner", value, PARTNERS))
    _torch_settings = ("alpha", "p", "num_classes", "label_smoothing", "partner", "data_format")

    def __init__(
        self,
        alpha: float = 1.0,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        partner: str = "permute",
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, seed, **kwargs)
        self.alpha = alpha
        self.p = p
        self.partner = partner

    def _make_torch_op(self) -> Any:
        from cutmix.ops import MixUp as TorchMixUp

        return TorchMixUp(
            self.alpha, self.p, self.num_classes, self.label_smoothing, self.partner, self.data_format,
            self._torch_generator(),
        )  # fmt: skip

    def _draw(self, images: Any, paired: bool) -> dict[str, Any]:
        batch = ops.shape(images)[0]
        uniforms, partners, applied = _draw_common(
            batch, self.p, None if paired else self.partner, self.seed_generator
        )
        lam = _beta(self.alpha, batch, uniforms[:, 3], self.seed_generator)
        return {"partner": partners, "weight": ops.where(applied, lam, ops.ones_like(lam))}

    def _refuse_dense(self, dense: dict[str, Any]) -> None:
        if "segmentation_masks" in dense:
            raise ValueError(
                "segmentation_masks: expected no masks with MixUp, got masks: a blended pixel belongs to two "
                "classes, so one mask cannot describe it (use CutMix or Cutout, or the torch op "
                "cutmix.ops.MixUp(masks=...), whose MixedMasks go to cutmix.ops.mask_cross_entropy)"
            )

    def _keras_call(
        self, images: Any, labels: Any, images2: Any, labels2: Any, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        targets, targets2 = self._targets(labels, labels2)
        if params is None:
            params = self._draw(images, images2 is not None)
        mixed = _blend(images, _partner_images(images, images2, params), params["weight"])
        return mixed, None if targets is None else _mix_targets(targets, targets2, params)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha, p=self.p, partner=self.partner)
        return config


@keras.saving.register_keras_serializable(package="cutmix")
class Cutout(_MixLayer):
    """Per-sample Cutout (DeVries & Taylor, 2017): fills a ``size`` square (or (h, w)) centred
    uniformly over the image, clipped to it, with ``fill``. Labels are only turned into (smoothed)
    float32 targets; a second batch, if given, is ignored. ``segmentation_masks`` get ``mask_fill``
    (default 255, the usual ignore index) in the hole; ``bounding_boxes`` are cut by the hole as
    :class:`CutMix` cuts them (``min_visibility``)."""

    kind = "cutout"
    size = _Setting(_check_size)
    p = _Setting(_check_p)
    fill = _Setting(_check_fill)
    mask_fill = _Setting(_check_mask_fill)
    min_visibility = _Setting(_check_min_visibility)
    _torch_settings = ("size", "p", "num_classes", "label_smoothing", "fill", "data_format", "mask_fill",
                       "min_visibility")  # fmt: skip

    def __init__(
        self,
        size: int | tuple[int, int] = 16,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        fill: float = 0.0,
        data_format: str | None = None,
        seed: int | None = None,
        *,
        mask_fill: int = MASK_FILL,
        min_visibility: float = MIN_VISIBILITY,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, seed, **kwargs)
        self.mask_fill = mask_fill
        self.min_visibility = min_visibility
        self.size = size
        self.p = p
        self.fill = fill

    def _make_torch_op(self) -> Any:
        from cutmix.ops import Cutout as TorchCutout

        return TorchCutout(
            self.size, self.p, self.num_classes, self.label_smoothing, self.fill, self.data_format,
            self._torch_generator(), mask_fill=self.mask_fill, min_visibility=self.min_visibility,
        )  # fmt: skip

    def _check_call(self, images: Any) -> None:
        dtype = keras.backend.standardize_dtype(images.dtype)
        _check_representable("fill", self.fill, dtype, "the images'")

    def _draw(self, images: Any, paired: bool) -> dict[str, Any]:
        batch, height, width = _spatial(images, self.data_format)
        return _cutout_params(batch, height, width, self.size, self.p, self.seed_generator)

    def _keras_call(
        self, images: Any, labels: Any, images2: Any, labels2: Any, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        targets, _ = self._targets(labels, None)
        if params is None:
            params = self._draw(images, False)
        fill = ops.cast(self.fill, images.dtype)
        mixed = ops.where(_box_mask(params, self.data_format), fill, images)
        return mixed, targets

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(size=list(self.size), p=self.p, fill=self.fill, mask_fill=self.mask_fill,
                      min_visibility=self.min_visibility)  # fmt: skip
        return config


def _check_switch_prob(switch_prob: float) -> float:
    if (
        isinstance(switch_prob, bool)
        or not isinstance(switch_prob, int | float)
        or not 0.0 <= switch_prob <= 1.0
    ):
        raise ValueError(f"switch_prob: expected a probability in [0, 1], got {switch_prob!r}")
    return float(switch_prob)


@keras.saving.register_keras_serializable(package="cutmix")
class CutMixOrMixUp(_MixLayer):
    """Per batch, ``cutmix`` with probability ``switch_prob``, else ``mixup`` (timm's ``switch_prob``).

    Both layers keep their own settings and seeds; this layer's ``seed`` draws the switch. Their
    ``num_classes``, ``label_smoothing`` and ``data_format`` are used (they must agree). In the
    keras.ops implementation (traced graphs) both ops run on every batch and the switch selects one
    result, so that no data-dependent branch is traced.
    """

    switch_prob = _Setting(_check_switch_prob)

    def __init__(
        self,
        cutmix: CutMix,
        mixup: MixUp,
        switch_prob: float = 0.5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(cutmix, dict):  # from_config
            cutmix = keras.saving.deserialize_keras_object(cutmix)
        if isinstance(mixup, dict):
            mixup = keras.saving.deserialize_keras_object(mixup)
        if not isinstance(cutmix, CutMix):
            raise ValueError(f"cutmix: expected a cutmix.keras.CutMix, got {type(cutmix).__name__}")
        if not isinstance(mixup, MixUp):
            raise ValueError(f"mixup: expected a cutmix.keras.MixUp, got {type(mixup).__name__}")
        for name in ("num_classes", "label_smoothing", "data_format"):
            if getattr(cutmix, name) != getattr(mixup, name):
                expected, got = getattr(cutmix, name), getattr(mixup, name)
                raise ValueError(f"mixup: expected {name}={expected!r} like cutmix, got {got!r}")
        _check_switch_prob(switch_prob)
        super().__init__(cutmix.num_classes, cutmix.label_smoothing, cutmix.data_format, seed, **kwargs)
        self.cutmix, self.mixup = cutmix, mixup
        self.switch_prob = switch_prob

    def _use_torch_op(self, images: Any) -> bool:
        # The switch follows this layer's flag; both sub-layers take the same path.
        use = super()._use_torch_op(images)
        self.cutmix._prefer_torch_op = self.mixup._prefer_torch_op = self._prefer_torch_op
        return use

    def _refuse_dense(self, dense: dict[str, Any]) -> None:
        keys = " and ".join(dense)
        raise ValueError(
            f"{keys}: expected none with CutMixOrMixUp, got {keys} (the two layers return different "
            "forms for them; call its cutmix layer, or MixUp for boxes only)"
        )

    def _torch_call(self, images: Any, labels: Any, images2: Any, labels2: Any) -> tuple[Any, Any]:
        import torch

        if self._torch_op is None:
            self._torch_op = self._torch_generator()  # only the switch is drawn here
        use_cutmix = torch.rand((), generator=self._torch_op).item() < self.switch_prob
        return (self.cutmix if use_cutmix else self.mixup)._torch_call(images, labels, images2, labels2)

    def _keras_call(self, images: Any, labels: Any, images2: Any, labels2: Any) -> tuple[Any, Any]:
        use_cutmix = keras.random.uniform((), dtype="float32", seed=self.seed_generator) < self.switch_prob
        cut_images, cut_targets = self.cutmix._keras_call(images, labels, images2, labels2)
        mix_images, mix_targets = self.mixup._keras_call(images, labels, images2, labels2)
        mixed = ops.where(use_cutmix, cut_images, mix_images)
        return mixed, None if labels is None else ops.where(use_cutmix, cut_targets, mix_targets)

    def get_config(self) -> dict[str, Any]:
        config = keras.layers.Layer.get_config(self)
        config.update(
            cutmix=keras.saving.serialize_keras_object(self.cutmix),
            mixup=keras.saving.serialize_keras_object(self.mixup),
            switch_prob=self.switch_prob, seed=self.seed,
        )  # fmt: skip
        return config
