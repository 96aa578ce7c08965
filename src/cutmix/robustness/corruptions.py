"""CIFAR-10-C-style corruptions, generated on the fly as batched tensor ops.

The ten corruptions and five severities of Hendrycks & Dietterich's ``make_cifar_c.py`` (the
CIFAR-10-C generator, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019) that need no external assets, on float images ``(B, 3, H, W)`` with
pixels in [0, 1], each result clipped to [0, 1]. Every random draw comes from the CPU
``torch.Generator`` passed in (then moved to the images' device), so a result depends only on the
images and the generator's seed, never on the device or the global RNG. JPEG is the one
corruption done image by image (Pillow's encoder); the rest are whole-batch tensor ops.

These are *generated*, not the released CIFAR-10-C files: call them "CIFAR-10-C-style".
:func:`load_released` reads the released ``.npy`` files instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cutmix.errors import DataError

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "corrupt",
    "gaussian_blur",
    "hsv_to_rgb",
    "load_released",
    "pixelate_matrix",
    "rgb_to_hsv",
]

# make_cifar_c.py's constants for its five severities (index 0 is severity 1).
SEVERITIES: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.10, 0.15, 0.20, 0.30),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}
# The names are the released CIFAR-10-C file names (gaussian_noise.npy, ...).
CORRUPTIONS: tuple[str, ...] = tuple(SEVERITIES)


def _on(draw: Tensor, like: Tensor) -> Tensor:
    return draw.to(device=like.device, dtype=like.dtype)


def _gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    return x + _on(torch.randn(x.shape, generator=generator), x) * sigma


def _shot_noise(x: Tensor, c: float, generator: torch.Generator) -> Tensor:
    # Poisson counts of x * c photons, back in [0, 1] units; drawn in float64 on the CPU.
    rate = x.detach().to("cpu", torch.float64) * c
    return _on(torch.poisson(rate, generator=generator) / c, x)


def _impulse_noise(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    # scikit-image's "s&p" with salt_vs_pepper 0.5: each value (each channel apart) is replaced
    # with probability ``amount``, half of those by 1 (salt), half by 0 (pepper).
    u = _on(torch.rand(x.shape, generator=generator, dtype=torch.float64), x)
    out = torch.where(u < amount / 2, torch.ones_like(x), x)
    return torch.where((u >= amount / 2) & (u < amount), torch.zeros_like(x), out)


def _speckle_noise(x: Tensor, c: float, generator: torch.Generator) -> Tensor:
    return x + x * _on(torch.randn(x.shape, generator=generator), x) * c


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """The 1-D Gaussian of ``scipy.ndimage.gaussian_filter`` (radius ``int(truncate * sigma + 0.5)``),
    as float64 weights that sum to 1."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """``skimage.filters.gaussian(x, sigma)`` per channel (what ``make_cifar_c.py`` calls): a separable
    Gaussian with edge pixels repeated ("nearest"), truncated at 4 sigma."""
    kernel = gaussian_kernel(sigma).to(device=x.device, dtype=x.dtype)
    radius = (kernel.numel() - 1) // 2
    b, c, h, w = x.shape
    planes = x.reshape(b * c, 1, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return planes.reshape(b, c, h, w)


def _contrast(x: Tensor, c: float, generator: torch.Generator) -> Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as make_cifar_c.py
    return (x - means) * c + means


def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB ``(B, 3, H, W)`` in [0, 1] to HSV, all three in [0, 1] (``colorsys``/scikit-image's
    definitions: hue 0 and saturation 0 for greys)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    grey = delta == 0
    safe = torch.where(grey, torch.ones_like(delta), delta)
    saturation = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), 0.0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(grey, torch.zeros_like(hue), torch.remainder(hue / 6.0, 1.0))
    return torch.stack((hue, torch.where(grey, torch.zeros_like(saturation), saturation), maxc), dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """HSV ``(B, 3, H, W)`` in [0, 1] back to RGB (``colorsys.hsv_to_rgb``, batched)."""
    h, s, v = x.unbind(1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = torch.remainder(sector, 6).long()
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    # The (r, g, b) of each of the six hue sectors, picked per pixel.
    choices = torch.stack(
        (
            torch.stack((v, t, p), 1),
            torch.stack((q, v, p), 1),
            torch.stack((p, v, t), 1),
            torch.stack((p, q, v), 1),
            torch.stack((t, p, v), 1),
            torch.stack((v, p, q), 1),
        ),
        dim=0,
    )
    index = sector.unsqueeze(1).expand(-1, 3, -1, -1).unsqueeze(0)
    return choices.gather(0, index).squeeze(0)


def _brightness(x: Tensor, c: float, generator: torch.Generator) -> Tensor:
    hsv = rgb_to_hsv(x)
    hsv = torch.cat((hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)), dim=1)
    return hsv_to_rgb(hsv)


def _saturate(x: Tensor, c: tuple[float, float], generator: torch.Generator) -> Tensor:
    hsv = rgb_to_hsv(x)
    hsv = torch.cat((hsv[:, :1], (hsv[:, 1:2] * c[0] + c[1]).clamp(0, 1), hsv[:, 2:]), dim=1)
    return hsv_to_rgb(hsv)


def to_uint8(x: Tensor) -> np.ndarray:
    """Float images ``(B, 3, H, W)`` in [0, 1] as uint8 ``(B, H, W, 3)``, rounded."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _jpeg(x: Tensor, quality: int, generator: torch.Generator) -> Tensor:
    # Pillow's encoder, image by image (as make_cifar_c.py saves each image at this quality).
    from PIL import Image

    out = np.empty((x.shape[0], x.shape[2], x.shape[3], 3), dtype=np.uint8)
    for i, image in enumerate(to_uint8(x)):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return _on(torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0, x)


