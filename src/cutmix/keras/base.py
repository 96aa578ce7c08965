"""What the layers share: the dict and pair input forms, ``training``, the checks both implementations
run first, and the choice between the torch op (the fast path on the torch backend) and the keras.ops
implementation (:mod:`cutmix.keras.draw`, :mod:`cutmix.keras.apply`)."""

from __future__ import annotations

from typing import Any

import keras

from cutmix.keras.apply import apply_dense, apply_params, soft_targets
from cutmix.keras.checks import (
    box_label_dtype,
    box_parts,
    check_box_values,
    check_data_format,
    check_layer_images,
    check_layer_pair,
    class_labels,
    dtype_of,
    is_ids,
    mask_layout,
    rank,
    signed_box_labels,
    torch_ids,
)
from cutmix.ops import rules
from cutmix.ops.rules import MIN_VISIBILITY, Option

try:  # Keras internals, used only to decide whether the direct call below is safe (see __call__)
    from keras.src.backend.common.global_state import get_global_attribute as _keras_global
    from keras.src.backend.common.stateless_scope import in_stateless_scope as _in_stateless_scope
except ImportError:  # pragma: no cover - another Keras layout: always take Keras' own __call__
    _keras_global = _in_stateless_scope = None

_DATA_KEYS = ("images", "labels", "images2", "labels2")
# Keras' own keys for dense targets (keras.layers.CutMix & co.): per-pixel class ids and a
# {"boxes": (B, N, 4), "labels": (B, N)} dict, padded with label -1.
_DENSE_KEYS = ("segmentation_masks", "bounding_boxes")
_SEED_HIGH = 2**31 - 1


def _dict_leaves(data: dict[str, Any]) -> list[Any]:
    return [
        v for value in data.values() for v in (_dict_leaves(value) if isinstance(value, dict) else [value])
    ]


def dense_inputs(data: Any) -> dict[str, Any]:
    """The dense keys of a dict input that are present and not None."""
    if not isinstance(data, dict):
        return {}
    return {key: data[key] for key in _DENSE_KEYS if data.get(key) is not None}


