"""Provenance and atomic writes (cutmix.runinfo): file modes under the umask, fsync order, SIMD level."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cutmix import runinfo
from cutmix.runinfo import (
    atomic_save_figure,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    environment,
    hardware,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes and folder fsync are POSIX")


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.subplots().plot([0, 1], [1, 0])
    return fig


WRITERS: dict[str, Callable[[Path], object]] = {
    "bytes": lambda path: atomic_write_bytes(path, b"data"),
    "text": lambda path: atomic_write_text(path, "text"),
    "json": lambda path: atomic_write_json(path, {"a": 1}),
    "torch": lambda path: atomic_torch_save(path, {"w": torch.zeros(2)}),
    "figure": lambda path: atomic_save_figure(_figure(), path),
}


@pytest.fixture
def umask():
    """Sets the process umask for the test (and restores it)."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda mask: os.umask(mask)
    os.umask(before)


@posix_only
@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, umask, kind, mask):
    umask(mask)
    path = tmp_path / f"out-{kind}.png"
    WRITERS[kind](path)
    # What open() gives any new file: 0o666 without the umask's bits (mkstemp gave 0o600 whatever it was).
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@posix_only
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_atomic_write_fsyncs_the_file_then_renames_then_fsyncs_the_folder(tmp_path, monkeypatch, kind):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        events.append(("fsync", "folder" if stat.S_ISDIR(mode) else f"file of {os.fstat(fd).st_size} bytes"))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "target.png"
    WRITERS[kind](path)
    size = path.stat().st_size
    assert size > 0
    assert events == [("fsync", f"file of {size} bytes"), ("rename", "target.png"), ("fsync", "folder")]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "keep.json"
    atomic_write_json(path, {"old": True})

    class Unsavable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save(path, {"x": Unsavable()})
    assert path.read_text() == '{\n  "old": true\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_provenance_records_the_cpus_simd_level():
    expected = torch.backends.cpu.get_cpu_capability()
    assert hardware()["cpu_capability"] == expected
    assert environment(argv=["train"])["hardware"]["cpu_capability"] == expected
    assert isinstance(expected, str) and expected  # "AVX2", "AVX512", "NO AVX", ...


def test_provenance_is_not_part_of_a_runs_config_hash():
    from dataclasses import asdict, fields

    from cutmix.experiment.plan import config_hash, hashed_options
    from cutmix.training.config import TrainConfig

    config = TrainConfig()
    # The hash covers the config's options only (not the hardware or versions of config.json).
    # checkpoint_every_min says when to save, not what the run is: a run keeps its hash whatever it is.
    assert set(hashed_options(config)) == {f.name for f in fields(TrainConfig)} - {
        "init",
        "checkpoint_every_min",
    }
    assert config_hash(config) == config_hash(TrainConfig(**asdict(config)))


def test_picture_formats_follow_the_suffix(tmp_path):
    from PIL import Image

    for name, expected in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.JPEG", "JPEG"), ("plain", "PNG")):
        atomic_save_figure(_figure(), tmp_path / name)
        with Image.open(tmp_path / name) as image:
            assert image.format == expected, name
    atomic_save_figure(_figure(), tmp_path / "d.pdf")
    assert (tmp_path / "d.pdf").read_bytes().startswith(b"%PDF-")
    atomic_save_figure(_figure(), tmp_path / "e.svg")
    assert b"<svg" in (tmp_path / "e.svg").read_bytes()[:2000]
    with pytest.raises(ValueError, match=r"--out: expected a picture file ending in .png, .jpg"):
        atomic_save_figure(_figure(), tmp_path / "f.gif")
    assert not (tmp_path / "f.gif").exists()


def test_check_picture_out(tmp_path):
    from cutmix.errors import UsageError

    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    with pytest.raises(UsageError, match=r"--out: .*notes.png' exists and is not a picture .*--force"):
        runinfo.check_picture_out(notes)
    assert runinfo.check_picture_out(notes, force=True) == notes
    with pytest.raises(UsageError, match="--out: expected a picture file name, got the folder"):
        runinfo.check_picture_out(tmp_path, force=True)
    ours = tmp_path / "ours.png"
    atomic_save_figure(_figure(), ours)
    assert runinfo.check_picture_out(ours) == ours  # a picture of ours is replaced without --force
    assert notes.read_text() == "my notes"