def pixelate_matrix(size_in: int, size_out: int) -> Tensor:
    """The ``(size_out, size_in)`` weights of Pillow's ``BOX`` resize along one axis (its
    ``precompute_coeffs``: a box of the output pixel's footprint, at least one input pixel wide)."""
    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    for out in range(size_out):  # a loop over the pixels of one axis, not over images
        centre = (out + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), size_in)
        for i in range(lo, hi):
            offset = (i - centre + 0.5) / max(scale, 1.0)
            weights[out, i] = 1.0 if -0.5 < offset <= 0.5 else 0.0
        weights[out] /= weights[out].sum()
    return weights


def _pixelate(x: Tensor, c: float, generator: torch.Generator) -> Tensor:
    h, w = x.shape[2:]
    small_h, small_w = int(h * c), int(w * c)
    down_h, down_w = pixelate_matrix(h, small_h), pixelate_matrix(w, small_w)
    up_h, up_w = pixelate_matrix(small_h, h), pixelate_matrix(small_w, w)
    rows, cols = (up_h @ down_h).to(x), (up_w @ down_w).to(x)
    return rows @ x @ cols.T  # down and back up along each axis, as two matrix products


def _blur(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    return gaussian_blur(x, sigma)


_FUNCTIONS: dict[str, Callable[[Tensor, object, torch.Generator], Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "saturate": _saturate,
    "jpeg_compression": _jpeg,
    "pixelate": _pixelate,
}


def corrupt(x: Tensor, name: str, severity: int, generator: torch.Generator) -> Tensor:
    """``x`` (float ``(B, 3, H, W)`` in [0, 1], not modified) with corruption ``name`` at
    ``severity`` (1 to 5), clipped to [0, 1].

    Args:
        x: the clean images.
        name: one of :data:`CORRUPTIONS`.
        severity: 1 (mildest) to 5, make_cifar_c.py's constants (:data:`SEVERITIES`).
        generator: a CPU ``torch.Generator``, the only source of randomness.
    """
    if name not in _FUNCTIONS:
        raise ValueError(f"expected a corruption among {', '.join(CORRUPTIONS)}, got {name!r}")
    if not 1 <= severity <= 5:
        raise ValueError(f"expected severity in 1..5, got {severity!r}")
    return _FUNCTIONS[name](x, SEVERITIES[name][severity - 1], generator).clamp(0, 1)


def load_released(folder: str | Path, names: tuple[str, ...], n_test: int) -> dict[str, np.ndarray]:
    """The released CIFAR-10-C arrays in ``folder`` for the corruptions ``names`` it holds, each
    memory-mapped as uint8 ``(5, n_test, 32, 32, 3)`` (severities 1 to 5), and its ``labels``
    ``(5, n_test)`` under the key ``"labels"``.

    A folder without ``labels.npy``, without any of the files, or whose arrays do not hold five
    severities of the ``n_test`` test images, is a :class:`DataError` naming ``--corruptions``.
    """
    folder = Path(folder)
    found = {name: folder / f"{name}.npy" for name in names if (folder / f"{name}.npy").is_file()}
    if not found or not (folder / "labels.npy").is_file():
        raise DataError(
            f"--corruptions: expected a CIFAR-10-C folder with labels.npy and some of "
            f"{', '.join(f'{n}.npy' for n in names)}, got {str(folder)!r}"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, path in {**found, "labels": folder / "labels.npy"}.items():
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"--corruptions: {path} is not a readable .npy array ({exc})") from exc
        expected = (5 * n_test,) if name == "labels" else (5 * n_test, 32, 32, 3)
        if array.shape != expected or (name != "labels" and array.dtype != np.uint8):
            raise DataError(
                f"--corruptions: expected {path.name} of shape {expected}"
                f"{'' if name == 'labels' else ' uint8'} (5 severities of the {n_test} test images), "
                f"got {array.dtype} {array.shape}"
            )
        arrays[name] = array.reshape(5, n_test, *array.shape[1:])
    return arrays


def severity_seed(seed: int, *salt: int) -> int:
    """A 63-bit generator seed from ``seed`` and ``salt`` (hashed by numpy's ``SeedSequence``, so
    neighbouring tuples give unrelated streams)."""
    words = np.random.SeedSequence((seed, *salt)).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def generator_for(seed: int, *salt: int) -> torch.Generator:
    """A fresh CPU generator seeded from ``(seed, *salt)`` (:func:`severity_seed`)."""
    return torch.Generator().manual_seed(severity_seed(seed, *salt))
