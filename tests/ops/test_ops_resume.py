"""An op checkpointed when its draws made ahead are used up resumes exactly (issue 10, item 1)."""

from __future__ import annotations

import pytest
import torch

from cutmix import CutMix, CutMixOrMixUp, Cutout, MixUp


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Item 1: resume when the draws made ahead are used up exactly at the checkpoint
# ----------------------------------------------------------------------------------------------

OPS = {
    "cutmix": lambda: CutMix(num_classes=10, generator=gen(0)),
    "mixup": lambda: MixUp(num_classes=10, p=0.5, generator=gen(0)),
    "cutout": lambda: Cutout(size=2, num_classes=10, generator=gen(0)),
    "switch": lambda: CutMixOrMixUp(
        CutMix(num_classes=10, generator=gen(1)), MixUp(num_classes=10, generator=gen(2)), generator=gen(3)
    ),
}


@pytest.mark.parametrize("op_name", sorted(OPS))
@pytest.mark.parametrize(("batch", "calls"), [(1024, 4), (128, 64), (96, 32), (32, 32), (32, 33)])
def test_state_dict_taken_when_the_draws_ahead_are_used_up_resumes(op_name, batch, calls, tmp_path):
    """The issue's cases: the pool of 4096 rows / 32 batches is empty right after these calls."""
    images = torch.rand(batch, 1, 4, 4, generator=gen(5))
    labels = torch.randint(0, 10, (batch,), generator=gen(6))
    original = OPS[op_name]()
    for _ in range(calls):
        original(images, labels)
    path = tmp_path / "state.pt"
    torch.save(original.state_dict(), path)
    restored = OPS[op_name]()
    restored.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(6):
        a, b = original(images, labels, return_params=True), restored(images, labels, return_params=True)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(a[2].table, b[2].table) and a[2].batch_size == batch
