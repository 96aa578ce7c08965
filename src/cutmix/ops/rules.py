"""The rules both implementations keep, written once: every argument check and refusal with its message,
the constants of the dense rules, and the option descriptor of the ops and the Keras layers.

The torch ops (:mod:`cutmix.ops`) and the Keras layers (:mod:`cutmix.keras`) cannot share their tensor
code (the layers must draw in-graph under ``jax.jit`` and ``tf.data``), but they share what they accept
and how they refuse the rest: both call the functions here, so a setting or an input is refused on
both paths with the same exception type and the same message. Shapes and dtypes come in as plain tuples
and dtype names (``"uint8"``, ``"float32"``), so this module imports neither torch nor Keras; the
semantic test suite (``tests/keras/test_semantics.py``) runs every rule on both paths.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

MASK_FILL = 255  # the class id Cutout writes into a mask's hole: the usual ignore index
MIN_VISIBILITY = 0.25  # the share of a box's area that must stay visible (or be pasted) to keep it
BOX_FORMATS = ("xyxy",)  # pixel corners x1, y1, x2, y2: the one box format either path reads


class DtypeError(TypeError, ValueError):
    """A tensor of the wrong kind of dtype. Both a ``TypeError`` (what the torch ops' callers catch for a
    wrong kind of input) and a ``ValueError`` (what Keras layers raise for every input they refuse), so
    that the two paths raise one type."""


def dtype_name(dtype: object) -> str:
    """``torch.uint8``, ``np.dtype('uint8')`` or ``"uint8"`` -> ``"uint8"``: messages name dtypes alike."""
    return str(getattr(dtype, "name", dtype)).removeprefix("torch.")


def is_int_name(name: str) -> bool:
    """Whether a dtype name is an integer one (bool is not)."""
    return name.startswith(("int", "uint"))


def is_float_name(name: str) -> bool:
    return name.startswith(("float", "bfloat"))


def int_range(name: str) -> tuple[int, int]:
    """The values an integer dtype named ``name`` holds."""
    bits = int("".join(c for c in name if c.isdigit()))
    if name.startswith("uint"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def blend_dtype(dtype: str) -> str:
    """The dtype MixUp blends ``dtype`` images in: float64 ones in float64, every other (integers, half,
    bfloat16, float32) in float32. Integer results are rounded to nearest and clipped to
    :func:`int_range`, so that they stay the images' dtype."""
    return "float64" if dtype == "float64" else "float32"


def anchor_range(cut: Any, size: Any, box: str) -> Any:
    """How many integer positions a CutMix box's anchor is drawn from, uniformly, along one axis: its
    centre anywhere in the image (``box="center"``), or its first pixel wherever the whole cut fits
    (``"inside"``)."""
    return size if box == "center" else size - cut + 1


def box_edges(anchor: Any, cut: Any, size: Any, box: str, clip: Callable) -> tuple[Any, Any]:
    """The half-open edges [lo, hi) of a CutMix box along one axis, from its drawn anchor and its cut
    length ``floor(size·√(1−λ))``: ``anchor ∓ cut // 2`` clipped to [0, size] (``box="center"``, the
    paper's reference code), or ``[anchor, anchor + cut)`` (``"inside"``). Any array library's integers
    (NumPy, keras.ops), with its ``clip``."""
    if box == "center":
        return clip(anchor - cut // 2, 0, size), clip(anchor + cut // 2, 0, size)
    return anchor, anchor + cut


def cutout_edges(anchor: Any, extent: int, size: Any, clip: Callable) -> tuple[Any, Any]:
    """Cutout's hole along one axis: ``extent`` pixels starting ``extent // 2`` before its drawn
    centre, clipped to [0, size] (as :func:`box_edges`, any array library)."""
    start = anchor - extent // 2
    return clip(start, 0, size), clip(start + extent, 0, size)


# ----------------------------------------------------------------------------------------------
# Settings: the constructors' checks, also run whenever an option is set later
# ----------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_alpha(alpha: float) -> float:
    if not _is_number(alpha):
        raise TypeError(f"alpha: expected a positive number, got {type(alpha).__name__}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha: expected a finite number > 0, got {alpha}")
    return float(alpha)


def check_factor(factor: Any) -> tuple[float, float] | None:
    """``keras.layers.CutMix``'s ``factor`` (the Keras layer's only): a number f in [0, 1], meaning the
    range (0, f), or a (min, max) pair in [0, 1] (either order, sorted as Keras sorts it); None: not
    used. Keras accepts pairs reaching below 0, which would make the concentration negative."""
    if factor is None:
        return None
    pair = (0.0, factor) if _is_number(factor) else factor
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(_is_number(v) and 0 <= v <= 1 for v in pair)
    ):
        raise ValueError(
            "factor: expected a number in [0, 1] or a (min, max) pair of them (keras.layers.CutMix's "
            f"range for the Beta concentration), got {factor!r}"
        )
    low, high = sorted(float(v) for v in pair)
    return low, high


def check_probability(name: str, value: float) -> float:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def check_p(p: float) -> float:
    return check_probability("p", p)


