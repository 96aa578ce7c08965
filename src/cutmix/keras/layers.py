"""The Keras 3 layers, the user-facing API of :mod:`cutmix.keras`: :class:`CutMix`, :class:`MixUp`,
:class:`Cutout` and :class:`CutMixOrMixUp`, registered for Keras serialization as ``cutmix>CutMix`` and
so on (saved models load whatever module the classes live in)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from cutmix.keras.base import _MixLayer
from cutmix.keras.checks import check_concentration, dtype_of, static_image_size
from cutmix.keras.draw import batch_and_size, draw_cutmix, draw_cutout, draw_mixup
from cutmix.ops import rules
from cutmix.ops.params import BOXES, PARTNERS
from cutmix.ops.rules import MASK_FILL, MIN_VISIBILITY, Option, choice

__all__ = ["CutMix", "CutMixOrMixUp", "Cutout", "MixUp"]


@keras.saving.register_keras_serializable(package="cutmix")
class CutMix(_MixLayer):
    """Per-sample CutMix: each image gets a box cut from its partner; targets mixed by the pasted area.

    Args:
        alpha: λ ~ Beta(alpha, alpha) per sample, alpha > 0; default 1.0 unless ``factor`` is given.
            ``alpha`` and ``factor`` together are refused.
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
        factor: ``keras.layers.CutMix``'s own argument, with its meaning: a number f in [0, 1] or a
            (min, max) pair in [0, 1]; on every call one concentration α ~ U(min, max) + 1e-6 is
            drawn (U(0, f) for a number), and each sample's λ ~ Beta(α, α). That draw follows
            Keras; the rest stays this layer's: a box per sample with integer edges (the paper's
            clipped box), the target weight equal to the share of pixels actually pasted, a
            partner per sample, ``p``, and integer images kept. Pass it by keyword:
            ``CutMix(0.5)`` is ``alpha=0.5``. Calls with ``factor`` draw each batch's parameters
            when it comes instead of many batches ahead.

    Switching from Keras: ``keras.layers.CutMix(factor=f, seed=s)`` becomes
    ``cutmix.keras.CutMix(factor=f, seed=s)`` (plus ``num_classes`` for class-id labels; one-hot
    labels need nothing). Setting ``alpha`` or ``factor`` after construction is checked as the
    constructor checks them and takes effect on the next call: a number for ``alpha``, or a
    ``factor``, switches to it; ``factor = None`` goes back to ``alpha`` (1.0 unless set).
    """

    kind = "cutmix"
    p = Option(rules.check_p)
    partner = Option(choice("partner", PARTNERS))
    box = Option(choice("box", BOXES))
    min_visibility = Option(rules.check_min_visibility)
    _torch_settings = ("alpha", "p", "num_classes", "label_smoothing", "partner", "box", "data_format",
                       "min_visibility")  # fmt: skip

    def __init__(
        self,
        alpha: float | None = None,
        p: float = 1.0,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        partner: str = "permute",
        box: str = "center",
        data_format: str | None = None,
        seed: int | None = None,
        *,
        min_visibility: float = MIN_VISIBILITY,
        factor: float | tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, label_smoothing, data_format, seed, **kwargs)
        if alpha is None and factor is None:
            alpha = 1.0
        self._set_concentration(alpha, factor)
        self.p = p
        self.partner = partner
        self.box = box
        self.min_visibility = min_visibility

    @property
    def alpha(self) -> float | None:
        """The fixed Beta(α, α) concentration, or None when ``factor`` draws it per call."""
        return self.__dict__["_setting_alpha"]

    @alpha.setter
    def alpha(self, alpha: float | None) -> None:
        if alpha is None and self.factor is not None:
            return  # already drawn per call
        self._set_concentration(alpha, None)  # a number switches to it from factor

    @property
    def factor(self) -> tuple[float, float] | None:
        """Keras' (min, max) range of the concentration drawn on every call, or None (``alpha``)."""
        return self.__dict__["_setting_factor"]

    @factor.setter
    def factor(self, factor: float | tuple[float, float] | None) -> None:
        if factor is None:  # back to a fixed alpha: the one set, or the constructor's default
            self._set_concentration(1.0 if self.alpha is None else self.alpha, None)
        else:
            self._set_concentration(None, factor)

    def _set_concentration(self, alpha: float | None, factor: Any) -> None:
        # Kept beside the Options' values, past Keras' attribute tracking (as Option does); both
        # are read on every call, so a new value takes effect on the next one.
        self.__dict__["_setting_alpha"], self.__dict__["_setting_factor"] = check_concentration(alpha, factor)

    def _make_torch_op(self) -> Any:
        from cutmix.ops import CutMix as TorchCutMix

        # With factor, the op's alpha is replaced by each call's drawn concentration.
        alpha = 1.0 if self.alpha is None else self.alpha
        return TorchCutMix(
            alpha, self.p, self.num_classes, self.label_smoothing, self.partner, self.box, self.data_format,
            self._torch_generator(), min_visibility=self.min_visibility,
        )  # fmt: skip

    def _draw(self, images: Any, paired: bool) -> dict[str, Any]:
        batch, height, width = batch_and_size(images, self.data_format)
        partner = None if paired else self.partner
        alpha = self.alpha
        if alpha is None:  # Keras' draw: one concentration per call, from U(factor) + 1e-6
            low, high = self.factor
            alpha = keras.random.uniform((), low, high, dtype="float32", seed=self.seed_generator) + 1e-6
        return draw_cutmix(batch, height, width, alpha, self.p, partner, self.box, self.seed_generator)

    def _torch_concentration(self, op: Any) -> float:
        """This call's concentration with ``factor``, as Keras draws it, from the torch op's generator."""
        import torch

        low, high = self.factor
        return low + (high - low) * float(torch.rand((), dtype=torch.float64, generator=op.generator)) + 1e-6

    def _torch_mix(self, op: Any, images: Any, labels: Any, images2: Any, labels2: Any) -> tuple[Any, Any]:
        if self.factor is None:
            return super()._torch_mix(op, images, labels, images2, labels2)
        # One batch drawn with this call's concentration: the op's draws ahead share one alpha.
        from cutmix.ops import apply_cutmix, sample_cutmix_params, to_targets

        alpha = self._torch_concentration(op)
        height, width = static_image_size(images, self.data_format)
        partner = None if images2 is not None else self.partner
        params = sample_cutmix_params(
            images.shape[0], height, width, alpha=alpha, p=self.p, partner=partner, box=self.box,
            generator=op.generator,
        )  # fmt: skip
        targets = to_targets(labels, self.num_classes, self.label_smoothing, images.device)
        targets2 = None
        if labels2 is not None:
            targets2 = to_targets(labels2, self.num_classes, self.label_smoothing, images.device)
            if targets2.shape != targets.shape:
                raise ValueError(
                    f"labels2: expected targets of shape {tuple(targets.shape)}, got {tuple(targets2.shape)}"
                )
        return apply_cutmix(images, targets, params, images2, targets2, data_format=self.data_format)

    def _torch_dense_call(
        self, images: Any, labels: Any, masks: Any, boxes: Any, box_labels: Any
    ) -> tuple[Any, Any, Any, Any]:
        if self.factor is not None:  # masks and boxes: the op itself, given this call's concentration
            op = self._current_torch_op()
            op.alpha = self._torch_concentration(op)
        return super()._torch_dense_call(images, labels, masks, boxes, box_labels)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(alpha=self.alpha, p=self.p, partner=self.partner, box=self.box,
                      min_visibility=self.min_visibility)  # fmt: skip
        if self.factor is not None:  # only then: the configs of layers without it stay as they were
            config["factor"] = list(self.factor)
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
    alpha = Option(rules.check_alpha)
    p = Option(rules.check_p)
    partner = Option(choice("partner", PARTNERS))
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
        partner = None if paired else self.partner
        return draw_mixup(ops.shape(images)[0], self.alpha, self.p, partner, self.seed_generator)

    def _refuse_dense(self, dense: dict[str, Any]) -> None:
        if "segmentation_masks" in dense:
            raise ValueError(
                "segmentation_masks: expected no masks with MixUp, got masks: a blended pixel belongs to two "
                "classes, so one mask cannot describe it (use CutMix or Cutout, or the torch op "
                "cutmix.ops.MixUp(masks=...), whose MixedMasks go to cutmix.ops.mask_cross_entropy)"
            )

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
    size = Option(rules.check_cutout_size)
    p = Option(rules.check_p)
    fill = Option(rules.check_fill)
    mask_fill = Option(rules.check_mask_fill)
    min_visibility = Option(rules.check_min_visibility)
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
        rules.check_representable("fill", self.fill, dtype_of(images), "the images'")

    def _draw(self, images: Any, paired: bool) -> dict[str, Any]:
        batch, height, width = batch_and_size(images, self.data_format)
        return draw_cutout(batch, height, width, self.size, self.p, self.seed_generator)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(size=list(self.size), p=self.p, fill=self.fill, mask_fill=self.mask_fill,
                      min_visibility=self.min_visibility)  # fmt: skip
        return config


@keras.saving.register_keras_serializable(package="cutmix")
class CutMixOrMixUp(_MixLayer):
    """Per batch, ``cutmix`` with probability ``switch_prob``, else ``mixup`` (timm's ``switch_prob``).

    Both layers keep their own settings and seeds; this layer's ``seed`` draws the switch. Their
    ``num_classes``, ``label_smoothing`` and ``data_format`` are used (they must agree). In the
    keras.ops implementation (traced graphs) both ops run on every batch and the switch selects one
    result, so that no data-dependent branch is traced.
    """

    switch_prob = Option(rules.check_switch_prob)

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
        rules.check_agree(cutmix, mixup)
        rules.check_switch_prob(switch_prob)
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


# Shown and serialized as where users import them from: cutmix.keras.
for _layer in (CutMix, MixUp, Cutout, CutMixOrMixUp):
    _layer.__module__ = "cutmix.keras"
