"""ResNet v1 for CIFAR, reproducing the Keras CutMix example's ``resnet_v20`` exactly.

The architecture, parameter count (ResNet-20: 273,066 trainable + 1,376 BatchNorm running
statistics = 274,442, the seed's ``count_params()``) and initialisation follow the Keras
model, including the places where Keras defaults differ from PyTorch's:

* every convolution keeps a bias (initialised to zero), even when BatchNorm follows;
* BatchNorm uses Keras' ``momentum=0.99`` (PyTorch ``momentum=0.01``) and ``epsilon=1e-3``;
* ``padding="same"`` at stride 2 pads TensorFlow-style, bottom/right first (for a 3x3 kernel
  on an even-sized input: nothing on top/left, one row/column on bottom/right);
* kernels (convolutions and the dense head) use ``he_normal``: a normal truncated at two
  standard deviations, rescaled so that the std after truncation is ``sqrt(2 / fan_in)``.

One known difference: PyTorch updates ``running_var`` with the unbiased batch variance, Keras
with the biased one; with at least 128 x 8 x 8 values per channel the two differ by < 0.02 %.

The model returns LOGITS. The seed's Dense layer ends in a softmax; here softmax lives in the
loss (``torch.nn.functional.cross_entropy`` accepts logits and soft targets alike).

Weight decay: the seed puts ``L2(1e-4)`` on every convolution kernel (not on biases,
BatchNorm or the dense layer). Keras adds ``1e-4 * sum(w**2)`` to the loss, whose gradient is
``2e-4 * w``; so either add :func:`l2_penalty` to the loss, or give the optimizer
``param_groups(model, weight_decay=2e-4)``. Both are the same for SGD (with or without
momentum) and for ``torch.optim.Adam`` (whose ``weight_decay`` is an L2 term added to the
gradient), but NOT for ``AdamW``, whose decoupled decay is a different regulariser.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "KERAS_L2",
    "KERAS_EQUIVALENT_WEIGHT_DECAY",
    "ResNetV1",
    "SameConv2d",
    "count_parameters",
    "keras_init_",
    "l2_penalty",
    "param_groups",
    "resnet_v1",
]

KERAS_L2 = 1e-4
"""The seed's ``kernel_regularizer=L2(1e-4)`` coefficient, as a loss term."""

KERAS_EQUIVALENT_WEIGHT_DECAY = 2 * KERAS_L2
"""The SGD/Adam ``weight_decay`` giving the same gradient as ``KERAS_L2`` in the loss."""

# Keras BatchNormalization defaults, in PyTorch's convention (momentum weighs the new batch).
BN_MOMENTUM = 0.01
BN_EPS = 1e-3

