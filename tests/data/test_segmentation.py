"""The generated ``synthetic-seg`` set and the pictures of masks and boxes (preview, demo)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cutmix.cli import main
from cutmix.data import Dataset, SegmentationDataset, load_dataset, make_synthetic_seg
from cutmix.viz.dense import seg_preview_rows
from cutmix.viz.preview import write_preview


@pytest.fixture(scope="module")
def seg():
    return load_dataset("synthetic-seg:40", progress=False)


def test_synthetic_seg_is_a_dataset_with_masks_and_boxes(seg):
    assert isinstance(seg, SegmentationDataset) and isinstance(seg, Dataset)
    assert seg.classes[0] == "background" and seg.num_classes == 5
    assert seg.train_images.shape == (40, 64, 64, 3) and seg.train_images.dtype == np.uint8
    assert seg.train_masks.shape == (40, 64, 64) and seg.train_masks.dtype == np.uint8
    assert seg.test_masks.shape[0] == len(seg.test_images) == 200
    assert seg.train_boxes.shape[::2] == (40, 4) and seg.train_box_labels.shape == seg.train_boxes.shape[:2]
    # The classification contract: one label per image, indexing the classes (never background).
    assert seg.train_labels.dtype == np.int64 and seg.train_labels.min() >= 1 and seg.train_labels.max() <= 4
    assert set(np.unique(seg.train_masks)) <= set(range(5)) and (seg.train_masks > 0).any()
    same = make_synthetic_seg(40, 200, seed=0)
    assert np.array_equal(same.train_images, seg.train_images) and np.array_equal(
        same.train_boxes, seg.train_boxes
    )
    assert not np.array_equal(make_synthetic_seg(40, 1, seed=1).train_masks, seg.train_masks)


def test_boxes_are_tight_around_their_class_pixels(seg):
    for masks, boxes, labels in zip(seg.train_masks, seg.train_boxes, seg.train_box_labels, strict=True):
        valid = labels >= 0
        assert valid.any() and (valid[: valid.sum()]).all()  # valid boxes first
        for (x0, y0, x1, y1), label in zip(boxes[valid].astype(int), labels[valid], strict=True):
            inside = masks[y0:y1, x0:x1] == label
            assert inside.sum() >= 6
            # Tight: the class touches every edge of its box.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_other_specs_still_load(seg):
    assert type(load_dataset("synthetic:20", progress=False)) is Dataset
    with pytest.raises(ValueError, match="synthetic-seg:N with N a positive integer"):
        load_dataset("synthetic-seg:x")
    with pytest.raises(ValueError, match="resize applies to image folders only"):
        load_dataset("synthetic-seg", resize=(8, 8))


@pytest.mark.parametrize("mix", ["cutmix", "cutout", "mixup"])
def test_preview_masks_move_with_the_pixels(seg, mix):
    plain = seg_preview_rows(seg, "none", seed=2)
    rows = seg_preview_rows(seg, mix, seed=2)
    changed_pixels = 0
    for before, after in zip(plain, rows, strict=True):
        image_changed = (after["image"] != before["image"]).any(-1)
        if mix == "mixup":
            assert after["masks"].shape == (2, 64, 64)
            assert np.array_equal(after["masks"][0], before["masks"])
            continue
        mask_changed = after["masks"] != before["masks"]
        assert not (mask_changed & ~image_changed).any()  # a mask changes only where its image did
        y0, y1, x0, x1 = after["region"]
        assert not image_changed[:y0].any() and not image_changed[y1:].any()
        assert not image_changed[:, :x0].any() and not image_changed[:, x1:].any()
        changed_pixels += int(image_changed.sum())
        if mix == "cutout":
            assert (after["masks"][y0:y1, x0:x1] == 255).all()
    assert mix == "mixup" or changed_pixels > 0


def test_preview_cli_draws_synthetic_seg(tmp_path, capsys, seg):
    out = tmp_path / "seg.png"
    assert main(["preview", "--data", "synthetic-seg:20", "--mix", "cutmix", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 848)
    for mix in ("mixup", "cutout", "none"):
        write_preview(seg, tmp_path / f"{mix}.png", mix=mix)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cutout.png", "mixup.png", "none.png", "seg.png"]
    with pytest.raises(ValueError, match="expected mix in"):
        write_preview(seg, tmp_path / "x.png", mix="blend")


def test_readme_segmentation_example_runs():
    """The segmentation block of docs/dense.md (once the README's) runs, and what it says about its
    outputs holds."""
    import re
    from pathlib import Path

    import torch
    import torch.nn.functional as F

    page = (Path(__file__).resolve().parents[2] / "docs" / "dense.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, flags=re.S) if "masks=" in b]
    namespace: dict = {}
    exec(compile(block, "docs/dense.md", "exec"), namespace)  # noqa: S102
    images, mixed, masks, mixed_masks = (namespace[k] for k in ("images", "mixed", "masks", "mixed_masks"))
    assert mixed_masks.shape == masks.shape and mixed_masks.dtype == masks.dtype
    image_changed = (mixed != images).any(1)
    assert not ((mixed_masks != masks) & ~image_changed).any()
    loss, logits = namespace["loss"], namespace["logits"]
    assert torch.allclose(loss, F.cross_entropy(logits, mixed_masks.long(), ignore_index=255))
    loss.backward()
    kept, boxes = namespace["kept"], namespace["mixed_boxes"]
    assert kept.shape[1] == 4 and boxes.boxes.shape == (8, 2, 4)
    assert "](segmentation-preview.png)" in page
    assert (Path(__file__).resolve().parents[2] / "docs" / "segmentation-preview.png").is_file()