def check_switch_prob(switch_prob: float) -> float:
    return check_probability("switch_prob", switch_prob)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def choice(name: str, choices: Sequence[str]) -> Callable[[str], str]:
    """The check of an option that takes one of ``choices``."""
    return lambda value: check_choice(name, value, choices)


def check_cutout_size(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
    if (
        not isinstance(pair, tuple | list)
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in pair)
    ):
        raise ValueError(f"size: expected an int >= 0 or a pair (h, w) of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes: expected an int >= 1 or None, got {num_classes!r}")
    return num_classes


def check_label_smoothing(label_smoothing: float) -> float:
    if not _is_number(label_smoothing) or not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing: expected a number in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def check_fill(fill: float) -> float:
    if not _is_number(fill) or not math.isfinite(fill):
        raise ValueError(f"fill: expected a finite number, got {fill!r}")
    return float(fill)


def check_mask_fill(mask_fill: int) -> int:
    if isinstance(mask_fill, bool) or not isinstance(mask_fill, int):
        raise ValueError(f"mask_fill: expected an int class id (e.g. 255, ignored), got {mask_fill!r}")
    return mask_fill


def check_min_visibility(min_visibility: float) -> float:
    if not _is_number(min_visibility) or not 0.0 <= min_visibility <= 1.0:
        raise ValueError(f"min_visibility: expected a number in [0, 1], got {min_visibility!r}")
    return float(min_visibility)


def check_seed(seed: int | None) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed: expected an int >= 0 or None, got {seed!r}")
    return seed


def check_box_format(bounding_box_format: str) -> str:
    if bounding_box_format not in BOX_FORMATS:
        raise ValueError(
            f"bounding_box_format: expected 'xyxy' (pixel corners x1, y1, x2, y2; convert others with "
            f"keras.utils.bounding_boxes.convert_format), got {bounding_box_format!r}"
        )
    return bounding_box_format


def check_agree(cutmix: object, mixup: object) -> None:
    """CutMixOrMixUp's two ops must make the same targets from the same labels and read images alike:
    otherwise the loss gets targets of one kind or another depending on the batch's switch."""
    for name in ("num_classes", "label_smoothing", "data_format"):
        own, other = getattr(cutmix, name), getattr(mixup, name)
        if own != other:
            raise ValueError(f"mixup: expected {name} {own!r} like cutmix, got {other!r}")


class Option:
    """An option of an op or a layer, checked by the constructor's own check whenever it is set (so
    ``op.p = 5`` is refused with ``CutMix(p=5)``'s message). Setting an option the draws depend on
    (``redraw``) to a new value calls the owner's ``_forget_draws_ahead()``, so it takes effect on the
    next call; an op whose options nobody changes draws exactly as before. The value lives in the
    instance's ``__dict__`` under the owner's ``_option_prefix`` and the name."""

    def __init__(self, check: Callable[[Any], Any], *, redraw: bool = False) -> None:
        self.check, self.redraw = check, redraw

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, f"{getattr(owner, '_option_prefix', '_')}{name}"

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.slot]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: Any, value: Any) -> None:
        value = self.check(value)
        if self.redraw and self.slot in obj.__dict__ and obj.__dict__[self.slot] != value:
            obj._forget_draws_ahead()
        obj.__dict__[self.slot] = value


# ----------------------------------------------------------------------------------------------
# Inputs: shapes, dtypes and values, as (shape tuple, dtype name) so that both paths call the same code
# ----------------------------------------------------------------------------------------------


def layout(data_format: str, frames: bool = False) -> str:
    if frames:
        return "(B, C, T, H, W)" if data_format == "channels_first" else "(B, T, H, W, C)"
    return "(B, C, H, W)" if data_format == "channels_first" else "(B, H, W, C)"


def check_images(shape: tuple, dtype: str, data_format: str, name: str = "images") -> None:
    """A 4-D, non-empty batch of integer or floating-point images."""
    if len(shape) != 4:
        raise ValueError(f"{name}: expected a 4-D tensor {layout(data_format)}, got shape {tuple(shape)}")
    if shape[0] == 0:  # a batch size unknown until run time (None) passes
        raise ValueError(f"{name}: expected a batch of at least 1 image, got an empty batch")
    if dtype == "bool" or dtype.startswith("complex"):
        raise DtypeError(f"{name}: expected an integer or floating-point tensor, got dtype {dtype}")


def check_second_batch(has_images2: bool, has_labels2: bool) -> None:
    if has_images2 != has_labels2:
        raise ValueError("images2, labels2: expected both or neither, got only one")


def check_like_images(shape2: tuple, dtype2: str, shape: tuple, dtype: str) -> None:
    if tuple(shape2) != tuple(shape) or dtype2 != dtype:
        raise ValueError(
            f"images2: expected the shape and dtype of images {tuple(shape)} {dtype}, "
            f"got {tuple(shape2)} {dtype2}"
        )


