"""The layers' inputs read for :mod:`cutmix.ops.rules`: shapes, dtype names and, where they can be read
without waiting for an accelerator or tracing, values. Both implementations run these checks before
either runs, so that they refuse alike, with the rules' messages and Keras' names for the inputs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from cutmix.ops import rules
from cutmix.ops.params import DATA_FORMATS

_BOX_KEYS = ("boxes", "labels")


def rank(x: Any) -> int:
    return len(x.shape)


def dtype_of(x: Any) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def is_ids(dtype: str) -> bool:
    return rules.is_int_name(dtype)


def check_data_format(data_format: str | None) -> str:
    # Keras layers default to the global setting (channels_last unless configured otherwise).
    if data_format is None:
        return keras.config.image_data_format()
    return rules.check_choice("data_format", data_format, DATA_FORMATS)


def check_layer_images(images: Any, data_format: str, name: str = "images") -> None:
    rules.check_images(tuple(images.shape), dtype_of(images), data_format, name)


def check_layer_pair(images: Any, labels: Any, images2: Any, labels2: Any, data_format: str) -> None:
    """A second batch: both images2 and labels2 (and labels), like the first batch."""
    rules.check_second_batch(images2 is not None, labels2 is not None)
    if images2 is None:
        return
    if labels is None:
        raise ValueError("labels: expected labels with images2 and labels2, got None")
    check_layer_images(images2, data_format, "images2")
    rules.check_like_images(tuple(images2.shape), dtype_of(images2), tuple(images.shape), dtype_of(images))


def host_values(x: Any) -> np.ndarray | None:
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


def class_labels(labels: Any, images: Any, num_classes: int | None, name: str = "labels") -> Any:
    """Checks ``labels`` as the torch ops check them (:func:`cutmix.ops.rules.check_labels`) and returns
    them as both implementations take them: class ids of any integer dtype, (B,) or (B, 1) as
    ``keras.datasets`` gives them, become (B,) ids; float (B, K) probabilities are kept."""
    if not rules.check_labels(tuple(labels.shape), dtype_of(labels), num_classes, images.shape[0], name):
        return labels
    if rank(labels) == 2:
        labels = ops.reshape(labels, (-1,))
    values = host_values(labels)
    if values is not None and values.size:
        rules.check_class_ids(int(values.min()), int(values.max()), num_classes, name)
    return labels


def mask_layout(masks: Any, images: Any, data_format: str) -> int | None:
    """Checks ``segmentation_masks`` against the images; returns its singleton channel axis, or None."""
    rules.check_mask_dtype(dtype_of(masks), "segmentation_masks")
    return rules.mask_channel_dim(masks.shape, images.shape, data_format, "segmentation_masks")


def box_parts(bounding_boxes: Any, images: Any) -> tuple[Any, Any]:
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
    rules.check_box_arrays(
        tuple(boxes.shape), tuple(labels.shape), dtype_of(boxes), dtype_of(labels), images.shape[0],
        "bounding_boxes['boxes']", "bounding_boxes['labels']",
    )  # fmt: skip
    return boxes, labels


def box_label_dtype() -> str:
    """The dtype of output box labels: int64 (−1 for padding), or int32 on JAX without x64, whose
    widest integer it is."""
    if keras.config.backend() == "jax":
        import jax

        if not jax.config.read("jax_enable_x64"):
            return "int32"
    return "int64"


def signed_box_labels(labels: Any) -> Any:
    """Box labels as both implementations take them: signed ids with −1 for padding, in
    :func:`box_label_dtype`. Unsigned labels hold class ids only (no −1 to pad with): every one
    is a real box, and 255 in uint8 stays class 255."""
    return ops.cast(labels, box_label_dtype())


def static_image_size(images: Any, data_format: str) -> tuple[int, int]:
    """(H, W) of a batch of static shape."""
    shape = tuple(images.shape)
    return (shape[2], shape[3]) if data_format == "channels_first" else (shape[1], shape[2])


def check_box_values(boxes: Any, labels: Any, images: Any, data_format: str) -> None:
    """Value checks for both implementations, where the values can be read now (see
    :func:`host_values`): every real box inside the image and ordered, labels >= -1. Traced graphs
    (JAX, TensorFlow) and accelerators cannot raise on values."""
    boxes_np, labels_np = host_values(boxes), host_values(labels)
    if boxes_np is None or labels_np is None:
        return
    height, width = (int(v) for v in static_image_size(images, data_format))
    if labels_np.size:
        rules.check_box_labels_low(int(labels_np.min()), "bounding_boxes['labels']")
    x0, y0, x1, y1 = (boxes_np[..., i] for i in range(4))
    with np.errstate(invalid="ignore"):
        inside = (x0 >= 0) & (y0 >= 0) & (x1 <= width) & (y1 <= height)  # False for NaN too
        ordered = (x1 >= x0) & (y1 >= y0)
    bad = (labels_np >= 0) & ~(inside & ordered)
    if bad.any():
        b, n = (int(i) for i in np.argwhere(bad)[0])
        rules.refuse_box("bounding_boxes['boxes']", boxes_np[b, n].tolist(), width, height, b, n)


def torch_ids(labels: Any) -> Any:
    """Class ids (checked, (B,)) as int64 for the torch ops, whatever their integer dtype."""
    if labels is None or not is_ids(dtype_of(labels)):
        return labels
    return ops.cast(labels, "int64")


def check_concentration(alpha: Any, factor: Any) -> tuple[float | None, tuple[float, float] | None]:
    """CutMix's ``alpha`` (a fixed Beta(α, α) concentration) and ``factor`` (Keras' range it is drawn
    from on every call): exactly one of them; returns both, checked."""
    if alpha is not None and factor is not None:
        raise ValueError(
            f"alpha, factor: expected one of them, got both (alpha={alpha!r}, factor={factor!r}): alpha "
            "fixes the Beta(alpha, alpha) concentration, factor (keras.layers.CutMix's) draws it per call"
        )
    if alpha is None and factor is None:
        raise ValueError("alpha, factor: expected one of them, got neither (both None)")
    return (None if alpha is None else rules.check_alpha(alpha)), rules.check_factor(factor)
