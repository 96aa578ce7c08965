"""Each CIFAR-10-C-style corruption at severity 1 against a direct reference (statistics of the
noise, the formula per image, scipy's Gaussian filter, colorsys, Pillow's JPEG and box resize);
severities ordered; seeded; inputs untouched."""

from __future__ import annotations

import colorsys
import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from cutmix.data import load_dataset
from cutmix.robustness.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    generator_for,
    hsv_to_rgb,
    rgb_to_hsv,
    to_uint8,
)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Eight synthetic test images, float (8, 3, 32, 32) in [0, 1]."""
    dataset = load_dataset("synthetic", progress=False)
    return torch.from_numpy(dataset.test_images[:8]).permute(0, 3, 1, 2).float() / 255.0


def _grey(value: float, n: int = 64) -> torch.Tensor:
    return torch.full((n, 3, 32, 32), value)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_statistics():
    out = corrupt(_grey(0.5), "gaussian_noise", 1, _gen()) - 0.5  # sigma 0.04: no clipping at 0.5
    assert abs(out.mean().item()) < 1e-3
    assert out.std().item() == pytest.approx(0.04, rel=0.01)


def test_shot_noise_statistics():
    out = corrupt(_grey(0.5), "shot_noise", 1, _gen()).double()  # Poisson(250) / 500
    assert out.mean().item() == pytest.approx(0.5, abs=5e-4)
    assert out.var().item() == pytest.approx(0.5 / 500, rel=0.02)
    assert torch.allclose(out * 500, (out * 500).round(), atol=1e-3)  # whole photon counts


def test_impulse_noise_statistics():
    x = _grey(0.5, 256)
    out = corrupt(x, "impulse_noise", 1, _gen())
    changed = out != x
    assert changed.double().mean().item() == pytest.approx(0.01, rel=0.05)
    assert set(out[changed].unique().tolist()) == {0.0, 1.0}
    assert (out[changed] == 1).double().mean().item() == pytest.approx(0.5, abs=0.03)


def test_speckle_noise_statistics():
    out = corrupt(_grey(0.5), "speckle_noise", 1, _gen()) - 0.5  # x * N(0, 0.06)
    assert abs(out.mean().item()) < 1e-3
    assert out.std().item() == pytest.approx(0.5 * 0.06, rel=0.01)


def test_gaussian_blur_against_scipy(images):
    sigma = SEVERITIES["gaussian_blur"][0]
    out = corrupt(images, "gaussian_blur", 1, _gen()).numpy()
    for i in range(len(images)):
        reference = gaussian_filter(
            images[i].double().numpy(), sigma=(0, sigma, sigma), mode="nearest", truncate=4.0
        )
        np.testing.assert_allclose(out[i], reference, atol=1e-6)


def test_contrast_by_the_formula(images):
    c = SEVERITIES["contrast"][0]
    out = corrupt(images, "contrast", 1, _gen()).numpy()
    for i in range(len(images)):
        x = images[i].double().numpy()
        means = x.reshape(3, -1).mean(1)[:, None, None]
        np.testing.assert_allclose(out[i], np.clip((x - means) * c + means, 0, 1), atol=1e-6)


def _hsv_reference(x: np.ndarray, change) -> np.ndarray:
    """Pixel by pixel through colorsys: HSV, ``change``, back to RGB, clipped."""
    out = np.empty_like(x)
    for row in range(x.shape[1]):
        for col in range(x.shape[2]):
            h, s, v = colorsys.rgb_to_hsv(*x[:, row, col])
            out[:, row, col] = colorsys.hsv_to_rgb(*change(h, s, v))
    return np.clip(out, 0, 1)


def test_brightness_and_saturate_against_colorsys(images):
    c = SEVERITIES["brightness"][0]
    a, b = SEVERITIES["saturate"][3]  # (2, 0.1): saturation both scaled and shifted
    brightened = corrupt(images, "brightness", 1, _gen()).double().numpy()
    saturated = corrupt(images, "saturate", 4, _gen()).double().numpy()
    for i in range(3):
        x = images[i].double().numpy()
        expected = _hsv_reference(x, lambda h, s, v: (h, s, min(max(v + c, 0), 1)))
        np.testing.assert_allclose(brightened[i], expected, atol=1e-5)
        expected = _hsv_reference(x, lambda h, s, v: (h, min(max(s * a + b, 0), 1), v))
        np.testing.assert_allclose(saturated[i], expected, atol=1e-5)


def test_hsv_round_trip_and_colorsys():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((4, 3, 8, 8))).float()
    x[0, :, 0, 0] = 0.3  # a grey pixel: hue and saturation 0
    x[1, :, 1, 1] = torch.tensor([1.0, 0.0, 0.0])  # pure red
    hsv = rgb_to_hsv(x)
    torch.testing.assert_close(hsv_to_rgb(hsv), x, atol=1e-6, rtol=0)
    for b, r, c in [(0, 0, 0), (1, 1, 1), (2, 3, 5), (3, 7, 2)]:
        expected = colorsys.rgb_to_hsv(*x[b, :, r, c].double().tolist())
        np.testing.assert_allclose(hsv[b, :, r, c].double().numpy(), expected, atol=1e-6)


def test_jpeg_against_pillow(images):
    quality = SEVERITIES["jpeg_compression"][0]
    out = corrupt(images, "jpeg_compression", 1, _gen())
    for i, image in enumerate(to_uint8(images)):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        np.testing.assert_array_equal(to_uint8(out[i : i + 1])[0], reference)


def test_pixelate_against_pillow_box_resize(images):
    c = SEVERITIES["pixelate"][0]
    out = to_uint8(corrupt(images, "pixelate", 1, _gen())).astype(int)
    for i, image in enumerate(to_uint8(images)):
        small = Image.fromarray(image).resize((int(32 * c), int(32 * c)), Image.BOX)
        reference = np.asarray(small.resize((32, 32), Image.BOX)).astype(int)
        # Pillow rounds to 8 bits after each of its four passes; the tensor op only at the end.
        assert np.abs(out[i] - reference).max() <= 2
        assert np.abs(out[i] - reference).mean() < 0.5


@pytest.mark.parametrize("name", [n for n in CORRUPTIONS if n != "saturate"])
def test_severities_are_ordered(images, name):
    # Saturate is left out: its severities scale saturation by 0.3, 0.1, 1.5, 2 and 2.5, not in order
    # of distance from the image (make_cifar_c.py's own choice).
    distances = [(corrupt(images, name, v, _gen(v)) - images).abs().mean().item() for v in range(1, 6)]
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_seeded_clipped_and_input_untouched(images, name):
    before = images.clone()
    first = corrupt(images, name, 3, generator_for(7, 2, 0))
    again = corrupt(images, name, 3, generator_for(7, 2, 0))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(images, before, rtol=0, atol=0)
    assert first.shape == images.shape and first.min() >= 0 and first.max() <= 1
    if name.endswith("_noise"):
        other = corrupt(images, name, 3, generator_for(8, 2, 0))
        assert not torch.equal(first, other)


def test_unknown_name_and_severity_are_refused(images):
    with pytest.raises(ValueError, match="expected a corruption among gaussian_noise"):
        corrupt(images, "fog", 1, _gen())
    with pytest.raises(ValueError, match="expected severity in 1..5, got 6"):
        corrupt(images, "contrast", 6, _gen())
