"""The model on pixels: the trainer's normalisation moved inside it, the occlusion masks, and an FGSM
step that leaves the model as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cutmix.data import DeviceLoader
from cutmix.models import resnet_v1
from cutmix.robustness.attacks import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    PixelModel,
    fgsm_direction,
    occlude,
    occlusion_mask,
    pixels,
)


def _model() -> torch.nn.Module:
    return resnet_v1(8, 10, generator=torch.Generator().manual_seed(0)).eval()


def test_the_constants_are_the_trainers():
    from cutmix.training import components

    assert (components.CIFAR10_MEAN, components.CIFAR10_STD) == (CIFAR10_MEAN, CIFAR10_STD)
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR10_STD == (0.2470, 0.2435, 0.2616)


@pytest.mark.parametrize("normalize", [False, True])
def test_pixel_model_sees_what_the_trainers_loader_feeds(normalize):
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    stats = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD) if normalize else {}
    loader = DeviceLoader(images, np.zeros(16, np.int64), 16, shuffle=False, drop_last=False, **stats)
    batch, _ = next(iter(loader))  # what the trainer and its evaluation give the model
    model = _model()
    with torch.no_grad():
        expected = model(batch.float())
        got = PixelModel(model, normalize)(pixels(images, "cpu"))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


class _Layout(torch.nn.Module):
    """Records the memory layout of what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return x.mean((2, 3))


@pytest.mark.parametrize("normalize", [False, True])
def test_pixel_model_gives_its_model_channels_last_pixels_whatever_it_is_given(normalize):
    # Some corruptions return NCHW tensors; the conv kernels run those markedly slower on the CPU.
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    recorder = _Layout()
    model = PixelModel(recorder, normalize)
    with torch.no_grad():
        nchw, last = model(x), model(x.contiguous(memory_format=torch.channels_last))
    assert recorder.seen == [True, True]
    assert torch.equal(nchw, last)
    assert x.is_contiguous()  # the caller's tensor is not changed
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = PixelModel(_model(), normalize)(x)
        expected = _model()((x - mean) / std if normalize else x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("s", [0, 4, 12, 32])
def test_occlusion_masks(s):
    centre, boundary = occlusion_mask(32, s, "center"), occlusion_mask(32, s, "boundary")
    assert centre.sum().item() == s * s and boundary.sum().item() == 32 * 32 - s * s
    assert torch.equal(centre, ~boundary)
    lo = (32 - s) // 2  # centred: s is even, so the square sits exactly in the middle
    assert centre[lo : lo + s, lo : lo + s].all()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(s))
    before = x.clone()
    filled = occlude(x, centre, torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(x, before)
    assert torch.equal(filled[:, :, ~centre], x[:, :, ~centre])
    assert torch.allclose(filled[:, 1][:, centre], torch.tensor(0.2))
    with pytest.raises(ValueError, match="expected protocol 'center' or 'boundary', got 'corner'"):
        occlusion_mask(32, s, "corner")


def test_fgsm_step_leaves_the_model_and_input_alone():
    model = _model()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    logits, sign = fgsm_direction(model, x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(x, before) and not x.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert set(sign.unique().tolist()) <= {-1.0, 0.0, 1.0} and (sign != 0).any()
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x))
