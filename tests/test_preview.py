"""`cutmix preview`: the 3x3 grid, its titles, and the CLI wiring."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from cutmix.cli import main
from cutmix.data import load_dataset
from cutmix.preview import preview_batch, write_preview

WEIGHTED = r"\S+ (\d\.\d\d)"


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic:64", progress=False)


def test_cli_writes_a_png(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["preview", "--data", "synthetic", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 0 and image.height > 0
    # Atomic write: no temporary file left beside it.
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


def test_cli_rejects_an_unknown_mix(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["preview", "--data", "synthetic", "--mix", "blend", "--out", str(tmp_path / "p.png")])
    assert exc.value.code == 2
    assert "invalid choice: 'blend'" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_cli_reports_a_bad_alpha(tmp_path, capsys):
    assert main(["preview", "--data", "synthetic", "--alpha", "0", "--out", str(tmp_path / "p.png")]) == 2
    assert "alpha" in capsys.readouterr().err


def test_cutmix_titles_name_both_classes_and_weights(synthetic):
    images, titles = preview_batch(synthetic, "cutmix", seed=1)
    assert images.shape == (9, 32, 32, 3) and images.dtype == np.uint8
    assert len(titles) == 9
    mixed = 0
    for title in titles:
        match = re.fullmatch(rf"{WEIGHTED}(?: / {WEIGHTED})?", title)
        assert match, title
        weights = [float(w) for w in match.groups() if w is not None]
        assert abs(sum(weights) - 1) <= 0.011
        assert weights == sorted(weights, reverse=True)
        mixed += len(weights) == 2
    assert mixed >= 5  # alpha=1: an unmixed sample needs an empty box or a same-class partner
    # The pixels changed where the titles say so.
    originals, plain = preview_batch(synthetic, "none", seed=1)
    assert all(re.fullmatch(r"\S+ 1\.00", t) for t in plain)
    changed = (images != originals).any(axis=(1, 2, 3))
    assert changed.sum() >= mixed - 1  # a pasted box can, rarely, equal what it covers


def test_cutout_titles_and_pixels(synthetic):
    images, titles = preview_batch(synthetic, "cutout", seed=2)
    originals, plain = preview_batch(synthetic, "none", seed=2)
    assert titles == [t.replace(" 1.00", " (cutout)") for t in plain]
    assert ((images == 0).all(axis=-1) & (originals != 0).any(axis=-1)).any()


def test_same_seed_same_preview_other_seed_different(synthetic):
    a, ta = preview_batch(synthetic, "mixup", seed=3)
    b, tb = preview_batch(synthetic, "mixup", seed=3)
    c, _ = preview_batch(synthetic, "mixup", seed=4)
    assert np.array_equal(a, b) and ta == tb
    assert not np.array_equal(a, c)


def test_write_preview_size_and_bad_mix(synthetic, tmp_path):
    path = write_preview(synthetic, tmp_path / "sub" / "grid.png", mix="mixup", alpha=0.4)
    with Image.open(path) as image:
        # 10 x 10.6 inches at 80 dpi: the 3x3 grid plus its suptitle.
        assert image.size == (800, 848)
    with pytest.raises(ValueError, match="expected mix in"):
        write_preview(synthetic, tmp_path / "x.png", mix="blend")
    assert not (tmp_path / "x.png").exists()