# Std of a standard normal truncated to [-2, 2]; Keras divides by it so that the truncated
# samples end up with the requested std.
_TRUNCATED_STD = 0.87962566103423978


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow/Keras ``padding="same"`` semantics, bias kept.

    Output size is ``ceil(in / stride)``. The total padding along a dimension is
    ``max((out - 1) * stride + kernel - in, 0)``, split with the odd pixel on the bottom/right,
    as TensorFlow does. At stride 1 with an odd kernel this is the symmetric padding PyTorch
    supports natively, so that case pads inside the convolution; other cases ``F.pad`` first.

    Input ``(B, in_channels, H, W)``, output ``(B, out_channels, ceil(H/s), ceil(W/s))``, same
    dtype. Works with either memory format.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        native = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2 if native else 0,
            bias=True,
        )
        self._native_same = native

    @staticmethod
    def _pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._native_same:
            top, bottom = self._pads(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = self._pads(x.shape[-1], self.kernel_size[1], self.stride[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        SameConv2d(in_channels, out_channels, kernel_size, stride),
        nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (ResNet v1 ordering).

    With ``stride > 1`` or a change of width the shortcut is a 1x1 strided convolution with
    bias (the seed's ``resnet_layer(kernel_size=1, batch_normalization=False)``), optionally
    followed by BatchNorm (``shortcut_bn``, He et al.'s projection); otherwise the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut_bn: bool) -> None:
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, 3, stride)
        self.conv2 = _conv_bn(out_channels, out_channels, 3, 1)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            if shortcut_bn:
                self.shortcut = _conv_bn(in_channels, out_channels, 1, stride)
            else:
                self.shortcut = SameConv2d(in_channels, out_channels, 1, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(self.shortcut(x) + y)


class ResNetV1(nn.Module):
    """The seed's ResNet v1 for 32x32 images; build it with :func:`resnet_v1`.

    ``forward`` takes float images ``(B, in_channels, 32, 32)`` (any float dtype, either
    memory format, autocast allowed) and returns logits ``(B, num_classes)``; there is no
    softmax.
    """

    def __init__(self, depth: int, num_classes: int, shortcut_bn: bool, in_channels: int) -> None:
        super().__init__()
        num_blocks = (depth - 2) // 6
        self.in_channels = in_channels
        self.stem = _conv_bn(in_channels, 16, 3, 1)
        stages = []
        width_in = 16
        for stage, width in enumerate((16, 32, 64)):
            blocks = []
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(width_in, width, stride, shortcut_bn))
                width_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # Keras AveragePooling2D(pool_size=8): stride 8, no padding; 32x32 input gives 8x8 here.
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (B, {self.in_channels}, 32, 32), got {tuple(x.shape)}")
        x = self.pool(self.stages(F.relu(self.stem(x))))
        if x.shape[-2:] != (1, 1):
            # Without this the dense layer would fail with an opaque matmul shape error.
            raise ValueError(f"expected 32x32 input images, got {tuple(x.shape[-2:])} after pooling")
        return self.fc(torch.flatten(x, 1))


def _he_normal_(weight: torch.Tensor, generator: torch.Generator) -> None:
    """Keras ``he_normal`` in place: VarianceScaling(2.0, "fan_in", "truncated_normal").

    ``fan_in`` is ``weight[0].numel()`` for both conv ``(out, in, kh, kw)`` and linear
    ``(out, in)`` weights, matching Keras' fan-in of the transposed kernel layouts.
    """
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / _TRUNCATED_STD
    # Inverse-CDF sampling in float64 (the algorithm of torch.nn.init.trunc_normal_, which
    # only takes a generator from torch 2.3 on): uniform on [Phi(-2), Phi(2)], mapped back.
    bound = math.erf(2.0 / math.sqrt(2.0))
    u = torch.empty(weight.shape, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
    z = torch.erfinv(u).mul_(math.sqrt(2.0)).clamp_(-2.0, 2.0)
    with torch.no_grad():
        weight.copy_(z.mul_(std))


def keras_init_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise ``model`` in place the way Keras initialises the seed's layers.

    Conv and Linear kernels: ``he_normal`` (drawn from ``generator``, a CPU generator, in
    module order); their biases: zeros. BatchNorm: weight 1, bias 0, running mean 0, running
    variance 1. Returns ``model``.
    """
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"expected generator to be a CPU torch.Generator, got {generator!r}")
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            _he_normal_(module.weight, generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()
    return model


def resnet_v1(
    depth: int = 20,
    num_classes: int = 10,
    shortcut_bn: bool = False,
    *,
    generator: torch.Generator | None = None,
    in_channels: int = 3,
) -> ResNetV1:
    """Build the seed's ResNet v1 (``resnet_v20``) for 32x32 images, initialised as in Keras.

    ``depth`` must be 6n+2 with n >= 1 (20, 32, 44, 56, 110...): a 3x3 16-filter stem, then
    three stages of n basic blocks with 16/32/64 filters, the first block of stages 2 and 3
    striding by 2 with a projection shortcut; 8x8 average pooling and a dense head.
    ``shortcut_bn=True`` adds BatchNorm after the projection (not in the seed).

    Initialisation draws from ``generator`` (a CPU ``torch.Generator``); pass one for a
    reproducible model. With ``None`` a fresh generator seeded from OS entropy is used; the
    global RNG is never touched.

    The model returns logits ``(B, num_classes)`` for input ``(B, in_channels, 32, 32)``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"depth should be 6n+2 (e.g. 20, 32, 44), got {depth!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"expected num_classes to be an int >= 2, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"expected in_channels to be an int >= 1, got {in_channels!r}")
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    # Built on the meta device so PyTorch's default init (which draws from the global RNG) never
    # runs; keras_init_ then fills every parameter and buffer.
    with torch.device("meta"):
        model = ResNetV1(depth, num_classes, bool(shortcut_bn), in_channels)
    return keras_init_(model.to_empty(device="cpu"), generator)


def _conv_kernels(model: nn.Module) -> list[torch.nn.Parameter]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


def l2_penalty(model: nn.Module, weight: float = KERAS_L2) -> torch.Tensor:
    """``weight * sum(w**2)`` over every convolution kernel, as the seed's ``L2(1e-4)``.

    Biases, BatchNorm and the dense layer are excluded, as in the seed. Returns a 0-d float
    tensor on the kernels' device (0 if the model has no convolutions); add it to the loss.
    """
    if not weight >= 0:
        raise ValueError(f"expected weight >= 0, got {weight!r}")
    kernels = _conv_kernels(model)
    if not kernels:
        return torch.zeros(())
    total = sum(k.float().pow(2).sum() for k in kernels)
    return total * weight


def param_groups(model: nn.Module, weight_decay: float = KERAS_EQUIVALENT_WEIGHT_DECAY) -> list[dict]:
    """Optimizer parameter groups: conv kernels decayed, everything else not.

    Returns ``[{"params": conv_kernels, "weight_decay": weight_decay},
    {"params": others, "weight_decay": 0.0}]`` over the trainable parameters. Keras' L2(1e-4)
    in the loss equals ``weight_decay=2e-4`` (the default) for SGD and Adam, not for AdamW.
    """
    if not weight_decay >= 0:
        raise ValueError(f"expected weight_decay >= 0, got {weight_decay!r}")
    decay_ids = {id(k) for k in _conv_kernels(model)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in decay_ids else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``{"trainable", "bn_running_stats", "total"}``.

    ``bn_running_stats`` counts BatchNorm running means and variances (not
    ``num_batches_tracked``, which Keras does not have); ``total`` is every parameter, frozen
    or not, plus those statistics, i.e. what Keras' ``count_params()`` reports.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    stats = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            stats += m.running_mean.numel() + m.running_var.numel()
    return {"trainable": trainable, "bn_running_stats": stats, "total": params + stats}