class _MixLayer(keras.layers.Layer):
    """Input handling shared by the layers: the dict form, the pair form, ``training`` and the
    torch fast path."""

    _option_prefix = "_setting_"  # where each Option keeps its value (apart from Keras' own attributes)

    # Set to False (per layer or class) to run the keras.ops implementation on the torch backend
    # too; the tests do, to check that implementation where JAX and TensorFlow are not installed.
    _prefer_torch_op = True
    kind = ""  # "cutmix", "mixup" or "cutout", as the torch ops: picks the mask and box rule
    bounding_box_format = Option(rules.check_box_format)
    num_classes = Option(rules.check_num_classes)
    label_smoothing = Option(rules.check_label_smoothing)
    data_format = Option(check_data_format)
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
        self.seed = rules.check_seed(seed)
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
            values = [*_dict_leaves(values[0]), *values[1:]]  # bounding_boxes is a dict inside the dict
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
        check_layer_images(images, self.data_format)
        self._check_call(images)
        dense = dense_inputs(data)
        if dense:
            return self._dense_call(images, labels, images2, labels2, dense)
        check_layer_pair(images, labels, images2, labels2, self.data_format)
        # Checked here for both implementations: the same conditions and messages on either path.
        labels = self._labels(labels, images)
        labels2 = self._labels(labels2, images2, "labels2")
        if self._use_torch_op(images):
            mixed, targets = self._torch_call(images, labels, images2, labels2)
        else:
            mixed, targets = self._keras_call(images, labels, images2, labels2)
        return self._outputs(data, mixed, targets)

    def _check_call(self, images: Any) -> None:
        """Raises where this layer's settings cannot apply to ``images`` (overridden by Cutout)."""

    def _labels(self, labels: Any, images: Any, name: str = "labels") -> Any:
        return None if labels is None else class_labels(labels, images, self.num_classes, name)

    def _outputs(self, data: Any, mixed: Any, targets: Any, dense: dict[str, Any] | None = None) -> Any:
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
        channel_axis = None if masks is None else mask_layout(masks, images, self.data_format)
        if masks is not None and self.kind == "cutout":
            rules.check_representable("mask_fill", self.mask_fill, dtype_of(masks), "the segmentation_masks'")
        boxes = box_labels = None
        if bounding_boxes is not None:
            boxes, box_labels = box_parts(bounding_boxes, images)
            box_labels = signed_box_labels(box_labels)
            check_box_values(boxes, box_labels, images, self.data_format)
        if self._use_torch_op(images):
            mixed, targets, masks_out, boxes_out = self._torch_dense_call(
                images, labels, masks, boxes, box_labels
            )
        else:
            params = self._draw(images, False)
            mixed, targets = self._keras_call(images, labels, None, None, params=params)
            mask_fill = getattr(self, "mask_fill", None)
            masks_out, boxes_out = apply_dense(
                self.kind, params, masks, channel_axis, boxes, box_labels, mask_fill, self._min_visibility()
            )
        out: dict[str, Any] = {}
        if masks_out is not None:
            out["segmentation_masks"] = masks_out
        if boxes_out is not None:
            # Keras' form, {"boxes", "labels"}; MixUp adds each box's weight (λ or 1 − λ, 0 for padding).
            keys = ("boxes", "labels", "weights") if self.kind == "mixup" else ("boxes", "labels")
            out["bounding_boxes"] = {key: boxes_out[key] for key in keys}
        return self._outputs({}, mixed, targets, out)

    def _min_visibility(self) -> float:
        return getattr(self, "min_visibility", MIN_VISIBILITY)

    def _torch_dense_call(
        self, images: Any, labels: Any, masks: Any, boxes: Any, box_labels: Any
    ) -> tuple[Any, Any, Any, Any]:
        labels = torch_ids(labels)
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
            ids = rank(labels) == 1 or is_ids(dtype_of(labels))
            classes = self.num_classes if ids else labels.shape[-1]
            targets = keras.KerasTensor((labels.shape[0], classes), dtype="float32")
        dense = {}
        for key, value in dense_inputs(data).items():
            if key == "segmentation_masks":
                dense[key] = keras.KerasTensor(value.shape, dtype=value.dtype)
                continue
            boxes, box_labels = value["boxes"], value["labels"]
            count = boxes.shape[1] if self.kind == "cutout" or boxes.shape[1] is None else 2 * boxes.shape[1]
            dense[key] = {
                "boxes": keras.KerasTensor((boxes.shape[0], count, 4), dtype=boxes.dtype),
                "labels": keras.KerasTensor((box_labels.shape[0], count), dtype=box_label_dtype()),
            }
            if self.kind == "mixup":
                dense[key]["weights"] = keras.KerasTensor((box_labels.shape[0], count), dtype="float32")
        return self._outputs(data, mixed, targets, dense)

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
            return self._torch_mix(op, images, labels, None, None)[0], None
        return self._torch_mix(op, images, torch_ids(labels), images2, torch_ids(labels2))

    def _torch_mix(self, op: Any, images: Any, labels: Any, images2: Any, labels2: Any) -> tuple[Any, Any]:
        """One call of the torch op on checked inputs (CutMix with ``factor`` overrides it)."""
        return op(images, labels, images2, labels2)

    def _keras_call(
        self, images: Any, labels: Any, images2: Any, labels2: Any, params: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        """The keras.ops implementation: ``params`` drawn now unless given (masks and boxes are mixed
        with the same draw)."""
        targets, targets2 = self._soft_targets(labels, labels2)
        if params is None:
            params = self._draw(images, images2 is not None)
        fill = getattr(self, "fill", 0.0)
        return apply_params(self.kind, images, targets, params, images2, targets2, self.data_format, fill)

    def _soft_targets(self, labels: Any, labels2: Any) -> tuple[Any, Any]:
        if labels is None:
            return None, None
        targets = soft_targets(labels, self.num_classes, self.label_smoothing)
        targets2 = None if labels2 is None else soft_targets(labels2, self.num_classes, self.label_smoothing)
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
