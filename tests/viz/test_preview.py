"""`cutmix preview`: the 3x3 grid, its titles, and the CLI wiring."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from cutmix.cli import main
from cutmix.data import load_dataset
from cutmix.training.config import resolve_config
from cutmix.viz.preview import (
    _grid_figure,
    config_preview_batch,
    describe_config,
    mix_title,
    preview_batch,
    write_arm_previews,
    write_preview,
)

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
        # A patch whose class the weights cannot show (the same class, or a sliver) is named.
        match = re.fullmatch(rf"{WEIGHTED}(?: / {WEIGHTED})?( \(mixed with \S+\))?", title)
        assert match, title
        weights = [float(w) for w in match.groups()[:2] if w is not None]
        assert abs(sum(weights) - 1) <= 0.011
        assert weights == sorted(weights, reverse=True)
        mixed += len(weights) == 2 or match.group(3) is not None
    assert mixed >= 5  # alpha=1: an unmixed sample needs an empty box
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


def test_a_long_heading_is_wrapped_inside_the_picture():
    # The fast recipe's description ran past both edges of the 800-pixel grid before it was wrapped.
    heading = ("cifar10-jpeg: cutmix (alpha=1, p=0.5, partner permute), crop+flip, targets label-smoothed by "
               "0.1, mixing off in the last 2 of 15 epochs; seed 0")  # fmt: skip
    images = np.zeros((9, 32, 32, 3), dtype=np.float32)
    fig = _grid_figure(images, ["x"] * 9, heading, fontsize=11)
    renderer = fig.canvas.get_renderer()
    (title,) = [text for text in fig.texts if text.get_text()]
    box = title.get_window_extent(renderer)
    assert "\n" in title.get_text() and title.get_text().replace("\n", " ") == heading
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


# --------------------------------------------------------------------------- --out


def test_cli_refuses_to_overwrite_a_file_that_is_not_a_picture(tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    assert main(["preview", "--data", "synthetic", "--out", str(notes)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cutmix preview: error: --out:") and "--force" in err and err.count("\n") == 1
    assert notes.read_text() == "my notes"
    assert main(["preview", "--data", "synthetic", "--out", str(notes), "--force"]) == 0
    with Image.open(notes) as image:
        assert image.format == "PNG"
    assert main(["preview", "--data", "synthetic", "--out", str(notes)]) == 0  # ours now: replaced unasked
    text = tmp_path / "existing_file.txt"
    text.write_text("keep me")
    assert main(["preview", "--data", "synthetic", "--out", str(text)]) == 2
    assert "--out: expected a picture file ending in .png, .jpg" in capsys.readouterr().err
    assert text.read_text() == "keep me"


@pytest.mark.parametrize(("name", "expected"), [("p.jpg", "JPEG"), ("p.JPEG", "JPEG"), ("p.png", "PNG")])
def test_cli_writes_the_format_of_the_suffix(tmp_path, name, expected):
    assert main(["preview", "--data", "synthetic", "--out", str(tmp_path / name)]) == 0
    with Image.open(tmp_path / name) as image:
        assert image.format == expected


def test_cli_refuses_a_suffix_it_cannot_write(tmp_path, capsys):
    assert main(["preview", "--data", "synthetic", "--out", str(tmp_path / "p.gif")]) == 2
    assert "--out: expected a picture file ending in" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- titles


def test_mix_title_names_a_mix_the_weights_cannot_show():
    names = ["cat", "dog"]
    assert mix_title(names, 0, 1, 0.62, True) == "cat 0.62 / dog 0.38"
    assert mix_title(names, 0, 1, 0.30, True) == "dog 0.70 / cat 0.30"
    assert mix_title(names, 0, 0, 0.70, True) == "cat 1.00 (mixed with cat)"
    assert mix_title(names, 0, 1, 0.999, True) == "cat 1.00 (mixed with dog)"  # a pasted sliver
    assert mix_title(names, 0, 1, 1.0, False) == "cat 1.00"


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_a_same_class_partner_is_titled_as_mixed(synthetic, mix):
    """With every image of one class, every partner is of the same class: an image whose pixels
    changed was mixed, and its title must say so (it used to read "fine-0deg 1.00")."""
    one_class = replace(synthetic, train_labels=np.zeros_like(synthetic.train_labels))
    images, titles = preview_batch(one_class, mix, seed=1)
    originals, _ = preview_batch(one_class, "none", seed=1)
    name = one_class.classes[0]
    changed = (images != originals).any(axis=(1, 2, 3))
    assert changed.sum() >= 5
    for title, was_changed in zip(titles, changed, strict=True):
        assert title in (f"{name} 1.00", f"{name} 1.00 (mixed with {name})")
        if was_changed:
            assert title == f"{name} 1.00 (mixed with {name})"
    config = resolve_config("seed", data="synthetic:64", mix=mix, alpha=1.0, partner="permute")
    images, titles = config_preview_batch(one_class, config, seed=1)
    unmixed, _ = config_preview_batch(one_class, replace(config, mix="none"), seed=1)
    changed = (images != unmixed).any(axis=(1, 2, 3))
    assert all(t == f"{name} 1.00 (mixed with {name})" for t, c in zip(titles, changed, strict=True) if c)


# --------------------------------------------------------------------------- a run's own options


def _config(**options):
    return resolve_config("seed", data="synthetic:64", **options)


def test_config_preview_shows_the_training_images_as_the_loader_gives_them(synthetic):
    plain, titles = config_preview_batch(synthetic, _config(mix="none", augment="none"), seed=5)
    assert plain.shape == (9, 32, 32, 3) and plain.dtype == np.uint8
    stored = {
        image.tobytes(): int(label)
        for image, label in zip(synthetic.train_images, synthetic.train_labels, strict=True)
    }
    # Without augmentation every picture is a stored training image, titled with its class.
    for image, title in zip(plain, titles, strict=True):
        assert title == f"{synthetic.classes[stored[image.tobytes()]]} 1.00"


def _crops(image: np.ndarray, pad: int = 4) -> list[np.ndarray]:
    """Every crop of ``image`` padded by ``pad`` zeros, and of its mirror image (crop+flip's outputs)."""
    h, w = image.shape[:2]
    out = []
    for source in (image, image[:, ::-1]):
        padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)))
        out += [padded[dy : dy + h, dx : dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
    return out


def test_config_preview_applies_crop_and_flip(synthetic):
    augmented, _ = config_preview_batch(synthetic, _config(mix="none", augment="crop-flip"), seed=5)
    stored = {image.tobytes() for image in synthetic.train_images}
    not_stored = 0
    for image in augmented:
        candidates = (c for source in synthetic.train_images for c in _crops(source))
        assert any(np.array_equal(image, c) for c in candidates), "not a crop+flip of a training image"
        not_stored += image.tobytes() not in stored
    assert not_stored >= 5  # most are shifted or mirrored (the odds of the identity crop are 1/162)


def test_config_preview_cuts_holes_of_the_runs_cutout_size(synthetic):
    config = _config(mix="cutout", cutout_size=6, mix_p=1.0, augment="none")
    holed, titles = config_preview_batch(synthetic, config, seed=2)
    plain, _ = config_preview_batch(synthetic, replace(config, mix="none"), seed=2)
    sizes = []
    for image, original in zip(holed, plain, strict=True):
        changed = (image != original).any(axis=-1)
        rows, cols = np.nonzero(changed)
        assert (image[changed] == 0).all()  # cut out to zero
        sizes.append((np.ptp(rows) + 1, np.ptp(cols) + 1) if rows.size else (0, 0))
    assert max(sizes) == (6, 6) and all(h <= 6 and w <= 6 for h, w in sizes)
    assert all(t.endswith("(cutout)") for t in titles)


def test_config_preview_follows_mix_p(synthetic):
    # p = 1e-6: each of the nine samples is mixed with probability 1e-6, so (almost surely) none is.
    config = _config(mix="cutmix", alpha=1.0, mix_p=1e-6, augment="crop-flip")
    images, titles = config_preview_batch(synthetic, config, seed=3)
    plain, plain_titles = config_preview_batch(synthetic, replace(config, mix="none"), seed=3)
    assert np.array_equal(images, plain) and titles == plain_titles
    assert all(re.fullmatch(r"\S+ 1\.00", t) for t in titles)
    mixed, titles = config_preview_batch(synthetic, replace(config, mix_p=1.0), seed=3)
    assert sum(" / " in t or "mixed with" in t for t in titles) >= 5
    assert (mixed != plain).any(axis=(1, 2, 3)).sum() >= 5


def test_describe_config_names_every_option_that_shapes_the_images():
    fast = resolve_config("fast", data="synthetic:64", mix="cutmix")
    text = describe_config(fast)
    assert f"cutmix (alpha={fast.alpha:g}, p={fast.mix_p:g}, partner {fast.partner})" in text
    assert "crop+flip" in text and f"label-smoothed by {fast.label_smoothing:g}" in text
    assert f"mixing off in the last {fast.mix_off_epochs} of {fast.epochs} epochs" in text
    assert describe_config(replace(fast, mix="cutout", cutout_size=8)).startswith("cutout 8px, p=")


def test_arm_previews_one_per_mixing_arm_and_preview_png_the_first(synthetic, tmp_path):
    base = _config(cutout_size=4)
    written = write_arm_previews(synthetic, tmp_path, base, ("none", "cutout", "cutmix"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "preview-cutmix.png",
        "preview-cutout.png",
        "preview.png",
    ]
    assert written[0] == tmp_path / "preview.png"
    assert (tmp_path / "preview.png").read_bytes() == (tmp_path / "preview-cutout.png").read_bytes()
    assert (tmp_path / "preview-cutmix.png").read_bytes() != (tmp_path / "preview-cutout.png").read_bytes()
    only_none = tmp_path / "none"
    write_arm_previews(synthetic, only_none, base, ("none",))
    assert [p.name for p in only_none.iterdir()] == ["preview.png"]


def test_compare_draws_each_arm_with_its_own_options(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", "synthetic:128", "--depth", "8", "--batch-size", "64", "--device", "cpu",
            "--quiet", "--epochs", "1", "--arms", "none,cutout", "--seeds", "1", "--cutout-size", "4",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {"preview.png", "preview-cutout.png"} <= names and "preview-none.png" not in names
    assert (out / "preview.png").read_bytes() == (out / "preview-cutout.png").read_bytes()