def check_labels(
    shape: tuple, dtype: str, num_classes: int | None, batch: int | None, name: str = "labels"
) -> bool:
    """Class ids (B,) or (B, 1) of any integer dtype, or float probabilities (B, K); returns whether
    they are ids. ``batch``: the images' batch size (None: unknown, or not checked)."""
    ids = is_int_name(dtype)
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{name}: expected class ids (B,) or (B, 1), or probabilities (B, K), got shape {tuple(shape)}"
        )
    if batch is not None and shape[0] is not None and shape[0] != batch:
        images = "images2" if name == "labels2" else "images"
        raise ValueError(
            f"{name}: expected {batch} labels to match {images}' batch size, got shape {tuple(shape)}"
        )
    if len(shape) == 2 and not (ids and shape[1] == 1):
        if not is_float_name(dtype):
            raise DtypeError(
                f"{name}: expected int class ids of shape (B,) or (B, 1), or float probabilities of shape "
                f"(B, K), got dtype {dtype} of shape {tuple(shape)}"
            )
        if num_classes is not None and shape[1] is not None and shape[1] != num_classes:
            raise ValueError(f"{name}: expected (B, {num_classes}) probabilities, got {tuple(shape)}")
        return False
    if not ids:
        raise DtypeError(f"{name}: expected int class ids of shape (B,) or (B, 1), got dtype {dtype}")
    if num_classes is None:
        raise ValueError("num_classes: expected an int when labels are class ids, got None")
    return True


def check_class_ids(low: int, high: int, num_classes: int, name: str = "labels") -> None:
    """The smallest and largest of the class ids, where they can be read without waiting."""
    if low < 0 or high >= num_classes:
        raise ValueError(f"{name}: expected class ids in [0, {num_classes}), got values in [{low}, {high}]")


def check_representable(name: str, value: float, dtype: str, of: str) -> None:
    """A fill value that an integer ``dtype`` cannot hold is refused, not wrapped or left to a cast that
    overflows on one backend and not on another. ``of``: whose dtype, e.g. ``"the images'"``."""
    if not is_int_name(dtype):
        return
    low, high = int_range(dtype)
    if not low <= value <= high:
        raise ValueError(
            f"{name}: expected a value representable in {of} {dtype} ([{low}, {high}]), got {value!r}"
        )


def check_mask_dtype(dtype: str, name: str = "masks") -> None:
    if not is_int_name(dtype):
        raise DtypeError(f"{name}: expected integer class ids (e.g. uint8, int64), got dtype {dtype}")


def mask_channel_dim(
    mask_shape: tuple[int, ...], image_shape: tuple[int, ...], data_format: str, name: str = "masks"
) -> int | None:
    """Checks a mask shape against images of ``image_shape`` (4-D images or 5-D clips); returns the
    mask's singleton channel dim, or None for plain (B, [T,] H, W) masks."""
    mask_shape, image_shape = tuple(mask_shape), tuple(image_shape)
    if data_format == "channels_first":
        plain = (image_shape[0], *image_shape[2:])
        channel, dim = (plain[0], 1, *plain[1:]), 1
    else:
        plain = image_shape[:-1]
        channel, dim = (*plain, 1), len(plain)
    if mask_shape == plain:
        return None
    if mask_shape == channel:
        return dim
    raise ValueError(
        f"{name}: expected shape {plain} or {channel} to match images {image_shape} "
        f"({data_format}), got {mask_shape}"
    )


def check_box_arrays(
    shape: tuple,
    label_shape: tuple,
    dtype: str,
    label_dtype: str,
    batch: int | None,
    name: str,
    label_name: str,
) -> None:
    """Padded (B, N, 4) xyxy boxes of numbers and (B, N) integer labels (−1: padding)."""
    if dtype == "bool" or dtype.startswith("complex"):
        raise DtypeError(f"{name}: expected float or integer pixel coordinates, got dtype {dtype}")
    if not is_int_name(label_dtype):
        raise DtypeError(
            f"{label_name}: expected integer class ids (-1 for padding), got dtype {label_dtype}"
        )
    if len(shape) != 3 or shape[0] != batch or shape[2] != 4:
        raise ValueError(f"{name}: expected shape ({batch}, N, 4) (xyxy), got {tuple(shape)}")
    if tuple(label_shape) != tuple(shape[:2]):
        raise ValueError(
            f"{label_name}: expected shape {tuple(shape[:2])} like {name}, got {tuple(label_shape)}"
        )


def check_box_labels_low(low: int, label_name: str) -> None:
    if low < -1:
        raise ValueError(f"{label_name}: expected class ids >= 0, or -1 for padding, got {low}")


def refuse_box(name: str, box: Sequence[float], width: int, height: int, image: int, index: int) -> None:
    """Raises for the first real box that is not inside the image or not ordered."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        problem = "not finite"
    elif x1 < x0 or y1 < y0:
        problem = "x2 < x1 or y2 < y1"
    else:
        problem = f"outside the {width}x{height} image"
    shown = [round(v, 3) for v in (x0, y0, x1, y1)]
    raise ValueError(
        f"{name}: expected xyxy pixel boxes with 0 <= x1 <= x2 <= {width} and 0 <= y1 <= y2 <= {height}, "
        f"got {shown} ({problem}) for image {image}, box {index}"
    )
